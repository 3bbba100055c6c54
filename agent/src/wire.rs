//! The edge to `tps.v1`: spooled entries and device facts become proto messages here,
//! and the collector's refusals become what the agent acts on — nowhere else.

use std::collections::BTreeMap;

use tonic_types::StatusExt;
use tps_proto::v1 as pb;

use crate::config::Method;
use crate::spool::{DropReason, Entry};
use crate::system::Facts;

/// Most interfaces a status carries (the collector's limit): the busiest ones.
pub const MAX_INTERFACES: usize = 64;
/// Longest text the collector keeps in a status field, in bytes.
pub const MAX_TEXT: usize = 256;

pub fn measurement(e: &Entry) -> pb::Measurement {
    let rtt = e.round.rtt.as_ref();
    pb::Measurement {
        seq: e.seq,
        start_ms: e.corrected_start_ms(),
        agent_start_ms: e.start_ms,
        target_name: e.target_name.clone(),
        target_address: e.target_address.clone(),
        method: match e.method {
            Method::Icmp => pb::Method::Icmp,
            Method::Tcp => pb::Method::Tcp,
        } as i32,
        sent: e.round.sent,
        received: e.round.received,
        errors: e.round.errors,
        rtt_min_ms: rtt.map(|r| r.min_ms),
        rtt_avg_ms: rtt.map(|r| r.avg_ms),
        rtt_max_ms: rtt.map(|r| r.max_ms),
        jitter_ms: rtt.and_then(|r| r.jitter_ms),
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// What the status tells besides the device's facts.
#[derive(Debug, Clone, Default)]
pub struct SpoolView {
    pub depth: u64,
    pub dropped: BTreeMap<DropReason, u64>,
}

pub fn status(
    f: Facts,
    spool: &SpoolView,
    now_ms: i64,
    primary_target: &str,
    primary_problem: &str,
) -> pb::AgentStatus {
    // The interfaces that carry traffic first (a laptop may have dozens of idle
    // Docker and VPN ones), then by name; no more than the collector takes.
    let mut interfaces = f.interfaces;
    interfaces.sort_by(|a, b| {
        (b.1.saturating_add(b.2))
            .cmp(&a.1.saturating_add(a.2))
            .then_with(|| a.0.cmp(&b.0))
    });
    interfaces.truncate(MAX_INTERFACES);
    pb::AgentStatus {
        system_uptime_secs: f.system_uptime_secs,
        boot_time_ms: f.boot_time_ms,
        agent_uptime_secs: f.agent_uptime_secs,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: truncate(f.hostname, MAX_TEXT),
        os: truncate(f.os, MAX_TEXT),
        interfaces: interfaces
            .into_iter()
            .map(|(name, rx_bytes, tx_bytes)| pb::NetInterface {
                name: truncate(name, MAX_TEXT),
                rx_bytes,
                tx_bytes,
            })
            .collect(),
        spool_depth: spool.depth,
        dropped: spool.dropped.values().sum(),
        dropped_by_reason: spool
            .dropped
            .iter()
            .map(|(r, n)| (r.as_str().to_string(), *n))
            .collect(),
        agent_time_ms: now_ms,
        primary_target: truncate(primary_target.to_string(), MAX_TEXT),
        primary_problem: truncate(primary_problem.to_string(), MAX_TEXT),
    }
}

/// A push the collector refused for some of its measurements, from the status's
/// details (`google.rpc.BadRequest`, `google.rpc.ErrorInfo`).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Indexes of the refused measurements in the push.
    pub indexes: Vec<usize>,
    /// The collector's clock when the refusal is about time (`CLOCK_OUT_OF_RANGE`).
    pub clock_server_ms: Option<i64>,
}

/// The ErrorInfo reason of a refusal about measurement times.
pub const CLOCK_OUT_OF_RANGE: &str = "CLOCK_OUT_OF_RANGE";

pub fn refusal(s: &tonic::Status) -> Option<Refusal> {
    let indexes: Vec<usize> = s
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .filter_map(|v| measurement_index(&v.field))
                .collect()
        })
        .unwrap_or_default();
    let clock_server_ms = s
        .get_details_error_info()
        .filter(|i| i.reason == CLOCK_OUT_OF_RANGE)
        .and_then(|i| i.metadata.get("server_time_ms")?.parse().ok());
    (!indexes.is_empty() || clock_server_ms.is_some()).then_some(Refusal {
        indexes,
        clock_server_ms,
    })
}

/// The measurement a field path names (`measurements[3].rtt_avg_ms` → 3).
pub fn measurement_index(field: &str) -> Option<usize> {
    field
        .strip_prefix("measurements[")?
        .split(']')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_is_read_from_the_field_path() {
        assert_eq!(measurement_index("measurements[3].rtt_avg_ms"), Some(3));
        assert_eq!(measurement_index("status.hostname"), None);
    }

    #[test]
    fn the_busiest_interfaces_are_sent_and_long_names_cut() {
        let mut facts = Facts {
            system_uptime_secs: 1,
            boot_time_ms: 1,
            agent_uptime_secs: 1,
            hostname: "é".repeat(200),
            os: String::new(),
            interfaces: (0..200).map(|i| (format!("veth{i:03}"), 0, 0)).collect(),
        };
        facts.interfaces.push(("wlan0".into(), 10, 5));
        facts.interfaces.push(("eth0".into(), 1_000, 20));
        let s = status(facts, &SpoolView::default(), 1, "gateway", "");
        assert_eq!(s.interfaces.len(), MAX_INTERFACES);
        assert_eq!(s.interfaces[0].name, "eth0");
        assert_eq!(s.interfaces[1].name, "wlan0");
        assert_eq!(s.interfaces[2].name, "veth000");
        assert!(s.hostname.len() <= MAX_TEXT && s.hostname.chars().all(|c| c == 'é'));
    }

    #[test]
    fn refusals_are_read_from_the_details() {
        use tonic_types::{ErrorDetails, StatusExt};
        let mut d = ErrorDetails::with_bad_request(vec![
            tonic_types::FieldViolation::new("measurements[1].start_ms", "too old"),
            tonic_types::FieldViolation::new("measurements[4].start_ms", "too old"),
        ]);
        d.set_error_info(
            CLOCK_OUT_OF_RANGE,
            "tps.v1",
            [("server_time_ms".to_string(), "1800000000000".to_string())],
        );
        let s = tonic::Status::with_error_details(
            tonic::Code::FailedPrecondition,
            "times out of range",
            d,
        );
        assert_eq!(
            refusal(&s),
            Some(Refusal {
                indexes: vec![1, 4],
                clock_server_ms: Some(1_800_000_000_000)
            })
        );
        assert_eq!(refusal(&tonic::Status::invalid_argument("x")), None);
    }
}
