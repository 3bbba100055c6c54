//! The planner: in one writer transaction, takes new flag events off the log onto the
//! routes' pending lists, adds due reminders and escalations, and turns every group whose
//! window has passed into one outbox message per receiver — a province summary instead
//! when many groups of one province are ready at once (storm control).

use std::collections::BTreeMap;

use rusqlite::Transaction;

use super::config::{NotifyConfig, Route};
use super::message::{CARRIED, Counts, Item, Kind, Notification, Part};
use crate::domain::{RegionLevel, TpsCode};
use crate::state::coverage::Reason;
use crate::store::{self, StoreError, notify as db};

/// Events read per step.
pub const EVENTS_PER_STEP: usize = 20_000;

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub events: usize,
    /// Messages put in the outbox (one per receiver).
    pub messages: usize,
}

fn group_key(tps: &str, level: RegionLevel) -> String {
    match tps.parse::<TpsCode>() {
        Ok(t) => t.region(level),
        Err(_) => String::new(),
    }
}

/// One planning step at `now_ms`, inside the caller's transaction. Reminders and
/// escalations (hours apart) are looked for only when `timers` is set: their query reads
/// every told flag of a route, so the planner asks for it once a minute, not every step.
pub fn step(
    tx: &Transaction<'_>,
    cfg: &NotifyConfig,
    now_ms: i64,
    timers: bool,
) -> Result<Planned, StoreError> {
    let mut out = Planned::default();
    // 1. New events onto the pending lists.
    let after = store::sink_cursor(tx, db::CURSOR)?;
    let (events, last) = db::events_after(tx, after, EVENTS_PER_STEP)?;
    out.events = events.len();
    for e in &events {
        match e.action.as_str() {
            "opened" => {
                let reason = Reason::parse(&e.reason).unwrap_or(Reason::Offline);
                for r in cfg.routes.iter().filter(|r| r.matches(&e.tps_code, reason)) {
                    let g = group_key(&e.tps_code, r.group_by);
                    db::add_pending(tx, &r.name, &g, Kind::Firing.as_str(), e.flag_id, e.at_ms)?;
                }
            }
            "acknowledged" => db::acknowledged(tx, e.flag_id)?,
            "closed" | "resolved" => {
                for name in db::ended(tx, e.flag_id)? {
                    if let Some(r) = cfg.route(&name).filter(|r| r.send_resolved) {
                        let g = group_key(&e.tps_code, r.group_by);
                        db::add_pending(
                            tx,
                            &r.name,
                            &g,
                            Kind::Resolved.as_str(),
                            e.flag_id,
                            e.at_ms,
                        )?;
                    }
                }
            }
            _ => {}
        }
    }
    if last != after {
        store::set_sink_cursor(tx, db::CURSOR, last)?;
    }
    // 2. Reminders and escalations.
    for r in cfg.routes.iter().filter(|_| timers) {
        if let Some(every) = r.repeat {
            for (flag, tps) in
                db::due_reminders(tx, &r.name, now_ms - every.as_millis() as i64, now_ms)?
            {
                let g = group_key(&tps, r.group_by);
                db::add_pending(tx, &r.name, &g, Kind::Reminder.as_str(), flag, now_ms)?;
            }
        }
        if let Some((after, to)) = &r.escalate
            && let Some(target) = cfg.route(to)
        {
            for (flag, tps) in db::due_escalations(tx, &r.name, now_ms - after.as_millis() as i64)?
            {
                let g = group_key(&tps, target.group_by);
                db::add_pending(
                    tx,
                    &target.name,
                    &g,
                    Kind::Escalation.as_str(),
                    flag,
                    now_ms,
                )?;
            }
        }
    }
    // 3. Ready groups into the outbox.
    for r in &cfg.routes {
        if r.quiet.as_ref().is_some_and(|q| q.contains(now_ms)) {
            continue;
        }
        out.messages += flush_route(tx, cfg, r, now_ms)?;
    }
    Ok(out)
}

