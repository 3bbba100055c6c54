//! TLS on both ports with a CA the agents are given, and the example configs in
//! `deploy/` parsed as shipped.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tps_collector::config;
use tps_proto::v1 as pb;
use tps_proto::v1::collector_client::CollectorClient;
use tps_tests::{deploy_file, kepri_registry, measurement, now_ms, push_request, read_codes};

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> anyhow::Result<Pki> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["collector.test".to_string(), "127.0.0.1".to_string()])?
        .signed_by(&key, &issuer)?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes cert and key files and returns the example config's text pointing at them.
fn example_with_tls(dir: &Path, pki: &Pki) -> anyhow::Result<String> {
    std::fs::write(dir.join("collector.crt"), &pki.cert_pem)?;
    std::fs::write(dir.join("collector.key"), &pki.key_pem)?;
    let text = std::fs::read_to_string(deploy_file("collector.example.toml"))?;
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets)?;
    std::fs::write(secrets.join("telegram.token"), "123456:ABC-test-token\n")?;
    std::fs::write(secrets.join("whatsapp.token"), "EAAG-test\n")?;
    std::fs::write(secrets.join("smtp.password"), "hunter2\n")?;
    Ok(text
        .replace(
            "/etc/tps-collector/secrets/",
            &format!("{}/", secrets.display()),
        )
        .replace(
            "/etc/tps-collector/tls/collector.crt",
            &dir.join("collector.crt").display().to_string(),
        )
        .replace(
            "/etc/tps-collector/tls/collector.key",
            &dir.join("collector.key").display().to_string(),
        ))
}

#[test]
fn example_configs_in_deploy_parse() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = pki()?;
    let text = example_with_tls(dir.path(), &pki)?;
    let c = config::parse(&text, &deploy_file("collector.example.toml"))?;
    assert_eq!(c.grpc_listen.port(), 50051);
    assert_eq!(c.http_listen.port(), 8080);
    assert!(c.tls.is_some());
    assert_eq!(c.data_dir, Path::new("/var/lib/tps-collector"));
    assert_eq!(c.synchronous, tps_collector::store::Synchronous::Full);
    assert_eq!(c.ingest.max_batch, 500);
    assert_eq!(c.enroll.max_failures_per_station, 5);
    assert_eq!(c.report.tz.iana_name(), Some("Asia/Jakarta"));
    assert!(c.report.schedule);
    assert_eq!(c.report.threshold, 0.95);
    let n = &c.notify;
    assert_eq!(n.receivers.len(), 4);
    assert_eq!(n.routes.len(), 3);
    assert_eq!(n.receiver("kepri-telegram").unwrap().per_minute, 20);
    let kepri = n.route("kepri").unwrap();
    assert_eq!(
        (
            kepri.region.as_str(),
            kepri.group_wait.as_secs(),
            kepri.summary_after
        ),
        ("21", 60, 3)
    );
    assert!(kepri.quiet.is_some() && kepri.escalate.is_some());
    let bot = n.bot.as_ref().expect("the bot is configured");
    assert_eq!(
        bot.operators.get(&111_111_111).map(String::as_str),
        Some("siti")
    );
    assert!(bot.chats.contains("-1001234567890"));
    assert_eq!(n.alertmanager.len(), 1);

    let compose = config::load(&deploy_file("compose/collector.toml"))?;
    let influx = compose
        .influx
        .expect("the compose config turns the sink on");
    assert_eq!(
        (influx.org.as_str(), influx.bucket.as_str()),
        ("kpu", "tps")
    );
    assert_eq!(influx.batch_size, 5000);
    assert!(c.influx.is_none(), "the sink is off unless configured");

    // The Grafana dashboard is valid JSON and queries the documented schema.
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(deploy_file(
        "compose/grafana/dashboards/tps.json",
    ))?)?;
    let queries: Vec<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["targets"][0]["query"].as_str().unwrap())
        .collect();
    assert!(queries[0].contains(r#"r._measurement == "station_status" and r._field == "covered""#));
    assert!(
        queries[1].contains(r#"r._field == "rtt_avg_ms""#)
            && queries[2].contains(r#"r._field == "loss""#)
    );

    let dev = config::load(&deploy_file("collector.dev.toml"))?;
    assert!(dev.tls.is_none());
    assert!(dev.grpc_listen.ip().is_loopback() && dev.http_listen.ip().is_loopback());
    assert!(dev.data_dir.ends_with("data/collector"));
    Ok(())
}

#[tokio::test]
async fn both_ports_speak_tls_verified_by_the_given_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = pki()?;
    let text = example_with_tls(dir.path(), &pki)?;
    let cfg = config::parse(&text, &dir.path().join("collector.toml"))?;
    let tls = cfg.tls.clone();
    tps_collector::commands::import_stations(dir.path(), &kepri_registry())?;
    let codes_file = dir.path().join("codes.csv");
    tps_collector::commands::enroll_codes(dir.path(), Some("21.71.01.1002"), &codes_file)?;
    let (tps, code) = read_codes(&codes_file)?.remove(0);

    let grpc_l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http_l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (grpc, http) = (grpc_l.local_addr()?, http_l.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut run_cfg = tps_collector::config::Config::plaintext(dir.path());
    run_cfg.tls = tls;
    let server = tokio::spawn(tps_collector::run(
        run_cfg,
        tps_collector::Listeners {
            grpc: grpc_l,
            http: http_l,
        },
        async {
            let _ = stopped.await;
        },
    ));

    let channel = Endpoint::from_shared(format!("https://{grpc}"))?
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pki.ca_pem))
                .domain_name("collector.test"),
        )?
        .connect()
        .await?;
    let mut client = CollectorClient::new(channel);
    let r = client
        .enroll(pb::EnrollRequest {
            tps_code: tps.clone(),
            enrollment_code: code,
            agent: None,
        })
        .await?
        .into_inner();
    let acked = client
        .push(push_request(
            &r.token,
            vec![measurement(1, now_ms() - 5000, "gw")],
        ))
        .await?;
    assert_eq!(acked.into_inner().acked_seq, 1);

    // A client that does not trust the CA is refused.
    let untrusting = Endpoint::from_shared(format!("https://{grpc}"))?
        .tls_config(ClientTlsConfig::new().domain_name("collector.test"))?
        .connect()
        .await;
    let refused = match untrusting {
        Err(_) => true,
        Ok(ch) => CollectorClient::new(ch)
            .push(push_request(&r.token, vec![]))
            .await
            .is_err(),
    };
    assert!(refused, "a client without the CA must not get through");

    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes())?)
        .resolve("collector.test", http)
        .build()?;
    let viewer = tps_collector::commands::add_operator(dir.path(), "viewer", "viewer")?;
    let body: serde_json::Value = https
        .get(format!(
            "https://collector.test:{}/api/v1/stations/{tps}",
            http.port()
        ))
        .bearer_auth(viewer)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(body["agents"][0]["acked_seq"], 1);
    // Plain HTTP on the TLS port gets nothing useful.
    let plain = reqwest::get(format!("http://{http}/healthz")).await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));

    let _ = stop.send(());
    server.await??;
    Ok(())
}
