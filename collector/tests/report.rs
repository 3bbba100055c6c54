//! The weekly report's figures are exact: a week of status history with known intervals
//! (a state that crosses the week's start, a station registered mid-week, one never heard,
//! one registered after the week) gives availability, outages and counts to the second,
//! from a real SQLite store, and the same report every time it is made.

use std::path::Path;

use rusqlite::{Connection, params};
use tps_collector::report::compute::Options;
use tps_collector::report::{self, Format, Lang, Week};
use tps_collector::store::{self, Synchronous};

const S: i64 = 1_000; // seconds → ms
const H: i64 = 3_600 * S;
const D: i64 = 24 * H;

const REGISTRY: &str =
    "tps_code,tps_number,village_code,village,district,regency,province,lat,lon,voters
2101041005001,001,21.01.04.1005,Kawal,Gunung Kijang,Kabupaten Bintan,Kepulauan Riau,-1.07,104.47,310
2101041005002,002,21.01.04.1005,Kawal,Gunung Kijang,Kabupaten Bintan,Kepulauan Riau,-1.07,104.50,421
2101041005003,003,21.01.04.1005,Kawal,Gunung Kijang,Kabupaten Bintan,Kepulauan Riau,-1.07,104.51,200
2171011001001,001,21.71.01.1001,Tanjung Sengkuang,Batam Kota,Kota Batam,Kepulauan Riau,1.1,104.0,300
2171011001002,002,21.71.01.1001,Tanjung Sengkuang,Batam Kota,Kota Batam,Kepulauan Riau,1.1,104.0,300
2171011001003,003,21.71.01.1001,Tanjung Sengkuang,Batam Kota,Kota Batam,Kepulauan Riau,1.1,104.0,300
";

const A: &str = "2101041005001";
const B: &str = "2101041005002";
const C: &str = "2101041005003";
const DD: &str = "2171011001001";
const E: &str = "2171011001002";
const F: &str = "2171011001003";

fn change(conn: &Connection, tps: &str, at: i64, state: &str, reason: &str, cause: Option<&str>) {
    conn.execute(
        "INSERT INTO status_changes (tps_code, at_ms, state, previous, reason, cause)
         VALUES (?1, ?2, ?3, NULL, ?4, ?5)",
        params![tps, at, state, reason, cause],
    )
    .unwrap();
}

fn agent(conn: &Connection, id: i64, tps: &str, enrolled: i64) {
    conn.execute(
        "INSERT INTO agents (agent_id, tps_code, token_hash, hostname, os, agent_version, enrolled_ms, status_json)
         VALUES (?1, ?2, ?3, 'h', 'linux', '0.1', ?4, '{\"primary_target\":\"gateway\"}')",
        params![id, tps, vec![id as u8; 32], enrolled],
    )
    .unwrap();
}

