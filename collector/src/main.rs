//! `tps-collector`: parse flags, load config, call the library.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tps_collector::{Listeners, commands, config};

#[derive(Parser)]
#[command(version, about = "TPS connectivity collector")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the store is: from a config file, or a data directory given directly.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct StoreArgs {
    /// Collector config file (its store.data_dir is used).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory holding collector.sqlite.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl StoreArgs {
    fn data_dir(&self) -> anyhow::Result<PathBuf> {
        match (&self.config, &self.data_dir) {
            (Some(c), _) => Ok(config::load(c)?.data_dir),
            (None, Some(d)) => Ok(d.clone()),
            (None, None) => anyhow::bail!("give --config FILE or --data-dir DIR"),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (agents) and HTTP (API, metrics).
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Import (or re-import) this station registry CSV before serving.
        #[arg(long)]
        import_stations: Option<PathBuf>,
        /// If no operator exists yet, create `admin` and print a dashboard link with its
        /// token (for a first local run; the token is printed once, to stdout).
        #[arg(long)]
        bootstrap_admin: bool,
    },
    /// Import or update the station registry from a CSV file.
    ImportStations {
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Issue one-time enrollment codes for the stations of a region into a CSV file.
    EnrollCodes {
        /// Region code (21, 21.71, 21.71.01, a village or a TPS code); all stations if absent.
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke an agent's token (a replaced or lost device).
    RevokeAgent {
        agent_id: u64,
        #[arg(long, default_value = "revoked by operator")]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Manage the people who use the status API and dashboard.
    Operator {
        #[command(subcommand)]
        action: OperatorCmd,
    },
    /// Make reports.
    Report {
        #[command(subcommand)]
        kind: ReportCmd,
    },
    /// Send a test message to one notification receiver now (directly, not through the
    /// outbox) and say what its API answered.
    NotifyTest {
        #[arg(long)]
        config: PathBuf,
        /// A receiver name from [[notify.receivers]].
        #[arg(long)]
        receiver: String,
    },
    /// Validate a config file and exit.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ReportCmd {
    /// The weekly coverage report for one ISO week.
    Weekly {
        /// ISO week like 2026-W48 (in the configured time zone), `current` or `last`;
        /// the last whole week if absent. A week still running is reported up to now.
        #[arg(long)]
        week: Option<String>,
        /// Region code (21, 21.71, 21.71.01); everything if absent.
        #[arg(long)]
        region: Option<String>,
        /// html, csv or json; from the --out file's extension if absent.
        #[arg(long)]
        format: Option<String>,
        /// id (Bahasa Indonesia) or en; the config's report.lang if absent.
        #[arg(long)]
        lang: Option<String>,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum OperatorCmd {
    /// Create an operator and print its token (shown once).
    Add {
        name: String,
        /// viewer reads; operator also works flags; admin also manages stations and agents.
        #[arg(long, default_value = "viewer")]
        role: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List operators.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke an operator's token.
    Revoke {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve {
            config,
            import_stations,
            bootstrap_admin,
        } => {
            let config = config::load(&config)?;
            if let Some(file) = import_stations {
                commands::import_stations(&config.data_dir, &file)?;
            }
            if bootstrap_admin && commands::list_operators(&config.data_dir)?.is_empty() {
                let token = commands::add_operator(&config.data_dir, "admin", "admin")?;
                let host = match config.http_listen.ip() {
                    ip if ip.is_unspecified() => "127.0.0.1".to_string(),
                    ip => ip.to_string(),
                };
                let scheme = if config.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                println!(
                    "Dashboard: {scheme}://{host}:{}/#token={token}\n(operator `admin`; the token is shown only now)",
                    config.http_listen.port()
                );
            }
            tps_collector::limits::raise_open_files();
            tokio::runtime::Runtime::new()?.block_on(async {
                let listeners = Listeners::bind(&config).await?;
                tps_collector::run(config, listeners, shutdown_signal()).await?;
                Ok(())
            })
        }
        Command::ImportStations { file, store } => {
            commands::import_stations(&store.data_dir()?, &file)?;
            Ok(())
        }
        Command::EnrollCodes { region, out, store } => {
            let n = commands::enroll_codes(&store.data_dir()?, region.as_deref(), &out)?;
            println!("{n} enrollment codes written to {}", out.display());
            Ok(())
        }
        Command::RevokeAgent {
            agent_id,
            reason,
            store,
        } => {
            let tps = commands::revoke_agent(&store.data_dir()?, agent_id, &reason)?;
            println!("agent {agent_id} of TPS {tps} revoked");
            Ok(())
        }
        Command::Operator { action } => match action {
            OperatorCmd::Add { name, role, store } => {
                let token = commands::add_operator(&store.data_dir()?, &name, &role)?;
                println!(
                    "operator {name} ({role}) created; token (shown once, keep it safe):\n{token}"
                );
                Ok(())
            }
            OperatorCmd::List { store } => {
                for (name, role, revoked) in commands::list_operators(&store.data_dir()?)? {
                    println!("{name}\t{role}{}", if revoked { "\trevoked" } else { "" });
                }
                Ok(())
            }
            OperatorCmd::Revoke { name, store } => {
                commands::revoke_operator(&store.data_dir()?, &name)?;
                println!("operator {name} revoked");
                Ok(())
            }
        },
        Command::Report {
            kind:
                ReportCmd::Weekly {
                    week,
                    region,
                    format,
                    lang,
                    out,
                    store,
                },
        } => {
            let (data_dir, report) = match (&store.config, &store.data_dir) {
                (Some(c), _) => {
                    let c = config::load(c)?;
                    (c.data_dir, c.report)
                }
                _ => (store.data_dir()?, Default::default()),
            };
            let format = format
                .or_else(|| out.extension().and_then(|e| e.to_str()).map(str::to_string))
                .unwrap_or_else(|| "html".into());
            let r = commands::WeeklyRequest {
                week: week.as_deref(),
                region: region.as_deref(),
                format: &format,
                lang: lang.as_deref(),
                out: &out,
            };
            let summary = commands::weekly_report(&data_dir, &report, &r)?;
            println!("{summary}");
            Ok(())
        }
        Command::NotifyTest { config, receiver } => {
            let c = config::load(&config).with_context(|| "config rejected")?;
            let answer = tokio::runtime::Runtime::new()?.block_on(
                tps_collector::notify::send_test_now(&c.notify, &c.report.tz, &receiver),
            )?;
            println!(
                "test message sent to {receiver}{}",
                match answer {
                    Some(id) => format!(" (message id {id})"),
                    None => String::new(),
                }
            );
            Ok(())
        }
        Command::CheckConfig { config } => {
            let c = config::load(&config).with_context(|| "config rejected")?;
            println!(
                "{}: ok (gRPC {}, HTTP {}, data in {}; notifications: {} receivers, {} routes, {} Alertmanagers, bot {})",
                config.display(),
                c.grpc_listen,
                c.http_listen,
                c.data_dir.display(),
                c.notify.receivers.len(),
                c.notify.routes.len(),
                c.notify.alertmanager.len(),
                if c.notify.bot.is_some() { "on" } else { "off" }
            );
            Ok(())
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
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
    tracing::info!("shutting down: finishing in-flight pushes");
}
