//! The agent binary against a real collector when things go wrong: an answer lost
//! after the commit, a full or tiny state directory, ICMP errors, wrong clocks, a
//! link that dies under an open connection, a laptop with hundreds of interfaces.
//! Each test prints the rounds measured, stored, dropped and duplicated.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::proxy::{DeadLink, LoseAnswer};
use support::*;
use tps_collector::testing::{assert_complete_and_ordered, eventually, stored_measurements};

async fn pushes(c: &tps_collector::testing::TestCollector) -> f64 {
    c.metric("tps_pushes_total").await.unwrap_or(0.0)
}

fn counts(what: &str, measured: u64, stored: usize, dropped: u64, duplicated: f64) {
    println!(
        "{what}: measured {measured}, stored {stored}, dropped {dropped}, duplicated at the collector {duplicated}"
    );
}

fn sh(script: &str) -> anyhow::Result<()> {
    let out = Command::new("sh").arg("-ec").arg(script).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A tmpfs of `size` mounted on `dir` (root only), unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        sh(&format!(
            "mount -t tmpfs -o size={size} tmpfs '{}'",
            dir.display()
        ))?;
        Ok(Tmpfs(dir.to_path_buf()))
    }
    fn free(&self) -> u64 {
        tps_agent::disk::free_bytes(&self.0).unwrap_or(0)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = sh(&format!("umount -l '{}'", self.0.display()));
    }
}