/// At start: every route learns of the open flags it has not been told of — a route or a
/// team added mid-campaign hears what is already open, through its usual group window.
/// Returns how many flags were put on pending lists.
pub fn catch_up_routes(
    tx: &Transaction<'_>,
    cfg: &NotifyConfig,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let mut n = 0;
    for r in &cfg.routes {
        let prefix: String = r.region.chars().filter(|c| *c != '.').collect();
        for (flag, tps, reason) in db::untold_open_flags(tx, &r.name, &prefix)? {
            let reason = Reason::parse(&reason).unwrap_or(Reason::Offline);
            if r.matches(&tps, reason) {
                let g = group_key(&tps, r.group_by);
                db::add_pending(tx, &r.name, &g, Kind::Firing.as_str(), flag, now_ms)?;
                n += 1;
            }
        }
    }
    Ok(n)
}

fn ready(g: &db::PendingGroup, r: &Route, now_ms: i64) -> bool {
    now_ms >= g.first_ms + r.group_wait.as_millis() as i64
        && g.last_sent_ms
            .is_none_or(|s| now_ms >= s + r.group_interval.as_millis() as i64)
}

fn flush_route(
    tx: &Transaction<'_>,
    cfg: &NotifyConfig,
    r: &Route,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let groups: Vec<db::PendingGroup> = db::pending_groups(tx, &r.name)?
        .into_iter()
        .filter(|g| ready(g, r, now_ms))
        .collect();
    if groups.is_empty() {
        return Ok(0);
    }
    // Ready groups by province: many at once become one summary.
    let mut by_province: BTreeMap<String, Vec<db::PendingGroup>> = BTreeMap::new();
    for g in groups {
        by_province
            .entry(g.group_key.chars().take(2).collect())
            .or_default()
            .push(g);
    }
    let mut messages = 0;
    for (province, groups) in by_province {
        let mut notes = Vec::new();
        for g in &groups {
            let items = db::take_group(tx, &r.name, &g.group_key, now_ms)?;
            if !items.is_empty() {
                notes.push(group_note(r, &g.group_key, items, now_ms));
            }
        }
        // Told of, whatever form the message takes.
        for n in &notes {
            for it in &n.0.items_all {
                if matches!(it.kind, Kind::Firing | Kind::Escalation) {
                    db::told(tx, &r.name, it.flag_id, now_ms)?;
                }
            }
        }
        let planned: Vec<(Notification, i64)> = if notes.len() > r.summary_after {
            vec![summary(r, &province, notes, now_ms)]
        } else {
            notes
                .into_iter()
                .map(|(n, first)| (n.into_notification(), first))
                .collect()
        };
        for (n, first_ms) in planned {
            let body =
                serde_json::to_string(&n).map_err(|e| StoreError::CommitFailed(e.to_string()))?;
            for receiver in &r.receivers {
                if cfg.receiver(receiver).is_some() {
                    db::enqueue(
                        tx,
                        receiver,
                        &r.name,
                        &n.scope_code,
                        first_ms,
                        &body,
                        now_ms,
                    )?;
                    messages += 1;
                }
            }
        }
    }
    Ok(messages)
}

/// One group's content before it is cut to size.
struct GroupNote {
    route: String,
    code: String,
    name: String,
    province: String,
    counts: Counts,
    items_all: Vec<Item>,
    at_ms: i64,
}

impl GroupNote {
    fn into_notification(self) -> Notification {
        let mut items = self.items_all;
        // Problems first, then recoveries; oldest first within each.
        items.sort_by_key(|i| (i.kind == Kind::Resolved, i.since_ms, i.flag_id));
        items.truncate(CARRIED);
        Notification {
            route: self.route,
            scope_code: self.code,
            scope_name: self.name,
            counts: self.counts,
            items,
            parts: Vec::new(),
            at_ms: self.at_ms,
            test: false,
        }
    }
}

