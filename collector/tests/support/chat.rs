//! Local stand-ins for the APIs that cannot be reached from here, implementing their
//! documented request and response shapes: the Telegram Bot API (`sendMessage`,
//! `getUpdates`, `answerCallbackQuery`, with its 429 `retry_after` answers and about 20
//! messages a minute per group), the WhatsApp Cloud API (`/{phone-number-id}/messages`
//! template messages, Graph API error objects) and a plain webhook receiver. Every
//! request is recorded for the test to check.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const BOT_TOKEN: &str = "123456:TEST-token";
pub const WA_TOKEN: &str = "EAAG-test-token";

/// How the server answers message sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    /// The next `n` sends get this HTTP status (500: a server error; 401 for WhatsApp).
    Fail {
        status: u16,
        n: u32,
    },
    /// The next `n` sends get 429 with `retry_after` seconds.
    Limited {
        retry_after: u64,
        n: u32,
    },
    /// Sends are taken in and never answered (a stalled peer).
    Stall,
    /// Sends are answered normally after this long.
    Slow(Duration),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Req {
    pub api: &'static str,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
    /// Whether it was accepted (answered 2xx).
    pub accepted: bool,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    requests: Mutex<Vec<Req>>,
    mode: Mutex<Option<Mode>>,
    updates: Mutex<Vec<Value>>,
    new_update: tokio::sync::Notify,
    next_id: Mutex<i64>,
    /// Accepted sendMessage times per chat, for the rate limit.
    per_chat: Mutex<HashMap<String, Vec<Instant>>>,
}

#[derive(Clone)]
pub struct Chat {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Chat {
    pub async fn start() -> anyhow::Result<Chat> {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/tg/{bot}/{method}", post(telegram))
            .route("/wa/v21.0/{phone}/messages", post(whatsapp))
            .route("/hook/{name}", post(hook))
            .with_state(inner.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Ok(Chat { addr, inner })
    }

    pub fn telegram_url(&self) -> String {
        format!("http://{}/tg", self.addr)
    }
    pub fn whatsapp_url(&self) -> String {
        format!("http://{}/wa/v21.0", self.addr)
    }
    pub fn hook_url(&self, name: &str) -> String {
        format!("http://{}/hook/{name}", self.addr)
    }

    pub fn set_mode(&self, m: Mode) {
        *self.inner.mode.lock().unwrap() = Some(m);
    }

    pub fn requests(&self) -> Vec<Req> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Accepted requests of one API and path suffix (`sendMessage`, `messages`, a hook).
    pub fn accepted(&self, api: &str, suffix: &str) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.accepted && r.api == api && r.path.ends_with(suffix))
            .collect()
    }

    /// Queues an update for `getUpdates`.
    pub fn push_update(&self, mut u: Value) {
        let mut ups = self.inner.updates.lock().unwrap();
        let id = 1000 + ups.len() as i64;
        u["update_id"] = json!(id);
        ups.push(u);
        drop(ups);
        self.inner.new_update.notify_waiters();
    }
}