/// Fills the (small, test-mounted) file system of `dir` with one file until it refuses
/// more; gives up past 64 MB rather than fill a disk that is not the test's.
fn fill(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p)?;
    let chunk = vec![0u8; 4096];
    let mut written = 0usize;
    while f.write_all(&chunk).is_ok() {
        written += chunk.len();
        if written > 64 << 20 {
            drop(f);
            std::fs::remove_file(&p)?;
            anyhow::bail!("{} is not the small tmpfs it should be", dir.display());
        }
    }
    let _ = f.sync_all();
    Ok(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_collectors_commit_and_the_agents_delete_stores_each_round_once()
-> anyhow::Result<()> {
    let s = setup(500).await?;
    let creds = enroll_cli(&s, 0)?;
    let (proxy, lose) = LoseAnswer::start(s.grpc).await?;
    // One round a minute: the round at start is all the spool holds when its push's
    // answer is lost, as after a kill between the collector's commit and the delete.
    let config = s.write_config_to(&format!("http://{proxy}"), 60, "", None)?;
    let mut agent = run_agent_process(&config)?;
    let lost = eventually(WAIT, "a push stored whose answer is lost", || async {
        let n = lose.lost_upto.load(Ordering::SeqCst);
        (n > 0).then_some(n)
    })
    .await?;
    agent.kill()?; // before any retry: the answer never arrived
    agent.wait()?;
    let (entries, last, _) = spool_state(&s.state_dir())?;
    assert_eq!(
        (entries, last),
        (lost, lost),
        "the spool still holds what the collector stored"
    );

    // Restarted: the collector says it holds seq `lost`; nothing is numbered again.
    let mut agent = run_agent_process(&config)?;
    let rows = eventually(WAIT, "the next round stored", || async {
        let rows = s.stored(creds.agent_id).ok()?;
        (rows.len() as u64 >= 2 * lost).then_some(rows)
    })
    .await?;
    agent.kill()?;
    agent.wait()?;
    let duplicates = s
        .collector
        .metric("tps_measurements_duplicate_total")
        .await?;
    counts("commit, then kill", 2 * lost, rows.len(), 0, duplicates);
    assert_eq!(rows.len() as u64, 2 * lost, "{rows:?}");
    assert_complete_and_ordered(&rows, 2 * lost);
    assert_no_round_twice(&rows, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_directory_with_the_collector_up_holds_rounds_and_sends_nothing_twice()
-> anyhow::Result<()> {
    let s = setup(500).await?;
    let creds = enroll_cli(&s, 0)?;
    let disk = Tmpfs::mount(&s.state_dir(), "4m")?;
    // Enrolling wrote the token before the mount: write it again on the tmpfs.
    tps_agent::credentials::save(&s.state_dir(), &creds)?;
    let config = s.write_config("")?;
    let mut agent = LoggedAgent::spawn({
        let mut c = agent_bin();
        c.arg("run").arg("--config").arg(&config);
        c
    })?;
    eventually(WAIT, "rounds stored", || async {
        (s.stored(creds.agent_id).ok()?.len() >= 4).then_some(())
    })
    .await?;

    // The disk fills up while the collector takes everything.
    let filler = fill(&s.state_dir())?;
    assert_eq!(disk.free(), 0);
    let (p0, t0) = (pushes(&s.collector).await, Instant::now());
    eventually(WAIT, "the agent says rounds are held in memory", || async {
        (agent.count("rounds are held in memory") > 0).then_some(())
    })
    .await?;
    let held_from = s.stored(creds.agent_id)?.len();
    // Five pushes (heartbeats) go by while the disk stays full.
    eventually(WAIT, "pushes while the disk is full", || async {
        (pushes(&s.collector).await >= p0 + 5.0).then_some(())
    })
    .await?;
    let rate = (pushes(&s.collector).await - p0) / t0.elapsed().as_secs_f64();
    assert!(rate < 3.0, "pushes stay paced: {rate:.1} per second");
    assert_eq!(
        s.stored(creds.agent_id)?.len(),
        held_from,
        "held rounds have no number yet: nothing more is sent"
    );

    // Room again: the held rounds are written and delivered, each once.
    std::fs::remove_file(filler)?;
    let rows = eventually(WAIT, "the held rounds delivered", || async {
        let rows = s.stored(creds.agent_id).ok()?;
        (rows.len() >= held_from + 10).then_some(rows)
    })
    .await?;
    agent.kill();
    let (_, last, dropped) = spool_state(&s.state_dir())?;
    let duplicates = s
        .collector
        .metric("tps_measurements_duplicate_total")
        .await?;
    counts(
        "disk full, collector up",
        last,
        rows.len(),
        dropped,
        duplicates,
    );
    assert_complete_and_ordered(&rows, rows.len() as u64);
    assert_eq!(dropped, 0, "memory held every round");
    assert_eq!(duplicates, 0.0, "no acknowledged batch was sent again");
    assert!(
        agent.count("the spool takes rounds again") > 0,
        "{}",
        agent.text()
    );
    Ok(())
}

/// Writes `n` rounds of `targets` entries straight into a spool (the agent stopped).
fn preload(state: &Path, max_bytes: u64, rounds: usize, targets: usize) -> anyhow::Result<()> {
    let mut spool = tps_agent::spool::Spool::open(
        state,
        tps_agent::spool::Limits {
            max_bytes,
            max_entries: u64::MAX,
        },
    )?;
    let now = tps_agent::run::now_ms();
    for r in 0..rounds {
        let e = tps_agent::spool::NewEntry {
            start_ms: now - ((rounds - r) as i64) * 1000,
            offset_ms: Some(0),
            clock_epoch: 0,
            target_name: "lo4".into(),
            target_address: "127.0.0.1".into(),
            method: tps_agent::config::Method::Icmp,
            round: tps_agent::stats::summarize(&[Some(Duration::from_millis(1)); 3]),
        };
        spool.append(&vec![e; targets])?;
    }
    Ok(())
}

/// Bytes the spool's files take (main file, log, index, journal).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("spool.sqlite"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_mb_state_directory_stays_within_its_bound_and_never_fills() -> anyhow::Result<()> {
    let mut s = setup(500).await?;
    let creds = enroll_cli(&s, 0)?;
    let disk = Tmpfs::mount(&s.state_dir(), "2m")?;
    tps_agent::credentials::save(&s.state_dir(), &creds)?;
    let config = s.write_config("[spool]\nmax_mb = 1\n")?;
    let max = 1024 * 1024;

    // Collector up: nothing is lost.
    let mut agent = run_agent_process(&config)?;
    let rows = eventually(WAIT, "rounds delivered", || async {
        let rows = s.stored(creds.agent_id).ok()?;
        (rows.len() >= 10).then_some(rows)
    })
    .await?;
    // Stopped as the service manager stops it (a kill is the next test's business):
    // it deletes what was acknowledged on the way out.
    sh(&format!("kill -TERM {}", agent.id()))?;
    agent.wait()?;
    let (entries_up, last_up, dropped_up) = spool_state(&s.state_dir())?;
    assert!(entries_up <= 4, "trimmed at exit: {entries_up} left");
    assert_eq!(dropped_up, 0);
    assert_complete_and_ordered(&rows, rows.len() as u64);

    // Collector down for a long time: a week of rounds is more than 1 MB holds
    // (written straight into the spool, to be quick), then the agent runs on.
    s.collector.halt().await?;
    const PRELOAD: u64 = 1_500 * 25;
    preload(&s.state_dir(), max, 1_500, 25)?;
    let mut agent = LoggedAgent::spawn({
        let mut c = agent_bin();
        c.arg("run").arg("--config").arg(&config);
        c
    })?;
    let mut min_free = u64::MAX;
    let mut max_used = 0;
    let t0 = Instant::now();
    let grown = eventually(WAIT, "10 more rounds spooled", || {
        min_free = min_free.min(disk.free());
        max_used = max_used.max(dir_bytes(&s.state_dir()));
        async {
            let (_, last, dropped) = spool_state(&s.state_dir()).ok()?;
            (last >= last_up + PRELOAD + 20).then_some((last, dropped))
        }
    })
    .await?;
    assert!(t0.elapsed() < WAIT);
    agent.kill();
    let (last_down, dropped) = grown;
    assert!(dropped > 0, "the oldest were dropped");
    assert!(
        max_used <= max,
        "spool files took {max_used} bytes (bound {max})"
    );
    assert!(min_free > 0, "the file system never filled");
    assert_eq!(agent.count("cannot write the spool"), 0, "{}", agent.text());

    // Back: what was kept arrives; every round is stored or counted as dropped.
    s.restart_collector(500).await?;
    let mut agent = run_agent_process(&config)?;
    eventually(WAIT, "the kept backlog delivered", || async {
        let rows = s.stored(creds.agent_id).ok()?;
        (rows.last()?.0 >= last_down).then_some(())
    })
    .await?;
    sh(&format!("kill -TERM {}", agent.id()))?;
    agent.wait()?;
    // Stopped cleanly: what is left in the spool was measured after the last push.
    let (waiting, last, dropped) = spool_state(&s.state_dir())?;
    let rows = s.stored(creds.agent_id)?;
    let duplicates = s
        .collector
        .metric("tps_measurements_duplicate_total")
        .await?;
    counts("2 MB state dir", last, rows.len(), dropped, duplicates);
    assert_eq!(
        rows.len() as u64 + dropped + waiting,
        last,
        "each measurement stored, counted as dropped or still waiting; none twice"
    );
    assert_eq!(duplicates, 0.0);
    Ok(())
}

/// A network namespace of the test's own, joined to this one by a veth pair: this side
/// `10.213.N.1`, the namespace `10.213.N.2`; deleted when dropped.
struct Netns {
    name: String,
    host_if: String,
    pub host_ip: String,
}

impl Netns {
    fn new(n: u8) -> anyhow::Result<Netns> {
        let name = format!("tps-t{n}-{}", std::process::id());
        let host_if = format!("tpsh{n}");
        let _ = sh(&format!("ip link del {host_if} 2>/dev/null || true"));
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: format!("10.213.{n}.1"),
        };
        sh(&format!(
            "ip netns add {name}
             ip -n {name} link set lo up
             ip link add {host_if} type veth peer name eth0 netns {name}
             ip addr add 10.213.{n}.1/30 dev {host_if}
             ip link set {host_if} up
             ip -n {name} addr add 10.213.{n}.2/30 dev eth0
             ip -n {name} link set eth0 up
             ip -n {name} route add default via 10.213.{n}.1"
        ))?;
        Ok(ns)
    }
    fn sh(&self, script: &str) -> anyhow::Result<()> {
        sh(&format!(
            "ip netns exec {} sh -ec '{}'",
            self.name,
            script.replace('\'', "'\\''")
        ))
    }
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&format!(
            "ip link del {} 2>/dev/null; ip netns del {}",
            self.host_if, self.name
        ));
    }
}

