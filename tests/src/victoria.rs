//! A real VictoriaMetrics server (Debian package `victoria-metrics`) on 127.0.0.1 with
//! a random port and a temporary data directory: the time-series server the InfluxDB
//! sink is proven against (it accepts InfluxDB 2's `/api/v2/write`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_http_ok;

/// A running VictoriaMetrics process we started (stopped by its PID, on drop too).
#[derive(Debug)]
pub struct VictoriaMetrics {
    pub port: u16,
    data: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

/// One exported series: labels and (timestamp ms, value) samples.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub samples: Vec<(i64, f64)>,
}

impl Series {
    pub fn name(&self) -> &str {
        self.labels
            .get("__name__")
            .and_then(|v| v.as_str())
            .unwrap_or("")
    }
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).and_then(|v| v.as_str()).unwrap_or("")
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl VictoriaMetrics {
    /// Starts a server on a free port with `data` as its storage; `extra` flags appended.
    pub async fn start(data: &Path, extra: &[&str]) -> anyhow::Result<VictoriaMetrics> {
        let mut vm = VictoriaMetrics {
            port: free_port()?,
            data: data.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        vm.restart().await?;
        Ok(vm)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and data directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let bin = which_victoria()?;
        let child = Command::new(bin)
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.data.display()))
            // Test data carries old timestamps; keep them.
            .arg("-retentionPeriod=100y")
            // A batch re-sent after a lost answer must not count twice.
            .arg("-dedup.minScrapeInterval=1ms")
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        wait_http_ok(
            &format!("{}/health", self.url()),
            Duration::from_secs(30),
            "VictoriaMetrics to answer /health",
        )
        .await
    }

    /// Stops the process we started, by its PID, with SIGTERM: VictoriaMetrics then
    /// flushes what it acknowledged (SIGKILL would lose its in-memory buffer, which
    /// no client can make up for).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            let term = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()?;
            if !term.success() {
                c.kill()?;
            }
            c.wait()?;
        }
        Ok(())
    }

    /// Every series matching a selector, after making recent writes searchable.
    pub async fn export(&self, selector: &str) -> anyhow::Result<Vec<Series>> {
        reqwest::get(format!("{}/internal/force_flush", self.url())).await?;
        let text = reqwest::Client::new()
            .post(format!("{}/api/v1/export", self.url()))
            .form(&[("match[]", selector)])
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)?;
            let labels = v["metric"].as_object().cloned().unwrap_or_default();
            let ts = v["timestamps"].as_array().cloned().unwrap_or_default();
            let vals = v["values"].as_array().cloned().unwrap_or_default();
            let samples = ts
                .iter()
                .zip(vals.iter())
                .map(|(t, x)| (t.as_i64().unwrap_or(0), x.as_f64().unwrap_or(f64::NAN)))
                .collect();
            out.push(Series { labels, samples });
        }
        Ok(out)
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn which_victoria() -> anyhow::Result<PathBuf> {
    for p in [
        "/usr/bin/victoria-metrics",
        "/usr/local/bin/victoria-metrics",
    ] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    anyhow::bail!(
        "victoria-metrics is not installed: `apt-get install victoria-metrics` (.ci/run does this)"
    )
}