/// The seeded week is 2026-W45: Monday 2 November 2026 00:00 WIB (UTC+7) = `start`.
fn seed(dir: &Path) -> i64 {
    let week: Week = "2026-W45".parse().unwrap();
    let tz = jiff::tz::TimeZone::get("Asia/Jakarta").unwrap();
    let (start, _) = week.bounds(&tz);
    let csv = dir.join("registry.csv");
    std::fs::write(&csv, REGISTRY).unwrap();
    tps_collector::commands::import_stations(dir, &csv).unwrap();
    let conn = store::open(dir, Synchronous::Full).unwrap();
    let created = |tps: &str, at: i64| {
        conn.execute(
            "UPDATE stations SET created_ms = ?2 WHERE tps_code = ?1",
            params![tps, at],
        )
        .unwrap();
    };
    for t in [A, B, DD, F] {
        created(t, start - 14 * D);
    }
    created(C, start + 3 * D + 12 * H); // registered mid-week
    created(E, start + 8 * D); // registered after the week
    // A: covered since before the week; one outage of 2 h 30 min on Tuesday.
    change(&conn, A, start - 2 * D, "covered", "ok", None);
    change(&conn, A, start + D + 3 * H, "offline", "offline", None);
    change(
        &conn,
        A,
        start + D + 5 * H + 30 * 60 * S,
        "covered",
        "ok",
        Some("link_down"),
    );
    // B: offline across the week's start until Monday 04:00, degraded from Sunday 20:00.
    change(&conn, B, start - 10 * D, "covered", "ok", None);
    change(&conn, B, start - 3 * H, "offline", "offline", None);
    change(
        &conn,
        B,
        start + 4 * H,
        "covered",
        "ok",
        Some("power_or_device"),
    );
    change(
        &conn,
        B,
        start + 6 * D + 20 * H,
        "degraded",
        "high_loss",
        None,
    );
    // C: appears Thursday 12:00, covered from Friday 00:00.
    change(&conn, C, start + 4 * D, "covered", "ok", None);
    // D: never heard. E: too new. F: covered, offline from Saturday 00:00 to the end.
    change(&conn, F, start - 5 * D, "covered", "ok", None);
    change(&conn, F, start + 5 * D, "offline", "offline", None);
    // F comes back after the week: that must not change this week's report.
    change(
        &conn,
        F,
        start + 7 * D + H,
        "covered",
        "ok",
        Some("power_or_device"),
    );
    // F's flag: opened, acknowledged, assigned, a note; a later note after the week.
    conn.execute(
        "INSERT INTO flags (id, tps_code, reason, cause, since_ms, opened_ms, status, assignee, updated_ms)
         VALUES (7, ?1, 'offline', NULL, ?2, ?3, 'acknowledged', 'sari', ?3)",
        params![F, start + 5 * D, start + 5 * D + 10 * 60 * S],
    )
    .unwrap();
    for (at, action, detail) in [
        (start + 5 * D + 10 * 60 * S, "opened", Some("offline")),
        (start + 5 * D + 30 * 60 * S, "acknowledged", None),
        (start + 5 * D + H, "assigned", Some("budi")),
        (
            start + 5 * D + 2 * H,
            "note",
            Some("genset rusak, teknisi berangkat besok"),
        ),
        (start + 7 * D + 2 * H, "assigned", Some("sari")),
        (start + 7 * D + 3 * H, "note", Some("sudah pulih")),
    ] {
        conn.execute(
            "INSERT INTO flag_events (flag_id, at_ms, actor, action, detail) VALUES (7, ?1, 'op', ?2, ?3)",
            params![at, action, detail],
        )
        .unwrap();
    }
    // A's agent measured the gateway (RTT 20 ms and 60 ms, 3:1) and another target.
    agent(&conn, 1, A, start - 3 * D);
    let mut seq = 0;
    for k in 0..40 {
        for (target, rtt) in [
            ("gateway", if k % 4 == 3 { 60.0 } else { 20.0 }),
            ("dns", 300.0),
        ] {
            seq += 1;
            let t = start + k * H;
            conn.execute(
                "INSERT INTO measurements (agent_id, seq, start_ms, target_name, target_address, method,
                 sent, received, rtt_avg_ms, received_ms) VALUES (1, ?1, ?2, ?3, '10.0.0.1', 'icmp', 10, ?4, ?5, ?2)",
                params![seq, t, target, if k % 10 == 0 { 8 } else { 10 }, rtt],
            )
            .unwrap();
        }
    }
    start
}

fn options(now_ms: i64, region: Option<&str>) -> Options {
    Options {
        week: "2026-W45".parse().unwrap(),
        region: region.map(str::to_string),
        threshold: 0.95,
        tz: jiff::tz::TimeZone::get("Asia/Jakarta").unwrap(),
        now_ms,
    }
}

