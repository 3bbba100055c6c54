//! The agent as a router runs it: the real cross-built aarch64 and armv7 binaries under
//! qemu-user in a chroot with no libc (see `tps_tests::router`), against a real
//! collector on loopback — enrolled by host name, checked, pushing a backlog and
//! SIGKILLed in the middle of it; and what it tells the operator when the router is in
//! the way. The OpenWrt package is unpacked with tar and its parts checked.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tps_agent::spool::Spool;
use tps_tests::device::{
    delivers_everything_after_restart, enroll_args, fast_agent_config, fast_collector, fixture,
    output_text as run,
};
use tps_tests::router::{AARCH64, ARMV7, Arch, MIPSEL, RouterRoot, built};
use tps_tests::{TestCollector, eventually};

const VILLAGE: &str = "21.71.01.1002";
/// qemu-user is slower than a router: generous, but a deadline all the same.
const WAIT: Duration = Duration::from_secs(120);
const HOSTS: &str = "127.0.0.1 localhost\n127.0.0.1 collector.tps.test\n";

/// The router's state as the agent keeps it: (waiting, last seq) in its spool.
fn spool_state(dir: &Path) -> Option<(u64, u64)> {
    let s = Spool::snapshot(dir).ok()?;
    Some((s.entries, s.last_seq))
}

