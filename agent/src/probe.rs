//! Probing targets: ICMP echo (through [`crate::icmp`], whatever the platform offers)
//! and TCP connect time. One round against one target yields one [`Round`] summary.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::{Address, Method, Target};
use crate::icmp::{Echoer, Icmp};
use crate::platform::Device;
use crate::stats::{self, Round};

/// Pause between the echoes of one round, so a round is not a burst.
const ECHO_GAP: Duration = Duration::from_millis(200);

/// Probes one target, round after round, with its own echoer (its own identifier and
/// sequence), made again when the target's address changes.
pub struct TargetProber {
    pub target: Target,
    icmp: Icmp,
    echoes: u32,
    timeout: Duration,
    echoer: Option<(IpAddr, Echoer)>,
}

impl std::fmt::Debug for TargetProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetProber")
            .field("target", &self.target)
            .finish()
    }
}

/// What one round against one target measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The address actually probed (`ip` or `ip:port`), or the name that did not resolve.
    pub address: String,
    pub method: Method,
    pub round: Round,
}

impl TargetProber {
    pub fn new(target: Target, icmp: Icmp, echoes: u32, timeout: Duration) -> TargetProber {
        TargetProber {
            target,
            icmp,
            echoes,
            timeout,
            echoer: None,
        }
    }

    /// Whether this target can be probed at all here (ICMP allowed, or a TCP port).
    pub fn can_probe(&self) -> bool {
        self.target.method == Method::Tcp
            || self.icmp.unavailable().is_none()
            || self.target.port.is_some()
    }

    /// Runs one round; `ip` is the resolved address (`None`: resolving failed, which on
    /// a TPS usually means the link is down) and `shown` what to report as the address.
    /// `None` when this target cannot be probed here (ICMP not allowed, no port).
    pub async fn round(&mut self, ip: Option<IpAddr>, shown: &str) -> Option<Outcome> {
        let use_tcp = self.target.method == Method::Tcp || !self.icmp.supports(ip);
        if use_tcp && self.target.port.is_none() {
            return None;
        }
        let method = if use_tcp { Method::Tcp } else { Method::Icmp };
        let Some(ip) = ip else {
            let lost = vec![None; self.echoes as usize];
            return Some(Outcome {
                address: shown.to_string(),
                method,
                round: stats::summarize(&lost),
            });
        };
        let mut results = Vec::with_capacity(self.echoes as usize);
        if use_tcp {
            let addr = SocketAddr::new(ip, self.target.port.unwrap_or_default());
            for i in 0..self.echoes {
                if i > 0 {
                    tokio::time::sleep(ECHO_GAP).await;
                }
                results.push(tcp_connect_time(addr, self.timeout).await);
            }
            return Some(Outcome {
                address: addr.to_string(),
                method,
                round: stats::summarize(&results),
            });
        }
        if self.echoer.as_ref().is_none_or(|(host, _)| *host != ip) {
            self.echoer = Some((ip, self.icmp.echoer(ip).await?));
        }
        let (_, echoer) = self.echoer.as_mut()?;
        let mut echoes = Vec::with_capacity(self.echoes as usize);
        for i in 0..self.echoes {
            if i > 0 {
                tokio::time::sleep(ECHO_GAP).await;
            }
            echoes.push(echoer.echo(self.timeout).await);
        }
        Some(Outcome {
            address: ip.to_string(),
            method,
            round: stats::summarize_echoes(&echoes),
        })
    }
}

/// Time to establish a TCP connection, or `None` if it failed or timed out.
pub async fn tcp_connect_time(addr: SocketAddr, timeout: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => Some(t0.elapsed()),
        _ => None,
    }
}

/// Resolves a host name (or an address literal) as connections do: `/etc/hosts`, then
/// the DNS servers of `/etc/resolv.conf`. The error says what to change on the device.
pub async fn lookup(host: &str) -> Result<IpAddr, String> {
    lookup_ip(host)
        .await
        .map_err(|why| Device::detect().resolve_advice(host, &why))
}

/// The one name lookup of probes and advice alike: a literal, or the system resolver
/// within 10 s; the error is why it failed.
async fn lookup_ip(host: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(ip);
    }
    match tokio::time::timeout(Duration::from_secs(10), tokio::net::lookup_host((host, 0))).await {
        Ok(Ok(mut found)) => found
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| "no address".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 10 s".into()),
    }
}

/// Resolves a target's address to one IP: the gateway from the routing table, the
/// collector's host, or a name or literal.
pub async fn resolve(address: &Address, collector_host: &str) -> (Option<IpAddr>, String) {
    let name = match address {
        Address::Gateway => {
            return match crate::gateway::default_gateway() {
                Some(ip) => (Some(ip), ip.to_string()),
                None => (None, "gateway".to_string()),
            };
        }
        Address::Collector => collector_host.to_string(),
        Address::Host(h) => h.clone(),
    };
    (lookup_ip(&name).await.ok(), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_probe_measures_a_listening_port_and_fails_a_closed_one() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = l.local_addr().unwrap();
        assert!(
            tcp_connect_time(open, Duration::from_secs(2))
                .await
                .is_some()
        );
        drop(l);
        assert!(
            tcp_connect_time(open, Duration::from_secs(2))
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn icmp_round_to_loopback_v4_and_v6() {
        let icmp = Icmp::open();
        if let Some(why) = icmp.unavailable() {
            panic!("this test needs ICMP sockets (CI runs as root): {why}");
        }
        for (name, addr) in [("lo4", "127.0.0.1"), ("lo6", "::1")] {
            let t = Target {
                name: name.into(),
                address: Address::Host(addr.into()),
                method: Method::Icmp,
                port: None,
            };
            let mut p = TargetProber::new(t, icmp.clone(), 3, Duration::from_secs(2));
            let ip: IpAddr = addr.parse().unwrap();
            let out = p.round(Some(ip), addr).await.unwrap();
            assert_eq!(out.method, Method::Icmp);
            assert_eq!(out.round.sent, 3);
            assert_eq!(out.round.received, 3, "{name}: loopback answers every echo");
            let rtt = out.round.rtt.unwrap();
            assert!(rtt.max_ms < 1000.0 && rtt.min_ms >= 0.0);
        }
    }

    #[tokio::test]
    async fn an_unresolved_target_is_a_lost_round() {
        let t = Target {
            name: "x".into(),
            address: Address::Host("nowhere.invalid".into()),
            method: Method::Icmp,
            port: Some(443),
        };
        let mut p = TargetProber::new(t, Icmp::open(), 4, Duration::from_millis(100));
        let out = p.round(None, "nowhere.invalid").await.unwrap();
        assert_eq!(
            (out.round.sent, out.round.received, out.address.as_str()),
            (4, 0, "nowhere.invalid")
        );
    }
}
