//! The operators' dashboard in a real headless Chromium (Debian `chromium` and
//! `chromium-driver`): its numbers equal the API's, acknowledging a flag on the page
//! changes it in the API, and a screenshot is kept as a test artifact.

use std::time::Duration;

use fantoccini::Locator;
use tps_tests::browser::{Browser, digits, kepri_reporting, open_dashboard, open_report};
use tps_tests::eventually;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_apis_numbers_and_works_the_queue() -> anyhow::Result<()> {
    let (_dir, c) = kepri_reporting(6, 1).await?;

    let session = Browser::start().await?;
    let browser = &session.client;
    let run = async {
        open_dashboard(browser, &c).await?;

        // The page's numbers are the API's.
        let (_, sum) = c.get_json("/api/v1/summary?region=21").await?;
        let text = |id: &'static str| {
            let b = &browser;
            async move { b.find(Locator::Id(id)).await?.text().await }
        };
        assert_eq!(
            digits(&text("total-count").await?),
            sum["total"].as_u64().unwrap()
        );
        assert_eq!(
            digits(&text("covered-count").await?),
            sum["covered"].as_u64().unwrap()
        );
        assert_eq!(
            digits(&text("uncovered-count").await?),
            sum["uncovered"].as_u64().unwrap()
        );
        assert_eq!(sum["covered"], 5);
        let (_, regs) = c
            .get_json("/api/v1/regions?level=regency&parent=21")
            .await?;
        let (_, fl) = c.get_json("/api/v1/flags?region=21&limit=1").await?;
        assert_eq!(
            digits(&text("flag-count").await?),
            fl["total"].as_u64().unwrap()
        );
        assert_eq!(fl["total"], 3327 - 5);
        let rows = browser.find_all(Locator::Css("#regions tbody tr")).await?;
        assert_eq!(rows.len(), regs["regions"].as_array().unwrap().len());

        // Acknowledge the first flag on the page; the API sees it.
        let row = browser
            .find(Locator::Css("#flags tbody tr[data-flag-id]"))
            .await?;
        let id: i64 = row
            .attr("data-flag-id")
            .await?
            .unwrap_or_default()
            .parse()?;
        row.find(Locator::Css("button.ack")).await?.click().await?;
        eventually(WAIT, "the flag acknowledged in the API", || async {
            let (_, f) = c.get_json(&format!("/api/v1/flags/{id}")).await.ok()?;
            (f["status"] == "acknowledged").then_some(())
        })
        .await?;
        let (_, f) = c.get_json(&format!("/api/v1/flags/{id}")).await?;
        assert_eq!(f["events"][1]["actor"].as_str().unwrap(), c.token_owner());

        let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::write(
            out_dir.join("dashboard-overview.png"),
            browser.screenshot().await?,
        )?;

        // English labels on request; the station page with its chart and history.
        browser.find(Locator::Id("lang")).await?.click().await?;
        browser
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath("//small[text()='Covered']"))
            .await?;
        browser
            .find(Locator::Css(&format!(
                "a.station[data-tps='{}']",
                f["tps_code"].as_str().unwrap()
            )))
            .await?
            .click()
            .await?;
        browser
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css("#station[style*='block'] #st-transitions"))
            .await?;

        // This week's report opens from the dashboard, in the page's language.
        let main_window = open_report(browser).await?;
        let title = browser
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css("h1"))
            .await?
            .text()
            .await?;
        assert_eq!(title, "Weekly TPS Connectivity Coverage Report");
        let stations = browser
            .find(Locator::Css("[data-k='stations']"))
            .await?
            .text()
            .await?;
        assert_eq!(digits(&stations), 3327);
        browser.close_window().await?;
        browser.switch_to_window(main_window).await?;

        let png = browser.screenshot().await?;
        let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        std::fs::write(&out, &png)?;
        println!("screenshot: {}", out.display());
        anyhow::ensure!(png.len() > 10_000, "the screenshot is suspiciously small");
        Ok::<_, anyhow::Error>(())
    };
    let result = run.await;
    session.close().await?;
    result?;
    c.stop().await
}