fn group_note(r: &Route, key: &str, rows: Vec<db::PendingItem>, now_ms: i64) -> (GroupNote, i64) {
    let first_ms = rows.iter().map(|p| p.at_ms).min().unwrap_or(now_ms);
    let name = rows
        .first()
        .map(|p| match r.group_by {
            RegionLevel::Province => p.province.clone(),
            RegionLevel::Regency => p.regency.clone(),
            RegionLevel::District => format!("Kec. {}", p.district),
        })
        .unwrap_or_default();
    let province = rows.first().map(|p| p.province.clone()).unwrap_or_default();
    let mut counts = Counts::default();
    // A station appears once: its most telling kind wins (escalation > firing >
    // reminder > resolved), so a flag that both fired and recovered in the window is
    // told as recovered only if it had been told of before.
    let mut by_flag: BTreeMap<i64, Item> = BTreeMap::new();
    for p in rows {
        let Some(kind) = Kind::parse(&p.kind) else {
            continue;
        };
        let item = Item {
            kind,
            flag_id: p.flag_id,
            tps_code: p.tps_code,
            village: p.village,
            district: p.district,
            regency: p.regency,
            reason: p.reason,
            cause: p.cause,
            since_ms: p.since_ms,
        };
        let rank = |k: Kind| match k {
            Kind::Escalation => 3,
            Kind::Firing => 2,
            Kind::Reminder => 1,
            Kind::Resolved => 0,
        };
        by_flag
            .entry(item.flag_id)
            .and_modify(|old| {
                if rank(kind) > rank(old.kind) {
                    *old = item.clone();
                }
            })
            .or_insert(item);
    }
    let items_all: Vec<Item> = by_flag.into_values().collect();
    items_all.iter().for_each(|i| counts.add(i.kind));
    (
        GroupNote {
            route: r.name.clone(),
            code: key.to_string(),
            name,
            province,
            counts,
            items_all,
            at_ms: now_ms,
        },
        first_ms,
    )
}