/// A second namespace, the router for `ns` to `10.213.99.0/24` and `fd13:99::/64`,
/// whose firewall rejects what goes there with ICMP "host/address unreachable" (nft
/// `reject`, no rate limit); removed when dropped. In `ns`, root gets raw ICMP sockets
/// and every other user datagram ones (`ping_group_range` leaves out group 0).
struct Router {
    name: String,
    unreachable_v4: &'static str,
    unreachable_v6: &'static str,
}

impl Router {
    fn new(ns: &Netns, n: u8) -> anyhow::Result<Router> {
        let name = format!("tps-r{n}-{}", std::process::id());
        let a = &ns.name;
        sh(&format!(
            "ip netns add {name}
             ip -n {name} link set lo up
             ip link add eth1 netns {a} type veth peer name up0 netns {name}
             ip -n {a} addr add 10.213.{n}.2/30 dev eth1
             ip -n {a} -6 addr add fd13:{n}::2/64 dev eth1 nodad
             ip -n {a} link set eth1 up
             ip -n {name} addr add 10.213.{n}.1/30 dev up0
             ip -n {name} -6 addr add fd13:{n}::1/64 dev up0 nodad
             ip -n {name} link set up0 up
             ip -n {name} link add down0 type veth peer name down1
             ip -n {name} link set down0 up
             ip -n {name} link set down1 up
             ip -n {name} route add 10.213.99.0/24 dev down0
             ip -n {name} -6 route add fd13:99::/64 dev down0
             ip netns exec {name} sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
             ip netns exec {name} sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0
             ip netns exec {name} nft add table inet f
             ip netns exec {name} nft add chain inet f forward_chain '{{ type filter hook forward priority 0; }}'
             ip netns exec {name} nft add rule inet f forward_chain ip daddr 10.213.99.0/24 reject with icmp type host-unreachable
             ip netns exec {name} nft add rule inet f forward_chain ip6 daddr fd13:99::/64 reject with icmpv6 type addr-unreachable
             ip -n {a} route add 10.213.99.0/24 via 10.213.{n}.1
             ip -n {a} -6 route add fd13:99::/64 via fd13:{n}::1
             ip netns exec {a} sysctl -qw net.ipv4.ping_group_range='1 2147483647'"
        ))?;
        Ok(Router {
            name,
            unreachable_v4: "10.213.99.9",
            unreachable_v6: "fd13:99::9",
        })
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns del {}", self.name));
    }
}

