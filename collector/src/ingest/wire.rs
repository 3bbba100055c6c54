//! The edge between `tps.v1` wire types and domain types: every proto message an agent
//! sends is validated and converted here, and nowhere else; refusals become gRPC
//! statuses with the rich error model's details (`google.rpc.BadRequest` naming every
//! refused field, `google.rpc.ErrorInfo` for times out of range).

use tonic_types::{ErrorDetails, FieldViolation, StatusExt};
use tps_proto::v1 as pb;

use crate::domain::{AgentStatus, Measurement, Method, NetInterface, Rtt};

/// The ErrorInfo reason of a push refused for measurement times.
pub const CLOCK_OUT_OF_RANGE: &str = "CLOCK_OUT_OF_RANGE";

/// One refused field.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub field: String,
    pub problem: String,
    /// The start time lies outside what the collector accepts (a wrong agent clock).
    pub clock: bool,
}

impl Violation {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Violation {
            field: field.into(),
            problem: problem.into(),
            clock: false,
        }
    }
}

/// Why a push was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Invalid {
    /// Measurements the collector cannot accept, every one listed.
    #[error("{}{}", first(violations), more(violations))]
    Measurements {
        violations: Vec<Violation>,
        /// The collector's clock, told when some violations are about time.
        server_time_ms: i64,
    },
    /// More measurements than the collector takes in one push (RESOURCE_EXHAUSTED).
    #[error("measurements: {got} in one push, at most {max} are accepted; send smaller batches")]
    BatchTooLarge { got: usize, max: usize },
}

fn first(v: &[Violation]) -> String {
    v.first()
        .map(|v| format!("{}: {}", v.field, v.problem))
        .unwrap_or_default()
}

fn more(v: &[Violation]) -> String {
    if v.len() > 1 {
        format!(" (and {} more)", v.len() - 1)
    } else {
        String::new()
    }
}

impl Invalid {
    /// Short label for the rejects-by-reason metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Measurements { violations, .. } if violations.iter().any(|v| v.clock) => {
                "clock_out_of_range"
            }
            Invalid::Measurements { .. } => "invalid_argument",
            Invalid::BatchTooLarge { .. } => "batch_too_large",
        }
    }
}

impl From<Invalid> for tonic::Status {
    fn from(e: Invalid) -> Self {
        let message = e.to_string();
        match e {
            Invalid::Measurements {
                violations,
                server_time_ms,
            } => {
                let clock = violations.iter().any(|v| v.clock);
                let mut details = ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| FieldViolation::new(v.field, v.problem))
                        .collect::<Vec<_>>(),
                );
                if clock {
                    details.set_error_info(
                        CLOCK_OUT_OF_RANGE,
                        "tps.v1",
                        [("server_time_ms".to_string(), server_time_ms.to_string())],
                    );
                    tonic::Status::with_error_details(
                        tonic::Code::FailedPrecondition,
                        format!("{message}; check the agent's clock"),
                        details,
                    )
                } else {
                    tonic::Status::with_error_details(
                        tonic::Code::InvalidArgument,
                        message,
                        details,
                    )
                }
            }
            Invalid::BatchTooLarge { .. } => tonic::Status::resource_exhausted(message),
        }
    }
}

/// Limits a push is checked against.
#[derive(Debug, Clone, Copy)]
pub struct PushLimits {
    pub max_batch: usize,
    /// How far in the future (server clock) a measurement's start may lie.
    pub max_future_ms: i64,
    /// How far in the past (server clock) a measurement's start may lie.
    pub max_past_ms: i64,
}

/// Longest text kept of a status field or a measurement's names, in bytes.
pub const MAX_TEXT: usize = 256;
/// Most interfaces kept of a status.
pub const MAX_INTERFACES: usize = 64;

