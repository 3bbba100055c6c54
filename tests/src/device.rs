//! What the device tests (router under qemu, laptop under Wine) share: a collector that
//! wants pushes every second, a fast agent config, and a command's whole output.

use std::process::{Command, Output};

/// The collector tells agents to push every second, at most `max_batch` at once.
pub fn fast_collector(c: &mut tps_collector::config::Config, max_batch: usize) {
    c.ingest.push_interval_secs = 1;
    c.ingest.max_batch = max_batch;
}

/// A fast agent config: ICMP to 127.0.0.1 first (the primary target), TCP to the
/// collector by `host` name; rounds and pushes every second.
pub fn fast_agent_config(host: &str, port: u16) -> String {
    format!(
        "collector = \"http://{host}:{port}\"\n\
         probe_interval_secs = 1\necho_timeout_ms = 500\nechoes = 3\npush_interval_secs = 1\n\n\
         [[target]]\nname = \"lo4\"\naddress = \"127.0.0.1\"\n\n\
         [[target]]\nname = \"collector\"\naddress = \"collector\"\nmethod = \"tcp\"\nport = {port}\n"
    )
}

/// Runs `c` to the end; its status and stdout followed by stderr.
pub fn output_text(mut c: Command) -> anyhow::Result<(Output, String)> {
    let out = c.output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out, text))
}

/// `enroll --collector URL --tps CODE --code ENROLLMENT`.
pub fn enroll_args<'a>(url: &'a str, tps: &'a str, code: &'a str) -> [&'a str; 7] {
    ["enroll", "--collector", url, "--tps", tps, "--code", code]
}

/// Restarts an agent killed mid-backlog (`agent` runs `tps-agent run` quietly) and
/// holds that every round up to `last` is then stored once, in order; returns the rows
/// (seq, start_ms) stored for `agent_id`.
pub async fn delivers_everything_after_restart(
    mut agent: Command,
    data_dir: &std::path::Path,
    agent_id: u64,
    last: u64,
    limit: std::time::Duration,
) -> anyhow::Result<Vec<(u64, i64)>> {
    let mut child = agent
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let rows = crate::eventually(limit, "everything spooled before the kill", || async {
        let rows = tps_collector::testing::stored_seqs(data_dir, agent_id).ok()?;
        (rows.len() as u64 >= last).then_some(rows)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let rows = rows?;
    tps_collector::testing::assert_complete_and_ordered(&rows, last);
    Ok(rows)
}

/// A collector on a fresh store with the Kepri registry, its config adjusted by `tune`
/// (e.g. [`fast_collector`]), and the enrollment code of one station of `village`.
#[derive(Debug)]
pub struct Fixture {
    /// Holds the store; removed when dropped.
    pub dir: tempfile::TempDir,
    pub data: std::path::PathBuf,
    pub collector: crate::TestCollector,
    pub tps: String,
    pub code: String,
}

pub async fn fixture(
    village: &str,
    tune: impl FnOnce(&mut tps_collector::config::Config),
) -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("collector");
    tps_collector::commands::import_stations(&data, &crate::kepri_registry())?;
    let collector = crate::TestCollector::start_with(&data, tune).await?;
    let (tps, code) = collector.codes(village)?.remove(0);
    Ok(Fixture {
        dir,
        data,
        collector,
        tps,
        code,
    })
}
