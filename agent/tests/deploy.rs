//! The agent's example config in `deploy/` parses as shipped.

use std::path::Path;
use std::time::Duration;

use tps_agent::config::{self, Address, Method};

#[test]
fn example_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.example.toml");
    let c = config::load(&path).unwrap();
    assert_eq!(c.collector, "https://collector.kpu-kepri.example:50051");
    assert_eq!(c.probe_interval, Duration::from_secs(30));
    assert_eq!(c.echoes, 5);
    assert_eq!(c.push_interval, Duration::from_secs(60));
    assert_eq!(c.spool_max_bytes, 64 * 1024 * 1024);
    let t: Vec<(&str, &Address, Method, Option<u16>)> = c
        .targets
        .iter()
        .map(|t| (t.name.as_str(), &t.address, t.method, t.port))
        .collect();
    assert_eq!(t[0], ("gateway", &Address::Gateway, Method::Icmp, None));
    assert_eq!(
        t[1],
        ("collector", &Address::Collector, Method::Tcp, Some(50051))
    );
    assert_eq!(
        t[2],
        (
            "anchor",
            &Address::Host("203.0.113.10".into()),
            Method::Icmp,
            Some(443)
        )
    );
}