/// `s` cut to [`MAX_TEXT`] bytes on a character boundary; `cut` is told when it was.
fn fit(s: String, field: &'static str, cut: &mut Vec<&'static str>) -> String {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    cut.push(field);
    s[..end].to_string()
}

/// Converts a push's status, keeping what fits: at most [`MAX_INTERFACES`] interfaces
/// (the agent sends the busiest first) and [`MAX_TEXT`] bytes of each string. A status
/// is never refused; the fields that did not fit are returned (for a metric). An absent
/// status is an empty one (an old or minimal agent).
pub fn status(s: Option<pb::AgentStatus>) -> (AgentStatus, Vec<&'static str>) {
    let Some(s) = s else {
        return (AgentStatus::default(), Vec::new());
    };
    let mut cut = Vec::new();
    if s.interfaces.len() > MAX_INTERFACES {
        cut.push("interfaces");
    }
    let mut name_cut = Vec::new();
    let interfaces = s
        .interfaces
        .into_iter()
        .take(MAX_INTERFACES)
        .map(|n| NetInterface {
            name: fit(n.name, "interfaces.name", &mut name_cut),
            rx_bytes: n.rx_bytes,
            tx_bytes: n.tx_bytes,
        })
        .collect();
    if !name_cut.is_empty() {
        cut.push("interfaces.name");
    }
    let mut reasons_cut = false;
    let dropped_by_reason = s
        .dropped_by_reason
        .into_iter()
        .filter(|(k, _)| {
            let ok = k.len() <= 32;
            reasons_cut |= !ok;
            ok
        })
        .take(16)
        .collect();
    if reasons_cut {
        cut.push("dropped_by_reason");
    }
    let status = AgentStatus {
        system_uptime_secs: s.system_uptime_secs,
        boot_time_ms: s.boot_time_ms,
        agent_uptime_secs: s.agent_uptime_secs,
        agent_version: fit(s.agent_version, "agent_version", &mut cut),
        hostname: fit(s.hostname, "hostname", &mut cut),
        os: fit(s.os, "os", &mut cut),
        interfaces,
        spool_depth: s.spool_depth,
        dropped: s.dropped,
        agent_time_ms: s.agent_time_ms,
        primary_target: fit(s.primary_target, "primary_target", &mut cut),
        dropped_by_reason,
        primary_problem: fit(s.primary_problem, "primary_problem", &mut cut),
    };
    (status, cut)
}

/// Most probes one round can send (the agent's `echoes` is at most 100).
pub const MAX_SENT: u32 = 100;
/// Longest round-trip time worth believing: the agent's longest echo timeout.
pub const MAX_RTT_MS: f64 = 60_000.0;
/// Sequence numbers are stored as SQLite integers (signed 64-bit).
pub const MAX_SEQ: u64 = i64::MAX as u64;

fn rtt_value(field: String, v: f64) -> Result<f64, Violation> {
    if v.is_nan() {
        return Err(Violation::new(field, "is NaN"));
    }
    if !v.is_finite() {
        return Err(Violation::new(field, "is infinite"));
    }
    if v < 0.0 {
        return Err(Violation::new(field, format!("is negative ({v})")));
    }
    if v > MAX_RTT_MS {
        return Err(Violation::new(
            field,
            format!("{v} ms is above the {MAX_RTT_MS} ms an answer may take"),
        ));
    }
    Ok(v)
}

fn name(field: String, s: String) -> Result<String, Violation> {
    if s.len() > MAX_TEXT {
        return Err(Violation::new(
            field,
            format!("longer than {MAX_TEXT} bytes"),
        ));
    }
    Ok(s)
}

