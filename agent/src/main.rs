//! `tps-agent`: parse flags, load config, call the library.
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tps_agent::{check, config, credentials, enroll, run, service};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Parser)]
#[command(version, about = "TPS connectivity agent")]
struct Cli {
    /// Config file [default: /etc/tps-agent/agent.toml; on Windows
    /// %ProgramData%\tps-agent\agent.toml].
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Measure and report until stopped (the default).
    Run,
    /// Enroll this device for one TPS with the code printed for it.
    Enroll {
        /// Collector URL, e.g. https://collector.example:50051
        #[arg(long)]
        collector: String,
        /// 13-digit TPS code.
        #[arg(long)]
        tps: String,
        /// One-time enrollment code, e.g. ABCD-EF23.
        #[arg(long)]
        code: String,
        /// CA certificate to verify the collector with.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Where to keep the token and the spool.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// One probe round and one push; prints COVERED or NOT COVERED.
    Check,
    /// The Windows service: install (automatic start, restart on failure), uninstall,
    /// start, stop. Needs Administrator.
    Service {
        #[arg(value_enum)]
        action: service::Action,
    },
    /// Entry point of the installed service (started by the service manager).
    #[command(hide = true)]
    ServiceRun,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // RUST_LOG as `level` or `target=level,...` (no regex directives: they cost a router
    // ~150 KB of flash).
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    // A service has no console: it logs to a file beside its config.
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| tps_agent::platform::Device::detect().config_path());
    let log_file = match &cli.command {
        Some(Command::ServiceRun) => service::open_log(&config_path),
        _ => None,
    };
    let console = log_file.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    let file = log_file.map(|f| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::sync::Mutex::new(f))
            .with_ansi(false)
    });
    tracing_subscriber::registry()
        .with(console)
        .with(file)
        .with(filter)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli, config_path)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli, config_path: PathBuf) -> anyhow::Result<std::process::ExitCode> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let config = config::load(&config_path)?;
            let creds = credentials::load(&config.state_dir)?;
            run::run(config, creds, shutdown_signal()).await?;
        }
        Command::Enroll {
            collector,
            tps,
            code,
            ca,
            state_dir,
        } => {
            let args = enroll::EnrollArgs {
                collector,
                tps_code: tps,
                code,
                config_path: config_path.clone(),
                ca_cert: ca,
                state_dir,
            };
            let c = enroll::enroll(&args).await?;
            println!(
                "enrolled: TPS {} is agent {} at {}",
                c.tps_code, c.agent_id, c.collector
            );
            println!(
                "config: {}. {}",
                config_path.display(),
                tps_agent::platform::Device::detect().start_hint(&config_path)
            );
        }
        Command::Check => {
            let config = config::load(&config_path)?;
            let report = check::check(&config).await;
            print!("{}", report.text);
            if !report.covered {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        Command::Service { action } => println!("{}", service::manage(action, &config_path)?),
        Command::ServiceRun => service::run_as_service(&config_path)?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
