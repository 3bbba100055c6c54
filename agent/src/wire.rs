//! The edge to `tps.v1`: spooled entries and device facts become proto messages here,
//! and nowhere else.

use tps_proto::v1 as pb;

use crate::config::Method;
use crate::spool::Entry;
use crate::system::Facts;

pub fn measurement(e: &Entry) -> pb::Measurement {
    let rtt = e.round.rtt.as_ref();
    pb::Measurement {
        seq: e.seq,
        start_ms: e.start_ms,
        target_name: e.target_name.clone(),
        target_address: e.target_address.clone(),
        method: match e.method {
            Method::Icmp => pb::Method::Icmp,
            Method::Tcp => pb::Method::Tcp,
        } as i32,
        sent: e.round.sent,
        received: e.round.received,
        rtt_min_ms: rtt.map(|r| r.min_ms),
        rtt_avg_ms: rtt.map(|r| r.avg_ms),
        rtt_max_ms: rtt.map(|r| r.max_ms),
        jitter_ms: rtt.and_then(|r| r.jitter_ms),
    }
}

pub fn status(
    f: Facts,
    spool_depth: u64,
    dropped: u64,
    now_ms: i64,
    primary_target: &str,
) -> pb::AgentStatus {
    pb::AgentStatus {
        system_uptime_secs: f.system_uptime_secs,
        boot_time_ms: f.boot_time_ms,
        agent_uptime_secs: f.agent_uptime_secs,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: f.hostname,
        os: f.os,
        interfaces: f
            .interfaces
            .into_iter()
            .map(|(name, rx_bytes, tx_bytes)| pb::NetInterface {
                name,
                rx_bytes,
                tx_bytes,
            })
            .collect(),
        spool_depth,
        dropped,
        agent_time_ms: now_ms,
        primary_target: primary_target.to_string(),
    }
}

/// The index of the offending measurement in an INVALID_ARGUMENT message
/// (`measurements[3].rtt_avg_ms: ...`).
pub fn invalid_index(message: &str) -> Option<usize> {
    message
        .strip_prefix("measurements[")?
        .split(']')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn invalid_index_is_read_from_the_message() {
        assert_eq!(
            super::invalid_index("measurements[3].rtt_avg_ms: is NaN"),
            Some(3)
        );
        assert_eq!(super::invalid_index("status.hostname: too long"), None);
    }
}
