//! A real headless Chromium (Debian `chromium`) driven through `chromedriver`, for the
//! tests of the dashboard and the weekly report.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

use crate::{Agent, TestCollector, eventually, kepri_registry, measurement, now_ms};

/// A chromedriver we started; ended by its PID on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The screen a session runs on, in CSS pixels.
#[derive(Debug, Clone, Copy)]
pub enum Screen {
    Desktop { width: u32, height: u32 },
    Phone { width: u32, height: u32 },
}

/// A browser session; call [`Browser::close`] when done.
pub struct Browser {
    pub client: Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless session.
    pub async fn start() -> anyhow::Result<Browser> {
        Self::start_as(Screen::Desktop {
            width: 1400,
            height: 2000,
        })
        .await
    }

    /// A session on a screen of its own: a desktop window, or a phone (Chromium's
    /// device emulation: its viewport, pixel ratio, and touch input).
    pub async fn start_as(screen: Screen) -> anyhow::Result<Browser> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start chromedriver ({e}): apt-get install chromium chromium-driver (scripts/test does)"))?;
        let driver = Driver(child);
        let profile = tempfile::tempdir()?;
        let (width, height) = match screen {
            Screen::Desktop { width, height } | Screen::Phone { width, height } => (width, height),
        };
        let mut options = json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", format!("--window-size={width},{height}"),
                     format!("--user-data-dir={}", profile.path().display())]
        });
        if let Screen::Phone { width, height } = screen {
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 3.0, "touch": true, "mobile": true },
                "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36"
            });
        }
        let caps = json!({ "goog:chromeOptions": options });
        let caps = caps.as_object().cloned().unwrap_or_default();
        let client = eventually(
            Duration::from_secs(20),
            "chromedriver to accept a session",
            || {
                let caps = caps.clone();
                let url = format!("http://127.0.0.1:{port}");
                async move {
                    ClientBuilder::rustls()
                        .ok()?
                        .capabilities(caps)
                        .connect(&url)
                        .await
                        .ok()
                }
            },
        )
        .await?;
        Ok(Browser {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    pub async fn close(self) -> anyhow::Result<()> {
        self.client.close().await?;
        Ok(())
    }
}

/// The digits of a displayed number (`3.327`, `3,327` → 3327).
pub fn digits(s: &str) -> u64 {
    s.chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(u64::MAX)
}

/// What the dashboard tests look at: the Kepri registry on a collector with fast
/// coverage ticks, `reporting` stations of village 21.71.01.1002 pushing rounds (the last
/// `degraded` of them with four echoes of five lost), the rest in the follow-up queue.
pub async fn kepri_reporting(
    reporting: usize,
    degraded: usize,
) -> anyhow::Result<(tempfile::TempDir, TestCollector)> {
    let wait = Duration::from_secs(60);
    let dir = tempfile::tempdir()?;
    tps_collector::commands::import_stations(dir.path(), &kepri_registry())?;
    let c = TestCollector::start_with(dir.path(), |cfg| {
        cfg.coverage.tick = Duration::from_millis(100);
        cfg.coverage.flags.grace_ms = 200;
        // Stations flagged before their first push (a slow machine) close again quickly.
        cfg.coverage.flags.recovery_ms = 300;
    })
    .await?;
    let codes = c.codes("21.71.01.1002")?;
    let base = now_ms() - 5 * 60_000;
    for (i, (tps, code)) in codes.iter().take(reporting).enumerate() {
        let mut a = Agent::enroll(&c, tps, code).await?;
        let ms = (1..=4)
            .map(|s| {
                let mut m = measurement(s, base, "gateway");
                if i + degraded >= reporting {
                    m.received = 1;
                }
                m
            })
            .collect();
        a.push(ms).await?;
    }
    let flagged = 3327 - (reporting - degraded);
    eventually(wait, "the follow-up queue to fill", || async {
        let (_, f) = c.get_json("/api/v1/flags?limit=1").await.ok()?;
        (f["total"] == flagged).then_some(())
    })
    .await?;
    Ok((dir, c))
}

/// Opens the dashboard signed in as the test admin and waits until it has drawn.
pub async fn open_dashboard(browser: &Client, c: &TestCollector) -> anyhow::Result<()> {
    browser
        .goto(&format!("{}/#token={}", c.url(""), c.token))
        .await?;
    browser
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(fantoccini::Locator::Css("body[data-ready='1']"))
        .await?;
    Ok(())
}

/// Clicks the dashboard's report button and switches to the window it opens, once the
/// report's heading is there; returns the dashboard's window, to switch back to.
pub async fn open_report(browser: &Client) -> anyhow::Result<fantoccini::wd::WindowHandle> {
    let main_window = browser.window().await?;
    browser
        .find(fantoccini::Locator::Id("report"))
        .await?
        .click()
        .await?;
    let report_window = eventually(
        Duration::from_secs(60),
        "the report window to open",
        || async {
            let all = browser.windows().await.ok()?;
            all.into_iter().find(|w| *w != main_window)
        },
    )
    .await?;
    browser.switch_to_window(report_window).await?;
    browser
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(fantoccini::Locator::Css("h1"))
        .await?;
    Ok(main_window)
}
