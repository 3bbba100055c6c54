//! The agent as a Windows laptop runs it: the real cross-built `tps-agent.exe` under
//! Wine (see `tps_tests::wine`), against a real collector on loopback — enrolled by
//! host name into `%ProgramData%`, checked with ICMP through the Windows ICMP API,
//! pushing a backlog and killed in the middle of it, and run as a Windows service.

use std::io::BufRead;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tps_agent::spool::Spool;
use tps_tests::device::{
    delivers_everything_after_restart, enroll_args, fast_agent_config, fast_collector, fixture,
    output_text,
};
use tps_tests::wine::{Laptop, built};
use tps_tests::{TestCollector, eventually};

const VILLAGE: &str = "21.71.01.1002";
const WAIT: Duration = Duration::from_secs(120);
const STATE: &str = r"C:\ProgramData\tps-agent\state";
const CONFIG: &str = r"C:\ProgramData\tps-agent\agent.toml";

/// (waiting, last seq) in the spool; read only while no agent process runs (Wine's file
/// locks are its own, so SQLite on the host would not see the agent's).
fn spool_state(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let s = Spool::snapshot(dir)?;
    Ok((s.entries, s.last_seq))
}

/// Counts the agent's "round spooled" lines on its stderr, in a thread.
fn count_rounds(child: &mut std::process::Child) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
    let n = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stderr = child.stderr.take().expect("stderr piped");
    let counter = n.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("round spooled") {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_agent_enrolls_checks_and_loses_nothing_when_killed() -> anyhow::Result<()> {
    let Some((exe, dll)) = built()? else {
        return Ok(());
    };
    let mut f = fixture(VILLAGE, |c| fast_collector(c, 2)).await?;
    let data = f.data.clone();
    let (grpc, http) = (f.collector.grpc, f.collector.http);
    let laptop = Laptop::new(&exe, &dll)?;
    let url = format!("http://localhost:{}", grpc.port());

    // Enrolled by host name; config and token land in %ProgramData%\tps-agent.
    let (out, text) = output_text(laptop.agent(&enroll_args(&url, &f.tps, &f.code)))?;
    assert!(out.status.success(), "enroll: {text}");
    assert!(text.contains("tps-agent service install"), "{text}");
    let written = std::fs::read_to_string(laptop.path(CONFIG))?;
    assert!(written.contains(&url), "{written}");
    let state = laptop.path(STATE);
    let agent_id = tps_agent::credentials::load(&state)?.agent_id;

    // check: ICMP to 127.0.0.1 through IcmpSendEcho, TCP to the collector by name.
    // state_dir named, as enroll writes it: Wine gives services another %ProgramData%.
    std::fs::write(
        laptop.path(CONFIG),
        format!(
            "state_dir = '{STATE}'\n{}",
            fast_agent_config("localhost", grpc.port())
        ),
    )?;
    let (out, text) = output_text(laptop.agent(&["check"]))?;
    assert!(out.status.success(), "check: {text}");
    assert!(
        text.contains("lo4") && text.contains("ICMP") && text.contains("3/3 replies"),
        "{text}"
    );
    assert!(
        text.contains("TCP") && text.contains("RESULT: COVERED"),
        "{text}"
    );
    let from_check = tps_collector::testing::stored_seqs(&data, agent_id)?.len() as u64;
    assert!(from_check > 0, "check delivered its round");

    // The collector goes away; the laptop keeps measuring into its spool.
    f.collector.halt().await?;
    let mut agent = laptop
        .agent(&["run"])
        .env("RUST_LOG", "tps_agent=debug,info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let rounds = count_rounds(&mut agent);
    eventually(WAIT, "12 rounds spooled during the outage", || async {
        (rounds.load(std::sync::atomic::Ordering::Relaxed) >= 12).then_some(())
    })
    .await?;

    // Back; the agent is killed after the first pushes of the backlog.
    f.collector = TestCollector::start_on(&data, grpc, http, |c| fast_collector(c, 2)).await?;
    eventually(WAIT, "the backlog starts arriving", || async {
        let n = tps_collector::testing::stored_seqs(&data, agent_id)
            .ok()?
            .len() as u64;
        (n > from_check).then_some(())
    })
    .await?;
    agent.kill()?;
    agent.wait()?;
    let (depth, last) = spool_state(&state)?;
    assert!(depth > 0, "killed mid-backlog ({depth} waiting)");

    // Restarted, it delivers everything, once and in order.
    delivers_everything_after_restart(laptop.agent(&["run"]), &data, agent_id, last, WAIT).await?;

    // As a Windows service: installed for automatic start, started, delivering, stopped.
    let (out, text) = output_text(laptop.agent(&["service", "install"]))?;
    assert!(out.status.success(), "service install: {text}");
    let reg = laptop.service_key()?;
    assert!(
        reg.contains(r"tps-agent.exe service-run --config C:\ProgramData\tps-agent\agent.toml")
            && reg.contains("Start    REG_DWORD    0x2"),
        "automatic start, the same config: {reg}"
    );
    // A reboot of the prefix (Wine's service manager also forgets a service created
    // after processes of the prefix were SIGKILLed until it starts again): the service
    // starts by itself, as at Windows boot, and delivers.
    laptop.reboot()?;
    // Wine stops a prefix's services once no user program runs in it; a command
    // prompt stands for the logged-in user.
    let mut session = laptop
        .program(&["cmd"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let service_log = || {
        std::fs::read_to_string(laptop.path(r"C:\ProgramData\tps-agent\agent.log"))
            .unwrap_or_default()
    };
    // Also told by the service's own log (a service has no console).
    let logged = |what: &'static str, times: usize| {
        let log = service_log;
        async move {
            eventually(WAIT, what, || async {
                (log().matches(what).count() >= times).then_some(())
            })
            .await
            .map_err(|e| e.context(format!("the service's log:\n{}", log())))
        }
    };
    logged("the collector takes pushes", 1).await?;
    let stored = || tps_collector::testing::stored_seqs(&data, agent_id).map(|r| r.len());
    let before = stored()?;
    eventually(WAIT, "rounds from the service started at boot", || async {
        (stored().ok()? > before + 4).then_some(())
    })
    .await
    .map_err(|e| e.context(format!("the service's log:\n{}", service_log())))?;
    let (out, text) = output_text(laptop.agent(&["service", "stop"]))?;
    assert!(out.status.success(), "service stop: {text}");
    logged("agent stopping", 1).await?;
    let (out, text) = output_text(laptop.agent(&["service", "start"]))?;
    assert!(out.status.success(), "service start: {text}");
    logged("agent running", 2).await?;
    let before = stored()?;
    eventually(WAIT, "rounds after service start", || async {
        (stored().ok()? > before + 4).then_some(())
    })
    .await?;
    let (out, text) = output_text(laptop.agent(&["service", "uninstall"]))?;
    assert!(out.status.success(), "service uninstall: {text}");
    eventually(WAIT, "the service removed", || async {
        (!laptop.service_key().ok()?.contains("ImagePath")).then_some(())
    })
    .await?;
    let _ = session.kill();
    let _ = session.wait();
    // Everything delivered once, whichever process sent it.
    let rows = tps_collector::testing::stored_seqs(&data, agent_id)?;
    assert!(
        rows.windows(2).all(|w| w[0].0 < w[1].0),
        "no seq stored twice"
    );
    f.collector.stop().await?;
    Ok(())
}

/// An unresolvable collector name: the laptop's technician is told what to check.
#[test]
fn the_windows_agent_says_what_to_change() -> anyhow::Result<()> {
    let Some((exe, dll)) = built()? else {
        return Ok(());
    };
    let laptop = Laptop::new(&exe, &dll)?;
    let unknown = enroll_args(
        "http://nowhere.tps.test:50051",
        "2171011002001",
        "AAAA-AAAA",
    );
    let (out, text) = output_text(laptop.agent(&unknown))?;
    assert!(!out.status.success());
    assert!(
        text.contains("cannot resolve the host name \"nowhere.tps.test\"")
            && text.contains(r"drivers\etc\hosts"),
        "{text}"
    );
    Ok(())
}

/// The kit a technician gets: unzipped, `install.cmd` run once (here by Wine's cmd),
/// the program lands in Program Files and the service is registered with the
/// config in %ProgramData%; `uninstall.cmd` removes the service again.
#[tokio::test]
async fn the_windows_kit_installs_in_one_step() -> anyhow::Result<()> {
    let (Some((exe, dll)), Some(kit)) = (built()?, Laptop::kit()?) else {
        return Ok(());
    };
    let laptop = Laptop::new(&exe, &dll)?;
    let st = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&kit)
        .arg(laptop.path(r"C:\kit"))
        .status()?;
    assert!(st.success(), "unzip {}", kit.display());
    let (out, text) = output_text(laptop.program(&["cmd", "/c", r"C:\kit\install.cmd"]))?;
    assert!(
        out.status.success() && text.contains("tps-agent is installed"),
        "install.cmd: {text}"
    );
    assert!(
        laptop
            .path(r"C:\Program Files\tps-agent\tps-agent.exe")
            .is_file()
    );
    let example =
        std::fs::read_to_string(laptop.path(r"C:\ProgramData\tps-agent\agent.example.toml"))?;
    assert!(
        example.contains(r"state_dir = 'C:\ProgramData\tps-agent\state'"),
        "{example}"
    );
    let reg = laptop.service_key()?;
    assert!(
        reg.contains(r#""C:\Program Files\tps-agent\tps-agent.exe" service-run"#)
            && reg.contains(r"--config C:\ProgramData\tps-agent\agent.toml")
            && reg.contains("Start    REG_DWORD    0x2"),
        "{reg}"
    );
    // Wine's service manager sees a service made by another process only after it
    // restarts ("does not exist" until then): reboot, as a laptop would in between.
    laptop.reboot()?;
    let (out, text) = output_text(laptop.program(&["cmd", "/c", r"C:\kit\uninstall.cmd"]))?;
    assert!(out.status.success(), "uninstall.cmd: {text}");
    assert!(
        text.contains("service tps-agent removed"),
        "uninstall.cmd: {text}"
    );
    // DeleteService marks the service; Wine's service manager drops the key when it
    // lets go of it, at the latest when the machine restarts (as Windows does).
    laptop.reboot()?;
    eventually(WAIT, "the service removed", || async {
        (!laptop.service_key().ok()?.contains("ImagePath")).then_some(())
    })
    .await?;
    Ok(())
}
