//! Notifications end to end: a real `tps-collector` process with flags in its store
//! tells local stand-ins of the Telegram and WhatsApp APIs, a real SMTP server
//! (aiosmtpd), a webhook and a real Prometheus Alertmanager; it is killed before and
//! during delivery; a storm of 10,000 flags; the Telegram bot's commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tps_collector::domain::now_ms;
use tps_collector::state::coverage::Reason;
use tps_collector::state::flags::Action;

#[path = "support/chat.rs"]
mod chat;
mod support;

use chat::{BOT_TOKEN, Chat, Mode, WA_TOKEN};

const WAIT: Duration = Duration::from_secs(60);

/// Polls `f` until it gives `Some`, up to a deadline.
async fn until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A registry of `n` stations per regency (`21.71` …), named like the real ones.
fn registry(dir: &Path, regencies: &[(&str, &str, usize)]) -> PathBuf {
    let path = dir.join("registry.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(
        f,
        "tps_code,tps_number,village_code,village,district,regency,province,lat,lon,voters"
    )
    .unwrap();
    for (code, name, n) in regencies {
        let d: String = code.chars().filter(|c| *c != '.').collect();
        for i in 0..*n {
            let village = 1001 + i / 999;
            let tps = 1 + i % 999;
            writeln!(
                f,
                "{d}01{village}{tps:03},{tps:03},{code}.01.{village},Sungai Jodoh,Batu Ampar,{name},Kepulauan Riau,,,300"
            )
            .unwrap();
        }
    }
    drop(f);
    path
}

/// Imports the registry into `dir/data` and opens a no_agent flag for every station
/// under `prefix` (digits), as the state owner would have; returns the flag ids.
fn open_flags(data: &Path, prefix: &str) -> Vec<i64> {
    let mut conn =
        tps_collector::store::open(data, tps_collector::store::Synchronous::Normal).unwrap();
    let codes: Vec<String> = tps_collector::store::station_codes(&conn, None)
        .unwrap()
        .into_iter()
        .filter(|c| c.starts_with(prefix))
        .collect();
    let now = now_ms();
    let actions: Vec<Action> = codes
        .iter()
        .map(|c| Action::Open {
            tps: c.parse().unwrap(),
            reason: Reason::NoAgent,
            cause: None,
            since_ms: now - 15 * 60_000,
        })
        .collect();
    let tx = conn.transaction().unwrap();
    let out = tps_collector::store::flags::apply(&tx, &actions, now).unwrap();
    tx.commit().unwrap();
    out.into_iter().map(|(_, b)| b.id).collect()
}

fn setup(dir: &Path, regencies: &[(&str, &str, usize)]) -> PathBuf {
    let data = dir.join("data");
    let csv = registry(dir, regencies);
    tps_collector::commands::import_stations(&data, &csv).unwrap();
    data
}

struct Collector {
    child: Child,
    http: String,
}

