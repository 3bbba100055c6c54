//! ICMP echo behind one small interface, over each platform's way of sending it: raw
//! or datagram sockets on Linux and other Unix (surge-ping), the system ICMP API on
//! Windows (`IcmpSendEcho`/`Icmp6SendEcho2` through winping-rs, which needs no
//! Administrator rights). The probe logic sees only [`Icmp`] and [`Echoer`].

use std::net::IpAddr;
use std::time::Duration;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

/// What every echo request carries.
const PAYLOAD: [u8; 16] = *b"tps-agent-probe!";

/// This device's ICMP, opened once and shared by every target's prober.
#[derive(Clone, Debug)]
pub struct Icmp(imp::Icmp);

impl Icmp {
    /// Opens what the platform needs; a failure is kept with the advice to fix it.
    pub fn open() -> Icmp {
        Icmp(imp::Icmp::open())
    }

    /// Why ICMP cannot be used, if it cannot (IPv4 decides: IPv6-only TPS links are rare).
    pub fn unavailable(&self) -> Option<&str> {
        self.0.unavailable()
    }

    /// Whether echoes to `ip` (its family; `None`: IPv4) can be sent.
    pub fn supports(&self, ip: Option<IpAddr>) -> bool {
        self.0.supports(ip)
    }

    /// An echoer for one destination, keeping its own identifier and sequence.
    pub async fn echoer(&self, ip: IpAddr) -> Option<Echoer> {
        self.0.echoer(ip).await.map(Echoer)
    }
}

/// What one echo request got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// An echo reply, with the round-trip time (from before the send to the receipt).
    Reply(Duration),
    /// An ICMP error about the request (destination unreachable, time exceeded, …):
    /// the probe is lost, and counted apart so "unreachable" differs from "no answer".
    Error,
    /// Nothing came back within the timeout (or the request could not be sent).
    Lost,
}

impl Echo {
    pub fn rtt(self) -> Option<Duration> {
        match self {
            Echo::Reply(d) => Some(d),
            Echo::Error | Echo::Lost => None,
        }
    }
}

/// Sends echoes to one destination.
pub struct Echoer(imp::Echoer);

impl Echoer {
    /// One echo, waiting at most `timeout` for what comes back.
    pub async fn echo(&mut self, timeout: Duration) -> Echo {
        self.0.echo(timeout).await
    }
}
