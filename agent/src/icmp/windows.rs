//! ICMP on Windows through the system ICMP API (`IcmpSendEcho` for IPv4,
//! `Icmp6SendEcho2` for IPv6, via winping-rs): no Administrator rights needed, unlike
//! raw sockets, and Windows has no datagram ICMP sockets. The calls block, so each echo
//! runs on a blocking thread. Replies that are ICMP errors (destination unreachable,
//! TTL expired) come back as errors and count as lost.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use winping::{Buffer, Pinger};

/// The handles for both families (winping's `Pinger` is `Send + Sync + Clone`).
#[derive(Clone)]
pub struct Icmp {
    pinger: Option<Pinger>,
    v4: bool,
    v6: bool,
    why: Option<String>,
}

impl std::fmt::Debug for Icmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Icmp")
            .field("v4", &self.v4)
            .field("v6", &self.v6)
            .finish()
    }
}

impl Icmp {
    /// Opens both handles, then tells which family works by one echo to its loopback
    /// address. winping-rs 0.11.0 swaps `CreateError::NoV4` and `NoV6` (the arm for an
    /// invalid v4 handle returns `NoV6`), so its variants are not trusted: under Wine,
    /// whose `Icmp6CreateFile` is a stub, it reports v4 as the failed one.
    pub fn open() -> Icmp {
        let pinger = match Pinger::new() {
            Ok(p) => Some(p),
            Err(winping::CreateError::NoV4(p) | winping::CreateError::NoV6(p)) => Some(p),
            Err(winping::CreateError::None) => None,
        };
        let works = |ip: IpAddr| {
            pinger.as_ref().is_some_and(|p| {
                let mut p = p.clone();
                p.set_timeout(1000);
                p.send(ip, &mut Buffer::with_data(super::PAYLOAD.to_vec()))
                    .is_ok()
            })
        };
        let v4 = works(IpAddr::from([127, 0, 0, 1]));
        let v6 = works(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
        Icmp {
            pinger,
            v4,
            v6,
            why: (!v4).then(advice),
        }
    }

    pub fn unavailable(&self) -> Option<&str> {
        self.why.as_deref()
    }

    pub fn supports(&self, ip: Option<IpAddr>) -> bool {
        match ip {
            Some(IpAddr::V6(_)) => self.v6,
            _ => self.v4,
        }
    }

    pub async fn echoer(&self, ip: IpAddr) -> Option<Echoer> {
        if !self.supports(Some(ip)) {
            return None;
        }
        Some(Echoer {
            pinger: self.pinger.clone()?,
            ip,
        })
    }
}

fn advice() -> String {
    crate::platform::Device::detect()
        .icmp_advice(&std::io::Error::from(std::io::ErrorKind::PermissionDenied))
}

pub struct Echoer {
    pinger: Pinger,
    ip: IpAddr,
}

impl Echoer {
    pub async fn echo(&mut self, timeout: Duration) -> super::Echo {
        let mut pinger = self.pinger.clone();
        let ip = self.ip;
        pinger.set_timeout(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
        tokio::task::spawn_blocking(move || {
            let mut buf = Buffer::with_data(super::PAYLOAD.to_vec());
            // The API reports whole milliseconds (0 on a LAN); the time around the call
            // is finer and never shorter than the round trip.
            let t0 = Instant::now();
            match pinger.send(ip, &mut buf) {
                Ok(_) => super::Echo::Reply(t0.elapsed()),
                Err(winping::Error::Timeout | winping::Error::Other(_)) => super::Echo::Lost,
                // Unreachable, TTL expired, …: an ICMP error came back.
                Err(_) => super::Echo::Error,
            }
        })
        .await
        .unwrap_or(super::Echo::Lost)
    }
}