async fn router_end_to_end(arch: Arch) -> anyhow::Result<()> {
    let Some(bin) = built(arch)? else {
        return Ok(());
    };
    let mut f = fixture(VILLAGE, |c| fast_collector(c, 2)).await?;
    let data = f.data.clone();
    let (grpc, http) = (f.collector.grpc, f.collector.http);
    let router = RouterRoot::new(arch, &bin, HOSTS)?;
    let url = format!("http://collector.tps.test:{}", grpc.port());

    // Enrolled by host name, with the router's defaults for config and state.
    let (out, text) = run(router.agent(&enroll_args(&url, &f.tps, &f.code), "", None))?;
    assert!(out.status.success(), "{}: enroll: {text}", arch.triple);
    assert!(text.contains("/etc/init.d/tps-agent start"), "{text}");
    let creds = router.path("/etc/tps-agent/state/credentials.toml");
    let mode = std::fs::metadata(&creds)?.permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the token is private");
    let written = std::fs::read_to_string(router.path("/etc/tps-agent/agent.toml"))?;
    assert!(written.contains(&url), "{written}");
    let agent_id = tps_agent::credentials::load(&router.path("/etc/tps-agent/state"))?.agent_id;

    // check: ICMP to 127.0.0.1 and TCP to the collector's name, then one push.
    std::fs::write(
        router.path("/etc/tps-agent/agent.toml"),
        fast_agent_config("collector.tps.test", grpc.port()),
    )?;
    let (out, text) = run(router.agent(&["check"], "", None))?;
    assert!(out.status.success(), "{}: check: {text}", arch.triple);
    assert!(
        text.contains("lo4") && text.contains("ICMP") && text.contains("3/3 replies"),
        "{text}"
    );
    assert!(
        text.contains(&format!("127.0.0.1:{}", grpc.port())) && text.contains("TCP"),
        "{text}"
    );
    assert!(text.contains("RESULT: COVERED"), "{text}");

    // The collector goes away; the router keeps measuring onto its flash.
    let from_check = tps_collector::testing::stored_seqs(&data, agent_id)?.len();
    assert!(from_check > 0, "check delivered its round");
    f.collector.halt().await?;
    let state = router.path("/etc/tps-agent/state");
    let mut agent = router
        .agent(&["run"], "", None)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    eventually(WAIT, "a backlog of 24 on the router", || async {
        (spool_state(&state)?.0 >= 24).then_some(())
    })
    .await?;

    // It comes back; the agent is killed after the first pushes of the backlog.
    f.collector = TestCollector::start_on(&data, grpc, http, |c| fast_collector(c, 2)).await?;
    let first = eventually(WAIT, "the backlog starts arriving", || async {
        let n = tps_collector::testing::stored_seqs(&data, agent_id)
            .ok()?
            .len() as u64;
        (n > from_check as u64).then_some(n)
    })
    .await?;
    agent.kill()?; // SIGKILL, mid-backlog
    agent.wait()?;
    let (depth, last) = spool_state(&state).expect("spool readable after the kill");
    assert!(
        depth > 0,
        "killed mid-backlog ({first} stored, {depth} waiting)"
    );

    // Restarted, it delivers everything, once and in order.
    let agent = router.agent(&["run"], "", None);
    delivers_everything_after_restart(agent, &data, agent_id, last, WAIT).await?;
    f.collector.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aarch64_router_enrolls_by_name_checks_and_loses_nothing_when_killed() -> anyhow::Result<()>
{
    router_end_to_end(AARCH64).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn armv7_router_enrolls_by_name_checks_and_loses_nothing_when_killed() -> anyhow::Result<()> {
    router_end_to_end(ARMV7).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mipsel_router_enrolls_by_name_checks_and_loses_nothing_when_killed() -> anyhow::Result<()>
{
    router_end_to_end(MIPSEL).await
}

/// A name only a DNS server knows: the static binary asks the server named in the
/// router's `/etc/resolv.conf` (a real dnsmasq on 127.0.0.153), with no NSS module.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_finds_the_collector_through_resolv_conf() -> anyhow::Result<()> {
    let Some(bin) = built(AARCH64)? else {
        return Ok(());
    };
    let f = fixture(VILLAGE, |_| {}).await?;
    let mut dns = Command::new("/usr/sbin/dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--user=root",
            "--port=53",
            "--listen-address=127.0.0.153",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--address=/collector.dns.test/127.0.0.1",
            "--log-facility=-",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut log = std::io::BufReader::new(dns.stderr.take().expect("piped"));
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut log, &mut line)? > 0 && !line.contains("started") {
        line.clear();
    }
    anyhow::ensure!(line.contains("started"), "dnsmasq did not start");

    let router = RouterRoot::new(
        AARCH64,
        &bin,
        "127.0.0.1 localhost
",
    )?;
    std::fs::write(router.path("/etc/resolv.conf"), "nameserver 127.0.0.153\n")?;
    let url = format!("http://collector.dns.test:{}", f.collector.grpc.port());
    let result = run(router.agent(&enroll_args(&url, &f.tps, &f.code), "", None));
    let _ = dns.kill();
    let _ = dns.wait();
    let (out, text) = result?;
    assert!(out.status.success(), "enroll through DNS: {text}");
    f.collector.stop().await?;
    Ok(())
}

/// An unresolvable name, no ICMP, a read-only and a full state directory: each time
/// the router's operator is told what to change.
#[test]
fn the_router_says_what_to_change() -> anyhow::Result<()> {
    let Some(bin) = built(AARCH64)? else {
        return Ok(());
    };
    let router = RouterRoot::new(AARCH64, &bin, HOSTS)?;

    let unknown = enroll_args(
        "http://nowhere.tps.test:50051",
        "2171011002001",
        "AAAA-AAAA",
    );
    let (out, text) = run(router.agent(&unknown, "", None))?;
    assert!(!out.status.success());
    assert!(
        text.contains("cannot resolve the host name \"nowhere.tps.test\"")
            && text.contains("uci add_list network.wan.dns")
            && text.contains("/etc/hosts"),
        "{text}"
    );

    std::fs::create_dir_all(router.path("/etc/tps-agent"))?;
    // Not root and no ping_group_range: no ICMP socket (this host keeps the default
    // "1 0"); the advice names the sysctl file.
    std::fs::write(
        router.path("/etc/tps-agent/agent.toml"),
        "collector = \"http://collector.tps.test:9\"\nstate_dir = \"/tmp-nobody\"\n",
    )?;
    let (_, text) = run(router.agent(&["check"], "", Some("65534:65534")))?;
    assert!(
        text.contains("cannot open an ICMP socket")
            && text.contains("/etc/sysctl.d/99-tps-agent.conf"),
        "{text}"
    );

    // An enrolled router whose state directory went read-only, or filled up.
    let creds = tps_agent::credentials::Credentials {
        agent_id: 1,
        token: "tps_test".into(),
        tps_code: "2171011002001".into(),
        collector: "http://collector.tps.test:9".into(),
    };
    tps_agent::credentials::save(&router.path("/seed"), &creds)?;
    std::fs::write(
        router.path("/etc/tps-agent/agent.toml"),
        "collector = \"http://collector.tps.test:9\"\nstate_dir = \"/mnt/state\"\n",
    )?;
    let seed = "mount -t tmpfs -o size=1m tmpfs \"$R/mnt\"; mkdir \"$R/mnt/state\"; \
                cp \"$R/seed/credentials.toml\" \"$R/mnt/state/\";";
    let read_only = format!("{seed} mount -o remount,ro \"$R/mnt\";");
    let (out, text) = run(router.agent(&["run"], &read_only, None))?;
    assert!(!out.status.success());
    assert!(
        text.contains("/mnt/state is read-only") && text.contains("df -h /overlay"),
        "{text}"
    );
    // A full one: fill what the credentials left of 64 KiB.
    let full = seed.replace("size=1m", "size=64k")
        + " dd if=/dev/zero of=\"$R/mnt/fill\" bs=4k 2>/dev/null || true;";
    let (out, text) = run(router.agent(&["run"], &full, None))?;
    assert!(!out.status.success());
    assert!(
        text.contains("/mnt/state is full") && text.contains("/etc/init.d/tps-agent restart"),
        "{text}"
    );
    Ok(())
}

/// The .ipk files `scripts/cross` packs: opened with tar, as opkg does.
#[test]
fn the_openwrt_package_holds_the_agent_its_service_and_a_careful_postinst() -> anyhow::Result<()> {
    let Some(_) = built(AARCH64)? else {
        return Ok(());
    };
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dist");
    let ipk: PathBuf = std::fs::read_dir(&dist)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("tps-agent_") && n.ends_with("_aarch64_cortex-a53.ipk")
            })
        })
        .ok_or_else(|| anyhow::anyhow!("no aarch64_cortex-a53 .ipk in {}", dist.display()))?;
    let tmp = tempfile::tempdir()?;
    let untar = |archive: &Path, into: &Path| -> anyhow::Result<()> {
        std::fs::create_dir_all(into)?;
        let st = Command::new("tar")
            .arg("-xzf")
            .arg(archive)
            .arg("-C")
            .arg(into)
            .status()?;
        anyhow::ensure!(st.success(), "tar -xzf {} failed", archive.display());
        Ok(())
    };
    let outer = tmp.path().join("outer");
    untar(&ipk, &outer)?;
    assert_eq!(
        std::fs::read_to_string(outer.join("debian-binary"))?,
        "2.0\n"
    );
    let ctl = tmp.path().join("control");
    untar(&outer.join("control.tar.gz"), &ctl)?;
    let data = tmp.path().join("data");
    untar(&outer.join("data.tar.gz"), &data)?;

    let control = std::fs::read_to_string(ctl.join("control"))?;
    for want in [
        "Package: tps-agent\n",
        "Architecture: aarch64_cortex-a53\n",
        "License: Apache-2.0\n",
    ] {
        assert!(control.contains(want), "control lacks {want:?}:\n{control}");
    }
    assert!(!control.contains("Depends"), "static: depends on nothing");
    let installed: u64 = control
        .lines()
        .find_map(|l| l.strip_prefix("Installed-Size: "))
        .ok_or_else(|| anyhow::anyhow!("no Installed-Size"))?
        .parse()?;

    // The binary is the one built, static and executable; the rest is in place.
    let packaged = data.join("usr/bin/tps-agent");
    assert_eq!(
        std::fs::read(&packaged)?,
        std::fs::read(built(AARCH64)?.unwrap())?
    );
    assert!(std::fs::metadata(&packaged)?.permissions().mode() & 0o111 != 0);
    assert!(installed >= std::fs::metadata(&packaged)?.len());
    let init = std::fs::read_to_string(data.join("etc/init.d/tps-agent"))?;
    assert!(init.starts_with("#!/bin/sh /etc/rc.common") && init.contains("USE_PROCD=1"));
    assert_eq!(
        std::fs::read_to_string(data.join("lib/upgrade/keep.d/tps-agent"))?.trim(),
        "/etc/tps-agent/",
        "sysupgrade keeps the token and the spool"
    );
    // The example config parses, with the router's state on flash.
    let example = data.join("etc/tps-agent/agent.example.toml");
    let c = tps_agent::config::load(&example)?;
    assert_eq!(c.state_dir, PathBuf::from("/etc/tps-agent/state"));
    assert_eq!(c.spool_max_bytes, 4 << 20);

    // postinst, as an image build runs it (IPKG_INSTROOT): enables at boot, starts
    // nothing. And on a live router that has not enrolled: it must not start the agent.
    let st = Command::new("sh")
        .arg(ctl.join("postinst"))
        .env("IPKG_INSTROOT", &data)
        .status()?;
    assert!(st.success());
    let link = std::fs::read_link(data.join("etc/rc.d/S95tps-agent"))?;
    assert_eq!(link, Path::new("../init.d/tps-agent"));
    let postinst = std::fs::read_to_string(ctl.join("postinst"))?;
    let start_at = postinst
        .find("restart")
        .expect("postinst restarts an enrolled agent");
    assert!(
        postinst[..start_at].contains("if /etc/init.d/tps-agent enrolled; then"),
        "the service is started only when enrolled:\n{postinst}"
    );
    Ok(())
}

