//! Real processes for benchmarks: a `tps-collector` started as its own process (its
//! bound addresses read from its log), and what `/proc` says of a process's memory and CPU.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `tps-collector serve` process we started on loopback; killed by its PID on drop.
#[derive(Debug)]
pub struct CollectorProcess {
    child: Child,
    pub pid: u32,
    pub grpc: String,
    pub http: String,
}

impl CollectorProcess {
    /// Serves `data_dir` in plain text on two free loopback ports, logging with `filter`;
    /// waits up to `timeout` for it to report its addresses.
    pub fn start(
        bin: &Path,
        data_dir: &Path,
        filter: &str,
        timeout: Duration,
    ) -> anyhow::Result<CollectorProcess> {
        Self::start_on(
            bin,
            data_dir,
            filter,
            timeout,
            "127.0.0.1:0",
            "127.0.0.1:0",
            "",
        )
    }

    /// As [`CollectorProcess::start`], on given addresses (a restart on the same ports),
    /// with `extra` TOML appended to the config.
    pub fn start_on(
        bin: &Path,
        data_dir: &Path,
        filter: &str,
        timeout: Duration,
        grpc: &str,
        http: &str,
        extra: &str,
    ) -> anyhow::Result<CollectorProcess> {
        let cfg = data_dir.with_extension("toml");
        std::fs::write(
            &cfg,
            format!(
                "[grpc]\nlisten = \"{grpc}\"\n[http]\nlisten = \"{http}\"\n[tls]\nplaintext = true\n[store]\ndata_dir = {:?}\n{extra}",
                data_dir.display().to_string()
            ),
        )?;
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", format!("{filter},tps_collector::server=info"))
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let (Some(g), Some(h)) = (
                    line.split("grpc_addr=").nth(1),
                    line.split("http_addr=").nth(1),
                ) {
                    let first = |s: &str| s.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send((first(g), first(h)));
                }
            }
        });
        let (grpc, http) = rx.recv_timeout(timeout).map_err(|_| {
            anyhow::anyhow!("the collector did not report its addresses within {timeout:?}")
        })?;
        Ok(CollectorProcess {
            pid: child.id(),
            child,
            grpc,
            http,
        })
    }
}

impl CollectorProcess {
    /// SIGKILL, as a crash or the OOM killer would; waits until it is gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in megabytes.
pub fn status_mb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// CPU time (user + system) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let f: Vec<String> = s
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .map(String::from)
                .collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        });
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let per_sec = *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    });
    ticks.unwrap_or(0.0) / per_sec
}

/// A store ready for a benchmark, made with the collector binary's own commands: the
/// registry imported (its time printed), a viewer operator, enrollment codes for
/// `region`. Returns the operator's token and the (tps_code, code) pairs.
pub fn prepare_store(
    bin: &Path,
    data: &Path,
    registry: &Path,
    region: &str,
) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let run = |a: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(bin)
            .args(a)
            .arg("--data-dir")
            .arg(data)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    };
    let t = std::time::Instant::now();
    run(&["import-stations", registry.to_str().unwrap_or_default()])?;
    println!("import: {:.1} s", t.elapsed().as_secs_f64());
    let token = run(&["operator", "add", "bench", "--role", "viewer"])?
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    let codes_file = data.with_extension("codes.csv");
    run(&[
        "enroll-codes",
        "--region",
        region,
        "--out",
        codes_file.to_str().unwrap_or_default(),
    ])?;
    Ok((token, crate::read_codes(&codes_file)?))
}
