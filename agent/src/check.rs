//! `tps-agent check`: one probe round and one push, printed so a volunteer can read
//! it, ending in COVERED or NOT COVERED (exit code 0 only when covered).

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::{self, Config, Method};
use crate::credentials;
use crate::run::{self, with_spool};
use crate::system::SystemInfo;
use crate::uplink::{self, PushError, Uplink};
use crate::wire::{self, SpoolView};

async fn spool_view(spool: &run::SharedSpool) -> SpoolView {
    with_spool(spool, |s| {
        Ok(SpoolView {
            depth: s.depth()?,
            dropped: s.dropped_by_reason()?,
        })
    })
    .await
    .unwrap_or_default()
}

/// The collector's default thresholds for the primary target (the first one).
pub const MAX_LOSS: f64 = 0.10;
pub const MAX_RTT_MS: f64 = 500.0;

/// The check's report and verdict.
#[derive(Debug, Clone)]
pub struct Report {
    pub text: String,
    pub covered: bool,
}

pub async fn check(config: &Config) -> Report {
    let mut out = String::new();
    let mut problems: Vec<String> = Vec::new();
    let creds = credentials::load(&config.state_dir);
    let _ = writeln!(
        out,
        "tps-agent {} check{}",
        env!("CARGO_PKG_VERSION"),
        match &creds {
            Ok(c) => format!(" for TPS {} (agent {})", c.tps_code, c.agent_id),
            Err(_) => " (not enrolled: dry run)".into(),
        }
    );

    // 1. One probe round.
    let host = config::collector_host(&config.collector).unwrap_or_default();
    let run::Probers {
        probers,
        primary_problem,
    } = run::probers(config);
    if probers.is_empty() {
        problems.push("no target can be probed here (see the warning above)".into());
    } else if !primary_problem.is_empty() {
        problems.push(format!("the primary {primary_problem}"));
    }
    let stamp = crate::clock::Clock::new().stamp();
    let (_, outcomes) = run::probe_round(probers, &host).await;
    let _ = writeln!(out, "\nTargets:");
    for (name, o) in &outcomes {
        let r = &o.round;
        let loss = if r.sent == 0 {
            1.0
        } else {
            1.0 - f64::from(r.received) / f64::from(r.sent)
        };
        let method = match o.method {
            Method::Icmp => "ICMP",
            Method::Tcp => "TCP",
        };
        let rtt = r
            .rtt
            .map(|s| {
                format!(
                    "rtt {:.1} ms (min {:.1}, max {:.1})",
                    s.avg_ms, s.min_ms, s.max_ms
                )
            })
            .unwrap_or_else(|| "no reply".into());
        let ok = r.received > 0;
        let verdict = match (ok, r.errors) {
            (true, _) => "REACHED".to_string(),
            (false, 0) => "NOT REACHED".to_string(),
            (false, e) => format!("NOT REACHED ({e} answered \"unreachable\")"),
        };
        let _ = writeln!(
            out,
            "  {:<10} {:<22} {method:<4} {}/{} replies  loss {:>3.0}%  {rtt:<36} {verdict}",
            name,
            o.address,
            r.received,
            r.sent,
            loss * 100.0,
        );
        if name == run::primary(config) {
            if loss >= MAX_LOSS {
                problems.push(format!(
                    "{name} (primary target): {:.0}% loss, limit {:.0}%",
                    loss * 100.0,
                    MAX_LOSS * 100.0
                ));
            } else if r.rtt.is_some_and(|s| s.avg_ms >= MAX_RTT_MS) {
                problems.push(format!(
                    "{name} (primary target): RTT {:.0} ms, limit {MAX_RTT_MS:.0} ms",
                    r.rtt.map(|s| s.avg_ms).unwrap_or(0.0)
                ));
            }
        }
    }

    // 2. One push (enrolled), or a reachability test (dry run).
    let _ = writeln!(out, "\nCollector {}:", config.collector);
    if let Err(advice) = crate::probe::lookup(&host).await {
        let _ = writeln!(out, "  name resolves:  NO");
        problems.push(advice);
    }
    match creds {
        Ok(c) => {
            let spool = match run::open_spool(config) {
                Ok(s) => Some(s),
                Err(e) if run::spool_in_use(&e) => {
                    let _ = writeln!(
                        out,
                        "  spool:          in use by the running agent (the service); this check's round is not added to it"
                    );
                    None
                }
                Err(e) => {
                    problems.push(format!("spool: {e}"));
                    None
                }
            };
            if let Some(spool) = &spool {
                let entries = run::round_entries(outcomes.clone(), stamp);
                if let Err(e) = with_spool(spool, move |s| s.append(&entries)).await {
                    problems.push(format!(
                        "this round could not be spooled: {}",
                        run::storage_advice(&e, config).unwrap_or_else(|| e.to_string())
                    ));
                }
            }
            match uplink::channel(&config.collector, config.ca_cert.as_deref()) {
                Err(e) => problems.push(e.to_string()),
                Ok(ch) => {
                    let mut up = Uplink::new(ch, c.token.clone());
                    let (batch, view) = match &spool {
                        Some(spool) => (
                            with_spool(spool, |s| s.batch(500))
                                .await
                                .unwrap_or_default(),
                            spool_view(spool).await,
                        ),
                        None => (Vec::new(), SpoolView::default()),
                    };
                    let status = wire::status(
                        SystemInfo::new().facts(),
                        &view,
                        run::now_ms(),
                        run::primary(config),
                        &primary_problem,
                    );
                    let msgs = batch.iter().map(wire::measurement).collect();
                    match up.push(status, msgs).await {
                        Ok(r) => {
                            let acked = r.acked_seq;
                            if let Some(spool) = &spool {
                                let _ = with_spool(spool, move |s| {
                                    s.ack(acked);
                                    s.trim()
                                })
                                .await;
                            }
                            let _ = writeln!(out, "  reachable:      yes");
                            let _ = writeln!(
                                out,
                                "  token accepted: yes ({} measurements delivered)",
                                batch.len()
                            );
                        }
                        Err(PushError::Unauthenticated(m)) => {
                            let _ = writeln!(out, "  reachable:      yes");
                            let _ = writeln!(out, "  token accepted: NO ({m})");
                            problems.push("the collector refused this agent's token: enroll again with a new code".into());
                        }
                        Err(e) => {
                            let _ = writeln!(out, "  reachable:      NO ({e})");
                            problems.push("the collector cannot be reached".into());
                        }
                    }
                    if let Some(spool) = &spool {
                        let view = spool_view(spool).await;
                        let _ = writeln!(
                            out,
                            "  spool backlog:  {} measurement(s) waiting, {} dropped since install",
                            view.depth,
                            view.dropped.values().sum::<u64>()
                        );
                    }
                }
            }
        }
        Err(e) => {
            let reachable = reachable(&config.collector).await;
            let _ = writeln!(
                out,
                "  reachable:      {}",
                if reachable { "yes" } else { "NO" }
            );
            let _ = writeln!(out, "  token accepted: not enrolled");
            problems.push(e.to_string());
            if !reachable {
                problems.push("the collector cannot be reached".into());
            }
        }
    }

    let covered = problems.is_empty();
    let _ = writeln!(out);
    if covered {
        let _ = writeln!(out, "RESULT: COVERED");
    } else {
        let _ = writeln!(out, "RESULT: NOT COVERED");
        for p in &problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    Report { text: out, covered }
}

/// Whether a TCP connection to the collector's port can be made.
async fn reachable(url: &str) -> bool {
    let default_port = if url.starts_with("https://") { 443 } else { 80 };
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    let target = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    matches!(
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(target)
        )
        .await,
        Ok(Ok(_))
    )
}
