//! `tps-agent enroll`: exchange the TPS code and its one-time enrollment code for a
//! token, store it, and write (or update) the config file so `run` works next.

use std::path::{Path, PathBuf};

use tps_proto::v1 as pb;

use crate::config;
use crate::credentials::{self, Credentials, CredentialsError};
use crate::platform::Device;
use crate::system::SystemInfo;
use crate::uplink;

#[derive(Debug, Clone)]
pub struct EnrollArgs {
    pub collector: String,
    pub tps_code: String,
    pub code: String,
    pub config_path: PathBuf,
    pub ca_cert: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Connect(#[from] uplink::ConnectError),
    #[error("enrollment failed: {0}")]
    Refused(String),
    /// The collector's host name does not resolve; says what to change on the device.
    #[error("enrollment failed: {0}")]
    Resolve(String),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("cannot write {path}: {source}")]
    WriteConfig {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The config written for a newly enrolled device: the collector, and defaults for
/// everything else (gateway and collector targets every 30 s, push every 60 s).
fn initial_config(collector: &str, ca: Option<&Path>, state_dir: &Path) -> String {
    let mut s = format!(
        "# tps-agent configuration, written by `tps-agent enroll`. See deploy/agent.example.toml.\n\
         collector = {collector:?}\n\
         state_dir = {:?}\n",
        state_dir.display().to_string()
    );
    if let Some(ca) = ca {
        s.push_str(&format!("ca_cert = {:?}\n", ca.display().to_string()));
    }
    s.push_str("# A public host the operator names, probed besides the gateway and the collector:\n# anchor = \"203.0.113.10\"\n");
    s
}

pub async fn enroll(args: &EnrollArgs) -> Result<Credentials, EnrollError> {
    let existing = if args.config_path.exists() {
        Some(config::load(&args.config_path)?)
    } else {
        None
    };
    let state_dir = args
        .state_dir
        .clone()
        .or_else(|| existing.as_ref().map(|c| c.state_dir.clone()))
        .unwrap_or_else(|| Device::detect().defaults().state_dir);
    let ca = args
        .ca_cert
        .clone()
        .or_else(|| existing.as_ref().and_then(|c| c.ca_cert.clone()));
    let channel = uplink::channel(&args.collector, ca.as_deref())?;
    if let Some(host) = config::collector_host(&args.collector) {
        crate::probe::lookup(&host)
            .await
            .map_err(EnrollError::Resolve)?;
    }
    let sys = SystemInfo::new();
    let facts = pb::AgentFacts {
        hostname: sys.hostname().to_string(),
        os: sys.os().to_string(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let r = uplink::enroll(
        channel,
        &args.collector,
        args.tps_code.trim(),
        &args.code,
        facts,
    )
    .await
    .map_err(EnrollError::Refused)?;
    let creds = Credentials {
        agent_id: r.agent_id,
        token: r.token,
        tps_code: args.tps_code.trim().to_string(),
        collector: args.collector.clone(),
    };
    credentials::save(&state_dir, &creds)?;

    let write = |text: String| {
        if let Some(dir) = args.config_path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| EnrollError::WriteConfig {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&args.config_path, text).map_err(|source| EnrollError::WriteConfig {
            path: args.config_path.clone(),
            source,
        })
    };
    match existing {
        None => write(initial_config(&args.collector, ca.as_deref(), &state_dir))?,
        Some(c) if c.collector != args.collector => {
            // Rewrite only the collector key; everything else stays as the operator wrote it.
            let text = std::fs::read_to_string(&args.config_path).map_err(|source| {
                EnrollError::WriteConfig {
                    path: args.config_path.clone(),
                    source,
                }
            })?;
            let updated: String = text
                .lines()
                .map(|l| {
                    if l.trim_start().starts_with("collector") && l.contains('=') {
                        format!("collector = {:?}\n", args.collector)
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            write(updated)?;
        }
        Some(_) => {}
    }
    Ok(creds)
}