/// The procd script's logic, run by a real shell with procd's functions recorded:
/// no instance before enrollment, `tps-agent run` after it.
#[test]
fn the_init_script_starts_the_agent_only_once_enrolled() -> anyhow::Result<()> {
    let init = tps_tests::deploy_file("openwrt/tps-agent.init");
    let tmp = tempfile::tempdir()?;
    let conf = tmp.path().join("agent.toml");
    let state = tmp.path().join("state");
    let script = format!(
        "procd_open_instance() {{ echo OPEN; }}\n\
         procd_set_param() {{ echo \"PARAM $*\"; }}\n\
         procd_close_instance() {{ echo CLOSE; }}\n\
         . \"{}\"\nCONF=\"{}\"\nstart_service; echo \"rc=$?\"\n",
        init.display(),
        conf.display()
    );
    let shell = |script: &str| -> anyhow::Result<String> {
        let out = Command::new("sh").arg("-c").arg(script).output()?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    };
    let before = shell(&script)?;
    assert!(
        !before.contains("OPEN") && before.contains("not enrolled yet") && before.contains("rc=1"),
        "{before}"
    );
    std::fs::write(
        &conf,
        format!(
            "collector = \"https://c.example:50051\"\nstate_dir = \"{}\"\n",
            state.display()
        ),
    )?;
    std::fs::create_dir_all(&state)?;
    std::fs::write(state.join("credentials.toml"), "agent_id = 1\n")?;
    let after = shell(&script)?;
    assert!(
        after.contains("OPEN")
            && after.contains(&format!(
                "PARAM command /usr/bin/tps-agent run --config {}",
                conf.display()
            ))
            && after.contains("rc=0"),
        "{after}"
    );
    Ok(())
}