/// Config and state of one agent in its own directory, owned by `nobody` if it runs
/// as nobody.
fn agent_dir(
    root: &Path,
    name: &str,
    collector: &str,
    targets: &str,
    nobody: bool,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = root.join(name);
    let state = dir.join("state");
    std::fs::create_dir_all(&state)?;
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "collector = \"{collector}\"\nstate_dir = {:?}\nprobe_interval_secs = 1\necho_timeout_ms = 300\nechoes = 3\npush_interval_secs = 1\n{targets}",
            state.display().to_string()
        ),
    )?;
    if nobody {
        sh(&format!("chown -R 65534:65534 '{}'", dir.display()))?;
    }
    Ok((config, state))
}

/// The agent binary in `ns`, as root or as `nobody`.
fn agent_in(ns: &Netns, nobody: bool) -> Command {
    let mut c = ns.cmd("setpriv");
    if nobody {
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    } else {
        c.arg("--reuid=0");
    }
    c.arg(env!("CARGO_BIN_EXE_tps-agent"));
    c
}

fn enroll_in(
    ns: &Netns,
    nobody: bool,
    (config, state): (&Path, &Path),
    url: &str,
    station: (&str, &str),
) -> anyhow::Result<u64> {
    let out = enroll_args(&mut agent_in(ns, nobody), url, station, config, state)?;
    anyhow::ensure!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(tps_agent::credentials::load(state)?.agent_id)
}