/// What the mode says for the next send: `None` to go ahead.
async fn gate(inner: &Inner, api: &'static str) -> Option<Response> {
    let mode = inner.mode.lock().unwrap().clone().unwrap_or(Mode::Normal);
    let take = |m: Mode| *inner.mode.lock().unwrap() = Some(m);
    match mode {
        Mode::Normal => None,
        Mode::Slow(_) => None,
        // Recorded by the handler before it gets here (see `stall`).
        Mode::Stall => {
            std::future::pending::<()>().await;
            None
        }
        Mode::Fail { status, n } => {
            take(if n <= 1 {
                Mode::Normal
            } else {
                Mode::Fail { status, n: n - 1 }
            });
            let code = StatusCode::from_u16(status).unwrap();
            Some(match api {
                "telegram" => (code, axum::Json(json!({"ok": false, "error_code": status, "description": "Internal Server Error"}))).into_response(),
                "whatsapp" => (code, axum::Json(json!({"error": {"message": "Invalid OAuth access token - Cannot parse access token", "type": "OAuthException", "code": 190, "fbtrace_id": "AbC"}}))).into_response(),
                _ => code.into_response(),
            })
        }
        Mode::Limited { retry_after, n } => {
            take(if n <= 1 {
                Mode::Normal
            } else {
                Mode::Limited {
                    retry_after,
                    n: n - 1,
                }
            });
            Some(match api {
                "telegram" => (StatusCode::TOO_MANY_REQUESTS, axum::Json(json!({"ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {retry_after}"), "parameters": {"retry_after": retry_after}}))).into_response(),
                "whatsapp" => (StatusCode::BAD_REQUEST, [("retry-after", retry_after.to_string())], axum::Json(json!({"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429, "fbtrace_id": "AbC"}}))).into_response(),
                _ => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", retry_after.to_string())]).into_response(),
            })
        }
    }
}

/// In stall mode: records the request as taken in, then never answers; in slow mode,
/// waits before going on.
async fn stall(inner: &Inner, api: &'static str, path: &str, headers: &HeaderMap, body: &Value) {
    let mode = inner.mode.lock().unwrap().clone();
    match mode {
        Some(Mode::Stall) => {
            record(inner, api, path.to_string(), headers, body.clone(), false);
            std::future::pending::<()>().await;
        }
        Some(Mode::Slow(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
}

fn record(
    inner: &Inner,
    api: &'static str,
    path: String,
    headers: &HeaderMap,
    body: Value,
    accepted: bool,
) {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    inner.requests.lock().unwrap().push(Req {
        api,
        path,
        headers,
        body,
        accepted,
        at: Instant::now(),
    });
}

fn tg_error(code: u16, description: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        axum::Json(json!({"ok": false, "error_code": code, "description": description})),
    )
        .into_response()
}

async fn telegram(
    State(inner): State<Arc<Inner>>,
    Path((bot, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/{method}");
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        record(&inner, "telegram", path, &headers, Value::Null, false);
        return tg_error(400, "Bad Request: invalid JSON");
    };
    if bot != format!("bot{BOT_TOKEN}") {
        record(&inner, "telegram", path, &headers, v, false);
        return tg_error(401, "Unauthorized");
    }
    match method.as_str() {
        "getUpdates" => {
            let offset = v.get("offset").and_then(Value::as_i64).unwrap_or(0);
            let wait = v
                .get("timeout")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(25);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            loop {
                let notified = inner.new_update.notified();
                let ready: Vec<Value> = inner
                    .updates
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|u| u["update_id"].as_i64().unwrap_or(0) >= offset)
                    .cloned()
                    .collect();
                if !ready.is_empty() || tokio::time::Instant::now() >= deadline {
                    return axum::Json(json!({"ok": true, "result": ready})).into_response();
                }
                let _ = tokio::time::timeout_at(deadline, notified).await;
            }
        }
        "sendMessage" | "answerCallbackQuery" => {
            if method == "sendMessage" {
                let chat = match &v["chat_id"] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                let text = v["text"].as_str().unwrap_or("");
                if chat.is_empty() || text.is_empty() {
                    record(&inner, "telegram", path, &headers, v, false);
                    return tg_error(400, "Bad Request: message text is empty");
                }
                if text.chars().count() > 4096 {
                    record(&inner, "telegram", path, &headers, v, false);
                    return tg_error(400, "Bad Request: message is too long");
                }
                if v["parse_mode"] == "HTML" && !html_ok(text) {
                    record(&inner, "telegram", path, &headers, v, false);
                    return tg_error(400, "Bad Request: can't parse entities");
                }
                // About 20 messages a minute into one group.
                let now = Instant::now();
                let limited = {
                    let mut per = inner.per_chat.lock().unwrap();
                    let times = per.entry(chat.clone()).or_default();
                    times.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
                    times.len() >= 20
                };
                if limited {
                    record(&inner, "telegram", path, &headers, v, false);
                    return (StatusCode::TOO_MANY_REQUESTS, axum::Json(json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 30", "parameters": {"retry_after": 30}}))).into_response();
                }
                stall(&inner, "telegram", &path, &headers, &v).await;
                if let Some(r) = gate(&inner, "telegram").await {
                    record(&inner, "telegram", path, &headers, v, false);
                    return r;
                }
                inner
                    .per_chat
                    .lock()
                    .unwrap()
                    .entry(chat)
                    .or_default()
                    .push(now);
            }
            let id = {
                let mut n = inner.next_id.lock().unwrap();
                *n += 1;
                *n
            };
            let result = if method == "sendMessage" {
                json!({"message_id": id, "date": 1_700_000_000, "chat": {"id": v["chat_id"], "type": "supergroup"}, "text": v["text"]})
            } else {
                json!(true)
            };
            record(&inner, "telegram", path, &headers, v, true);
            axum::Json(json!({"ok": true, "result": result})).into_response()
        }
        _ => {
            record(&inner, "telegram", path, &headers, v, false);
            tg_error(404, "Not Found")
        }
    }
}

/// Telegram's HTML mode: only known tags, balanced; `&`, `<`, `>` escaped elsewhere.
fn html_ok(s: &str) -> bool {
    let mut open: Vec<String> = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        let Some(j) = rest[i..].find('>') else {
            return false;
        };
        let tag = &rest[i + 1..i + j];
        if let Some(name) = tag.strip_prefix('/') {
            if open.pop().as_deref() != Some(name) {
                return false;
            }
        } else {
            let name = tag.split_whitespace().next().unwrap_or("");
            if !["b", "i", "a", "code", "pre"].contains(&name) {
                return false;
            }
            open.push(name.to_string());
        }
        rest = &rest[i + j + 1..];
    }
    open.is_empty()
}

async fn whatsapp(
    State(inner): State<Arc<Inner>>,
    Path(phone): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/{phone}/messages");
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let err = |code: u16, sub: i64, msg: &str| {
        (
            StatusCode::from_u16(code).unwrap(),
            axum::Json(json!({"error": {"message": msg, "type": "OAuthException", "code": sub, "fbtrace_id": "AbC"}})),
        )
            .into_response()
    };
    if headers.get("authorization").and_then(|h| h.to_str().ok())
        != Some(&format!("Bearer {WA_TOKEN}"))
    {
        record(&inner, "whatsapp", path, &headers, v, false);
        return err(401, 190, "Invalid OAuth access token");
    }
    let param = v
        .pointer("/template/components/0/parameters/0/text")
        .and_then(Value::as_str)
        .unwrap_or("");
    let shaped = v["messaging_product"] == "whatsapp"
        && v["type"] == "template"
        && v.pointer("/template/name")
            .and_then(Value::as_str)
            .is_some()
        && v.pointer("/template/language/code")
            .and_then(Value::as_str)
            .is_some()
        && v["to"]
            .as_str()
            .is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()));
    if !shaped {
        record(&inner, "whatsapp", path, &headers, v, false);
        return err(400, 100, "(#100) Invalid parameter");
    }
    if param.is_empty()
        || param.contains('\n')
        || param.contains('\t')
        || param.chars().count() > 1024
    {
        record(&inner, "whatsapp", path, &headers, v, false);
        return err(
            400,
            132018,
            "(#132018) There was an issue with the parameters in your template",
        );
    }
    stall(&inner, "whatsapp", &path, &headers, &v).await;
    if let Some(r) = gate(&inner, "whatsapp").await {
        record(&inner, "whatsapp", path, &headers, v, false);
        return r;
    }
    let to = v["to"].clone();
    record(&inner, "whatsapp", path, &headers, v, true);
    let n = {
        let mut n = inner.next_id.lock().unwrap();
        *n += 1;
        *n
    };
    axum::Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": format!("wamid.TEST{n}")}],
    }))
    .into_response()
}

async fn hook(
    State(inner): State<Arc<Inner>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    stall(&inner, "hook", &format!("/{name}"), &headers, &v).await;
    if let Some(r) = gate(&inner, "hook").await {
        record(&inner, "hook", format!("/{name}"), &headers, v, false);
        return r;
    }
    record(&inner, "hook", format!("/{name}"), &headers, v, true);
    StatusCode::OK.into_response()
}
