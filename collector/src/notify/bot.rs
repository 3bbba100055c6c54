//! The Telegram bot: long-polls `getUpdates` and answers, in the receivers' chats only,
//! `/status [region]` with the counts by state, and `/ack <flag>` or an acknowledge
//! button from an operator whose Telegram account is linked in the config (role checked
//! in the store at each use).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::channels::telegram_call;
use super::config::BotConfig;
use super::send::Ctx;
use crate::domain::now_ms;
use crate::report::Lang;
use crate::state::flags::{ActError, OperatorAction};
use crate::state::snapshot::Snapshot;
use crate::store::{self, operators::Role};

/// Seconds a `getUpdates` call waits for something to happen.
const POLL_SECS: u64 = 25;

pub async fn run(bot: BotConfig, ctx: Ctx, snapshot: tokio::sync::watch::Receiver<Arc<Snapshot>>) {
    // A client whose timeout outlasts the long poll.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(POLL_SECS + 15))
        .build()
        .unwrap_or_default();
    let mut offset: Option<i64> = None;
    let mut failures = 0u32;
    loop {
        let mut body =
            json!({ "timeout": POLL_SECS, "allowed_updates": ["message", "callback_query"] });
        if let Some(o) = offset {
            body["offset"] = json!(o);
        }
        let updates =
            match telegram_call(&http, &bot.api_url, &bot.bot_token, "getUpdates", &body).await {
                Ok(v) => {
                    failures = 0;
                    v
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(error = %e, "Telegram bot: getUpdates failed; trying again");
                    }
                    tokio::time::sleep(super::send::backoff(failures).min(Duration::from_secs(60)))
                        .await;
                    continue;
                }
            };
        for u in updates.as_array().map(Vec::as_slice).unwrap_or_default() {
            if let Some(id) = u.get("update_id").and_then(Value::as_i64) {
                offset = Some(id + 1);
            }
            let snap = snapshot.borrow().clone();
            if let Err(e) = handle(&bot, &ctx, &http, &snap, u).await {
                tracing::warn!(error = %e, "Telegram bot: could not answer");
            }
        }
    }
}

