//! Domain types of the collector: what a station, an agent and a measurement are, free
//! of any wire or storage format.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// At most this many characters of bad input are repeated back in an error.
pub const SHOWN_CHARS: usize = 40;

/// Input as repeated in an error: cut to [`SHOWN_CHARS`], with its full length if cut.
pub fn shown(s: &str) -> String {
    let n = s.chars().count();
    if n <= SHOWN_CHARS {
        s.to_string()
    } else {
        let cut: String = s.chars().take(SHOWN_CHARS).collect();
        format!("{cut}… ({n} characters)")
    }
}

/// A 13-digit Sirekap TPS code: 10-digit Kemendagri village code + 3-digit TPS number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TpsCode([u8; 13]);

/// Why a string is not a TPS code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a TPS code is 13 digits (10-digit village code + 3-digit TPS number), got {0:?}")]
pub struct BadTpsCode(pub String);

impl TpsCode {
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
    /// The 10-digit village code without dots, e.g. `2171011001`.
    pub fn village_digits(&self) -> &str {
        &self.as_str()[..10]
    }
    /// The 3-digit TPS number within the village, e.g. `001`.
    pub fn number(&self) -> &str {
        &self.as_str()[10..]
    }
    /// Region code at a level, in the dotted Kemendagri form (`21`, `21.71`, `21.71.01`).
    pub fn region(&self, level: RegionLevel) -> String {
        let d = self.as_str();
        match level {
            RegionLevel::Province => d[..2].to_string(),
            RegionLevel::Regency => format!("{}.{}", &d[..2], &d[2..4]),
            RegionLevel::District => format!("{}.{}.{}", &d[..2], &d[2..4], &d[4..6]),
        }
    }
}

impl FromStr for TpsCode {
    type Err = BadTpsCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != 13 || !b.iter().all(u8::is_ascii_digit) {
            return Err(BadTpsCode(shown(s)));
        }
        let mut out = [0u8; 13];
        out.copy_from_slice(b);
        Ok(TpsCode(out))
    }
}

impl fmt::Display for TpsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TpsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TpsCode({})", self.as_str())
    }
}

impl Serialize for TpsCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why a string is not a region code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a region code like 21, 21.71 or 21.71.01")]
pub struct BadRegion(pub String);

/// Checks a region code: a province, regency or district in the dotted Kemendagri form
/// (`21`, `21.71`, `21.71.01`); returns it trimmed.
pub fn parse_region(s: &str) -> Result<String, BadRegion> {
    let s = s.trim();
    let ok = s.split('.').count() <= 3
        && s.split('.')
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(s.to_string())
    } else {
        Err(BadRegion(s.to_string()))
    }
}

/// Administrative levels a station is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionLevel {
    Province,
    Regency,
    District,
}

/// A registered polling station, as imported from the registry CSV.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Station {
    pub tps_code: TpsCode,
    /// Dotted village code as published, e.g. `21.71.01.1001`.
    pub village_code: String,
    pub village: String,
    pub district: String,
    pub regency: String,
    pub province: String,
    /// Absent for stations whose island is unknown; they are counted, not mapped.
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub voters: u32,
}

/// Collector-assigned agent identifier; never reused.
pub type AgentId = u64;

/// How a target was probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Icmp,
    Tcp,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Icmp => "icmp",
            Method::Tcp => "tcp",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "icmp" => Some(Method::Icmp),
            "tcp" => Some(Method::Tcp),
            _ => None,
        }
    }
}

/// Round-trip statistics of the answered probes of one round (all in milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rtt {
    pub min_ms: f64,
    pub avg_ms: f64,
    pub max_ms: f64,
    /// Absent when fewer than two probes were answered.
    pub jitter_ms: Option<f64>,
}

/// One probe round against one target, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    pub seq: u64,
    pub start_ms: i64,
    pub target_name: String,
    pub target_address: String,
    pub method: Method,
    pub sent: u32,
    pub received: u32,
    /// Probes answered by an ICMP error (unreachable, time exceeded): lost, counted apart.
    pub errors: u32,
    /// Absent exactly when nothing was received.
    pub rtt: Option<Rtt>,
}