#[test]
fn a_seeded_week_gives_exact_availability_outages_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let start = seed(dir.path());
    let mut conn = store::open(dir.path(), Synchronous::Full).unwrap();
    let tz = jiff::tz::TimeZone::get("Asia/Jakarta").unwrap();
    tps_collector::sinks::rollup::catch_up_all(&mut conn, &tz).unwrap();
    let r = report::make(&conn, &options(start + 10 * D, None)).unwrap();
    assert!(r.complete);
    assert_eq!(r.start, "2026-11-02T00:00:00+07:00");
    assert_eq!(r.end, "2026-11-09T00:00:00+07:00");

    let row = |code: &str| r.stations.iter().find(|s| s.tps_code == code).unwrap();
    let week = 7 * D;
    // Observed and covered time of each station, to the millisecond.
    assert_eq!(
        (row(A).observed_ms, row(A).covered_ms),
        (week, week - 2 * H - 30 * 60 * S)
    );
    assert_eq!(
        (row(B).observed_ms, row(B).covered_ms),
        (week, week - 4 * H - 4 * H)
    );
    assert_eq!(
        (row(C).observed_ms, row(C).covered_ms),
        (3 * D + 12 * H, 3 * D)
    );
    assert_eq!((row(DD).observed_ms, row(DD).covered_ms), (week, 0));
    assert_eq!((row(F).observed_ms, row(F).covered_ms), (week, 5 * D));
    assert!(
        r.stations.iter().all(|s| s.tps_code != E),
        "registered after the week"
    );
    // Outages: A one of 2.5 h, B one clipped to the 4 h inside the week, F one of 2 days.
    assert_eq!((row(A).outages, row(A).longest_outage_ms), (1, 9_000 * S));
    assert_eq!((row(B).outages, row(B).longest_outage_ms), (1, 4 * H));
    assert_eq!((row(F).outages, row(F).longest_outage_ms), (1, 2 * D));
    assert_eq!(row(A).cause.as_deref(), Some("link_down"));
    assert_eq!(row(B).state_end, "degraded");
    assert_eq!(row(F).state_end, "offline");

    let h = &r.headline;
    assert_eq!(h.stations, 5);
    assert_eq!(
        (h.covered_end, h.degraded_end, h.offline_end, h.no_agent_end),
        (2, 1, 1, 1)
    );
    assert_eq!(h.uncovered_end, 3);
    let covered = (week - 9_000 * S) + (week - 8 * H) + 3 * D + 5 * D;
    let observed = 4 * week + 3 * D + 12 * H;
    assert_eq!((h.covered_ms, h.observed_ms), (covered, observed));
    assert_eq!(h.availability, Some(covered as f64 / observed as f64));
    // Below 95 %: C 85.7 %, D 0 %, F 71.4 % (A 98.5 % and B 95.2 % are not).
    assert_eq!(h.below_threshold, 3);
    assert_eq!((h.outages, h.longest_outage_ms), (3, 2 * D));

    // Regions add up the same way.
    let bintan = r.regencies.iter().find(|a| a.code == "21.01").unwrap();
    assert_eq!(bintan.name, "Kabupaten Bintan");
    assert_eq!(bintan.figures.stations, 3);
    assert_eq!(
        bintan.figures.covered_ms,
        (week - 9_000 * S) + (week - 8 * H) + 3 * D
    );
    let batam = r.districts.iter().find(|a| a.code == "21.71.01").unwrap();
    assert_eq!(
        (batam.figures.stations, batam.figures.uncovered_end),
        (2, 2)
    );

    // The previous week: A covered from Saturday, B until Sunday 21:00, F from
    // Wednesday; D never; C did not exist yet.
    assert_eq!(r.previous.stations, 4);
    assert_eq!(r.previous.covered_ms, 2 * D + (week - 3 * H) + 5 * D);
    assert_eq!(r.change.stations, 1);

    // Daily trend: Bintan on Monday = B offline 4 h of 3 × 24 h... C not yet there.
    let line = r
        .trend
        .regencies
        .iter()
        .find(|l| l.code == "21.01")
        .unwrap();
    assert_eq!(line.uncovered_share[0], Some(4.0 / 48.0));
    assert_eq!(r.trend.days[0], "2026-11-02");

    // Follow-up: B (degraded), C (low availability), F (offline); D never had an agent.
    let codes: Vec<&str> = r.follow_up.iter().map(|f| f.tps_code.as_str()).collect();
    assert_eq!(codes, [B, C, F]);
    assert_eq!(r.follow_up[1].reason, "low_availability");
    let never: Vec<&str> = r
        .never_had_agent
        .iter()
        .map(|f| f.tps_code.as_str())
        .collect();
    assert_eq!(never, [DD]);
    // F's flag as it stood at the end of the week, not as it is now.
    let flag = r.follow_up[2].flag.as_ref().unwrap();
    assert_eq!(flag.status, "acknowledged");
    assert_eq!(flag.assignee.as_deref(), Some("budi"));
    assert_eq!(
        flag.note.as_deref(),
        Some("genset rusak, teknisi berangkat besok")
    );

    // RTT of the primary target (gateway, not dns): 30 rounds of 20 ms, 10 of 60 ms.
    let a = row(A);
    assert_eq!(a.rounds, 40);
    let p50 = a.rtt_p50_ms.unwrap();
    let p95 = a.rtt_p95_ms.unwrap();
    assert!((p50 - 20.0).abs() / 20.0 < 0.011, "{p50}");
    assert!((p95 - 60.0).abs() / 60.0 < 0.011, "{p95}");
    assert_eq!((a.loss_p50_pct, a.loss_p95_pct), (Some(0.0), Some(20.0)));

    // Distribution: A 98.5 % → 95–99; B 95.2 % → 95–99; C → 80–90; D → 0–50; F → 50–80.
    let bins: Vec<u64> = r.distribution.iter().map(|b| b.stations).collect();
    assert_eq!(bins, [1, 1, 1, 0, 2, 0, 0]);
}