fn summary(
    r: &Route,
    province: &str,
    notes: Vec<(GroupNote, i64)>,
    now_ms: i64,
) -> (Notification, i64) {
    let first_ms = notes.iter().map(|n| n.1).min().unwrap_or(now_ms);
    let mut counts = Counts::default();
    let mut parts = Vec::new();
    let mut items = Vec::new();
    let mut province_name = String::new();
    for (n, _) in notes {
        counts.firing += n.counts.firing;
        counts.reminder += n.counts.reminder;
        counts.escalation += n.counts.escalation;
        counts.resolved += n.counts.resolved;
        if province_name.is_empty() {
            province_name = n.province.clone();
        }
        parts.push(Part {
            code: n.code.clone(),
            name: n.name.clone(),
            counts: n.counts,
        });
        items.extend(n.items_all);
    }
    // Regions with the most stations needing someone first.
    parts.sort_by_key(|p| (std::cmp::Reverse(p.counts.problems()), p.code.clone()));
    items.sort_by_key(|i| (i.kind == Kind::Resolved, i.since_ms, i.flag_id));
    items.truncate(CARRIED);
    (
        Notification {
            route: r.name.clone(),
            scope_code: province.to_string(),
            scope_name: province_name,
            counts,
            items,
            parts,
            at_ms: now_ms,
            test: false,
        },
        first_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Station;
    use crate::state::flags::{Action, Brief};
    use crate::store::Synchronous;
    use rusqlite::Connection;

    const MIN: i64 = 60_000;
    const T0: i64 = 1_767_225_600_000; // 2026-01-01 00:00 UTC, 07:00 WIB

    fn station(regency: &str, n: u32) -> Station {
        // regency "21.71" → village 21.71.01.1001, TPS n
        let digits: String = regency.chars().filter(|c| *c != '.').collect();
        Station {
            tps_code: format!("{digits}011001{n:03}").parse().unwrap(),
            village_code: format!("{regency}.01.1001"),
            village: "Sungai Jodoh".into(),
            district: "Batu Ampar".into(),
            regency: format!("Kota {regency}"),
            province: "Kepulauan Riau".into(),
            lat: None,
            lon: None,
            voters: 300,
        }
    }

    struct World {
        _dir: tempfile::TempDir,
        conn: Connection,
        cfg: NotifyConfig,
    }

    fn world(stations: &[Station], routes: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::store::open(dir.path(), Synchronous::Normal).unwrap();
        crate::store::import_stations(&mut conn, stations, T0, |_| {}).unwrap();
        let text = format!(
            r#"
[[receivers]]
name = "tg"
type = "webhook"
url = "http://127.0.0.1:9/tg"
[[receivers]]
name = "mail"
type = "webhook"
url = "http://127.0.0.1:9/mail"
{routes}"#
        );
        let tz = jiff::tz::TimeZone::get("Asia/Jakarta").unwrap();
        let cfg = super::super::config::from_toml(&text, Path::new("."), &tz).unwrap();
        World {
            _dir: dir,
            conn,
            cfg,
        }
    }
    use std::path::Path;

    impl World {
        fn open(&mut self, stations: &[Station], at: i64) -> Vec<Brief> {
            let actions: Vec<Action> = stations
                .iter()
                .map(|s| Action::Open {
                    tps: s.tps_code,
                    reason: Reason::Offline,
                    cause: None,
                    since_ms: at - 10 * MIN,
                })
                .collect();
            let tx = self.conn.transaction().unwrap();
            let out = crate::store::flags::apply(&tx, &actions, at).unwrap();
            tx.commit().unwrap();
            out.into_iter().map(|(_, b)| b).collect()
        }
        fn close(&mut self, stations: &[Station], briefs: &[Brief], at: i64) {
            let actions: Vec<Action> = stations
                .iter()
                .zip(briefs)
                .map(|(s, b)| Action::Close {
                    tps: s.tps_code,
                    brief: *b,
                })
                .collect();
            let tx = self.conn.transaction().unwrap();
            crate::store::flags::apply(&tx, &actions, at).unwrap();
            tx.commit().unwrap();
        }
        fn ack(&mut self, flag: i64, at: i64) {
            let tx = self.conn.transaction().unwrap();
            crate::store::flags::act(
                &tx,
                flag,
                "siti",
                &crate::state::flags::OperatorAction::Acknowledge,
                at,
            )
            .unwrap();
            tx.commit().unwrap();
        }
        fn step(&mut self, at: i64) -> Planned {
            let tx = self.conn.transaction().unwrap();
            let p = step(&tx, &self.cfg, at, true).unwrap();
            tx.commit().unwrap();
            p
        }
        /// Outbox rows (receiver, notification), oldest first.
        fn outbox(&self) -> Vec<(String, Notification)> {
            let mut st = self
                .conn
                .prepare("SELECT receiver, body FROM notify_outbox ORDER BY id")
                .unwrap();
            st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .unwrap()
                .map(|r| {
                    let (rc, b) = r.unwrap();
                    (rc, serde_json::from_str(&b).unwrap())
                })
                .collect()
        }
    }

    const ROUTE: &str = r#"
[[routes]]
name = "kepri"
region = "21"
receivers = ["tg", "mail"]
group_wait_secs = 60
group_interval_mins = 5
repeat_hours = 4
"#;

    #[test]
    fn a_regency_going_dark_is_one_message_per_receiver_after_the_group_wait() {
        let all: Vec<Station> = (1..=40).map(|n| station("21.71", n)).collect();
        let mut w = world(&all, ROUTE);
        w.open(&all[..30], T0);
        assert_eq!(w.step(T0 + 1000).messages, 0, "waits for the group");
        w.open(&all[30..], T0 + 20_000);
        assert_eq!(w.step(T0 + 59_000).messages, 0);
        assert_eq!(w.step(T0 + 60_000).messages, 2);
        let out = w.outbox();
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].0.as_str(), out[1].0.as_str()), ("tg", "mail"));
        let n = &out[0].1;
        assert_eq!(
            (n.scope_code.as_str(), n.counts.firing, n.items.len()),
            ("21.71", 40, 40)
        );
        // Nothing is planned twice.
        assert_eq!(w.step(T0 + 120_000).messages, 0);
        assert_eq!(w.outbox().len(), 2);
    }

    #[test]
    fn a_flag_that_recovers_inside_the_window_is_never_told() {
        let s: Vec<Station> = (1..=2).map(|n| station("21.71", n)).collect();
        let mut w = world(&s, ROUTE);
        let b = w.open(&s, T0);
        w.close(&s[..1], &b[..1], T0 + 10_000);
        w.step(T0 + 5_000);
        w.step(T0 + 70_000);
        let out = w.outbox();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].1.counts.firing, 1);
        assert_eq!(out[0].1.items[0].tps_code, s[1].tps_code.as_str());
        // The told one recovers: a recovery message after the group interval.
        w.close(&s[1..], &b[1..], T0 + 100_000);
        assert_eq!(
            w.step(T0 + 200_000).messages,
            0,
            "group interval since the last message"
        );
        assert_eq!(w.step(T0 + 70_000 + 5 * MIN).messages, 2);
        let out = w.outbox();
        assert_eq!(out[2].1.counts.resolved, 1);
        assert_eq!(out[2].1.counts.problems(), 0);
    }

    #[test]
    fn reminders_stop_at_acknowledgement_and_escalation_goes_to_the_next_route() {
        let s: Vec<Station> = (1..=2).map(|n| station("21.71", n)).collect();
        let routes = format!(
            "{ROUTE}escalate_after_hours = 12\nescalate_to = \"lead\"\n[[routes]]\nname = \"lead\"\nescalations_only = true\nreceivers = [\"mail\"]\ngroup_wait_secs = 0\nrepeat_hours = 0\n"
        );
        let mut w = world(&s, &routes);
        let b = w.open(&s, T0);
        w.step(T0 + MIN);
        assert_eq!(w.outbox().len(), 2);
        w.ack(b[0].id, T0 + 2 * MIN);
        w.step(T0 + 2 * MIN + 1000);
        // Four hours on: a reminder for the unacknowledged one only.
        assert_eq!(
            w.step(T0 + MIN + 4 * 60 * MIN).messages,
            0,
            "waits for the group"
        );
        assert_eq!(w.step(T0 + 2 * MIN + 4 * 60 * MIN).messages, 2);
        let r = &w.outbox()[2].1;
        assert_eq!((r.counts.reminder, r.counts.firing), (1, 0));
        assert_eq!(r.items[0].flag_id, b[1].id);
        // Twelve hours unacknowledged: escalated to "lead" (which takes nothing else).
        w.step(T0 + MIN + 12 * 60 * MIN);
        let out = w.outbox();
        let lead: Vec<_> = out.iter().filter(|(_, n)| n.route == "lead").collect();
        assert_eq!(lead.len(), 1, "{out:?}");
        assert_eq!(
            (lead[0].1.counts.escalation, lead[0].1.items[0].flag_id),
            (1, b[1].id)
        );
        w.step(T0 + 13 * 60 * MIN);
        assert_eq!(
            w.outbox().iter().filter(|(_, n)| n.route == "lead").count(),
            1,
            "escalated once"
        );
        // It recovers: both routes that told of it say so.
        w.close(&s[1..], &b[1..], T0 + 14 * 60 * MIN);
        w.step(T0 + 15 * 60 * MIN);
        let resolved: Vec<String> = w
            .outbox()
            .iter()
            .filter(|(_, n)| n.counts.resolved == 1)
            .map(|(r, n)| format!("{}/{r}", n.route))
            .collect();
        assert_eq!(resolved, ["kepri/tg", "kepri/mail", "lead/mail"]);
    }

    #[test]
    fn many_regencies_at_once_become_one_province_summary() {
        let regencies = [
            "21.01", "21.02", "21.03", "21.04", "21.05", "21.71", "21.72",
        ];
        let all: Vec<Station> = regencies
            .iter()
            .flat_map(|r| (1..=20).map(move |n| station(r, n)))
            .collect();
        let mut w = world(&all, ROUTE);
        w.open(&all, T0);
        assert_eq!(w.step(T0 + MIN).messages, 2, "one summary per receiver");
        let n = &w.outbox()[0].1;
        assert_eq!(
            (n.scope_code.as_str(), n.scope_name.as_str()),
            ("21", "Kepulauan Riau")
        );
        assert_eq!((n.counts.firing, n.parts.len()), (140, 7));
        // Three regencies (summary_after = 3) are three messages.
        let mut w = world(&all, ROUTE);
        w.open(&all[..60], T0);
        assert_eq!(w.step(T0 + MIN).messages, 6);
    }

    #[test]
    fn quiet_hours_hold_messages_until_they_end() {
        let s = vec![station("21.71", 1)];
        // T0 is 07:00 WIB.
        let mut w = world(&s, &format!("{ROUTE}quiet_hours = \"22:00-07:30\"\n"));
        w.open(&s, T0);
        assert_eq!(w.step(T0 + 10 * MIN).messages, 0);
        assert_eq!(w.step(T0 + 29 * MIN).messages, 0);
        assert_eq!(w.step(T0 + 30 * MIN).messages, 2);
    }

    #[test]
    fn routes_pick_flags_by_region_and_reason() {
        let s = vec![station("21.71", 1), station("21.01", 1)];
        let routes = r#"
[[routes]]
name = "batam"
region = "21.71"
receivers = ["tg"]
group_wait_secs = 0
[[routes]]
name = "degraded-only"
reasons = ["degraded"]
receivers = ["mail"]
group_wait_secs = 0
"#;
        let mut w = world(&s, routes);
        w.open(&s, T0);
        w.step(T0 + 1000);
        let out = w.outbox();
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].0.as_str(), out[0].1.items[0].tps_code.as_str()),
            ("tg", s[0].tps_code.as_str())
        );
    }

    #[test]
    fn routes_and_receivers_taken_out_of_the_config_are_forgotten() {
        let s = vec![station("21.71", 1), station("21.71", 2)];
        let mut w = world(&s, ROUTE);
        w.open(&s[..1], T0);
        w.step(T0 + MIN);
        w.open(&s[1..], T0 + MIN);
        w.step(T0 + MIN + 1000);
        let tx = w.conn.transaction().unwrap();
        let given_up = db::forget_unconfigured(&tx, &[], &["tg".to_string()]).unwrap();
        let pending: i64 = tx
            .query_row("SELECT count(*) FROM notify_pending", [], |r| r.get(0))
            .unwrap();
        let told: i64 = tx
            .query_row("SELECT count(*) FROM notify_told", [], |r| r.get(0))
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(
            (given_up, pending, told),
            (1, 0, 0),
            "mail's message given up; kepri forgotten"
        );
    }

    #[test]
    fn a_route_added_later_hears_of_the_flags_already_open() {
        let s: Vec<Station> = (1..=3).map(|n| station("21.71", n)).collect();
        let mut w = world(&s, ROUTE);
        let b = w.open(&s, T0);
        w.step(T0 + MIN);
        w.close(&s[..1], &b[..1], T0 + 2 * MIN);
        w.ack(b[1].id, T0 + 2 * MIN);
        w.step(T0 + 2 * MIN);
        assert_eq!(w.outbox().len(), 2);
        // A restart with a second route for the same region.
        let tz = jiff::tz::TimeZone::get("Asia/Jakarta").unwrap();
        w.cfg = super::super::config::from_toml(
            &format!(
                "[[receivers]]\nname = \"tg\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/tg\"\n\
                 [[receivers]]\nname = \"mail\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/mail\"\n{ROUTE}\
                 [[routes]]\nname = \"batam-team\"\nregion = \"21.71\"\nreceivers = [\"mail\"]\n"
            ),
            Path::new("."),
            &tz,
        )
        .unwrap();
        let tx = w.conn.transaction().unwrap();
        let n = catch_up_routes(&tx, &w.cfg, T0 + 10 * MIN).unwrap();
        tx.commit().unwrap();
        assert_eq!(
            n, 1,
            "only the flag still open and unacknowledged, and only for the new route"
        );
        w.step(T0 + 11 * MIN);
        let team: Vec<Notification> = w
            .outbox()
            .into_iter()
            .filter(|(_, n)| n.route == "batam-team")
            .map(|(_, n)| n)
            .collect();
        assert_eq!(team.len(), 1);
        assert_eq!(
            (team[0].counts.firing, team[0].items[0].flag_id),
            (1, b[2].id)
        );
        // Nothing more at the next start.
        let tx = w.conn.transaction().unwrap();
        assert_eq!(catch_up_routes(&tx, &w.cfg, T0 + 20 * MIN).unwrap(), 0);
        tx.commit().unwrap();
    }
}
