//! Starting the real `tps-collector` binary for process-level tests: the addresses it
//! bound are read from its log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Spawns `cmd` (a `tps-collector serve …`, perhaps behind a wrapper such as `prlimit`)
/// with its log piped, and waits until it reports its gRPC and HTTP addresses.
pub fn spawn(mut cmd: Command) -> anyhow::Result<(Child, String, String)> {
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent
                && let (Some(g), Some(h)) = (
                    line.split("grpc_addr=").nth(1),
                    line.split("http_addr=").nth(1),
                )
            {
                let first = |s: &str| s.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send((first(g), first(h)));
                sent = true;
            }
        }
    });
    let (grpc, http) = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow::anyhow!("the collector did not report its addresses within 30 s"))?;
    Ok((child, grpc, http))
}

/// Serves `dir/data` in plain text on two free loopback ports, with `store_extra` TOML
/// appended after the `[store]` keys (further sections may follow in it).
// Not every test binary that includes this module calls it (edges.rs wraps the binary in
// `prlimit` and configures each port).
#[allow(dead_code)]
pub fn serve(dir: &Path, store_extra: &str) -> anyhow::Result<(Child, String, String)> {
    let cfg = dir.join("collector.toml");
    std::fs::write(
        &cfg,
        format!(
            "[grpc]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[tls]\nplaintext = true\n[store]\ndata_dir = \"data\"\n{store_extra}"
        ),
    )?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tps-collector"));
    cmd.args(["serve", "--config"]).arg(&cfg);
    spawn(cmd)
}
