//! `tps-fleet`: the fleet simulator (`run`), and the one-command demo (`demo`): a
//! collector on SQLite with the bundled Kepri registry and a simulated fleet of 3,327
//! agents, printing the dashboard link. Ctrl-C stops everything cleanly.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tps_tests::fleet::{Fleet, FleetConfig, Mix, Profile};

#[derive(Parser)]
#[command(about = "TPS fleet simulator and demo")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Collector + simulated Kepri fleet on this machine; prints the dashboard link.
    Demo {
        #[arg(long, default_value = "data/demo")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:50051")]
        grpc: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// Simulate only the first N stations (default: all).
        #[arg(long)]
        stations: Option<usize>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Play agents for the stations in a codes CSV (from `tps-collector enroll-codes`)
    /// against a running collector.
    Run {
        #[arg(long)]
        collector: String,
        #[arg(long)]
        codes: PathBuf,
        #[arg(long, default_value = "data/fleet")]
        state_dir: PathBuf,
        #[arg(long, default_value_t = 30)]
        probe_secs: u64,
        #[arg(long, default_value_t = 60)]
        push_secs: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

fn describe(f: &Fleet) -> String {
    format!(
        "{} stations: {} good, {} degraded, {} with outages, {} never enrolling",
        f.profiles.len(),
        f.count(Profile::Good),
        f.count(Profile::Degraded),
        f.count(Profile::Outages),
        f.count(Profile::Never)
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "warn,tps_collector=info,tps_collector::ingest=warn",
                )
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Cmd::Run {
            collector,
            codes,
            state_dir,
            probe_secs,
            push_secs,
            seed,
        } => {
            let stations = tps_tests::read_codes(&codes)?;
            let config = FleetConfig {
                collector,
                probe_interval: Duration::from_secs(probe_secs),
                push_interval: Duration::from_secs(push_secs),
                state_root: state_dir,
                seed,
                outage: (Duration::from_secs(120), Duration::from_secs(1800)),
                up: (Duration::from_secs(600), Duration::from_secs(7200)),
            };
            let fleet = Fleet::start(config, stations, &Mix::kepri());
            println!("{}; Ctrl-C to stop", describe(&fleet));
            ctrl_c().await;
            fleet.stop().await;
        }
        Cmd::Demo {
            data_dir,
            grpc,
            http,
            stations,
            seed,
        } => demo(data_dir, grpc, http, stations, seed).await?,
    }
    Ok(())
}

async fn demo(
    data_dir: PathBuf,
    grpc: SocketAddr,
    http: SocketAddr,
    limit: Option<usize>,
    seed: u64,
) -> anyhow::Result<()> {
    let db = data_dir.join("collector");
    tps_collector::commands::import_stations(&db, &tps_tests::kepri_registry())?;
    let codes_file = db.join("demo-codes.csv");
    tps_collector::commands::enroll_codes(&db, None, &codes_file)?;
    let mut stations = tps_tests::read_codes(&codes_file)?;
    if let Some(n) = limit {
        stations.truncate(n);
    }
    let name = format!("demo-{}", tps_tests::now_ms() / 1000);
    let token = tps_collector::commands::add_operator(&db, &name, "admin")?;

    // Short intervals so the picture forms within two minutes.
    let mut config = tps_collector::config::Config::plaintext(&db);
    config.grpc_listen = grpc;
    config.http_listen = http;
    config.ingest.push_interval_secs = 10;
    config.coverage = tps_collector::config::CoverageConfig::for_push_interval(10);
    config.coverage.flags.grace_ms = 60_000;
    config.coverage.flags.recovery_ms = 120_000;
    config.coverage.tick = Duration::from_secs(2);
    let listeners = tps_collector::Listeners::bind(&config).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(tps_collector::run(config, listeners, async {
        let _ = stop_rx.await;
    }));

    let fleet_config = FleetConfig {
        collector: format!("http://{grpc}"),
        probe_interval: Duration::from_secs(5),
        push_interval: Duration::from_secs(10),
        state_root: data_dir.join("fleet"),
        seed,
        outage: (Duration::from_secs(60), Duration::from_secs(240)),
        up: (Duration::from_secs(60), Duration::from_secs(600)),
    };
    let fleet = Fleet::start(fleet_config, stations, &Mix::kepri());
    println!(
        "\nTPS connectivity demo — collector on SQLite ({}), {}",
        db.display(),
        describe(&fleet)
    );
    println!("Dashboard: http://{http}/#token={token}");
    println!(
        "(operator `{name}`; agents push every 10 s, flags open after 1 minute uncovered; Ctrl-C stops)"
    );
    println!(
        "Weekly report: the dashboard's \"Laporan minggu ini\" button, or\n  curl -H 'Authorization: Bearer {token}' 'http://{http}/api/v1/reports/weekly?week=current' > laporan.html\n"
    );

    let client = reqwest::Client::new();
    let progress = async {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let r = client
                .get(format!("http://{http}/api/v1/summary"))
                .bearer_auth(&token)
                .send()
                .await;
            if let Ok(r) = r
                && let Ok(s) = r.json::<serde_json::Value>().await
            {
                let f = client
                    .get(format!("http://{http}/api/v1/flags?limit=1"))
                    .bearer_auth(&token)
                    .send()
                    .await;
                let flags = match f {
                    Ok(f) => f
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["total"].as_u64())
                        .unwrap_or(0),
                    Err(_) => 0,
                };
                println!(
                    "covered {} of {} ({:.1} %) · degraded {} · offline {} · no agent {} · flags {}",
                    s["covered"],
                    s["total"],
                    100.0 * (1.0 - s["uncovered_share"].as_f64().unwrap_or(1.0)),
                    s["degraded"],
                    s["offline"],
                    s["no_agent"],
                    flags
                );
            }
        }
    };
    tokio::select! {
        () = ctrl_c() => {}
        () = progress => {}
    }
    println!("stopping: the fleet first, then the collector (it finishes in-flight pushes)");
    fleet.stop().await;
    let _ = stop_tx.send(());
    collector.await??;
    println!("stopped cleanly; data kept in {}", data_dir.display());
    Ok(())
}
