//! The weekly report in a running collector: the schedule writes last week's report
//! (HTML, CSV, JSON) into the data directory on start, the API lists and serves it, the
//! on-request report equals the stored one, and real headless Chromium renders the HTML
//! (PNG and A4 PDF kept in `target/tmp/`) with headline figures equal to the JSON's.

use std::time::Duration;

use fantoccini::Locator;
use fantoccini::wd::PrintConfiguration;
use tps_collector::domain::now_ms;
use tps_collector::report::schedule::ReportConfig;
use tps_tests::browser::{Browser, digits};
use tps_tests::{TestCollector, eventually, history, kepri_registry, open_store};

const WAIT: Duration = Duration::from_secs(60);

/// `94,1 %` from 0.941 (the report's Bahasa Indonesia format).
fn id_pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0).replace('.', ",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_report_is_served_and_renders_in_chromium() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    tps_collector::commands::import_stations(dir.path(), &kepri_registry())?;
    let cfg = ReportConfig::default();
    let week = cfg.due_week(now_ms());
    let seeded = {
        let mut conn = open_store(dir.path())?;
        history::seed(&mut conn, &[week.previous(), week], &cfg.tz, 48)?
    };
    assert_eq!(seeded.stations, 3327);

    let c = TestCollector::start(dir.path()).await?;
    let (_, listed) = eventually(WAIT, "the scheduled report to be written", || async {
        let (code, v) = c.get_json("/api/v1/reports").await.ok()?;
        let n = v["reports"]
            .as_array()?
            .iter()
            .filter(|r| r["week"] == week.to_string())
            .count();
        (n == 3).then_some((code, v))
    })
    .await?;
    assert_eq!(listed["schedule"]["time_zone"], "Asia/Jakarta");
    assert!(
        listed["schedule"]["next_run"]
            .as_str()
            .unwrap()
            .contains("T00:00:00+07:00")
    );

    // Operators can alert on the schedule: it says what it wrote, and when.
    let metrics = reqwest::get(c.url("/metrics")).await?.text().await?;
    assert!(
        metrics.contains("tps_weekly_reports_total{result=\"written\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tps_weekly_report_last_success_timestamp_seconds "));

    let http = reqwest::Client::new();
    let get = |path: String| {
        let req = http.get(c.url(&path)).bearer_auth(&c.token);
        async move {
            let resp = req.send().await?;
            anyhow::ensure!(resp.status().is_success(), "{path}: {}", resp.status());
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            Ok::<_, anyhow::Error>((ct, resp.bytes().await?.to_vec()))
        }
    };
    let (_, stored) = get(format!("/api/v1/reports/files/weekly-{week}.json")).await?;
    let mut stored: serde_json::Value = serde_json::from_slice(&stored)?;
    let (ct, fresh) = get(format!("/api/v1/reports/weekly?week={week}&format=json")).await?;
    assert_eq!(ct, "application/json");
    let mut fresh: serde_json::Value = serde_json::from_slice(&fresh)?;
    for v in [&mut stored, &mut fresh] {
        let o = v.as_object_mut().unwrap();
        o.remove("made_at");
        o.remove("made_at_ms");
    }
    assert_eq!(stored, fresh, "the stored report and one made now agree");
    let h = &stored["headline"];
    assert_eq!(h["stations"], 3327);
    let share = h["covered_share_end"].as_f64().unwrap();
    assert!((0.90..0.98).contains(&share), "about 94 % covered: {share}");
    let follow = stored["follow_up"].as_array().unwrap().len();
    let never = stored["never_had_agent"].as_array().unwrap().len();
    assert!(follow > 0 && never > 0);

    // Errors name the parameter.
    let (code, e) = c.get_json("/api/v1/reports/weekly?week=2026-48").await?;
    assert_eq!(code, 400);
    assert!(e["error"].as_str().unwrap().starts_with("week:"), "{e}");
    let (code, _) = c
        .get_json("/api/v1/reports/files/..%2Fcollector.sqlite")
        .await?;
    assert_eq!(code, 404);

    let (ct, html) = get(format!("/api/v1/reports/files/weekly-{week}.html")).await?;
    assert!(ct.starts_with("text/html"));
    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let html_path = out_dir.join("weekly-report.html");
    std::fs::write(&html_path, &html)?;
    let (_, csv) = get(format!("/api/v1/reports/files/weekly-{week}.csv")).await?;
    assert_eq!(
        csv.iter().filter(|&&b| b == b'\n').count(),
        3327 + 1,
        "one CSV row per station"
    );

    let session = Browser::start().await?;
    let browser = &session.client;
    let run = async {
        browser
            .goto(&format!("file://{}", html_path.display()))
            .await?;
        let text = |key: &'static str| async move {
            browser
                .find(Locator::Css(&format!("[data-k='{key}']")))
                .await?
                .text()
                .await
        };
        assert_eq!(text("week").await?, format!("Minggu {week}"));
        assert_eq!(digits(&text("stations").await?), 3327);
        let covered = text("covered_end").await?;
        let (count, pct) = covered.split_once(" (").unwrap();
        assert_eq!(digits(count), h["covered_end"].as_u64().unwrap());
        assert_eq!(pct.trim_end_matches(')'), id_pct(share));
        let uncovered = text("uncovered_end").await?;
        assert_eq!(
            digits(uncovered.split(" (").next().unwrap()),
            h["uncovered_end"].as_u64().unwrap()
        );
        assert_eq!(
            text("availability").await?,
            id_pct(h["availability"].as_f64().unwrap())
        );
        assert_eq!(
            digits(&text("below_threshold").await?),
            h["below_threshold"].as_u64().unwrap()
        );
        assert_eq!(
            digits(&text("outages").await?),
            h["outages"].as_u64().unwrap()
        );
        assert_eq!(digits(&text("follow_up").await?), follow as u64);
        assert_eq!(digits(&text("never_had_agent").await?), never as u64);
        // Both charts were drawn: a line per regency (Kepri has 7), a bar per bin.
        let lines = browser.find_all(Locator::Css("svg polyline")).await?;
        assert_eq!(
            lines.len(),
            stored["trend"]["regencies"].as_array().unwrap().len()
        );
        let bars = browser.find_all(Locator::Css("svg rect")).await?;
        assert_eq!(bars.len(), stored["distribution"].as_array().unwrap().len());

        let png = browser.screenshot().await?;
        std::fs::write(out_dir.join("weekly-report.png"), &png)?;
        let pdf = browser.print(PrintConfiguration::default()).await?;
        std::fs::write(out_dir.join("weekly-report.pdf"), &pdf)?;
        println!(
            "artifacts: {}/weekly-report.{{html,png,pdf}}",
            out_dir.display()
        );
        anyhow::ensure!(pdf.starts_with(b"%PDF"), "not a PDF");
        anyhow::ensure!(png.len() > 10_000, "the screenshot is suspiciously small");
        Ok::<_, anyhow::Error>(())
    };
    let result = run.await;
    session.close().await?;
    result?;
    c.stop().await
}