/// Converts and validates one measurement; `i` is its index in the push, for messages.
pub fn measurement(
    i: usize,
    m: pb::Measurement,
    now_ms: i64,
    limits: &PushLimits,
) -> Result<Measurement, Violation> {
    let f = |name: &str| format!("measurements[{i}].{name}");
    let method = match pb::Method::try_from(m.method) {
        Ok(pb::Method::Icmp) => Method::Icmp,
        Ok(pb::Method::Tcp) => Method::Tcp,
        _ => {
            return Err(Violation::new(
                f("method"),
                format!("unknown method {}", m.method),
            ));
        }
    };
    if m.target_name.is_empty() {
        return Err(Violation::new(f("target_name"), "is empty"));
    }
    if m.sent > MAX_SENT {
        return Err(Violation::new(
            f("sent"),
            format!(
                "{} probes is more than a round sends (at most {MAX_SENT})",
                m.sent
            ),
        ));
    }
    if u64::from(m.received) + u64::from(m.errors) > u64::from(m.sent) {
        return Err(Violation::new(
            f("received"),
            format!(
                "{} answers and {} errors for {} probes sent",
                m.received, m.errors, m.sent
            ),
        ));
    }
    let clock = |problem: String| Violation {
        field: f("start_ms"),
        problem,
        clock: true,
    };
    if m.start_ms < now_ms - limits.max_past_ms {
        return Err(clock(format!(
            "{} is {} days before the collector's clock (at most {} allowed)",
            m.start_ms,
            (now_ms - m.start_ms) / 86_400_000,
            limits.max_past_ms / 86_400_000
        )));
    }
    if m.start_ms > now_ms + limits.max_future_ms {
        return Err(clock(format!(
            "{} s in the future by the collector's clock (at most {} s allowed)",
            (m.start_ms - now_ms) / 1000,
            limits.max_future_ms / 1000
        )));
    }
    let rtt = match (m.rtt_min_ms, m.rtt_avg_ms, m.rtt_max_ms) {
        (None, None, None) => {
            if m.received > 0 {
                return Err(Violation::new(
                    f("rtt_avg_ms"),
                    "absent although probes were answered",
                ));
            }
            if m.jitter_ms.is_some() {
                return Err(Violation::new(
                    f("jitter_ms"),
                    "present although nothing was answered",
                ));
            }
            None
        }
        (Some(min), Some(avg), Some(max)) => {
            if m.received == 0 {
                return Err(Violation::new(
                    f("rtt_avg_ms"),
                    "present although nothing was answered",
                ));
            }
            let min = rtt_value(f("rtt_min_ms"), min)?;
            let avg = rtt_value(f("rtt_avg_ms"), avg)?;
            let max = rtt_value(f("rtt_max_ms"), max)?;
            if !(min <= avg && avg <= max) {
                return Err(Violation::new(
                    f("rtt_avg_ms"),
                    format!("RTTs out of order: need min <= avg <= max, got {min} / {avg} / {max}"),
                ));
            }
            let jitter_ms = m
                .jitter_ms
                .map(|j| rtt_value(f("jitter_ms"), j))
                .transpose()?;
            Some(Rtt {
                min_ms: min,
                avg_ms: avg,
                max_ms: max,
                jitter_ms,
            })
        }
        (min, avg, _) => {
            let missing = if min.is_none() {
                "rtt_min_ms"
            } else if avg.is_none() {
                "rtt_avg_ms"
            } else {
                "rtt_max_ms"
            };
            return Err(Violation::new(
                f(missing),
                "absent while other RTT fields are present",
            ));
        }
    };
    Ok(Measurement {
        seq: m.seq,
        start_ms: m.start_ms,
        target_name: name(f("target_name"), m.target_name)?,
        target_address: name(f("target_address"), m.target_address)?,
        method,
        sent: m.sent,
        received: m.received,
        errors: m.errors,
        rtt,
    })
}

