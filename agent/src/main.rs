//! `tps-agent`: parse flags, load config, call the library.
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tps_agent::{check, config, credentials, enroll, run};

const DEFAULT_CONFIG: &str = "/etc/tps-agent/agent.toml";

#[derive(Parser)]
#[command(version, about = "TPS connectivity agent")]
struct Cli {
    /// Config file.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let config = config::load(&cli.config)?;
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
                config_path: cli.config.clone(),
                ca_cert: ca,
                state_dir,
            };
            let c = enroll::enroll(&args).await?;
            println!(
                "enrolled: TPS {} is agent {} at {}",
                c.tps_code, c.agent_id, c.collector
            );
            println!(
                "config: {}. Next: tps-agent check --config {}",
                cli.config.display(),
                cli.config.display()
            );
        }
        Command::Check => {
            let config = config::load(&cli.config)?;
            let report = check::check(&config).await;
            print!("{}", report.text);
            if !report.covered {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
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
