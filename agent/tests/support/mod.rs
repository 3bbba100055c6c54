//! What the agent's end-to-end tests share: a real collector on loopback with the Kepri
//! registry, the `tps-agent` binary, its config, and the spool read from a copy.
#![allow(dead_code)] // each test file uses its own part

pub mod proxy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tps_agent::credentials;
use tps_agent::spool::Spool;
use tps_collector::testing::{TestCollector, kepri_registry, stored_seqs};

pub const VILLAGE: &str = "21.71.01.1002";
pub const WAIT: Duration = Duration::from_secs(60);

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub collector: TestCollector,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub codes: Vec<(String, String)>,
}

/// The collector tells agents to push every second (and at most `max_batch` at once).
pub fn fast(c: &mut tps_collector::config::Config, max_batch: usize) {
    c.ingest.push_interval_secs = 1;
    c.ingest.max_batch = max_batch;
}

pub async fn setup(max_batch: usize) -> anyhow::Result<Setup> {
    setup_on("127.0.0.1:0".parse()?, max_batch).await
}

/// A collector whose gRPC port listens on `grpc` (port 0: any).
pub async fn setup_on(grpc: SocketAddr, max_batch: usize) -> anyhow::Result<Setup> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("collector");
    tps_collector::commands::import_stations(&data, &kepri_registry())?;
    let collector =
        TestCollector::start_on(&data, grpc, "127.0.0.1:0".parse()?, |c| fast(c, max_batch))
            .await?;
    let codes = collector.codes(VILLAGE)?;
    Ok(Setup {
        grpc: collector.grpc,
        http: collector.http,
        dir,
        collector,
        codes,
    })
}

impl Setup {
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("agent-state")
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }
    /// A fast config pushing to `collector`: rounds every `probe_secs` to the two
    /// loopback addresses (or the targets in `targets`, TOML), `extra` keys added.
    pub fn write_config_to(
        &self,
        collector: &str,
        probe_secs: u64,
        extra: &str,
        targets: Option<&str>,
    ) -> anyhow::Result<PathBuf> {
        let targets = targets.unwrap_or(
            "[[target]]\nname = \"lo4\"\naddress = \"127.0.0.1\"\n\n[[target]]\nname = \"lo6\"\naddress = \"::1\"\n",
        );
        let text = format!(
            "collector = \"{collector}\"\nstate_dir = {:?}\nprobe_interval_secs = {probe_secs}\necho_timeout_ms = 300\nechoes = 3\npush_interval_secs = 1\n{extra}\n{targets}",
            self.state_dir().display().to_string(),
        );
        std::fs::write(self.config_path(), text)?;
        Ok(self.config_path())
    }
    /// Rounds every second to the two loopback addresses.
    pub fn write_config(&self, extra: &str) -> anyhow::Result<PathBuf> {
        self.write_config_to(&format!("http://{}", self.grpc), 1, extra, None)
    }
    pub async fn restart_collector(&mut self, max_batch: usize) -> anyhow::Result<()> {
        let data = self.collector.data_dir.clone();
        self.collector =
            TestCollector::start_on(&data, self.grpc, self.http, |c| fast(c, max_batch)).await?;
        Ok(())
    }
    pub fn stored(&self, agent_id: u64) -> anyhow::Result<Vec<(u64, i64)>> {
        stored_seqs(&self.collector.data_dir, agent_id)
    }
}

pub fn agent_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tps-agent"));
    c.env("RUST_LOG", "info");
    c
}

/// `enroll` arguments for `cmd` (the agent binary, or a wrapper running it).
pub fn enroll_args(
    cmd: &mut Command,
    url: &str,
    (tps, code): (&str, &str),
    config: &Path,
    state: &Path,
) -> anyhow::Result<std::process::Output> {
    Ok(cmd
        .args(["enroll", "--collector", url, "--tps", tps, "--code", code])
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .output()?)
}

/// Enrolls station `i` with the binary; the config written names `s.grpc`.
pub fn enroll_cli(s: &Setup, i: usize) -> anyhow::Result<credentials::Credentials> {
    let (tps, code) = &s.codes[i];
    let out = enroll_args(
        &mut agent_bin(),
        &format!("http://{}", s.grpc),
        (tps, code),
        &s.config_path(),
        &s.state_dir(),
    )?;
    anyhow::ensure!(
        out.status.success(),
        "enroll failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(credentials::load(&s.state_dir())?)
}

/// (entries in the file, last seq, dropped) of a spool, from a copy: the running agent
/// keeps its spool locked.
pub fn spool_state(state_dir: &Path) -> anyhow::Result<(u64, u64, u64)> {
    let s = Spool::snapshot(state_dir)?;
    Ok((s.entries, s.last_seq, s.dropped))
}

pub fn run_agent_process(config: &Path) -> anyhow::Result<Child> {
    Ok(agent_bin()
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// An agent process whose log lines (stderr) are collected, for counting.
pub struct LoggedAgent {
    pub child: Child,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl LoggedAgent {
    pub fn spawn(mut cmd: Command) -> anyhow::Result<LoggedAgent> {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        Ok(LoggedAgent { child, log })
    }
    /// Log lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
    pub fn text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LoggedAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Rounds per start time among stored measurements, at most `targets` each: more means
/// a round stored twice (under new numbers).
pub fn assert_no_round_twice(rows: &[(u64, i64)], targets: usize) {
    let mut per_start = std::collections::BTreeMap::<i64, usize>::new();
    for (_, start) in rows {
        *per_start.entry(*start).or_default() += 1;
    }
    let twice: Vec<_> = per_start.iter().filter(|(_, n)| **n > targets).collect();
    assert!(
        twice.is_empty(),
        "rounds stored twice (start_ms, rows): {twice:?}"
    );
}
