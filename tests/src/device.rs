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
