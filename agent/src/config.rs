//! The agent's configuration file: TOML parsed and validated into [`Config`] with clear
//! messages that name the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::platform::{Defaults, Device};

/// How a target is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Icmp,
    Tcp,
}

/// Where a target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// The default gateway, looked up in the routing table every round.
    Gateway,
    /// The collector's host, from the collector URL.
    Collector,
    /// A host name or IP address.
    Host(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub address: Address,
    pub method: Method,
    /// Port for TCP probes; also lets an ICMP target fall back to TCP where ICMP
    /// sockets are not allowed.
    pub port: Option<u16>,
}

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub collector: String,
    /// PEM CA certificate to verify the collector with (TLS); `None` uses the system's
    /// roots for `https://` and plain text for `http://`.
    pub ca_cert: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub targets: Vec<Target>,
    pub probe_interval: Duration,
    pub echoes: u32,
    pub echo_timeout: Duration,
    /// Until the collector says otherwise.
    pub push_interval: Duration,
    pub spool_max_age: Duration,
    pub spool_max_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {field}: {problem}")]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    collector: String,
    ca_cert: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    /// Public anchor host named by the operator; probed when no targets are listed.
    anchor: Option<String>,
    probe_interval_secs: Option<u64>,
    echoes: Option<u32>,
    echo_timeout_ms: Option<u64>,
    push_interval_secs: Option<u64>,
    #[serde(default)]
    spool: RawSpool,
    #[serde(default, rename = "target")]
    targets: Vec<RawTarget>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    max_age_days: Option<u64>,
    max_mb: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: String,
    address: String,
    #[serde(default = "icmp")]
    method: Method,
    port: Option<u16>,
}

fn icmp() -> Method {
    Method::Icmp
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// The host part of a collector URL (`https://host:port` → `host`).
pub fn collector_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r)?;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority)
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// Parses with this device's defaults (a router keeps its state on flash).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_with(text, path, &Device::detect().defaults())
}