/// Converts and validates every measurement of a push; sequence numbers must increase.
/// A push with any refused measurement is refused whole, naming every one.
pub fn measurements(
    ms: Vec<pb::Measurement>,
    now_ms: i64,
    limits: &PushLimits,
) -> Result<Vec<Measurement>, Invalid> {
    if ms.len() > limits.max_batch {
        return Err(Invalid::BatchTooLarge {
            got: ms.len(),
            max: limits.max_batch,
        });
    }
    let mut out: Vec<Measurement> = Vec::with_capacity(ms.len());
    let mut violations = Vec::new();
    let mut prev_seq = 0u64;
    for (i, m) in ms.into_iter().enumerate() {
        let seq = m.seq;
        if seq == 0 {
            violations.push(Violation::new(
                format!("measurements[{i}].seq"),
                "must be at least 1",
            ));
        } else if seq > MAX_SEQ {
            violations.push(Violation::new(
                format!("measurements[{i}].seq"),
                format!("{seq} is above {MAX_SEQ}"),
            ));
        } else if seq <= prev_seq {
            violations.push(Violation::new(
                format!("measurements[{i}].seq"),
                format!("{seq} does not follow {prev_seq} (must strictly increase)"),
            ));
        }
        prev_seq = prev_seq.max(seq);
        match measurement(i, m, now_ms, limits) {
            Ok(m) => out.push(m),
            Err(v) => violations.push(v),
        }
    }
    if !violations.is_empty() {
        return Err(Invalid::Measurements {
            violations,
            server_time_ms: now_ms,
        });
    }
    Ok(out)
}

