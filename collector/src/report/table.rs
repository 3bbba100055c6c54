//! The report as CSV: one row per station with the week's figures, for spreadsheets.

use std::collections::HashMap;

use super::ReportError;
use super::compute::{FollowUp, Report};

/// Exact seconds from milliseconds (`3600.250`).
fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, (ms % 1000).abs())
}

fn opt(x: Option<f64>, places: usize) -> String {
    x.map(|x| format!("{x:.places$}")).unwrap_or_default()
}

pub fn render_to(r: &Report, out: &mut dyn std::io::Write) -> Result<(), ReportError> {
    let err = |e: csv::Error| ReportError::Render(e.to_string());
    let flags: HashMap<&str, &FollowUp> = r
        .follow_up
        .iter()
        .chain(&r.never_had_agent)
        .map(|f| (f.tps_code.as_str(), f))
        .collect();
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "week",
        "tps_code",
        "province",
        "regency",
        "district",
        "village",
        "state_end",
        "reason_end",
        "cause",
        "observed_s",
        "covered_s",
        "availability_pct",
        "below_threshold",
        "outages",
        "longest_outage_s",
        "rtt_p50_ms",
        "rtt_p95_ms",
        "loss_p50_pct",
        "loss_p95_pct",
        "rounds",
        "had_agent",
        "exempt",
        "follow_up",
        "last_seen",
        "flag_status",
        "assignee",
        "latest_note",
    ])
    .map_err(err)?;
    let week = r.week.to_string();
    for s in &r.stations {
        let f = flags.get(s.tps_code.as_str());
        let flag = f.and_then(|f| f.flag.as_ref());
        let below = s.availability.is_some_and(|a| a * 100.0 < r.threshold_pct);
        w.write_record([
            week.as_str(),
            &s.tps_code,
            &s.province,
            &s.regency,
            &s.district,
            &s.village,
            s.state_end,
            &s.reason_end,
            s.cause.as_deref().unwrap_or(""),
            &secs(s.observed_ms),
            &secs(s.covered_ms),
            &opt(s.availability.map(|a| a * 100.0), 4),
            if below { "yes" } else { "no" },
            &s.outages.to_string(),
            &secs(s.longest_outage_ms),
            &opt(s.rtt_p50_ms, 1),
            &opt(s.rtt_p95_ms, 1),
            &opt(s.loss_p50_pct, 1),
            &opt(s.loss_p95_pct, 1),
            &s.rounds.to_string(),
            if s.had_agent { "yes" } else { "no" },
            s.exempt.as_deref().unwrap_or(""),
            if s.follow_up { "yes" } else { "no" },
            f.and_then(|f| f.last_seen.as_deref()).unwrap_or(""),
            flag.map(|f| f.status.as_str()).unwrap_or(""),
            flag.and_then(|f| f.assignee.as_deref()).unwrap_or(""),
            flag.and_then(|f| f.note.as_deref()).unwrap_or(""),
        ])
        .map_err(err)?;
    }
    w.flush().map_err(|e| ReportError::Render(e.to_string()))
}