/// A collector the namespace reaches (its gRPC port on this side of the veth pair),
/// its URL, and a directory for the agents' files that `nobody` may enter.
async fn collector_for(ns: &Netns) -> anyhow::Result<(Setup, String, PathBuf)> {
    let s = setup_on(format!("{}:0", ns.host_ip).parse()?, 500).await?;
    let url = format!("http://{}", s.grpc);
    let root = s.dir.path().join("ns");
    std::fs::create_dir_all(&root)?;
    sh(&format!(
        "chmod 755 '{}' '{}'",
        s.dir.path().display(),
        root.display()
    ))?;
    Ok((s, url, root))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_errors_are_lost_probes_counted_apart_as_root_and_unprivileged() -> anyhow::Result<()>
{
    let ns = Netns::new(4)?;
    // A router of its own in front of the targets, with no way to them: it answers
    // echo requests with ICMP "unreachable", as an ISP router without a route does.
    let router = Router::new(&ns, 5)?;
    let (s, url, root) = collector_for(&ns).await?;
    let targets = format!(
        "[[target]]\nname = \"unreach4\"\naddress = \"{}\"\n\n[[target]]\nname = \"unreach6\"\naddress = \"{}\"\n\n[[target]]\nname = \"lo4\"\naddress = \"127.0.0.1\"\n",
        router.unreachable_v4, router.unreachable_v6
    );
    let mut agents = Vec::new();
    for (i, nobody) in [false, true].into_iter().enumerate() {
        let dirs = agent_dir(&root, &format!("agent{i}"), &url, &targets, nobody)?;
        let (tps, code) = &s.codes[i];
        let id = enroll_in(&ns, nobody, (&dirs.0, &dirs.1), &url, (tps, code))?;
        let mut c = agent_in(&ns, nobody);
        c.arg("run").arg("--config").arg(&dirs.0);
        agents.push((id, tps.clone(), nobody, LoggedAgent::spawn(c)?));
    }
    for (id, tps, nobody, agent) in &agents {
        let mode = if *nobody {
            "datagram socket (unprivileged)"
        } else {
            "raw socket (root)"
        };
        let ms = eventually(WAIT, "rounds of every target stored", || async {
            let ms = stored_measurements(&s.collector.data_dir, *id).ok()?;
            let names: std::collections::BTreeSet<_> =
                ms.iter().map(|m| m.target_name.clone()).collect();
            (names.len() == 3 && ms.len() >= 9).then_some(ms)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{mode}: {e}\n{}", agent.text()))?;
        let unreachable: Vec<_> = ms
            .iter()
            .filter(|m| m.target_name.starts_with("unreach"))
            .collect();
        for m in &unreachable {
            assert_eq!(
                (m.received, m.rtt.is_some()),
                (0, false),
                "{mode}: an ICMP error is no answer: {m:?}"
            );
        }
        // Every echo is answered by an error, and counted as one.
        for m in &unreachable {
            assert_eq!(m.errors, m.sent, "{mode}: {m:?}");
        }
        for m in ms.iter().filter(|m| m.target_name == "lo4") {
            assert_eq!((m.received, m.errors), (m.sent, 0), "{mode}: {m:?}");
        }
        // The primary target only ever answers with errors: not covered.
        let state = eventually(WAIT, "the station judged", || async {
            let (_, b) = s
                .collector
                .get_json(&format!("/api/v1/stations/{tps}"))
                .await
                .ok()?;
            let st = b["coverage"]["state"]
                .as_str()
                .or(b["state"].as_str())?
                .to_string();
            (st == "degraded").then_some(st)
        })
        .await?;
        println!(
            "{mode}: {} measurements stored, unreachable ones lost with errors counted; station {state}",
            ms.len()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_laptop_with_200_interfaces_is_covered_and_its_status_fits() -> anyhow::Result<()> {
    let ns = Netns::new(6)?;
    ns.sh("for i in $(seq 1 100); do ip link add d$i type veth peer name p$i; done")?;
    let (s, url, root) = collector_for(&ns).await?;
    let lo4 = "[[target]]\nname = \"lo4\"\naddress = \"127.0.0.1\"\n";
    let (config, state) = agent_dir(&root, "agent", &url, lo4, false)?;
    let (tps, code) = &s.codes[0];
    let id = enroll_in(&ns, false, (&config, &state), &url, (tps, code))?;
    let mut c = agent_in(&ns, false);
    c.arg("run").arg("--config").arg(&config);
    let agent = LoggedAgent::spawn(c)?;
    let body = eventually(WAIT, "the station covered", || async {
        let (_, b) = s
            .collector
            .get_json(&format!("/api/v1/stations/{tps}"))
            .await
            .ok()?;
        let st = b["coverage"]["state"].as_str().or(b["state"].as_str())?;
        (st == "covered").then_some(b)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.text()))?;
    let interfaces = body["agents"][0]["status"]["interfaces"]
        .as_array()
        .map(Vec::len);
    assert_eq!(interfaces, Some(64), "the busiest 64 of 202 are sent");

    assert_eq!(
        s.collector
            .metric("tps_status_truncated_total{field=\"interfaces\"}")
            .await?,
        0.0
    );
    eventually(WAIT, "measurements stored", || async {
        (!stored_measurements(&s.collector.data_dir, id)
            .ok()?
            .is_empty())
        .then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_dies_under_an_open_connection_is_noticed_within_seconds() -> anyhow::Result<()>
{
    let s = setup(500).await?;
    let creds = enroll_cli(&s, 0)?;
    let (proxy, link): (SocketAddr, DeadLink) = DeadLink::start(s.grpc).await?;
    let config = s.write_config_to(&format!("http://{proxy}"), 1, "", None)?;
    let mut agent = run_agent_process(&config)?;
    let before = eventually(WAIT, "rounds delivered", || async {
        let n = s.stored(creds.agent_id).ok()?.len();
        (n >= 4).then_some(n)
    })
    .await?;
    // The modem re-dials: the open connection is dead, a new one would work.
    link.kill_open();
    let t0 = Instant::now();
    // The old agent waited out a 60 s request timeout first.
    eventually(
        Duration::from_secs(30),
        "delivery over a new connection",
        || async { (s.stored(creds.agent_id).ok()?.len() > before + 2).then_some(()) },
    )
    .await?;
    println!(
        "a dead connection noticed and replaced in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    agent.kill()?;
    agent.wait()?;
    let rows = s.stored(creds.agent_id)?;
    assert_complete_and_ordered(&rows, rows.len() as u64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_target_that_cannot_be_measured_is_not_covered() -> anyhow::Result<()> {
    let ns = Netns::new(8)?;
    // No ICMP for anyone but root in the namespace; the agent runs as nobody.
    ns.sh("sysctl -qw net.ipv4.ping_group_range='1 0'")?;
    let (s, url, root) = collector_for(&ns).await?;
    let targets = format!(
        "[[target]]\nname = \"gw\"\naddress = \"{}\"\n\n[[target]]\nname = \"collector\"\naddress = \"collector\"\nmethod = \"tcp\"\nport = {}\n",
        ns.host_ip,
        s.grpc.port()
    );
    let (config, state) = agent_dir(&root, "agent", &url, &targets, true)?;
    let (tps, code) = &s.codes[0];
    enroll_in(&ns, true, (&config, &state), &url, (tps, code))?;
    let as_nobody = |args: &[&str]| {
        let mut c = agent_in(&ns, true);
        c.args(args).arg("--config").arg(&config);
        c
    };
    let out = as_nobody(&["check"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("RESULT: NOT COVERED") && text.contains("\"gw\" is not measured"),
        "{text}"
    );
    assert!(text.contains("net.ipv4.ping_group_range"), "{text}");

    let agent = LoggedAgent::spawn(as_nobody(&["run"]))?;
    let reason = eventually(WAIT, "the station degraded, not covered", || async {
        let (_, b) = s
            .collector
            .get_json(&format!("/api/v1/stations/{tps}"))
            .await
            .ok()?;
        let st = b["coverage"]["state"].as_str()?;
        let measured = b["agents"][0]["latest"]
            .as_array()
            .is_some_and(|l| !l.is_empty());
        (st == "degraded" && measured)
            .then(|| b["coverage"]["reason"].as_str().unwrap_or("").to_string())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.text()))?;
    assert_eq!(reason, "not_measured");
    Ok(())
}
