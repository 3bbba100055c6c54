//! The edge between `tps.v1` wire types and domain types: every proto message an agent
//! sends is validated and converted here, and nowhere else.

use tps_proto::v1 as pb;

use crate::domain::{AgentStatus, Measurement, Method, NetInterface, Rtt};

/// Why a push was refused, naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Invalid {
    /// A field has a value the collector cannot accept (INVALID_ARGUMENT).
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
    /// More measurements than the collector takes in one push (RESOURCE_EXHAUSTED).
    #[error("measurements: {got} in one push, at most {max} are accepted; send smaller batches")]
    BatchTooLarge { got: usize, max: usize },
}

impl Invalid {
    fn field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Invalid::Field {
            field: field.into(),
            problem: problem.into(),
        }
    }
    /// Short label for the rejects-by-reason metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Field { .. } => "invalid_argument",
            Invalid::BatchTooLarge { .. } => "batch_too_large",
        }
    }
}

impl From<Invalid> for tonic::Status {
    fn from(e: Invalid) -> Self {
        match e {
            Invalid::Field { .. } => tonic::Status::invalid_argument(e.to_string()),
            Invalid::BatchTooLarge { .. } => tonic::Status::resource_exhausted(e.to_string()),
        }
    }
}

/// Limits a push is checked against.
#[derive(Debug, Clone, Copy)]
pub struct PushLimits {
    pub max_batch: usize,
    /// How far in the future (server clock) a measurement's start may lie.
    pub max_future_ms: i64,
}

const MAX_TEXT: usize = 256;

fn text(field: &str, s: String) -> Result<String, Invalid> {
    if s.len() > MAX_TEXT {
        return Err(Invalid::field(
            field,
            format!("longer than {MAX_TEXT} bytes"),
        ));
    }
    Ok(s)
}

/// Converts a push's status; an absent status is an empty one (an old or minimal agent).
pub fn status(s: Option<pb::AgentStatus>) -> Result<AgentStatus, Invalid> {
    let Some(s) = s else {
        return Ok(AgentStatus::default());
    };
    if s.interfaces.len() > 64 {
        return Err(Invalid::field(
            "status.interfaces",
            "more than 64 interfaces",
        ));
    }
    let interfaces = s
        .interfaces
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            Ok(NetInterface {
                name: text(&format!("status.interfaces[{i}].name"), n.name)?,
                rx_bytes: n.rx_bytes,
                tx_bytes: n.tx_bytes,
            })
        })
        .collect::<Result<_, Invalid>>()?;
    Ok(AgentStatus {
        system_uptime_secs: s.system_uptime_secs,
        boot_time_ms: s.boot_time_ms,
        agent_uptime_secs: s.agent_uptime_secs,
        agent_version: text("status.agent_version", s.agent_version)?,
        hostname: text("status.hostname", s.hostname)?,
        os: text("status.os", s.os)?,
        interfaces,
        spool_depth: s.spool_depth,
        dropped: s.dropped,
        agent_time_ms: s.agent_time_ms,
        primary_target: text("status.primary_target", s.primary_target)?,
    })
}

fn rtt_value(field: String, v: f64) -> Result<f64, Invalid> {
    if v.is_nan() {
        return Err(Invalid::field(field, "is NaN"));
    }
    if !v.is_finite() {
        return Err(Invalid::field(field, "is infinite"));
    }
    if v < 0.0 {
        return Err(Invalid::field(field, format!("is negative ({v})")));
    }
    Ok(v)
}

/// Converts and validates one measurement; `i` is its index in the push, for messages.
pub fn measurement(
    i: usize,
    m: pb::Measurement,
    now_ms: i64,
    limits: &PushLimits,
) -> Result<Measurement, Invalid> {
    let f = |name: &str| format!("measurements[{i}].{name}");
    let method = match pb::Method::try_from(m.method) {
        Ok(pb::Method::Icmp) => Method::Icmp,
        Ok(pb::Method::Tcp) => Method::Tcp,
        _ => {
            return Err(Invalid::field(
                f("method"),
                format!("unknown method {}", m.method),
            ));
        }
    };
    if m.target_name.is_empty() {
        return Err(Invalid::field(f("target_name"), "is empty"));
    }
    if m.received > m.sent {
        return Err(Invalid::field(
            f("received"),
            format!("{} answers for {} probes sent", m.received, m.sent),
        ));
    }
    if m.start_ms <= 0 {
        return Err(Invalid::field(
            f("start_ms"),
            format!("{} is not a unix time", m.start_ms),
        ));
    }
    if m.start_ms > now_ms + limits.max_future_ms {
        return Err(Invalid::field(
            f("start_ms"),
            format!(
                "{} s in the future by the collector's clock (at most {} s allowed); check the agent's clock",
                (m.start_ms - now_ms) / 1000,
                limits.max_future_ms / 1000
            ),
        ));
    }
    let rtt = match (m.rtt_min_ms, m.rtt_avg_ms, m.rtt_max_ms) {
        (None, None, None) => {
            if m.received > 0 {
                return Err(Invalid::field(
                    f("rtt_avg_ms"),
                    "absent although probes were answered",
                ));
            }
            if m.jitter_ms.is_some() {
                return Err(Invalid::field(
                    f("jitter_ms"),
                    "present although nothing was answered",
                ));
            }
            None
        }
        (Some(min), Some(avg), Some(max)) => {
            if m.received == 0 {
                return Err(Invalid::field(
                    f("rtt_avg_ms"),
                    "present although nothing was answered",
                ));
            }
            let min = rtt_value(f("rtt_min_ms"), min)?;
            let avg = rtt_value(f("rtt_avg_ms"), avg)?;
            let max = rtt_value(f("rtt_max_ms"), max)?;
            if !(min <= avg && avg <= max) {
                return Err(Invalid::field(
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
            return Err(Invalid::field(
                f(missing),
                "absent while other RTT fields are present",
            ));
        }
    };
    Ok(Measurement {
        seq: m.seq,
        start_ms: m.start_ms,
        target_name: text(&f("target_name"), m.target_name)?,
        target_address: text(&f("target_address"), m.target_address)?,
        method,
        sent: m.sent,
        received: m.received,
        rtt,
    })
}

/// Converts and validates every measurement of a push; sequence numbers must increase.
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
    for (i, m) in ms.into_iter().enumerate() {
        let m = measurement(i, m, now_ms, limits)?;
        if let Some(prev) = out.last()
            && m.seq <= prev.seq
        {
            return Err(Invalid::field(
                format!("measurements[{i}].seq"),
                format!(
                    "{} does not follow {} (must strictly increase)",
                    m.seq, prev.seq
                ),
            ));
        }
        if m.seq == 0 {
            return Err(Invalid::field(
                format!("measurements[{i}].seq"),
                "must be at least 1",
            ));
        }
        out.push(m);
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
        }
    }

    fn field_of(m: pb::Measurement) -> String {
        match measurement(0, m, NOW, &LIMITS) {
            Err(Invalid::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
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
        m.rtt_min_ms = None;
        m.rtt_avg_ms = None;
        m.rtt_max_ms = None;
        m.jitter_ms = None;
        assert_eq!(measurement(0, m, NOW, &LIMITS).unwrap().rtt, None);
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
    fn start_exactly_at_the_future_limit_is_accepted() {
        let mut m = good();
        m.start_ms = NOW + 300_000;
        assert!(measurement(0, m, NOW, &LIMITS).is_ok());
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
            Err(Invalid::Field { field, .. }) => assert_eq!(field, "measurements[1].seq"),
            other => panic!("{other:?}"),
        }
    }
}
