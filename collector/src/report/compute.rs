//! Computes one week's [`Report`]: walks every station's status history (streamed in code
//! order, so memory grows with the stations, not the history), its agents' daily rollups
//! and, for the stations that need follow-up, their flags as they stood at the week's end.

use std::collections::{BTreeMap, HashMap};

use jiff::tz::TimeZone;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::week::{Week, rfc3339};
use super::{ReportError, SCHEMA};
use crate::hist::{self, Hist};
use crate::state::coverage::State;

/// What to report on.
#[derive(Debug, Clone)]
pub struct Options {
    pub week: Week,
    /// A dotted region code (`21`, `21.71`, `21.71.01`); everything when `None`.
    pub region: Option<String>,
    /// Availability (0–1) below which a station needs follow-up.
    pub threshold: f64,
    pub tz: TimeZone,
    /// The clock: a week still running is reported up to now.
    pub now_ms: i64,
}

/// A week's report; this is also the JSON format (schema [`SCHEMA`], see
/// `docs/REPORTS.md`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub week: Week,
    pub time_zone: String,
    /// First instant of the week (Monday 00:00 local), RFC 3339 and milliseconds.
    pub start: String,
    pub start_ms: i64,
    /// End of the week (next Monday 00:00 local), exclusive.
    pub end: String,
    pub end_ms: i64,
    /// What the figures cover: the end of the week, or when the report was made if the
    /// week was still running (then `complete` is false).
    pub until: String,
    pub until_ms: i64,
    pub complete: bool,
    pub made_at: String,
    pub made_at_ms: i64,
    pub region: Option<Named>,
    pub threshold_pct: f64,
    pub data: DataNote,
    /// The week's headline figures for the whole report.
    pub headline: Figures,
    /// The same figures for the week before.
    pub previous: Figures,
    /// `headline` minus `previous`.
    pub change: Change,
    pub provinces: Vec<Area>,
    pub regencies: Vec<Area>,
    pub districts: Vec<Area>,
    pub trend: Trend,
    pub distribution: Vec<Bin>,
    /// Stations that had an agent reporting and need follow-up (uncovered at the end of
    /// the week, or below the availability threshold).
    pub follow_up: Vec<FollowUp>,
    /// Stations whose agent never reported, up to the end of the week.
    pub never_had_agent: Vec<FollowUp>,
    pub stations: Vec<StationRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Named {
    pub code: String,
    pub name: String,
}

/// Where the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct DataNote {
    /// Status changes read (up to the end of the week, both weeks' history).
    pub status_changes: u64,
    /// The oldest status change stored: before it, stations count as no_agent.
    pub history_since: Option<String>,
    /// Probe rounds of primary targets in the week (from the daily rollups).
    pub rounds: u64,
}

/// Figures for a set of stations over a week.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// Registered stations that existed during the week.
    pub stations: u64,
    pub covered_end: u64,
    pub degraded_end: u64,
    pub offline_end: u64,
    pub no_agent_end: u64,
    pub uncovered_end: u64,
    /// Shares of `stations` at the end of the week, 0–1.
    pub covered_share_end: f64,
    pub uncovered_share_end: f64,
    /// Station-milliseconds observed (each station from the week's start or its
    /// registration, to the end) and of those, covered.
    pub observed_ms: i64,
    pub covered_ms: i64,
    /// `covered_ms / observed_ms`, 0–1; null when nothing was observed.
    pub availability: Option<f64>,
    /// Stations whose availability is below the threshold.
    pub below_threshold: u64,
    /// Offline episodes overlapping the week, and the longest (within the week).
    pub outages: u64,
    pub longest_outage_ms: i64,
    /// Percentiles over the week's rounds of the primary target (RTT to about 1 %).
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p95_ms: Option<f64>,
    pub loss_p50_pct: Option<f64>,
    pub loss_p95_pct: Option<f64>,
    pub rounds: u64,
}