impl Collector {
    fn start(dir: &Path, extra: &str) -> Collector {
        let (child, _, http) = support::serve(dir, extra).unwrap();
        Collector {
            child,
            http: format!("http://{http}"),
        }
    }
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.http))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.http))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
    /// `GET /api/v1/notifications{query}` once every message in it is sent (a delivery
    /// is recorded a moment after the API answered it).
    async fn settled(&self, query: &str, token: &str) -> (u16, Value) {
        let end = Instant::now() + WAIT;
        loop {
            let (s, n) = self
                .get(&format!("/api/v1/notifications{query}"), token)
                .await;
            // The sender's own count follows its record of the delivery.
            let done = n["messages"]
                .as_array()
                .is_some_and(|m| m.iter().all(|m| m["state"] == "sent"))
                && n["receivers"].as_array().is_some_and(|rs| {
                    rs.iter()
                        .all(|r| r["delivery"]["sent"] == r["outbox"]["sent"])
                });
            if done || Instant::now() > end {
                return (s, n);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        tps_collector::metrics::value_in(&text, series).unwrap_or(0.0)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tg_receiver(chat: &Chat, name: &str, chat_id: &str) -> String {
    format!(
        "[[notify.receivers]]\nname = \"{name}\"\ntype = \"telegram\"\napi_url = \"{}\"\nchat_id = \"{chat_id}\"\nbot_token = \"{BOT_TOKEN}\"\n",
        chat.telegram_url()
    )
}

fn hook_receiver(chat: &Chat, name: &str) -> String {
    format!(
        "[[notify.receivers]]\nname = \"{name}\"\ntype = \"webhook\"\nurl = \"{}\"\n",
        chat.hook_url(name)
    )
}

fn route(name: &str, region: &str, receivers: &[&str], extra: &str) -> String {
    let list: Vec<String> = receivers.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "[[notify.routes]]\nname = \"{name}\"\nregion = \"{region}\"\nreceivers = [{}]\ngroup_wait_secs = 1\n{extra}",
        list.join(", ")
    )
}

const HEAD: &str = "[notify]\ndashboard_url = \"http://dash.example/\"\n";

/// A helper process we started (a mail server, an Alertmanager), killed when dropped.
struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free a moment ago, for a helper to listen on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on the loopback `port`.
fn wait_port(port: u16, what: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real SMTP server (Debian's python3-aiosmtpd) writing what it receives to a Maildir.
struct Smtp {
    _server: Helper,
    port: u16,
    maildir: PathBuf,
}

impl Smtp {
    fn start(dir: &Path, tls: Option<(&Path, &Path)>) -> Smtp {
        let port = free_port();
        let maildir = dir.join("maildir");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"]);
        if let Some((cert, key)) = tls {
            cmd.arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
        }
        let child = cmd
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3-aiosmtpd (scripts/test installs it)");
        wait_port(port, "aiosmtpd");
        Smtp {
            _server: Helper(child),
            port,
            maildir,
        }
    }

    /// Every message received, parsed by Python's email package (headers decoded).
    fn messages(&self) -> Vec<Value> {
        let script = r#"
import sys, json, mailbox, email.header, email.policy
out = []
for m in mailbox.Maildir(sys.argv[1], factory=None, create=False):
    raw = m.as_bytes()
    import email
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    out.append({
        "subject": str(msg["subject"]), "from": str(msg["from"]), "to": str(msg["to"]),
        "message_id": str(msg["message-id"]), "content_type": msg.get_content_type(),
        "charset": msg.get_content_charset(), "body": msg.get_content(),
        "raw_subject": raw.decode("ascii", "replace").split("Subject: ", 1)[1].split("\r\n", 1)[0],
    })
print(json.dumps(out))
"#;
        if !self.maildir.join("new").exists() {
            return Vec::new();
        }
        let o = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .arg(&self.maildir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_channel_gets_one_message_per_regency_in_its_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let data = setup(
        dir.path(),
        &[
            ("21.71", "Kota Batam", 25),
            ("21.72", "Kota Tanjung Pinang", 5),
        ],
    );
    open_flags(&data, "21");
    let admin = tps_collector::commands::add_operator(&data, "admin", "admin").unwrap();
    let chat = Chat::start().await.unwrap();
    let smtp = Smtp::start(dir.path(), None);
    let cfg = format!(
        "{HEAD}{}topic_id = 5\n[[notify.receivers]]\nname = \"wa\"\ntype = \"whatsapp\"\napi_url = \"{}\"\nphone_number_id = \"555\"\nto = [\"6281200000001\"]\ntemplate = \"tps_follow_up\"\ntoken = \"{WA_TOKEN}\"\n\
         [[notify.receivers]]\nname = \"mail\"\ntype = \"email\"\nsmtp = \"127.0.0.1:{}\"\nsecurity = \"none\"\nfrom = \"Pemantau TPS — Kepri <monitor@kpu-kepri.example>\"\nto = [\"posko@kpu-kepri.example\"]\n{}{}",
        tg_receiver(&chat, "tg", "-100777"),
        chat.whatsapp_url(),
        smtp.port,
        hook_receiver(&chat, "hook"),
        route("kepri", "21", &["tg", "wa", "mail", "hook"], ""),
    );
    let c = Collector::start(dir.path(), &cfg);

    let tg = until("two Telegram messages", WAIT, || {
        let m = chat.accepted("telegram", "sendMessage");
        (m.len() >= 2).then_some(m)
    })
    .await;
    let batam = tg
        .iter()
        .find(|r| r.body["text"].as_str().unwrap().contains("21.71"))
        .unwrap();
    assert_eq!(batam.body["chat_id"], "-100777");
    assert_eq!(batam.body["message_thread_id"], 5);
    assert_eq!(batam.body["parse_mode"], "HTML");
    let text = batam.body["text"].as_str().unwrap();
    assert!(
        text.starts_with("<b>🔴 Kota Batam 21.71: 25 TPS perlu tindak lanjut</b>\n"),
        "{text}"
    );
    assert!(text.contains("belum ada agen sejak"), "{text}");
    assert!(
        text.contains("<a href=\"http://dash.example/#tps=2171011001001\">"),
        "{text}"
    );
    assert!(text.contains("dan 15 TPS lainnya"), "{text}");
    assert!(
        text.ends_with("<a href=\"http://dash.example/#region=21.71\">Dashboard</a>"),
        "{text}"
    );

    let wa = until("two WhatsApp messages", WAIT, || {
        let m = chat.accepted("whatsapp", "messages");
        (m.len() >= 2).then_some(m)
    })
    .await;
    assert_eq!(wa[0].path, "/555/messages");
    assert_eq!(wa[0].headers["authorization"], format!("Bearer {WA_TOKEN}"));
    let t = &wa[0].body["template"];
    assert_eq!(
        (t["name"].as_str(), t["language"]["code"].as_str()),
        (Some("tps_follow_up"), Some("id"))
    );
    let param = t["components"][0]["parameters"][0]["text"]
        .as_str()
        .unwrap();
    assert!(param.starts_with("🔴 Kota"), "{param}");
    assert!(!param.contains('\n'));

    let hooks = until("two webhook posts", WAIT, || {
        let m = chat.accepted("hook", "/hook");
        (m.len() >= 2).then_some(m)
    })
    .await;
    let h = hooks
        .iter()
        .find(|r| r.body["groupLabels"]["region"] == "21.71")
        .unwrap();
    assert_eq!(
        (h.body["version"].as_str(), h.body["status"].as_str()),
        (Some("4"), Some("firing"))
    );
    assert_eq!(h.body["receiver"], "hook");
    assert_eq!(h.body["alerts"].as_array().unwrap().len(), 25);
    assert_eq!(h.body["truncatedAlerts"], 0);
    let a = &h.body["alerts"][0];
    assert_eq!(a["labels"]["alertname"], "TPSUncovered");
    assert_eq!(a["labels"]["tps"], "2171011001001");
    assert_eq!(
        (
            a["labels"]["regency"].as_str(),
            a["labels"]["district"].as_str()
        ),
        (Some("21.71"), Some("21.71.01"))
    );
    assert_eq!(a["labels"]["state"], "no_agent");
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(
        h.headers["idempotency-key"],
        h.body["idempotencyKey"].as_str().unwrap()
    );

    let mails = until("two e-mails", WAIT, || {
        let m = smtp.messages();
        (m.len() >= 2).then_some(m)
    })
    .await;
    let m = mails
        .iter()
        .find(|m| m["subject"].as_str().unwrap().contains("21.72"))
        .unwrap();
    assert_eq!(
        m["subject"],
        "🔴 Kota Tanjung Pinang 21.72: 5 TPS perlu tindak lanjut"
    );
    assert!(
        m["raw_subject"].as_str().unwrap().starts_with("=?utf-8?"),
        "encoded: {}",
        m["raw_subject"]
    );
    assert_eq!(
        m["from"],
        "Pemantau TPS — Kepri <monitor@kpu-kepri.example>"
    );
    assert_eq!(m["to"], "posko@kpu-kepri.example");
    assert_eq!(
        (m["content_type"].as_str(), m["charset"].as_str()),
        (Some("text/plain"), Some("utf-8"))
    );
    assert!(
        m["message_id"]
            .as_str()
            .unwrap()
            .starts_with("<tps-notify-"),
        "{}",
        m["message_id"]
    );
    let body = m["body"].as_str().unwrap();
    assert!(
        body.contains("• TPS 001 Sungai Jodoh, Batu Ampar — belum ada agen sejak"),
        "{body}"
    );
    assert!(
        body.contains("http://dash.example/#tps=2172011001001"),
        "{body}"
    );

    // The delivery state is visible, and nothing more was sent.
    let (s, n) = c.settled("", &admin).await;
    assert_eq!(s, 200, "{n}");
    let msgs = n["messages"].as_array().unwrap();
    assert_eq!(
        msgs.len(),
        8,
        "two messages for each of four receivers: {n}"
    );
    assert!(msgs.iter().all(|m| m["state"] == "sent"), "{n}");
    for r in n["receivers"].as_array().unwrap() {
        assert_eq!(r["outbox"]["sent"], 2, "{r}");
        assert_eq!(r["outbox"]["queued"], 0, "{r}");
    }
    assert_eq!(
        c.metric("tps_notify_sent_total{receiver=\"tg\"}").await,
        2.0
    );
    assert_eq!(chat.accepted("telegram", "sendMessage").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_over_starttls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let data = setup(dir.path(), &[("21.71", "Kota Batam", 3)]);
    open_flags(&data, "2171");
    // A private CA and the mail server's certificate signed by it.
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_path, key_path, ca_path) = (
        dir.path().join("smtp.crt"),
        dir.path().join("smtp.key"),
        dir.path().join("ca.crt"),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let smtp = Smtp::start(dir.path(), Some((&cert_path, &key_path)));
    let cfg = format!(
        "{HEAD}[[notify.receivers]]\nname = \"mail\"\ntype = \"email\"\nsmtp = \"localhost:{}\"\nsecurity = \"starttls\"\nca_file = {:?}\nfrom = \"monitor@kpu-kepri.example\"\nto = [\"posko@kpu-kepri.example\", \"Ketua Posko <ketua@kpu-kepri.example>\"]\n{}",
        smtp.port,
        ca_path.display().to_string(),
        route("kepri", "21", &["mail"], ""),
    );
    let _c = Collector::start(dir.path(), &cfg);
    let mails = until("the e-mail over STARTTLS", WAIT, || {
        let m = smtp.messages();
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(
        mails[0]["to"],
        "posko@kpu-kepri.example, Ketua Posko <ketua@kpu-kepri.example>"
    );
    assert!(
        mails[0]["subject"]
            .as_str()
            .unwrap()
            .contains("3 TPS perlu tindak lanjut")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_flags_in_one_regency_are_one_message_and_a_province_one_summary() {
    let dir = tempfile::tempdir().unwrap();
    let data = setup(
        dir.path(),
        &[
            ("21.71", "Kota Batam", 10_000),
            ("21.01", "Kabupaten Bintan", 10),
            ("21.02", "Kabupaten Karimun", 10),
            ("21.03", "Kabupaten Natuna", 10),
        ],
    );
    let flags = open_flags(&data, "21");
    assert_eq!(flags.len(), 10_030);
    let chat = Chat::start().await.unwrap();
    let cfg = format!(
        "{HEAD}{}{}{}{}",
        hook_receiver(&chat, "batam"),
        hook_receiver(&chat, "kepri"),
        route("batam", "21.71", &["batam"], ""),
        route("kepri", "21", &["kepri"], "summary_after = 3\n"),
    );
    let c = Collector::start(dir.path(), &cfg);
    let batam = until("the Batam message", WAIT, || {
        chat.accepted("hook", "/batam").pop()
    })
    .await;
    assert_eq!(batam.body["counts"]["firing"], 10_000);
    assert_eq!(batam.body["alerts"].as_array().unwrap().len(), 200);
    assert_eq!(batam.body["truncatedAlerts"], 9_800);
    assert!(
        batam.body["title"]
            .as_str()
            .unwrap()
            .contains("10.000 TPS perlu tindak lanjut"),
        "{}",
        batam.body["title"]
    );
    let kepri = until("the province summary", WAIT, || {
        chat.accepted("hook", "/kepri").pop()
    })
    .await;
    assert_eq!(kepri.body["groupLabels"]["region"], "21");
    assert_eq!(kepri.body["counts"]["firing"], 10_030);
    let message = kepri.body["message"].as_str().unwrap();
    assert!(
        message.starts_with("🔴 Kepulauan Riau 21: 10.030 TPS perlu tindak lanjut"),
        "{message}"
    );
    assert!(
        message.contains("Kota Batam 21.71: 10.000 bermasalah"),
        "{message}"
    );

    // Every event was planned and nothing is left pending: no further message can come.
    let data2 = data.clone();
    until("the planner to have read every event", WAIT, move || {
        let conn = rusqlite::Connection::open(tps_collector::store::db_path(&data2)).ok()?;
        let pending: i64 = conn.query_row("SELECT count(*) FROM notify_pending", [], |r| r.get(0)).ok()?;
        let behind: i64 = conn
            .query_row(
                "SELECT (SELECT max(id) FROM flag_events) - (SELECT last_id FROM sink_cursors WHERE name = 'notify')",
                [],
                |r| r.get(0),
            )
            .ok()?;
        (pending == 0 && behind == 0).then_some(())
    })
    .await;
    let conn = rusqlite::Connection::open(tps_collector::store::db_path(&data)).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM notify_outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2, "10,030 flags: one message per route");
    assert_eq!(chat.accepted("hook", "").len(), 2);
    assert!(c.metric("tps_notify_events_total").await >= 10_030.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_errors_are_retried_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let data = setup(dir.path(), &[("21.71", "Kota Batam", 2)]);
    open_flags(&data, "21");
    let admin = tps_collector::commands::add_operator(&data, "admin", "admin").unwrap();
    let chat = Chat::start().await.unwrap();
    chat.set_mode(Mode::Limited {
        retry_after: 2,
        n: 1,
    });
    let cfg = format!(
        "{HEAD}{}{}",
        tg_receiver(&chat, "tg", "-100777"),
        route("kepri", "21", &["tg"], "")
    );
    let c = Collector::start(dir.path(), &cfg);
    let got = until("the message after the rate limit", WAIT, || {
        chat.accepted("telegram", "sendMessage").pop()
    })
    .await;
    let refused = chat
        .requests()
        .into_iter()
        .find(|r| !r.accepted && r.path == "/sendMessage")
        .expect("the first try was refused");
    assert!(
        got.at.duration_since(refused.at) >= Duration::from_secs(2),
        "waited the API's retry_after: {:?}",
        got.at.duration_since(refused.at)
    );
    assert_eq!(refused.body["text"], got.body["text"], "the same message");
    let (_, n) = c.settled("?receiver=tg", &admin).await;
    let m = &n["messages"][0];
    assert_eq!(
        (m["state"].as_str(), m["attempts"].as_u64()),
        (Some("sent"), Some(2)),
        "{n}"
    );
    let d = &n["receivers"][0]["delivery"];
    assert_eq!(
        (d["sent"].as_u64(), d["failed_attempts"].as_u64()),
        (Some(1), Some(1)),
        "{n}"
    );
    assert_eq!(
        c.metric("tps_notify_failed_attempts_total{receiver=\"tg\"}")
            .await,
        1.0
    );

    // A request the API can never take (Telegram 400) is given up, not retried.
    let (s, _) = c
        .post(
            "/api/v1/notifications/test",
            &admin,
            json!({"receiver": "tg"}),
        )
        .await;
    assert_eq!(s, 202);
    until("the test message", WAIT, || {
        chat.accepted("telegram", "sendMessage")
            .into_iter()
            .find(|r| r.body["text"].as_str().unwrap_or("").contains("Pesan uji"))
    })
    .await;
    let (s, e) = c
        .post(
            "/api/v1/notifications/test",
            &admin,
            json!({"receiver": "nope"}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("receiver"), "{e}");
    let viewer = tps_collector::commands::add_operator(&data, "vera", "viewer").unwrap();
    let (s, _) = c
        .post(
            "/api/v1/notifications/test",
            &viewer,
            json!({"receiver": "tg"}),
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_errors_and_rate_limits_are_retried_until_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let data = setup(dir.path(), &[("21.71", "Kota Batam", 2)]);
    open_flags(&data, "21");
    let admin = tps_collector::commands::add_operator(&data, "admin", "admin").unwrap();
    let chat = Chat::start().await.unwrap();
    let cfg = format!(
        "{HEAD}[[notify.receivers]]\nname = \"wa\"\ntype = \"whatsapp\"\napi_url = \"{}\"\nphone_number_id = \"555\"\nto = [\"6281200000001\"]\ntemplate = \"tps_follow_up\"\ntoken = \"{WA_TOKEN}\"\n{}",
        chat.whatsapp_url(),
        route("kepri", "21", &["wa"], ""),
    );
    // An expired token first (fixed by an admin meanwhile), then the pair rate limit.
    chat.set_mode(Mode::Fail { status: 401, n: 1 });
    let c = Collector::start(dir.path(), &cfg);
    let mut n = Value::Null;
    for _ in 0..600 {
        n = c.get("/api/v1/notifications?receiver=wa", &admin).await.1;
        if n["messages"][0]["last_error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = n["messages"][0]["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        err.contains("WhatsApp API answered 401 Unauthorized: Invalid OAuth access token - Cannot parse access token (code 190)"),
        "{n}"
    );
    assert_eq!(
        n["messages"][0]["state"], "queued",
        "an expired token is retried: {n}"
    );
    chat.set_mode(Mode::Limited {
        retry_after: 1,
        n: 1,
    });
    let got = until("the message", WAIT, || {
        chat.accepted("whatsapp", "messages").pop()
    })
    .await;
    assert_eq!(got.body["to"], "6281200000001");
    let (_, n) = c.settled("?receiver=wa", &admin).await;
    assert_eq!(
        (
            n["messages"][0]["state"].as_str(),
            n["messages"][0]["attempts"].as_u64()
        ),
        (Some("sent"), Some(3)),
        "{n}"
    );
    assert!(
        n["messages"][0]["remote_id"]
            .as_str()
            .unwrap()
            .starts_with("wamid."),
        "{n}"
    );
    assert_eq!(
        chat.requests()
            .iter()
            .filter(|r| r.api == "whatsapp")
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_a_test_message_and_names_what_went_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let chat = Chat::start().await.unwrap();
    let good = format!("{HEAD}{}", tg_receiver(&chat, "tg", "-100777"));
    let bad = good.replace(BOT_TOKEN, "999:wrong");
    for (name, notify) in [("good", &good), ("bad", &bad)] {
        std::fs::write(
            dir.path().join(format!("{name}.toml")),
            format!("[tls]\nplaintext = true\n[store]\ndata_dir = \"data\"\n{notify}"),
        )
        .unwrap();
    }
    let run = |name: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_tps-collector"))
                .args(["notify-test", "--receiver", "tg", "--config"])
                .arg(path)
                .output()
                .unwrap()
        })
    };
    let o = run("good").await.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("test message sent to tg (message id "));
    assert!(
        chat.accepted("telegram", "sendMessage")[0].body["text"]
            .as_str()
            .unwrap()
            .contains("Pesan uji")
    );
    let o = run("bad").await.unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tg: Telegram sendMessage answered 401: Unauthorized"),
        "{err}"
    );
    assert!(
        !err.contains("999:wrong"),
        "the token stays out of the message: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_or_during_delivery_loses_nothing_and_repeats_only_what_was_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let data = setup(
        dir.path(),
        &[
            ("21.71", "Kota Batam", 3),
            ("21.72", "Kota Tanjung Pinang", 3),
            ("21.01", "Kabupaten Bintan", 3),
        ],
    );
    open_flags(&data, "2171");
    open_flags(&data, "2172");
    let chat = Chat::start().await.unwrap();
    let cfg = format!(
        "{HEAD}{}{}{}",
        tg_receiver(&chat, "tg", "-100777"),
        hook_receiver(&chat, "hook"),
        route("kepri", "21", &["tg", "hook"], ""),
    );
    // 1. The API is down: both messages are in the outbox, undelivered, when the
    //    collector dies.
    chat.set_mode(Mode::Fail {
        status: 500,
        n: 1_000_000,
    });
    let c = Collector::start(dir.path(), &cfg);
    until("a failed attempt", WAIT, || {
        chat.requests()
            .into_iter()
            .find(|r| r.api == "telegram" && !r.accepted)
    })
    .await;
    c.kill();
    assert!(chat.accepted("telegram", "sendMessage").is_empty());
    chat.set_mode(Mode::Normal);
    let c = Collector::start(dir.path(), &cfg);
    until("both messages", WAIT, || {
        (chat.accepted("telegram", "sendMessage").len() >= 2).then_some(())
    })
    .await;
    until("both webhooks", WAIT, || {
        (chat.accepted("hook", "/hook").len() >= 2).then_some(())
    })
    .await;
    // Killed once the collector has recorded them as sent (killed between the API's
    // answer and that record, it would send them again, marked as possible repeats).
    let db = tps_collector::store::db_path(&data);
    until("the deliveries to be recorded", WAIT, || {
        let conn = rusqlite::Connection::open(&db).ok()?;
        let open: i64 = conn
            .query_row(
                "SELECT count(*) FROM notify_outbox WHERE state <> 'sent'",
                [],
                |r| r.get(0),
            )
            .ok()?;
        (open == 0).then_some(())
    })
    .await;
    c.kill();

    // 2. A send is under way (the API takes the request and never answers) when it dies.
    open_flags(&data, "2101");
    chat.set_mode(Mode::Stall);
    let c = Collector::start(dir.path(), &cfg);
    let stalled = until("the stalled send", WAIT, || {
        chat.requests().into_iter().find(|r| {
            r.api == "telegram"
                && !r.accepted
                && r.body["text"].as_str().unwrap_or("").contains("21.01")
        })
    })
    .await;
    assert!(
        !stalled.body["text"]
            .as_str()
            .unwrap()
            .contains("kirim ulang")
    );
    c.kill();
    chat.set_mode(Mode::Normal);
    let _c = Collector::start(dir.path(), &cfg);
    let again = until("the message sent again", WAIT, || {
        chat.accepted("telegram", "sendMessage")
            .into_iter()
            .find(|r| r.body["text"].as_str().unwrap_or("").contains("21.01"))
    })
    .await;
    let text = again.body["text"].as_str().unwrap();
    assert!(
        text.contains("(kirim ulang)"),
        "marked as a possible repeat: {text}"
    );
    let hooks = until("the Bintan webhook", WAIT, || {
        let h: Vec<_> = chat
            .accepted("hook", "/hook")
            .into_iter()
            .filter(|r| r.body["groupLabels"]["region"] == "21.01")
            .collect();
        (!h.is_empty()).then_some(h)
    })
    .await;
    // Whatever the webhook may have seen before, the same delivery carries the same key.
    let keys: Vec<String> = chat
        .requests()
        .into_iter()
        .filter(|r| r.api == "hook" && r.body["groupLabels"]["region"] == "21.01")
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    assert!(
        keys.iter()
            .all(|k| *k == hooks[0].headers["idempotency-key"]),
        "{keys:?}"
    );
    // Exactly one accepted message per region and receiver over three runs and two kills.
    let mut regions: Vec<String> = chat
        .accepted("telegram", "sendMessage")
        .iter()
        .map(|r| {
            r.body["text"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    regions.sort();
    assert_eq!(
        regions,
        [
            "<b>🔴 Kabupaten Bintan 21.01",
            "<b>🔴 Kota Batam 21.71",
            "<b>🔴 Kota Tanjung Pinang 21.72"
        ]
    );
    let mut hooked: Vec<String> = chat
        .accepted("hook", "/hook")
        .iter()
        .map(|r| {
            r.body["groupLabels"]["region"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    hooked.sort();
    assert_eq!(hooked, ["21.01", "21.71", "21.72"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_lets_the_send_under_way_finish() {
    let dir = tempfile::tempdir().unwrap();
    let data = setup(dir.path(), &[("21.71", "Kota Batam", 2)]);
    open_flags(&data, "21");
    let chat = Chat::start().await.unwrap();
    chat.set_mode(Mode::Slow(Duration::from_secs(2)));
    let cfg = format!(
        "{HEAD}{}{}",
        hook_receiver(&chat, "hook"),
        route("kepri", "21", &["hook"], "")
    );
    let mut c = Collector::start(dir.path(), &cfg);
    let db = tps_collector::store::db_path(&data);
    let state = move || -> Option<(String, bool)> {
        let conn = rusqlite::Connection::open(&db).ok()?;
        conn.query_row("SELECT state, maybe_sent FROM notify_outbox", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .ok()
    };
    let s = state.clone();
    until("the send under way", WAIT, move || {
        s().filter(|(st, _)| st == "sending")
    })
    .await;
    let pid = rustix::process::Pid::from_child(&c.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let st = c.child.wait().unwrap();
        (st, c)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{:?}", status.0);
    assert_eq!(
        state(),
        Some(("sent".to_string(), false)),
        "finished and recorded before the exit"
    );
    assert_eq!(chat.accepted("hook", "/hook").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_answers_status_and_acknowledges_for_linked_operators_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = setup(
        dir.path(),
        &[
            ("21.71", "Kota Batam", 25),
            ("21.72", "Kota Tanjung Pinang", 2),
        ],
    );
    let flags = open_flags(&data, "2172");
    let admin = tps_collector::commands::add_operator(&data, "siti", "operator").unwrap();
    tps_collector::commands::add_operator(&data, "vera", "viewer").unwrap();
    let chat = Chat::start().await.unwrap();
    let cfg = format!(
        "{HEAD}{}{}[notify.bot]\nreceiver = \"tg\"\n[notify.bot.operators]\n\"111\" = \"siti\"\n\"222\" = \"vera\"\n",
        tg_receiver(&chat, "tg", "-100777"),
        route("kepri", "21", &["tg"], ""),
    );
    let c = Collector::start(dir.path(), &cfg);
    // The message for two stations carries a button per flag.
    let m = until("the flag message", WAIT, || {
        chat.accepted("telegram", "sendMessage").pop()
    })
    .await;
    let buttons: Vec<String> = m.body["reply_markup"]["inline_keyboard"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["callback_data"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        buttons,
        flags.iter().map(|f| format!("ack:{f}")).collect::<Vec<_>>()
    );

    let msg = |chat_id: i64, from: i64, text: &str| {
        json!({"message": {"message_id": 7, "from": {"id": from, "is_bot": false, "first_name": "x"},
               "chat": {"id": chat_id, "type": "supergroup"}, "date": 1, "text": text}})
    };
    let reply_to = |n: usize| {
        let chat = chat.clone();
        move || {
            let replies: Vec<_> = chat
                .accepted("telegram", "sendMessage")
                .into_iter()
                .filter(|r| r.body.get("reply_parameters").is_some())
                .collect();
            replies
                .get(n)
                .map(|r| r.body["text"].as_str().unwrap().to_string())
        }
    };
    chat.push_update(msg(-999, 111, "/status"));
    chat.push_update(msg(-100777, 111, "/status@TpsBot 21.71"));
    let status = until("the /status answer", WAIT, reply_to(0)).await;
    assert_eq!(
        status,
        "Kota Batam 21.71: 25 TPS\n🟢 terhubung 0 (0.0%)\n🟡 buruk 0\n🔴 tidak melapor 0\n⚫ belum ada agen 25\nFlag aktif: 0"
    );
    chat.push_update(msg(-100777, 333, &format!("/ack {}", flags[0])));
    assert!(
        until("the unlinked answer", WAIT, reply_to(1))
            .await
            .contains("belum terhubung")
    );
    chat.push_update(msg(-100777, 222, &format!("/ack {}", flags[0])));
    assert_eq!(
        until("the viewer answer", WAIT, reply_to(2)).await,
        "vera hanya boleh melihat (peran viewer)."
    );
    chat.push_update(msg(-100777, 111, &format!("/ack #{}", flags[0])));
    assert_eq!(
        until("the ack answer", WAIT, reply_to(3)).await,
        format!(
            "✔ Flag #{} (TPS 2172011001001) ditangani oleh siti.",
            flags[0]
        )
    );
    // Nothing was said in the chat that is not a receiver's.
    assert!(
        chat.accepted("telegram", "sendMessage")
            .iter()
            .all(|r| r.body["chat_id"] == "-100777")
    );
    let (_, f) = c.get(&format!("/api/v1/flags/{}", flags[0]), &admin).await;
    assert_eq!(f["status"], "acknowledged", "{f}");
    assert!(f.to_string().contains("siti (telegram)"), "{f}");

    // The button.
    chat.push_update(json!({"callback_query": {"id": "cb1", "from": {"id": 111, "is_bot": false, "first_name": "x"},
        "message": {"message_id": 1, "chat": {"id": -100777, "type": "supergroup"}, "date": 1},
        "data": format!("ack:{}", flags[1])}}));
    let answer = until("the button answer", WAIT, || {
        chat.accepted("telegram", "answerCallbackQuery").pop()
    })
    .await;
    assert_eq!(answer.body["callback_query_id"], "cb1");
    assert!(
        answer.body["text"]
            .as_str()
            .unwrap()
            .contains("ditangani oleh siti")
    );
    let (_, f) = c.get(&format!("/api/v1/flags/{}", flags[1]), &admin).await;
    assert!(f.to_string().contains("acknowledged"), "{f}");
}

/// A real Prometheus Alertmanager (Debian's prometheus-alertmanager) routing to a webhook.
struct Alertmanager {
    _server: Helper,
    url: String,
}

impl Alertmanager {
    fn start(dir: &Path, hook: &str) -> Alertmanager {
        let port = free_port();
        let cfg = dir.join("alertmanager.yml");
        std::fs::write(
            &cfg,
            format!(
                "route:\n  receiver: hook\n  group_by: [regency]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: hook\n    webhook_configs:\n      - url: {hook}\n        send_resolved: true\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.join("am").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (scripts/test installs it)");
        wait_port(port, "Alertmanager");
        Alertmanager {
            _server: Helper(child),
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_groups_the_active_flags_and_resolves_the_ended_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = setup(
        dir.path(),
        &[
            ("21.71", "Kota Batam", 3),
            ("21.72", "Kota Tanjung Pinang", 2),
        ],
    );
    let flags = open_flags(&data, "21");
    let op = tps_collector::commands::add_operator(&data, "siti", "operator").unwrap();
    let chat = Chat::start().await.unwrap();
    let am = Alertmanager::start(dir.path(), &chat.hook_url("am"));
    let cfg = format!(
        "{HEAD}[[notify.alertmanager]]\nurl = \"{}\"\nregion = \"21\"\nevery_secs = 1\n",
        am.url
    );
    let c = Collector::start(dir.path(), &cfg);
    let group = |regency: &'static str, status: &'static str| {
        let chat = chat.clone();
        move || {
            chat.accepted("hook", "/am")
                .into_iter()
                .rev()
                .find(|r| r.body["groupLabels"]["regency"] == regency && r.body["status"] == status)
        }
    };
    let batam = until("Alertmanager's Batam group", WAIT, group("21.71", "firing")).await;
    assert_eq!(batam.body["alerts"].as_array().unwrap().len(), 3);
    let a = &batam.body["alerts"][0];
    assert_eq!(a["labels"]["alertname"], "TPSUncovered");
    assert_eq!(a["labels"]["state"], "no_agent");
    assert_eq!(a["labels"]["district"], "21.71.01");
    assert!(a["labels"]["tps"].as_str().unwrap().starts_with("2171"));
    assert!(
        a["generatorURL"]
            .as_str()
            .unwrap()
            .starts_with("http://dash.example/#tps=2171")
    );
    let pinang = until(
        "Alertmanager's Tanjung Pinang group",
        WAIT,
        group("21.72", "firing"),
    )
    .await;
    assert_eq!(pinang.body["alerts"].as_array().unwrap().len(), 2);

    // Both Tanjung Pinang flags are resolved by a person: Alertmanager resolves the group.
    for f in &flags[3..] {
        let (s, b) = c
            .post(
                &format!("/api/v1/flags/{f}/resolve"),
                &op,
                json!({"resolution": "modem diganti"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let resolved = until("the resolved group", WAIT, group("21.72", "resolved")).await;
    assert!(
        resolved.body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status"] == "resolved")
    );
    assert!(
        chat.accepted("hook", "/am")
            .iter()
            .all(|r| r.body["groupLabels"]["regency"] != "21.71" || r.body["status"] == "firing")
    );
}
