//! ICMP on Linux and other Unix with surge-ping: a raw socket as root or with
//! `CAP_NET_RAW`, a datagram socket where `net.ipv4.ping_group_range` allows.

use std::net::IpAddr;
use std::time::Duration;

use surge_ping::{Client, Config as PingConfig, ICMP, PingIdentifier, PingSequence, Pinger};

use crate::platform::Device;

/// One socket per address family.
#[derive(Clone)]
pub struct Icmp {
    v4: Result<Client, String>,
    v6: Result<Client, String>,
}

impl std::fmt::Debug for Icmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Icmp")
            .field("v4", &self.v4.is_ok())
            .field("v6", &self.v6.is_ok())
            .finish()
    }
}

impl Icmp {
    pub fn open() -> Icmp {
        let open = |kind| {
            Client::new(&PingConfig::builder().kind(kind).build())
                .map_err(|e| Device::detect().icmp_advice(&e))
        };
        Icmp {
            v4: open(ICMP::V4),
            v6: open(ICMP::V6),
        }
    }

    pub fn unavailable(&self) -> Option<&str> {
        self.v4.as_ref().err().map(String::as_str)
    }

    fn client(&self, ip: Option<IpAddr>) -> Option<&Client> {
        match ip {
            Some(IpAddr::V6(_)) => self.v6.as_ref().ok(),
            _ => self.v4.as_ref().ok(),
        }
    }

    pub fn supports(&self, ip: Option<IpAddr>) -> bool {
        self.client(ip).is_some()
    }

    pub async fn echoer(&self, ip: IpAddr) -> Option<Echoer> {
        let client = self.client(Some(ip))?;
        Some(Echoer {
            pinger: client.pinger(ip, PingIdentifier(rand::random())).await,
            // A random start keeps two targets on the same host from sharing
            // sequences: datagram replies are matched by host and sequence only.
            next_seq: rand::random(),
        })
    }
}

pub struct Echoer {
    pinger: Pinger,
    next_seq: u16,
}

impl Echoer {
    pub async fn echo(&mut self, timeout: Duration) -> Option<Duration> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.pinger.timeout(timeout);
        self.pinger
            .ping(PingSequence(seq), &super::PAYLOAD)
            .await
            .ok()
            .map(|(_, rtt)| rtt)
    }
}