/// Headline figures minus the previous week's (shares in percentage points).
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub stations: i64,
    pub covered_end: i64,
    pub uncovered_end: i64,
    pub covered_share_end_pp: f64,
    pub availability_pp: Option<f64>,
    pub below_threshold: i64,
    pub outages: i64,
    pub rtt_p50_ms: Option<f64>,
    pub loss_p50_pct: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Area {
    pub code: String,
    pub name: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// Daily uncovered share (time-weighted, 0–1) per regency; null for days not yet reached.
#[derive(Debug, Clone, Serialize)]
pub struct Trend {
    /// The seven dates, `YYYY-MM-DD` local.
    pub days: Vec<String>,
    pub regencies: Vec<TrendLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrendLine {
    pub code: String,
    pub name: String,
    pub uncovered_share: Vec<Option<f64>>,
}

/// Stations by availability, `from_pct <= a < to_pct` (the last bin is exactly 100 %).
#[derive(Debug, Clone, Serialize)]
pub struct Bin {
    pub from_pct: f64,
    pub to_pct: f64,
    pub stations: u64,
}

/// The bins' lower edges; the last holds exactly 100 %.
const BINS: [f64; 7] = [0.0, 50.0, 80.0, 90.0, 95.0, 99.0, 100.0];

#[derive(Debug, Clone, Serialize)]
pub struct FollowUp {
    pub tps_code: String,
    pub village: String,
    pub district: String,
    pub regency: String,
    pub state: &'static str,
    /// The state's reason, or `low_availability` for a station covered at the end.
    pub reason: String,
    pub cause: Option<String>,
    pub availability: Option<f64>,
    /// The newest round received from the station's agents by the end of the week.
    pub last_seen: Option<String>,
    pub flag: Option<FlagAtEnd>,
}

/// A station's newest flag as it stood at the end of the week.
#[derive(Debug, Clone, Serialize)]
pub struct FlagAtEnd {
    pub id: i64,
    pub status: String,
    pub assignee: Option<String>,
    pub note: Option<String>,
}

/// One station's week (the CSV row).
#[derive(Debug, Clone, Serialize)]
pub struct StationRow {
    pub tps_code: String,
    pub village: String,
    pub district: String,
    pub regency: String,
    pub province: String,
    pub state_end: &'static str,
    pub reason_end: String,
    pub cause: Option<String>,
    pub observed_ms: i64,
    pub covered_ms: i64,
    pub availability: Option<f64>,
    pub outages: u32,
    pub longest_outage_ms: i64,
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p95_ms: Option<f64>,
    pub loss_p50_pct: Option<f64>,
    pub loss_p95_pct: Option<f64>,
    pub rounds: u64,
    pub had_agent: bool,
    pub exempt: Option<String>,
    pub follow_up: bool,
}

/// One stored status change of a station.
#[derive(Debug, Clone)]
pub(crate) struct Change0 {
    pub at_ms: i64,
    pub state: State,
    pub reason: Option<String>,
    pub cause: Option<String>,
}

/// A station's state over one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Window {
    pub observed_ms: i64,
    pub covered_ms: i64,
    pub day_observed: [i64; 7],
    pub day_covered: [i64; 7],
    pub outages: u32,
    pub longest_outage_ms: i64,
    pub end_state: Option<State>,
    pub end_reason: String,
    pub cause: Option<String>,
    /// Some agent of the station reported before the window's end.
    pub had_report: bool,
}

/// Folds a station's changes (sorted by time) over `[from, to)`; the station exists from
/// `created_ms`. Before its first change a station is `no_agent`.
pub(crate) fn fold(
    changes: &[Change0],
    created_ms: i64,
    from: i64,
    to: i64,
    days: Option<&[i64; 8]>,
) -> Window {
    let mut w = Window {
        end_reason: "no_agent".into(),
        ..Window::default()
    };
    let start = from.max(created_ms);
    let mut state = State::NoAgent;
    let mut i = 0;
    let apply = |w: &mut Window, c: &Change0, state: &mut State| {
        *state = c.state;
        w.end_reason = c.reason.clone().unwrap_or_else(|| c.state.as_str().into());
        if c.cause.is_some() {
            w.cause.clone_from(&c.cause);
        }
        if c.state != State::NoAgent {
            w.had_report = true;
        }
    };
    while i < changes.len() && changes[i].at_ms <= start {
        apply(&mut w, &changes[i], &mut state);
        i += 1;
    }
    if start >= to {
        while i < changes.len() && changes[i].at_ms < to {
            apply(&mut w, &changes[i], &mut state);
            i += 1;
        }
        return w;
    }
    w.end_state = Some(state);
    let mut t = start;
    let mut episode = 0i64;
    loop {
        let next = match changes.get(i) {
            Some(c) if c.at_ms < to => c.at_ms,
            _ => to,
        };
        let len = next - t;
        w.observed_ms += len;
        if state == State::Covered {
            w.covered_ms += len;
        }
        if let Some(d) = days {
            for k in 0..7 {
                let overlap = next.min(d[k + 1]) - t.max(d[k]);
                if overlap > 0 {
                    w.day_observed[k] += overlap;
                    if state == State::Covered {
                        w.day_covered[k] += overlap;
                    }
                }
            }
        }
        if state == State::Offline {
            episode += len;
        }
        if next >= to {
            break;
        }
        let was = state;
        apply(&mut w, &changes[i], &mut state);
        i += 1;
        t = next;
        if was == State::Offline && state != State::Offline {
            end_episode(&mut w, &mut episode);
        }
    }
    end_episode(&mut w, &mut episode);
    w.end_state = Some(state);
    w
}

fn end_episode(w: &mut Window, episode: &mut i64) {
    if *episode > 0 {
        w.outages += 1;
        w.longest_outage_ms = w.longest_outage_ms.max(*episode);
    }
    *episode = 0;
}

/// Running totals for a set of stations.
#[derive(Debug, Default)]
struct Acc {
    stations: u64,
    end: [u64; 4],
    observed_ms: i64,
    covered_ms: i64,
    below: u64,
    outages: u64,
    longest_ms: i64,
    rtt: Hist,
    loss: Hist,
}

impl Acc {
    fn add(&mut self, w: &Window, below: bool, rtt: &Hist, loss: &Hist) {
        let Some(s) = w.end_state else { return };
        self.stations += 1;
        self.end[s.index()] += 1;
        self.observed_ms += w.observed_ms;
        self.covered_ms += w.covered_ms;
        self.below += u64::from(below);
        self.outages += u64::from(w.outages);
        self.longest_ms = self.longest_ms.max(w.longest_outage_ms);
        self.rtt.merge(rtt);
        self.loss.merge(loss);
    }

    fn figures(&self) -> Figures {
        let n = self.stations;
        let share = |k: u64| if n == 0 { 0.0 } else { k as f64 / n as f64 };
        let uncovered = n - self.end[State::Covered.index()];
        let (rtt_p50_ms, rtt_p95_ms, loss_p50_pct, loss_p95_pct) =
            percentiles(&self.rtt, &self.loss);
        Figures {
            stations: n,
            covered_end: self.end[State::Covered.index()],
            degraded_end: self.end[State::Degraded.index()],
            offline_end: self.end[State::Offline.index()],
            no_agent_end: self.end[State::NoAgent.index()],
            uncovered_end: uncovered,
            covered_share_end: share(n - uncovered),
            uncovered_share_end: share(uncovered),
            observed_ms: self.observed_ms,
            covered_ms: self.covered_ms,
            availability: availability(self.covered_ms, self.observed_ms),
            below_threshold: self.below,
            outages: self.outages,
            longest_outage_ms: self.longest_ms,
            rtt_p50_ms,
            rtt_p95_ms,
            loss_p50_pct,
            loss_p95_pct,
            rounds: self.loss.count(),
        }
    }
}

fn availability(covered: i64, observed: i64) -> Option<f64> {
    (observed > 0).then(|| covered as f64 / observed as f64)
}

type Pcts = (Option<f64>, Option<f64>, Option<f64>, Option<f64>);

fn percentiles(rtt: &Hist, loss: &Hist) -> Pcts {
    let r = |q| {
        rtt.quantile_bucket(q)
            .map(|b| (hist::rtt_of_bucket(b) * 10.0).round() / 10.0)
    };
    let l = |q| loss.quantile_bucket(q).map(hist::loss_pct_of_bucket);
    (r(0.5), r(0.95), l(0.5), l(0.95))
}

/// Rows in `[lo, hi)` of a text key for a dotted region code (`21.71` → `2171`..`2172`).
fn code_range(region: Option<&str>) -> (String, String) {
    let lo: String = region
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let hi = match lo.as_bytes().last() {
        None => "~".to_string(),
        Some(&b) => format!("{}{}", &lo[..lo.len() - 1], char::from(b + 1)),
    };
    (lo, hi)
}

struct StationInfo {
    code: String,
    village: String,
    district: String,
    regency: String,
    province: String,
    created_ms: i64,
}

/// Computes the report.
pub fn make(conn: &Connection, o: &Options) -> Result<Report, ReportError> {
    let days = o.week.day_starts(&o.tz);
    let (start, end) = (days[0], days[7]);
    if start > o.now_ms {
        return Err(ReportError::NotStarted {
            week: o.week,
            starts: rfc3339(start, &o.tz),
        });
    }
    let until = end.min(o.now_ms);
    let (prev_start, _) = o.week.previous().bounds(&o.tz);
    let (lo, hi) = code_range(o.region.as_deref());

    let registered: i64 = conn.query_row(
        "SELECT count(*) FROM stations WHERE tps_code >= ?1 AND tps_code < ?2",
        params![lo, hi],
        |r| r.get(0),
    )?;
    if registered == 0
        && let Some(r) = &o.region
    {
        return Err(ReportError::UnknownRegion(r.clone()));
    }

    let mut names: HashMap<String, String> = HashMap::new();
    let stations: Vec<StationInfo> = {
        let mut st = conn.prepare(
            "SELECT tps_code, village, district, regency, province, created_ms FROM stations
             WHERE tps_code >= ?1 AND tps_code < ?2 AND created_ms < ?3 ORDER BY tps_code",
        )?;
        let rows = st.query_map(params![lo, hi, until], |r| {
            Ok(StationInfo {
                code: r.get(0)?,
                village: r.get(1)?,
                district: r.get(2)?,
                regency: r.get(3)?,
                province: r.get(4)?,
                created_ms: r.get(5)?,
            })
        })?;
        rows.collect::<Result<_, _>>()?
    };
    for s in &stations {
        let c = &s.code;
        names
            .entry(c[..2].to_string())
            .or_insert_with(|| s.province.clone());
        names
            .entry(format!("{}.{}", &c[..2], &c[2..4]))
            .or_insert_with(|| s.regency.clone());
        names
            .entry(format!("{}.{}.{}", &c[..2], &c[2..4], &c[4..6]))
            .or_insert_with(|| s.district.clone());
    }

    let exempt: HashMap<String, String> = {
        let mut st = conn.prepare(
            "SELECT tps_code, exempt_reason FROM station_overrides WHERE exempt_reason IS NOT NULL
             AND tps_code >= ?1 AND tps_code < ?2",
        )?;
        let rows = st.query_map(params![lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut agents: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    {
        let mut st = conn.prepare(
            "SELECT agent_id, tps_code, coalesce(json_extract(status_json, '$.primary_target'), '')
             FROM agents WHERE enrolled_ms < ?3 AND tps_code >= ?1 AND tps_code < ?2",
        )?;
        let mut rows = st.query(params![lo, hi, until])?;
        while let Some(r) = rows.next()? {
            agents
                .entry(r.get(1)?)
                .or_default()
                .push((r.get(0)?, r.get(2)?));
        }
    }

    let mut changes_stmt = conn.prepare(
        "SELECT tps_code, at_ms, state, reason, cause FROM status_changes
         WHERE tps_code >= ?1 AND tps_code < ?2 AND at_ms < ?3 ORDER BY tps_code, at_ms, id",
    )?;
    let mut changes = changes_stmt.query(params![lo, hi, until])?;
    let mut pending: Option<(String, Change0)> = None;
    let mut n_changes = 0u64;
    let mut rollups = conn.prepare_cached(
        "SELECT day_ms, target_name, rounds, rtt_hist, loss_hist FROM daily_rollups
         WHERE agent_id = ?1 AND day_ms >= ?2 AND day_ms < ?3",
    )?;

    let mut total = Acc::default();
    let mut total_prev = Acc::default();
    let mut areas: [BTreeMap<String, Acc>; 3] = Default::default();
    let mut regency_days: BTreeMap<String, ([i64; 7], [i64; 7])> = BTreeMap::new();
    let mut bins = [0u64; BINS.len()];
    let mut rows: Vec<StationRow> = Vec::with_capacity(stations.len());
    let mut follow: Vec<usize> = Vec::new();
    let mut mine: Vec<Change0> = Vec::new();

    let n_stations = stations.len();
    // Consumed: each station's names move into its row.
    for (done, s) in stations.into_iter().enumerate() {
        if done > 0 && done % 100_000 == 0 {
            tracing::info!(done, total = n_stations, "report: stations computed");
        }
        // Merge-join the change stream (ordered by code) with the stations.
        mine.clear();
        loop {
            if pending.is_none() {
                pending = match changes.next()? {
                    Some(r) => {
                        n_changes += 1;
                        let state: String = r.get(2)?;
                        Some((
                            r.get(0)?,
                            Change0 {
                                at_ms: r.get(1)?,
                                state: State::parse(&state).unwrap_or(State::NoAgent),
                                reason: r.get(3)?,
                                cause: r.get(4)?,
                            },
                        ))
                    }
                    None => None,
                };
            }
            match &pending {
                Some((code, _)) if code.as_str() < s.code.as_str() => pending = None,
                Some((code, _)) if *code == s.code => {
                    if let Some((_, c)) = pending.take() {
                        mine.push(c);
                    }
                }
                _ => break,
            }
        }
        let w = fold(&mine, s.created_ms, start, until, Some(&days));
        let wp = fold(&mine, s.created_ms, prev_start, start, None);

        let (mut rtt, mut loss, mut rtt_p, mut loss_p) = (
            Hist::default(),
            Hist::default(),
            Hist::default(),
            Hist::default(),
        );
        for (agent, primary) in agents.get(&s.code).map(Vec::as_slice).unwrap_or(&[]) {
            let mut rs: Vec<(i64, String, Vec<u8>, Vec<u8>)> = rollups
                .query_map(params![agent, prev_start, until], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<Result<_, _>>()?;
            let target = if primary.is_empty() {
                rs.iter().map(|r| r.1.clone()).min().unwrap_or_default()
            } else {
                primary.clone()
            };
            for (day, _, r, l) in rs.drain(..).filter(|r| r.1 == target) {
                let (rh, lh) = if day >= start {
                    (&mut rtt, &mut loss)
                } else {
                    (&mut rtt_p, &mut loss_p)
                };
                rh.merge_encoded(&r);
                lh.merge_encoded(&l);
            }
        }

        let a = availability(w.covered_ms, w.observed_ms);
        let below = a.is_some_and(|a| a < o.threshold);
        let ap = availability(wp.covered_ms, wp.observed_ms);
        let below_p = ap.is_some_and(|a| a < o.threshold);
        total.add(&w, below, &rtt, &loss);
        total_prev.add(&wp, below_p, &rtt_p, &loss_p);
        let Some(end_state) = w.end_state else {
            continue;
        };
        let c = &s.code;
        let keys = [
            c[..2].to_string(),
            format!("{}.{}", &c[..2], &c[2..4]),
            format!("{}.{}.{}", &c[..2], &c[2..4], &c[4..6]),
        ];
        for (level, key) in keys.iter().enumerate() {
            areas[level]
                .entry(key.clone())
                .or_default()
                .add(&w, below, &rtt, &loss);
        }
        let rd = regency_days.entry(keys[1].clone()).or_default();
        for k in 0..7 {
            rd.0[k] += w.day_observed[k];
            rd.1[k] += w.day_covered[k];
        }
        if let Some(a) = a {
            let pct = a * 100.0;
            let bin = BINS.iter().rposition(|&lo| pct >= lo).unwrap_or(0);
            bins[bin] += 1;
        }
        let ex = exempt.get(&s.code).cloned();
        let needs = ex.is_none() && (end_state != State::Covered || below);
        let (rtt_p50_ms, rtt_p95_ms, loss_p50_pct, loss_p95_pct) = percentiles(&rtt, &loss);
        if needs {
            follow.push(rows.len());
        }
        rows.push(StationRow {
            tps_code: s.code,
            village: s.village,
            district: s.district,
            regency: s.regency,
            province: s.province,
            state_end: end_state.as_str(),
            reason_end: w.end_reason.clone(),
            cause: w.cause.clone(),
            observed_ms: w.observed_ms,
            covered_ms: w.covered_ms,
            availability: a,
            outages: w.outages,
            longest_outage_ms: w.longest_outage_ms,
            rtt_p50_ms,
            rtt_p95_ms,
            loss_p50_pct,
            loss_p95_pct,
            rounds: loss.count(),
            had_agent: w.had_report,
            exempt: ex,
            follow_up: needs,
        });
    }
    drop(changes);

    let mut follow_up = Vec::new();
    let mut never_had_agent = Vec::new();
    for i in follow {
        let r = &rows[i];
        let agent_ids: Vec<i64> = agents
            .get(&r.tps_code)
            .map(|v| v.iter().map(|a| a.0).collect())
            .unwrap_or_default();
        let f = FollowUp {
            tps_code: r.tps_code.clone(),
            village: r.village.clone(),
            district: r.district.clone(),
            regency: r.regency.clone(),
            state: r.state_end,
            reason: if r.state_end == State::Covered.as_str() {
                "low_availability".into()
            } else {
                r.reason_end.clone()
            },
            cause: r.cause.clone(),
            availability: r.availability,
            last_seen: last_seen(conn, &agent_ids, until)?.map(|t| rfc3339(t, &o.tz)),
            flag: flag_at(conn, &r.tps_code, until)?,
        };
        if r.had_agent {
            follow_up.push(f);
        } else {
            never_had_agent.push(f);
        }
    }

    let headline = total.figures();
    let previous = total_prev.figures();
    let change = change(&headline, &previous);
    let area_list = |m: &BTreeMap<String, Acc>| -> Vec<Area> {
        m.iter()
            .map(|(code, acc)| Area {
                code: code.clone(),
                name: names.get(code).cloned().unwrap_or_default(),
                figures: acc.figures(),
            })
            .collect()
    };
    let [provinces, regencies, districts] = [&areas[0], &areas[1], &areas[2]].map(area_list);
    let trend = Trend {
        days: days[..7]
            .iter()
            .map(|&d| rfc3339(d, &o.tz)[..10].to_string())
            .collect(),
        regencies: regency_days
            .iter()
            .map(|(code, (obs, cov))| TrendLine {
                code: code.clone(),
                name: names.get(code).cloned().unwrap_or_default(),
                uncovered_share: (0..7)
                    .map(|k| availability(obs[k] - cov[k], obs[k]))
                    .collect(),
            })
            .collect(),
    };
    let distribution = BINS
        .iter()
        .enumerate()
        .map(|(i, &from)| Bin {
            from_pct: from,
            to_pct: BINS.get(i + 1).copied().unwrap_or(100.0),
            stations: bins[i],
        })
        .collect();
    let history_since: Option<i64> =
        conn.query_row("SELECT min(at_ms) FROM status_changes", [], |r| r.get(0))?;
    let region = o.region.as_ref().map(|code| Named {
        code: code.clone(),
        name: names.get(code).cloned().unwrap_or_default(),
    });
    Ok(Report {
        schema: SCHEMA,
        week: o.week,
        time_zone: o.tz.iana_name().unwrap_or("UTC").to_string(),
        start: rfc3339(start, &o.tz),
        start_ms: start,
        end: rfc3339(end, &o.tz),
        end_ms: end,
        until: rfc3339(until, &o.tz),
        until_ms: until,
        complete: until == end,
        made_at: rfc3339(o.now_ms, &o.tz),
        made_at_ms: o.now_ms,
        region,
        threshold_pct: o.threshold * 100.0,
        data: DataNote {
            status_changes: n_changes,
            history_since: history_since.map(|t| rfc3339(t, &o.tz)),
            rounds: headline.rounds,
        },
        headline,
        previous,
        change,
        provinces,
        regencies,
        districts,
        trend,
        distribution,
        follow_up,
        never_had_agent,
        stations: rows,
    })
}

fn change(now: &Figures, before: &Figures) -> Change {
    let d = |a: u64, b: u64| a as i64 - b as i64;
    let opt = |a: Option<f64>, b: Option<f64>, k: f64| a.zip(b).map(|(a, b)| (a - b) * k);
    Change {
        stations: d(now.stations, before.stations),
        covered_end: d(now.covered_end, before.covered_end),
        uncovered_end: d(now.uncovered_end, before.uncovered_end),
        covered_share_end_pp: (now.covered_share_end - before.covered_share_end) * 100.0,
        availability_pp: opt(now.availability, before.availability, 100.0),
        below_threshold: d(now.below_threshold, before.below_threshold),
        outages: d(now.outages, before.outages),
        rtt_p50_ms: opt(now.rtt_p50_ms, before.rtt_p50_ms, 1.0),
        loss_p50_pct: opt(now.loss_p50_pct, before.loss_p50_pct, 1.0),
    }
}

/// The newest round received from any of `agents` before `until`.
fn last_seen(conn: &Connection, agents: &[i64], until: i64) -> Result<Option<i64>, ReportError> {
    let mut best = None;
    for a in agents {
        best = best.max(crate::store::compact::last_received_before(
            conn, *a, until,
        )?);
    }
    Ok(best)
}

/// A station's newest flag opened before `until`, replayed from its trail up to then.
fn flag_at(conn: &Connection, tps: &str, until: i64) -> Result<Option<FlagAtEnd>, ReportError> {
    let id: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM flags WHERE tps_code = ?1 AND opened_ms < ?2 ORDER BY opened_ms DESC, id DESC LIMIT 1",
        )?
        .query_row(params![tps, until], |r| r.get(0))
        .optional()?;
    let Some(id) = id else { return Ok(None) };
    let mut flag = FlagAtEnd {
        id,
        status: "open".into(),
        assignee: None,
        note: None,
    };
    let mut st = conn.prepare_cached(
        "SELECT action, detail FROM flag_events WHERE flag_id = ?1 AND at_ms < ?2 ORDER BY id",
    )?;
    let mut rows = st.query(params![id, until])?;
    while let Some(r) = rows.next()? {
        let action: String = r.get(0)?;
        let detail: Option<String> = r.get(1)?;
        match action.as_str() {
            "opened" => flag.status = "open".into(),
            "acknowledged" => flag.status = "acknowledged".into(),
            "resolved" => flag.status = "resolved".into(),
            "closed" => flag.status = "closed".into(),
            "assigned" => flag.assignee = detail,
            "note" => flag.note = detail,
            _ => {}
        }
    }
    Ok(Some(flag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(at_ms: i64, state: State) -> Change0 {
        Change0 {
            at_ms,
            state,
            reason: None,
            cause: None,
        }
    }

    #[test]
    fn folding_counts_time_per_state_and_offline_episodes() {
        let h = 3_600_000;
        let days: [i64; 8] = std::array::from_fn(|k| k as i64 * 24 * h);
        // Covered from before the window, offline for 2 h on day 0, offline again at the end.
        let changes = [
            ch(-5 * h, State::Covered),
            ch(10 * h, State::Offline),
            ch(12 * h, State::Covered),
            ch(7 * 24 * h - h, State::Offline),
        ];
        let w = fold(&changes, -100 * h, 0, 7 * 24 * h, Some(&days));
        assert_eq!(w.observed_ms, 7 * 24 * h);
        assert_eq!(w.covered_ms, 7 * 24 * h - 3 * h);
        assert_eq!(w.day_covered[0], 22 * h);
        assert_eq!(w.day_covered[6], 23 * h);
        assert_eq!((w.outages, w.longest_outage_ms), (2, 2 * h));
        assert_eq!(w.end_state, Some(State::Offline));
        assert!(w.had_report);
        // A station registered after the window has no part in it.
        let late = fold(&changes, 8 * 24 * h, 0, 7 * 24 * h, None);
        assert_eq!((late.end_state, late.observed_ms), (None, 0));
    }

    #[test]
    fn region_codes_become_key_ranges() {
        assert_eq!(code_range(Some("21.71")), ("2171".into(), "2172".into()));
        assert_eq!(code_range(Some("19")), ("19".into(), "1:".into()));
        assert_eq!(code_range(None), (String::new(), "~".into()));
    }
}
