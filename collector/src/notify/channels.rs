//! Sending one message to one receiver: the Telegram Bot API, the WhatsApp Cloud API,
//! SMTP and the Alertmanager-shaped webhook, each answer turned into sent, try again
//! (with the API's own wait when it gives one) or give up.

use std::time::Duration;

use serde_json::{Value, json};

use super::alertmanager::rfc3339;
use super::config::{Receiver, ReceiverKind, SmtpSecurity};
use super::message::{Kind, Notification, Style};

/// Why a send did not go through.
#[derive(Debug, Clone, PartialEq)]
pub enum SendError {
    /// Worth trying again: network, server errors, rate limits (`after` is the API's
    /// own wait).
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// The request itself is wrong; sending it again cannot work.
    Permanent(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Retry { error, .. } => f.write_str(error),
            SendError::Permanent(e) => write!(f, "{e} (not retried)"),
        }
    }
}

/// How long one API call may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("tps-collector/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

fn net(e: reqwest::Error) -> SendError {
    SendError::Retry {
        error: format!("cannot reach the API: {e}"),
        after: None,
    }
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Sends `n` to `r`; `key` identifies this delivery (the same on a re-send), `buttons`
/// adds acknowledge buttons to Telegram messages (when the bot answers them). Returns
/// the API's id for the message, when it gives one.
pub async fn send(
    http: &reqwest::Client,
    r: &Receiver,
    n: &Notification,
    style: &Style<'_>,
    key: &str,
    buttons: bool,
) -> Result<Option<String>, SendError> {
    let text = n.text(style);
    match &r.kind {
        ReceiverKind::Telegram {
            api_url,
            bot_token,
            chat_id,
            topic_id,
        } => {
            let mut body = json!({
                "chat_id": chat_id,
                "text": text.telegram_html(),
                "parse_mode": "HTML",
                "link_preview_options": { "is_disabled": true },
            });
            if let Some(t) = topic_id {
                body["message_thread_id"] = json!(t);
            }
            let ackable: Vec<i64> = n
                .items
                .iter()
                .filter(|i| matches!(i.kind, Kind::Firing | Kind::Escalation | Kind::Reminder))
                .map(|i| i.flag_id)
                .collect();
            if buttons && !ackable.is_empty() && ackable.len() <= 3 {
                let label = |id: i64| match style.lang {
                    crate::report::Lang::Id => format!("✔ Tangani #{id}"),
                    crate::report::Lang::En => format!("✔ Acknowledge #{id}"),
                };
                body["reply_markup"] = json!({
                    "inline_keyboard": [ackable.iter().map(|id| json!({"text": label(*id), "callback_data": format!("ack:{id}")})).collect::<Vec<_>>()]
                });
            }
            let resp = telegram_call(http, api_url, bot_token, "sendMessage", &body).await?;
            Ok(resp
                .pointer("/message_id")
                .and_then(Value::as_i64)
                .map(|id| id.to_string()))
        }
        ReceiverKind::WhatsApp {
            api_url,
            token,
            phone_number_id,
            to,
            template,
            template_lang,
        } => {
            let body = json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to[0],
                "type": "template",
                "template": {
                    "name": template,
                    "language": { "code": template_lang },
                    "components": [{
                        "type": "body",
                        "parameters": [{ "type": "text", "text": text.one_line(1024) }],
                    }],
                },
            });
            let resp = http
                .post(format!("{api_url}/{phone_number_id}/messages"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .map_err(net)?;
            let status = resp.status();
            let after = retry_after(resp.headers());
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(v
                    .pointer("/messages/0/id")
                    .and_then(Value::as_str)
                    .map(str::to_string));
            }
            let code = v
                .pointer("/error/code")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let msg = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no error message");
            let error = format!("WhatsApp API answered {status}: {msg} (code {code})");
            // Throughput and pair-rate limits (4, 80007, 130429, 131056) wait a minute.
            let limited = matches!(code, 4 | 80007 | 130429 | 131056) || status.as_u16() == 429;
            if limited {
                Err(SendError::Retry {
                    error,
                    after: Some(after.unwrap_or(Duration::from_secs(60))),
                })
            } else if status.as_u16() == 400 && code != 190 {
                Err(SendError::Permanent(error))
            } else {
                Err(SendError::Retry { error, after })
            }
        }
        ReceiverKind::Email {
            host,
            port,
            security,
            username,
            password,
            from,
            to,
            ca_pem,
        } => {
            use lettre::message::{Mailbox, header::ContentType};
            use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
            use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
            let bad = |what: &str, e: String| SendError::Permanent(format!("{what}: {e}"));
            let from: Mailbox = from
                .parse()
                .map_err(|e: lettre::address::AddressError| bad("from", e.to_string()))?;
            let domain = from.email.domain().to_string();
            let mut m = lettre::Message::builder()
                .from(from)
                .subject(text.title.clone())
                .message_id(Some(format!("<{key}@{domain}>")));
            for a in to {
                m = m.to(a
                    .parse()
                    .map_err(|e: lettre::address::AddressError| bad("to", e.to_string()))?);
            }
            let msg = m
                .header(ContentType::TEXT_PLAIN)
                .body(text.plain(true))
                .map_err(|e| bad("message", e.to_string()))?;
            let tls = match security {
                SmtpSecurity::None => None,
                _ => {
                    let mut p = TlsParameters::builder(host.clone());
                    if let Some(pem) = ca_pem {
                        p = p.add_root_certificate(
                            Certificate::from_pem(pem)
                                .map_err(|e| bad("ca_file", e.to_string()))?,
                        );
                    }
                    Some(p.build().map_err(|e| bad("smtp", e.to_string()))?)
                }
            };
            let tls = match (security, tls) {
                (SmtpSecurity::Tls, Some(p)) => Tls::Wrapper(p),
                (SmtpSecurity::Starttls, Some(p)) => Tls::Required(p),
                _ => Tls::None,
            };
            let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                .port(*port)
                .tls(tls)
                .timeout(Some(SEND_TIMEOUT));
            if let (Some(u), Some(p)) = (username, password) {
                builder = builder.credentials(
                    lettre::transport::smtp::authentication::Credentials::new(u.clone(), p.clone()),
                );
            }
            match builder.build().send(msg).await {
                Ok(resp) => Ok(resp.message().next().map(str::to_string)),
                Err(e) if e.is_permanent() => Err(SendError::Permanent(format!(
                    "the mail server refused: {e}"
                ))),
                Err(e) => Err(SendError::Retry {
                    error: format!("SMTP {host}:{port}: {e}"),
                    after: None,
                }),
            }
        }
        ReceiverKind::Webhook { url, bearer_token } => {
            let body = webhook_body(&r.name, n, style, key);
            let mut req = http.post(url).header("Idempotency-Key", key).json(&body);
            if let Some(t) = bearer_token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(net)?;
            let status = resp.status();
            if status.is_success() {
                return Ok(None);
            }
            let after = retry_after(resp.headers());
            let error = format!("webhook answered {status}");
            if status.is_client_error() && !matches!(status.as_u16(), 408 | 425 | 429) {
                Err(SendError::Permanent(error))
            } else {
                Err(SendError::Retry { error, after })
            }
        }
    }
}