impl Measurement {
    /// Share of probes lost, 0.0 to 1.0 (1.0 for an empty round).
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            1.0
        } else {
            // (sent - received) / sent: 1/5 is 0.2, where 1 - 4/5 would be 0.19999999999999996.
            f64::from(self.sent.saturating_sub(self.received)) / f64::from(self.sent)
        }
    }
}

/// Byte counters of one interface.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct NetInterface {
    pub name: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// What an agent says about itself and its device in every push.
#[derive(Debug, Clone, PartialEq, Default, Serialize, serde::Deserialize)]
pub struct AgentStatus {
    pub system_uptime_secs: u64,
    pub boot_time_ms: i64,
    pub agent_uptime_secs: u64,
    pub agent_version: String,
    pub hostname: String,
    pub os: String,
    pub interfaces: Vec<NetInterface>,
    pub spool_depth: u64,
    pub dropped: u64,
    pub agent_time_ms: i64,
    #[serde(default)]
    pub primary_target: String,
    /// Measurements not delivered, by reason (`spool_full`, `too_old`, `disk_full`, `refused`).
    #[serde(default)]
    pub dropped_by_reason: std::collections::BTreeMap<String, u64>,
    /// Why the agent's primary target is not being measured (empty when it is).
    #[serde(default)]
    pub primary_problem: String,
}

/// A validated push from an authenticated agent.
#[derive(Debug, Clone)]
pub struct Push {
    pub agent_id: AgentId,
    pub tps_code: TpsCode,
    pub received_ms: i64,
    /// Server clock minus agent clock at receipt, milliseconds (positive: agent is behind).
    pub clock_skew_ms: i64,
    pub status: AgentStatus,
    pub measurements: Vec<Measurement>,
}

/// The newest measurement per target name, in first-seen order: all that can change the
/// "latest per target" view.
pub fn newest_per_target(ms: &[Measurement]) -> Vec<&Measurement> {
    let mut newest: Vec<&Measurement> = Vec::new();
    for m in ms {
        match newest.iter_mut().find(|n| n.target_name == m.target_name) {
            Some(n) if n.start_ms <= m.start_ms => *n = m,
            Some(_) => {}
            None => newest.push(m),
        }
    }
    newest
}

/// Unix time now in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Start of `date` in `tz`, in milliseconds since the epoch.
pub fn midnight_ms(date: jiff::civil::Date, tz: &jiff::tz::TimeZone) -> i64 {
    tz.to_ambiguous_zoned(date.to_datetime(jiff::civil::Time::midnight()))
        .compatible()
        .map(|z| z.timestamp().as_millisecond())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tps_code_parses_and_splits() {
        let c: TpsCode = "2171011001007".parse().unwrap();
        assert_eq!(c.village_digits(), "2171011001");
        assert_eq!(c.number(), "007");
        assert_eq!(c.region(RegionLevel::Province), "21");
        assert_eq!(c.region(RegionLevel::Regency), "21.71");
        assert_eq!(c.region(RegionLevel::District), "21.71.01");
        assert_eq!(parse_region(" 21.71 "), Ok("21.71".to_string()));
        for bad in ["2171", "21.7", "21.71.01.1001", "ab", ""] {
            assert!(parse_region(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tps_code_rejects_wrong_shapes() {
        for bad in [
            "",
            "217101100100",
            "21710110010070",
            "21710110010a7",
            "2171011001 07",
        ] {
            assert_eq!(
                bad.parse::<TpsCode>(),
                Err(BadTpsCode(bad.to_string())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn loss_of_rounds() {
        let mut m = Measurement {
            seq: 1,
            start_ms: 0,
            target_name: "gw".into(),
            target_address: "10.0.0.1".into(),
            method: Method::Icmp,
            sent: 5,
            received: 4,
            errors: 0,
            rtt: None,
        };
        assert!((m.loss() - 0.2).abs() < 1e-12);
        m.sent = 0;
        m.received = 0;
        assert_eq!(m.loss(), 1.0);
    }
}
