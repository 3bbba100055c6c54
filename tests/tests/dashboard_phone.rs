//! The dashboard on a phone (390 × 844, touch) and on a wide screen (1400 × 900) in a
//! real headless Chromium: nothing scrolls sideways; the map draws every regency outline
//! of the province and every station inside its own regency (point-in-polygon on the
//! page's own data); a tap on a station opens its page; the queue's buttons work by
//! touch; a report opens on an origin of its own, where the token cannot be read; every
//! HTML answer carries the security headers. Screenshots are kept in `target/tmp/`.

use std::time::Duration;

use fantoccini::Locator;
use fantoccini::actions::{InputSource, PointerAction, TouchActions};
use serde_json::{Value, json};
use tps_tests::browser::{Browser, Screen, kepri_reporting, open_dashboard, open_report};
use tps_tests::{TestCollector, eventually, kepri_registry};

const WAIT: Duration = Duration::from_secs(60);

async fn js(browser: &fantoccini::Client, script: &str) -> anyhow::Result<Value> {
    Ok(browser.execute(script, vec![]).await?)
}

/// The page must not scroll sideways: the document is no wider than the viewport.
async fn assert_no_sideways_scroll(browser: &fantoccini::Client, what: &str) -> anyhow::Result<()> {
    let v = js(
        browser,
        "return [document.documentElement.scrollWidth, window.innerWidth];",
    )
    .await?;
    let (doc, view) = (v[0].as_i64().unwrap_or(-1), v[1].as_i64().unwrap_or(-1));
    anyhow::ensure!(
        doc <= view,
        "{what}: the page is {doc} px wide in a {view} px viewport"
    );
    Ok(())
}