/// One Bot API call; returns its `result`.
pub async fn telegram_call(
    http: &reqwest::Client,
    api_url: &str,
    token: &str,
    method: &str,
    body: &Value,
) -> Result<Value, SendError> {
    let resp = http
        .post(format!("{api_url}/bot{token}/{method}"))
        .json(body)
        .send()
        .await
        .map_err(|e| SendError::Retry {
            // The URL holds the token: name the API, not the URL.
            error: format!("cannot reach the Telegram API: {}", e.without_url()),
            after: None,
        })?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if v.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(v.get("result").cloned().unwrap_or(Value::Null));
    }
    let code = v
        .get("error_code")
        .and_then(Value::as_i64)
        .unwrap_or(i64::from(status.as_u16()));
    let desc = v
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("no description");
    let error = format!("Telegram {method} answered {code}: {desc}");
    if code == 429 {
        let after = v
            .pointer("/parameters/retry_after")
            .and_then(Value::as_u64)
            .unwrap_or(30);
        return Err(SendError::Retry {
            error,
            after: Some(Duration::from_secs(after)),
        });
    }
    if let Some(to) = v.pointer("/parameters/migrate_to_chat_id") {
        return Err(SendError::Permanent(format!(
            "{error}; the group became a supergroup: set chat_id = {to}"
        )));
    }
    if code == 400 {
        Err(SendError::Permanent(error))
    } else {
        Err(SendError::Retry { error, after: None })
    }
}

/// The Prometheus Alertmanager webhook payload (version 4), one alert per station, with
/// the rendered text added as `title` and `message` for receivers that just show it.
pub fn webhook_body(receiver: &str, n: &Notification, style: &Style<'_>, key: &str) -> Value {
    let text = n.text(style);
    let firing = n.counts.problems() > 0 || n.test;
    let alerts: Vec<Value> = n
        .items
        .iter()
        .map(|i| {
            let resolved = i.kind == Kind::Resolved;
            let labels = super::alertmanager::labels(
                &i.tps_code,
                &i.reason,
                i.cause.as_deref(),
                i.flag_id,
            );
            json!({
                "status": if resolved { "resolved" } else { "firing" },
                "labels": labels,
                "annotations": {
                    "summary": format!("TPS {} {}, {}, {}", &i.tps_code[10..], i.village, i.district, i.regency),
                    "kind": i.kind.as_str(),
                },
                "startsAt": rfc3339(i.since_ms),
                "endsAt": if resolved { rfc3339(n.at_ms) } else { "0001-01-01T00:00:00Z".to_string() },
                "generatorURL": style.dashboard_url.map(|b| format!("{b}#tps={}", i.tps_code)).unwrap_or_default(),
                "fingerprint": format!("{:016x}", i.flag_id),
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{route=\"{}\", region=\"{}\"}}", n.route, n.scope_code),
        "truncatedAlerts": (n.counts.total() as usize).saturating_sub(alerts.len()),
        "status": if firing { "firing" } else { "resolved" },
        "receiver": receiver,
        "groupLabels": { "route": n.route, "region": n.scope_code },
        "commonLabels": { "alertname": "TPSUncovered" },
        "commonAnnotations": {},
        "externalURL": style.dashboard_url.unwrap_or_default(),
        "alerts": alerts,
        "title": text.title,
        "message": text.plain(false),
        "idempotencyKey": key,
        "counts": n.counts,
    })
}