#[test]
fn a_past_week_reports_the_same_every_time_and_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let start = seed(dir.path());
    let conn = store::open(dir.path(), Synchronous::Full).unwrap();
    let json = |now: i64| {
        let r = report::make(&conn, &options(now, None)).unwrap();
        let mut v: serde_json::Value =
            serde_json::from_slice(&report::render(&r, Format::Json, Lang::En).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("made_at");
        v.as_object_mut().unwrap().remove("made_at_ms");
        v
    };
    let first = json(start + 8 * D);
    // Later history (F came back, a new note) does not change the past week.
    change(&conn, A, start + 9 * D, "offline", "offline", None);
    assert_eq!(json(start + 30 * D), first);
    assert_eq!(first["schema"], "tps-weekly-report/1");

    let r = report::make(&conn, &options(start + 8 * D, None)).unwrap();
    let csv = String::from_utf8(report::render(&r, Format::Csv, Lang::Id).unwrap()).unwrap();
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let headers = rows.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let c_row = rows
        .records()
        .map(Result::unwrap)
        .find(|r| &r[col("tps_code")] == C)
        .unwrap();
    assert_eq!(&c_row[col("observed_s")], "302400.000");
    assert_eq!(&c_row[col("covered_s")], "259200.000");
    assert_eq!(&c_row[col("availability_pct")], "85.7143");
    assert_eq!(&c_row[col("follow_up")], "yes");

    let html = String::from_utf8(report::render(&r, Format::Html, Lang::Id).unwrap()).unwrap();
    assert!(html.contains("Laporan Mingguan Cakupan Konektivitas TPS"));
    assert!(html.contains("genset rusak, teknisi berangkat besok"));
    for external in ["http://", "https://", "src=", "href=", "url(", "@import"] {
        assert!(
            !html.contains(external),
            "the HTML must not load anything: {external}"
        );
    }
    let en = String::from_utf8(report::render(&r, Format::Html, Lang::En).unwrap()).unwrap();
    assert!(en.contains("Weekly TPS Connectivity Coverage Report"));

    // A region narrows everything; an unknown one is an error naming it.
    let batam = report::make(&conn, &options(start + 8 * D, Some("21.71"))).unwrap();
    assert_eq!(batam.headline.stations, 2);
    assert_eq!(batam.region.as_ref().unwrap().name, "Kota Batam");
    let err = report::make(&conn, &options(start + 8 * D, Some("31"))).unwrap_err();
    assert!(err.to_string().contains("\"31\""), "{err}");
    // A week still running is reported up to now and says so.
    let partial = report::make(&conn, &options(start + 2 * D, None)).unwrap();
    assert!(!partial.complete);
    assert_eq!(partial.row_observed(A), 2 * D);
}

trait RowObserved {
    fn row_observed(&self, code: &str) -> i64;
}

impl RowObserved for report::Report {
    fn row_observed(&self, code: &str) -> i64 {
        self.stations
            .iter()
            .find(|s| s.tps_code == code)
            .unwrap()
            .observed_ms
    }
}