/// Every regency of the province drawn; every drawn station inside its own regency's
/// polygon, by the page's own boundary data. Returns how many stations were drawn.
async fn assert_map(browser: &fantoccini::Client, c: &TestCollector) -> anyhow::Result<usize> {
    let (_, regs) = c
        .get_json("/api/v1/regions?level=regency&parent=21")
        .await?;
    let want: Vec<String> = regs["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(want.len(), 7);
    let drawn_outlines = eventually(WAIT, "the regency outlines", || async {
        let v = js(
            browser,
            "return [...document.querySelectorAll('#map path.regency')].map(p => p.dataset.code).sort();",
        )
        .await
        .ok()?;
        let codes: Vec<String> = serde_json::from_value(v).ok()?;
        (codes.len() == want.len()).then_some(codes)
    })
    .await?;
    assert_eq!(drawn_outlines, want);
    let check = js(
        browser,
        r#"
        const inRing = (x, y, ring) => {
          let inside = false;
          for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
            const [xi, yi] = ring[i], [xj, yj] = ring[j];
            if ((yi > y) !== (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) inside = !inside;
          }
          return inside;
        };
        const byCode = new Map(window.tpsMap.boundaries.features.map(f => [f.properties.code, f]));
        let outside = [], missing = 0;
        for (const s of window.tpsMap.drawn) {
          const f = byCode.get(s.regency_code);
          if (!f) { missing++; continue; }
          const polys = f.geometry.type === "Polygon" ? [f.geometry.coordinates] : f.geometry.coordinates;
          const hit = polys.some(p => inRing(s.lon, s.lat, p[0]) && !p.slice(1).some(h => inRing(s.lon, s.lat, h)));
          if (!hit) outside.push(s.code);
        }
        return { drawn: window.tpsMap.drawn.length, outside: outside.slice(0, 5), outsideCount: outside.length, missing };
        "#,
    )
    .await?;
    assert_eq!(check["missing"], 0, "{check}");
    assert_eq!(check["outsideCount"], 0, "{check}");
    let (_, stations) = c.get_json("/api/v1/stations?limit=10000").await?;
    let mapped = stations["stations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["lat"].is_number())
        .count();
    assert_eq!(check["drawn"], json!(mapped), "every mapped station drawn");
    Ok(mapped)
}

/// A touch tap at viewport coordinates.
async fn tap(browser: &fantoccini::Client, x: f64, y: f64) -> anyhow::Result<()> {
    let finger = TouchActions::new("finger".into())
        .then(PointerAction::MoveTo {
            duration: None,
            x: x.round(),
            y: y.round(),
        })
        .then(PointerAction::Down {
            button: fantoccini::actions::MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: fantoccini::actions::MOUSE_BUTTON_LEFT,
        });
    browser.perform_actions(finger).await?;
    browser.release_actions().await?;
    Ok(())
}

/// The centre of an element in viewport coordinates, scrolled into view first.
async fn centre(browser: &fantoccini::Client, css: &str) -> anyhow::Result<(f64, f64)> {
    let v = browser
        .execute(
            "const e = document.querySelector(arguments[0]); e.scrollIntoView({block: 'center'});
             const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2];",
            vec![json!(css)],
        )
        .await?;
    Ok((v[0].as_f64().unwrap_or(0.0), v[1].as_f64().unwrap_or(0.0)))
}

/// The overview: it fits, its map is right; a screenshot kept as `name`.
async fn overview(
    browser: &fantoccini::Client,
    c: &TestCollector,
    name: &str,
) -> anyhow::Result<()> {
    open_dashboard(browser, c).await?;
    assert_no_sideways_scroll(browser, "the overview").await?;
    assert_map(browser, c).await?;
    keep(name, &browser.screenshot().await?)
}

/// Waits until the station page for `code` is open; returns its title.
async fn station_page(
    browser: &fantoccini::Client,
    what: &str,
    code: &str,
) -> anyhow::Result<String> {
    eventually(WAIT, what, || async {
        let t = browser
            .find(Locator::Id("st-title"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        t.contains(code).then_some(t)
    })
    .await
}

fn keep(name: &str, png: &[u8]) -> anyhow::Result<()> {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&out, png)?;
    println!("screenshot: {}", out.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_the_page_fits_the_map_is_right_and_touch_works() -> anyhow::Result<()> {
    let (_dir, c) = kepri_reporting(6, 0).await?;
    let session = Browser::start_as(Screen::Phone {
        width: 390,
        height: 844,
    })
    .await?;
    let browser = &session.client;
    let run = async {
        overview(browser, &c, "dashboard-phone.png").await?;

        // A tap on a drawn station opens its page.
        let target = js(
            browser,
            "document.querySelector('#map').scrollIntoView({block: 'center'});
             // Stations of a village lie metres apart: zoom in on one first.
             const first = window.tpsMap.drawn[0];
             window.tpsMap.map.setView([first.lat, first.lon], 17, {animate: false});
             const r = document.querySelector('#map').getBoundingClientRect();
             const s = window.tpsMap.drawn.find(s => s.x > 30 && s.y > 30 && s.x < r.width - 30 && s.y < r.height - 30
                && !window.tpsMap.drawn.some(o => o !== s && (o.x - s.x) ** 2 + (o.y - s.y) ** 2 < 400));
             return s ? [s.code, r.left + s.x, r.top + s.y] : null;",
        )
        .await?;
        anyhow::ensure!(!target.is_null(), "no station stands alone on the map");
        let code = target[0].as_str().unwrap().to_string();
        tap(
            browser,
            target[1].as_f64().unwrap(),
            target[2].as_f64().unwrap(),
        )
        .await?;
        let title = station_page(browser, "the station page after a tap", &code).await?;
        assert!(title.starts_with("TPS "), "{title}");
        assert_no_sideways_scroll(browser, "the station page").await?;
        keep("dashboard-phone-station.png", &browser.screenshot().await?)?;
        let (x, y) = centre(browser, "#st-close").await?;
        tap(browser, x, y).await?;

        // The queue's buttons work by touch: acknowledge the first flag.
        let id: i64 = browser
            .find(Locator::Css("#flags tbody tr[data-flag-id]"))
            .await?
            .attr("data-flag-id")
            .await?
            .unwrap_or_default()
            .parse()?;
        let (x, y) = centre(browser, &format!("tr[data-flag-id='{id}'] button.ack")).await?;
        tap(browser, x, y).await?;
        eventually(WAIT, "the flag acknowledged by touch", || async {
            let (_, f) = c.get_json(&format!("/api/v1/flags/{id}")).await.ok()?;
            (f["status"] == "acknowledged").then_some(())
        })
        .await?;
        let size = js(
            browser,
            &format!(
                "const r = document.querySelector(\"tr[data-flag-id='{id}'] button.ack\").getBoundingClientRect(); return [r.width, r.height];"
            ),
        )
        .await?;
        assert!(
            size[0].as_f64().unwrap() >= 44.0 && size[1].as_f64().unwrap() >= 44.0,
            "touch targets of at least 44 × 44 px: {size}"
        );
        assert_no_sideways_scroll(browser, "the queue").await?;

        // A link from a notification (`#tps=`, `#region=`) opens that station's page
        // and that region.
        let code = "2171011002003";
        browser.goto("about:blank").await?;
        browser
            .goto(&format!("{}/#region=21.71&tps={code}", c.url("")))
            .await?;
        browser
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css("body[data-ready='1']"))
            .await?;
        let title = browser.find(Locator::Id("st-title")).await?.text().await?;
        assert!(title.starts_with(&format!("TPS {code}")), "{title}");
        let region = js(browser, "return document.querySelector('#region').value").await?;
        assert_eq!(region, "21.71");
        // Followed while the page is open: only the hash changes.
        let other = "2101041005002";
        browser
            .execute(&format!("location.hash = 'tps={other}'"), vec![])
            .await?;
        station_page(
            browser,
            "the station page of a link followed in place",
            other,
        )
        .await?;
        Ok::<_, anyhow::Error>(())
    };
    let result = run.await;
    session.close().await?;
    result?;
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_wide_screen_the_page_fits_reports_are_sandboxed_and_sign_out_forgets()
-> anyhow::Result<()> {
    let (_dir, c) = kepri_reporting(6, 0).await?;

    // Every HTML answer carries the headers; a report is sandboxed on its own origin.
    for path in ["/", "/no-such-page"] {
        let r = reqwest::get(c.url(path)).await?;
        let h = r.headers();
        let csp = h["content-security-policy"].to_str()?;
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        let script = csp
            .split(';')
            .find(|d| d.trim().starts_with("script-src"))
            .unwrap();
        assert!(!script.contains("unsafe"), "{path}: {script}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
    }
    let link: Value = reqwest::Client::new()
        .post(c.url("/api/v1/reports/links"))
        .bearer_auth(&c.token)
        .json(&json!({"week": "current", "lang": "en", "format": "html"}))
        .send()
        .await?
        .json()
        .await?;
    let report = reqwest::get(c.url(link["url"].as_str().unwrap())).await?;
    assert_eq!(report.status(), 200);
    assert!(
        report.headers()["content-security-policy"]
            .to_str()?
            .starts_with("sandbox"),
        "a report page runs in a sandbox"
    );
    let bad = reqwest::Client::new()
        .post(c.url("/api/v1/reports/links"))
        .bearer_auth(&c.token)
        .json(&json!({"week": "someday"}))
        .send()
        .await?;
    assert_eq!(bad.status(), 400);
    let expired = reqwest::get(c.url("/reports/view/0123456789abcdef")).await?;
    assert_eq!(expired.status(), 404);

    let session = Browser::start_as(Screen::Desktop {
        width: 1400,
        height: 900,
    })
    .await?;
    let browser = &session.client;
    let run = async {
        overview(browser, &c, "dashboard-wide.png").await?;

        // The report opens in a window of its own origin: the token is out of reach.
        let main_window = open_report(browser).await?;
        let seen = js(
            browser,
            "let token; try { token = localStorage.getItem('tps.token'); } catch (e) { token = 'blocked: ' + e.name; }
             return [window.origin, String(token)];",
        )
        .await?;
        assert_eq!(seen[0], "null", "the report has an opaque origin");
        assert_ne!(seen[1].as_str(), Some(c.token.as_str()));
        browser.close_window().await?;
        browser.switch_to_window(main_window).await?;

        // Signing out forgets the token.
        browser.find(Locator::Id("signout")).await?.click().await?;
        browser
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css("#login[style*='block']"))
            .await?;
        let left = js(browser, "return localStorage.getItem('tps.token');").await?;
        assert!(left.is_null(), "token still stored: {left}");
        Ok::<_, anyhow::Error>(())
    };
    let result = run.await;
    session.close().await?;
    result?;
    c.stop().await
}

#[tokio::test]
async fn stations_outside_their_regency_are_warned_about_and_counted_apart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = TestCollector::start(dir.path()).await?;
    // The first 20 Kepri stations (all in Bintan, 21.01); the 5th with its latitude
    // mirrored south of the equator, as the old file had them.
    let text = std::fs::read_to_string(kepri_registry())?;
    let mut lines: Vec<String> = text.lines().take(21).map(str::to_string).collect();
    let mut f: Vec<String> = lines[5].split(',').map(str::to_string).collect();
    let lat: f64 = f[7].parse()?;
    f[7] = format!("{:.5}", -lat);
    let moved = f[0].clone();
    lines[5] = f.join(",");
    let r: Value = reqwest::Client::new()
        .put(c.url("/api/v1/stations"))
        .bearer_auth(&c.token)
        .header("content-type", "text/csv")
        .body(lines.join("\n") + "\n")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(r["stations"], 20, "imported anyway: {r}");
    assert_eq!(r["outside_regency"]["count"], 1, "{r}");
    let first = r["outside_regency"]["first"][0].as_str().unwrap();
    assert!(
        first.starts_with(&format!("line 6: TPS {moved} at -")),
        "{first}"
    );
    let (_, sum) = c.get_json("/api/v1/summary").await?;
    assert_eq!(sum["outside_regency"], 1);
    let (_, st) = c.get_json("/api/v1/stations?limit=100").await?;
    let flagged: Vec<&str> = st["stations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["outside_regency"] == true)
        .map(|s| s["tps_code"].as_str().unwrap())
        .collect();
    assert_eq!(flagged, [moved.as_str()]);
    // Only the boundaries the registry needs are sent, with their attribution.
    let (status, b) = c.get_json("/api/v1/boundaries?region=21").await?;
    assert_eq!(status, 200);
    let codes: Vec<&str> = b["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["properties"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["21.01"]);
    assert!(b["source"].as_str().unwrap().contains("Cahya DSN"));
    c.stop().await
}