pub fn parse_with(text: &str, path: &Path, defaults: &Defaults) -> Result<Config, ConfigError> {
    let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let invalid = |field: &str, problem: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        field: field.to_string(),
        problem,
    };
    if !(raw.collector.starts_with("http://") || raw.collector.starts_with("https://"))
        || collector_host(&raw.collector).is_none()
    {
        return Err(invalid(
            "collector",
            format!(
                "{:?} is not a URL like https://collector.example:50051",
                raw.collector
            ),
        ));
    }
    let secs = |field: &str, v: Option<u64>, default: u64, lo: u64, hi: u64| {
        let v = v.unwrap_or(default);
        if v < lo || v > hi {
            Err(invalid(field, format!("{v} is outside {lo}..={hi}")))
        } else {
            Ok(v)
        }
    };
    let probe_interval = Duration::from_secs(secs(
        "probe_interval_secs",
        raw.probe_interval_secs,
        30,
        1,
        3600,
    )?);
    let echoes = secs("echoes", raw.echoes.map(u64::from), 5, 1, 100)? as u32;
    let echo_timeout = Duration::from_millis(secs(
        "echo_timeout_ms",
        raw.echo_timeout_ms,
        2000,
        10,
        60_000,
    )?);
    if echo_timeout * echoes >= probe_interval * 2 {
        return Err(invalid(
            "echo_timeout_ms",
            format!(
                "{} echoes of {} ms cannot finish within two probe intervals of {} s",
                echoes,
                echo_timeout.as_millis(),
                probe_interval.as_secs()
            ),
        ));
    }
    let push_interval = Duration::from_secs(secs(
        "push_interval_secs",
        raw.push_interval_secs,
        60,
        1,
        3600,
    )?);
    let spool_max_age = Duration::from_secs(
        86_400 * secs("spool.max_age_days", raw.spool.max_age_days, 7, 1, 365)?,
    );
    let spool_max_bytes = secs(
        "spool.max_mb",
        raw.spool.max_mb,
        defaults.spool_max_mb,
        1,
        4096,
    )? * 1024
        * 1024;

    let mut targets = Vec::new();
    if raw.targets.is_empty() {
        targets.push(Target {
            name: "gateway".into(),
            address: Address::Gateway,
            method: Method::Icmp,
            port: None,
        });
        targets.push(Target {
            name: "collector".into(),
            address: Address::Collector,
            method: Method::Icmp,
            port: None,
        });
        if let Some(anchor) = raw.anchor {
            targets.push(Target {
                name: "anchor".into(),
                address: Address::Host(anchor),
                method: Method::Icmp,
                port: None,
            });
        }
    } else if raw.anchor.is_some() {
        return Err(invalid(
            "anchor",
            "is only used when no [[target]] is listed; list it as a target".into(),
        ));
    }
    for (i, t) in raw.targets.into_iter().enumerate() {
        let f = |k: &str| format!("target[{i}].{k}");
        if t.name.is_empty() || t.name.len() > 64 {
            return Err(invalid(&f("name"), "must be 1 to 64 characters".into()));
        }
        if targets.iter().any(|x: &Target| x.name == t.name) {
            return Err(invalid(&f("name"), format!("{:?} is used twice", t.name)));
        }
        if t.method == Method::Tcp && t.port.is_none() {
            return Err(invalid(
                &f("port"),
                "is required for method = \"tcp\"".into(),
            ));
        }
        if t.port == Some(0) {
            return Err(invalid(&f("port"), "must be 1-65535".into()));
        }
        let address = match t.address.as_str() {
            "" => return Err(invalid(&f("address"), "is empty".into())),
            "gateway" => Address::Gateway,
            "collector" => Address::Collector,
            other => Address::Host(other.to_string()),
        };
        targets.push(Target {
            name: t.name,
            address,
            method: t.method,
            port: t.port,
        });
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    Ok(Config {
        collector: raw.collector,
        ca_cert: raw.ca_cert.map(resolve),
        state_dir: resolve(raw.state_dir.unwrap_or_else(|| defaults.state_dir.clone())),
        targets,
        probe_interval,
        echoes,
        echo_timeout,
        push_interval,
        spool_max_age,
        spool_max_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse_with(
            text,
            Path::new("/etc/tps-agent/agent.toml"),
            &Device::Linux.defaults(),
        )
    }

    #[test]
    fn defaults_give_gateway_collector_and_anchor() {
        let c = p("collector = \"https://c.example:50051\"\nanchor = \"192.0.2.9\"\n").unwrap();
        let names: Vec<&str> = c.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["gateway", "collector", "anchor"]);
        assert_eq!(c.probe_interval, Duration::from_secs(30));
        assert_eq!(c.echoes, 5);
        assert_eq!(c.push_interval, Duration::from_secs(60));
        assert_eq!(c.spool_max_bytes, 64 * 1024 * 1024);
        assert_eq!(c.spool_max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/tps-agent"));
    }

    #[test]
    fn a_router_defaults_to_flash_and_a_small_spool() {
        let text = "collector = \"https://c.example:50051\"\n";
        let path = Path::new("/etc/tps-agent/agent.toml");
        let c = parse_with(text, path, &Device::OpenWrt.defaults()).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/etc/tps-agent/state"));
        assert_eq!(c.spool_max_bytes, 4 * 1024 * 1024);
        let c = parse_with(
            &format!("{text}[spool]\nmax_mb = 9\n"),
            path,
            &Device::OpenWrt.defaults(),
        )
        .unwrap();
        assert_eq!(c.spool_max_bytes, 9 * 1024 * 1024, "the config wins");
    }

    #[test]
    fn errors_name_the_key() {
        let e = |t: &str| p(t).unwrap_err().to_string();
        assert!(e("collector = \"c.example\"\n").contains("collector: \"c.example\" is not a URL"));
        assert!(e("collector = \"http://c:1\"\necho = 3\n").contains("unknown field `echo`"));
        assert!(e("collector = \"http://c:1\"\n[[target]]\nname = \"x\"\naddress = \"h\"\nmethod = \"tcp\"\n")
            .contains("target[0].port: is required"));
        assert!(e("collector = \"http://c:1\"\n[[target]]\nname = \"x\"\naddress = \"h\"\nmethod = \"udp\"\n")
            .contains("unknown variant `udp`"));
        assert!(
            e("collector = \"http://c:1\"\nprobe_interval_secs = 0\n")
                .contains("probe_interval_secs: 0 is outside")
        );
        assert!(
            e("collector = \"http://c:1\"\nprobe_interval_secs = 2\necho_timeout_ms = 5000\n")
                .contains("echo_timeout_ms")
        );
        assert!(e("collector = \"http://c:1\"\n[[target]]\nname = \"x\"\naddress = \"h\"\n[[target]]\nname = \"x\"\naddress = \"i\"\n")
            .contains("target[1].name: \"x\" is used twice"));
    }

    #[test]
    fn collector_hosts() {
        assert_eq!(
            collector_host("https://c.example:50051").as_deref(),
            Some("c.example")
        );
        assert_eq!(
            collector_host("http://127.0.0.1:1/x").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(collector_host("http://[::1]:50051").as_deref(), Some("::1"));
        assert_eq!(
            collector_host("https://c.example").as_deref(),
            Some("c.example")
        );
    }
}