/// Settings the collector hands to agents.
pub fn settings(push_interval_secs: u32, max_batch: usize) -> pb::AgentSettings {
    pb::AgentSettings {
        push_interval_secs,
        max_batch: u32::try_from(max_batch).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000_000;
    const LIMITS: PushLimits = PushLimits {
        max_batch: 10,
        max_future_ms: 300_000,
        max_past_ms: 30 * 86_400_000,
    };

    fn good() -> pb::Measurement {
        pb::Measurement {
            seq: 1,
            start_ms: NOW - 1000,
            target_name: "gateway".into(),
            target_address: "192.0.2.1".into(),
            method: pb::Method::Icmp as i32,
            sent: 5,
            received: 4,
            rtt_min_ms: Some(1.0),
            rtt_avg_ms: Some(2.0),
            rtt_max_ms: Some(3.0),
            jitter_ms: Some(0.5),
            ..Default::default()
        }
    }

    fn field_of(m: pb::Measurement) -> String {
        match measurement(0, m, NOW, &LIMITS) {
            Err(v) => v.field,
            Ok(m) => panic!("expected a field error, got {m:?}"),
        }
    }

    #[test]
    fn good_measurement_converts() {
        let m = measurement(0, good(), NOW, &LIMITS).unwrap();
        assert_eq!(m.method, Method::Icmp);
        assert_eq!(m.rtt.unwrap().avg_ms, 2.0);
    }

    #[test]
    fn total_loss_has_no_rtt() {
        let mut m = good();
        m.received = 0;
        m.errors = 5;
        m.rtt_min_ms = None;
        m.rtt_avg_ms = None;
        m.rtt_max_ms = None;
        m.jitter_ms = None;
        let m = measurement(0, m, NOW, &LIMITS).unwrap();
        assert_eq!((m.rtt, m.errors), (None, 5));
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut m = good();
        m.rtt_avg_ms = Some(f64::NAN);
        assert_eq!(field_of(m), "measurements[0].rtt_avg_ms");
        let mut m = good();
        m.rtt_min_ms = Some(-1.0);
        assert_eq!(field_of(m), "measurements[0].rtt_min_ms");
        let mut m = good();
        m.rtt_max_ms = Some(1.5);
        assert_eq!(field_of(m), "measurements[0].rtt_avg_ms");
        let mut m = good();
        m.received = 6;
        assert_eq!(field_of(m), "measurements[0].received");
        let mut m = good();
        m.errors = 2;
        assert_eq!(
            field_of(m),
            "measurements[0].received",
            "4 answers + 2 errors > 5"
        );
        let mut m = good();
        m.start_ms = NOW + 300_001;
        assert_eq!(field_of(m), "measurements[0].start_ms");
        let mut m = good();
        m.method = 7;
        assert_eq!(field_of(m), "measurements[0].method");
        let mut m = good();
        m.rtt_max_ms = None;
        assert_eq!(field_of(m), "measurements[0].rtt_max_ms");
        let mut m = good();
        m.jitter_ms = Some(f64::INFINITY);
        assert_eq!(field_of(m), "measurements[0].jitter_ms");
    }

    #[test]
    fn start_exactly_at_the_limits_is_accepted_and_1970_is_not() {
        let mut m = good();
        m.start_ms = NOW + 300_000;
        assert!(measurement(0, m, NOW, &LIMITS).is_ok());
        let mut m = good();
        m.start_ms = NOW - LIMITS.max_past_ms;
        assert!(measurement(0, m, NOW, &LIMITS).is_ok());
        for start in [0, 1, 86_400_000] {
            let mut m = good();
            m.start_ms = start;
            let v = measurement(0, m, NOW, &LIMITS).unwrap_err();
            assert!(v.clock, "{start}: {v:?}");
        }
    }

    #[test]
    fn a_refused_push_names_every_measurement_in_one_status() {
        let ms: Vec<_> = (1..=6)
            .map(|s| pb::Measurement {
                seq: s,
                start_ms: if s % 2 == 0 { 5_000 } else { NOW - 1000 },
                ..good()
            })
            .collect();
        let e = measurements(ms, NOW, &LIMITS).unwrap_err();
        assert_eq!(e.reason(), "clock_out_of_range");
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let fields: Vec<String> = status
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "measurements[1].start_ms",
                "measurements[3].start_ms",
                "measurements[5].start_ms"
            ]
        );
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, CLOCK_OUT_OF_RANGE);
        assert_eq!(info.metadata["server_time_ms"], NOW.to_string());
        assert!(
            status.message().contains("(and 2 more)"),
            "{}",
            status.message()
        );

        let mut bad = good();
        bad.rtt_avg_ms = Some(f64::NAN);
        let status = tonic::Status::from(measurements(vec![bad], NOW, &LIMITS).unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.get_details_error_info().is_none());
        assert_eq!(
            status.get_details_bad_request().unwrap().field_violations[0].field,
            "measurements[0].rtt_avg_ms"
        );
    }

    #[test]
    fn batch_limit_and_order() {
        let many: Vec<_> = (1..=11)
            .map(|s| pb::Measurement { seq: s, ..good() })
            .collect();
        assert_eq!(
            measurements(many, NOW, &LIMITS),
            Err(Invalid::BatchTooLarge { got: 11, max: 10 })
        );
        let unordered = vec![
            pb::Measurement { seq: 5, ..good() },
            pb::Measurement { seq: 5, ..good() },
        ];
        match measurements(unordered, NOW, &LIMITS) {
            Err(Invalid::Measurements { violations, .. }) => {
                assert_eq!(violations.len(), 1);
                assert_eq!(violations[0].field, "measurements[1].seq");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_status_too_big_is_kept_as_far_as_it_fits() {
        let s = pb::AgentStatus {
            hostname: "h".repeat(300),
            interfaces: (0..200)
                .map(|i| pb::NetInterface {
                    name: format!("veth{i}"),
                    rx_bytes: 1,
                    tx_bytes: 2,
                })
                .collect(),
            primary_problem: "ICMP not allowed".into(),
            ..Default::default()
        };
        let (st, cut) = status(Some(s));
        assert_eq!(st.interfaces.len(), MAX_INTERFACES);
        assert_eq!(st.interfaces[0].name, "veth0");
        assert_eq!(st.hostname.len(), MAX_TEXT);
        assert_eq!(st.primary_problem, "ICMP not allowed");
        assert_eq!(cut, vec!["interfaces", "hostname"]);
    }
}
