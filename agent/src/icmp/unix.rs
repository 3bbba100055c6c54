//! ICMP on Linux and other Unix with surge-ping: a raw socket as root or with
//! `CAP_NET_RAW`, a datagram socket where `net.ipv4.ping_group_range` allows.

use std::net::IpAddr;
use std::time::Duration;

use surge_ping::{
    Client, Config as PingConfig, ICMP, IcmpPacket, PingIdentifier, PingSequence, Pinger,
    SurgeError,
};

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
    pub async fn echo(&mut self, timeout: Duration) -> super::Echo {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.pinger.timeout(timeout);
        match self.pinger.ping(PingSequence(seq), &super::PAYLOAD).await {
            Ok((packet, rtt)) if is_echo_reply(&packet) => super::Echo::Reply(rtt),
            // surge-ping hands back ICMP errors that quote our request as `Ok` (raw
            // sockets see them; datagram sockets do not): they are no answer.
            Ok(_) => super::Echo::Error,
            // The local stack refused the send because the destination is unreachable
            // (a reject rule or an unreachable route on this device): the same answer.
            Err(SurgeError::IOError(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable
                ) =>
            {
                super::Echo::Error
            }
            Err(_) => super::Echo::Lost,
        }
    }
}

/// ICMP type numbers of an echo reply (RFC 792, RFC 4443).
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REPLY_V6: u8 = 129;

fn is_echo_reply(p: &IcmpPacket) -> bool {
    match p {
        IcmpPacket::V4(p) => p.get_icmp_type().0 == ECHO_REPLY_V4,
        IcmpPacket::V6(p) => p.get_icmpv6_type().0 == ECHO_REPLY_V6,
    }
}