fn chat_of(v: &Value) -> Option<String> {
    v.pointer("/chat/id").map(|c| match c {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

async fn handle(
    bot: &BotConfig,
    ctx: &Ctx,
    http: &reqwest::Client,
    snap: &Snapshot,
    u: &Value,
) -> Result<(), super::channels::SendError> {
    let lang = ctx.cfg.lang;
    if let Some(m) = u.get("message") {
        let Some(chat) = chat_of(m) else {
            return Ok(());
        };
        if !bot.chats.contains(&chat) {
            return Ok(());
        }
        let text = m.get("text").and_then(Value::as_str).unwrap_or("");
        let mut words = text.split_whitespace();
        // `/status@SomeBot` in groups.
        let cmd = words.next().unwrap_or("").split('@').next().unwrap_or("");
        let arg = words.next();
        let user = m.pointer("/from/id").and_then(Value::as_i64);
        let reply = match cmd {
            "/status" => Some(status_text(snap, arg.unwrap_or(""), lang)),
            "/ack" => Some(match arg.and_then(|a| a.trim_start_matches('#').parse::<i64>().ok()) {
                Some(id) => ack(bot, ctx, user, id).await,
                None => match lang {
                    Lang::Id => "Pakai: /ack <nomor flag>, misalnya /ack 123".into(),
                    Lang::En => "Usage: /ack <flag number>, e.g. /ack 123".into(),
                },
            }),
            "/help" | "/start" => Some(match lang {
                Lang::Id => "/status — jumlah TPS per status di provinsi\n/status 21.71 — untuk satu wilayah\n/ack 123 — tangani flag #123".into(),
                Lang::En => "/status — station counts by state\n/status 21.71 — for one region\n/ack 123 — acknowledge flag #123".into(),
            }),
            _ => None,
        };
        if let Some(text) = reply {
            let mut body = json!({ "chat_id": chat, "text": text, "reply_parameters": { "message_id": m.get("message_id") } });
            if let Some(t) = m.get("message_thread_id") {
                body["message_thread_id"] = t.clone();
            }
            telegram_call(http, &bot.api_url, &bot.bot_token, "sendMessage", &body).await?;
        }
    } else if let Some(q) = u.get("callback_query") {
        let id = q.get("id").cloned().unwrap_or(Value::Null);
        let allowed = q
            .get("message")
            .and_then(chat_of)
            .is_some_and(|c| bot.chats.contains(&c));
        let flag = q
            .get("data")
            .and_then(Value::as_str)
            .and_then(|d| d.strip_prefix("ack:"))
            .and_then(|n| n.parse::<i64>().ok());
        let text = match (allowed, flag) {
            (true, Some(f)) => {
                ack(bot, ctx, q.pointer("/from/id").and_then(Value::as_i64), f).await
            }
            _ => return Ok(()),
        };
        let body = json!({ "callback_query_id": id, "text": text, "show_alert": false });
        telegram_call(
            http,
            &bot.api_url,
            &bot.bot_token,
            "answerCallbackQuery",
            &body,
        )
        .await?;
        if let Some(chat) = q.get("message").and_then(chat_of) {
            let body = json!({ "chat_id": chat, "text": text });
            telegram_call(http, &bot.api_url, &bot.bot_token, "sendMessage", &body).await?;
        }
    }
    Ok(())
}

/// The answer to `/status [region]`.
pub fn status_text(snap: &Snapshot, region: &str, lang: Lang) -> String {
    let id = lang == Lang::Id;
    let region = region.trim();
    let code = if region.is_empty() {
        String::new()
    } else {
        match crate::domain::parse_region(region) {
            Ok(c) => c,
            Err(e) => return e.to_string(),
        }
    };
    let c = snap.counts(&code);
    let total = c.covered + c.degraded + c.offline + c.no_agent;
    let name = if code.is_empty() {
        if id {
            "Semua TPS".to_string()
        } else {
            "All stations".to_string()
        }
    } else {
        match snap.registry.name(&code) {
            Some(n) => format!("{n} {code}"),
            None if total == 0 => {
                return if id {
                    format!("Wilayah {code} tidak ada di registri.")
                } else {
                    format!("Region {code} is not in the registry.")
                };
            }
            None => code.clone(),
        }
    };
    let pct = |n: u64| {
        if total == 0 {
            0.0
        } else {
            100.0 * n as f64 / total as f64
        }
    };
    let flags = snap.active_flags(&code);
    if id {
        format!(
            "{name}: {total} TPS\n🟢 terhubung {} ({:.1}%)\n🟡 buruk {}\n🔴 tidak melapor {}\n⚫ belum ada agen {}\nFlag aktif: {flags}",
            c.covered,
            pct(c.covered),
            c.degraded,
            c.offline,
            c.no_agent
        )
    } else {
        format!(
            "{name}: {total} stations\n🟢 covered {} ({:.1}%)\n🟡 degraded {}\n🔴 offline {}\n⚫ no agent {}\nActive flags: {flags}",
            c.covered,
            pct(c.covered),
            c.degraded,
            c.offline,
            c.no_agent
        )
    }
}

/// Acknowledges flag `id` for the operator linked to Telegram user `user`; returns
/// what to tell them.
async fn ack(bot: &BotConfig, ctx: &Ctx, user: Option<i64>, id: i64) -> String {
    let id_lang = ctx.cfg.lang == Lang::Id;
    let Some(name) = user.and_then(|u| bot.operators.get(&u)).cloned() else {
        return if id_lang {
            "Akun Telegram Anda belum terhubung ke akun operator; minta admin menambahkannya di [notify.bot.operators].".into()
        } else {
            "Your Telegram account is not linked to an operator account; ask an admin to add it under [notify.bot.operators].".into()
        };
    };
    let n = name.clone();
    let op = ctx
        .readers
        .read(move |c| store::operators::by_name(c, &n))
        .await
        .ok()
        .flatten();
    match op {
        Some(op) if op.role >= Role::Operator => {}
        Some(_) => {
            return if id_lang {
                format!("{name} hanya boleh melihat (peran viewer).")
            } else {
                format!("{name} may only view (viewer role).")
            };
        }
        None => {
            return if id_lang {
                format!("Operator {name} tidak ada atau sudah dicabut.")
            } else {
                format!("Operator {name} does not exist or was revoked.")
            };
        }
    }
    let actor = format!("{name} (telegram)");
    let r = ctx
        .writer
        .exec(move |tx| {
            Ok(store::flags::act(
                tx,
                id,
                &actor,
                &OperatorAction::Acknowledge,
                now_ms(),
            ))
        })
        .await;
    match r {
        Ok(Ok(f)) => {
            if id_lang {
                format!("✔ Flag #{id} (TPS {}) ditangani oleh {name}.", f.tps_code)
            } else {
                format!("✔ Flag #{id} (TPS {}) acknowledged by {name}.", f.tps_code)
            }
        }
        Ok(Err(ActError::NotFound(_))) => {
            if id_lang {
                format!("Flag #{id} tidak ada.")
            } else {
                format!("There is no flag #{id}.")
            }
        }
        Ok(Err(ActError::Conflict { status, .. })) => {
            if id_lang {
                format!("Flag #{id} sudah {status}.")
            } else {
                format!("Flag #{id} is already {status}.")
            }
        }
        Ok(Err(ActError::Store(e))) => e.to_string(),
        Err(e) => e.to_string(),
    }
}
