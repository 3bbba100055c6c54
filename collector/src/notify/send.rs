//! Delivery: one task per receiver takes its due outbox rows in order, waits for its
//! rate limit, marks each durably as under way, sends it, and records sent, retry later
//! (exponential backoff, or the API's own wait) or failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use super::channels::{self, SendError};
use super::config::{NotifyConfig, Receiver};
use super::message::{Notification, Style};
use crate::domain::now_ms;
use crate::metrics::Metrics;
use crate::store::{notify as db, readers::Readers, writer::Writer};

/// Messages not delivered within this are given up (and counted).
pub const MAX_AGE_MS: i64 = 24 * 3600 * 1000;
/// A receiver failing this long makes `/healthz` fail.
pub const UNHEALTHY_AFTER_MS: i64 = 10 * 60 * 1000;

/// What each receiver's sender last saw; read by the API and `/healthz`.
#[derive(Debug, Default)]
pub struct Status {
    receivers: Mutex<HashMap<String, ReceiverStatus>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReceiverStatus {
    pub kind: &'static str,
    pub sent: u64,
    pub failed_attempts: u64,
    pub given_up: u64,
    pub last_sent_ms: Option<i64>,
    /// Since when every attempt failed (none since).
    pub failing_since_ms: Option<i64>,
    pub last_error: Option<String>,
}

impl Status {
    pub fn snapshot(&self) -> HashMap<String, ReceiverStatus> {
        self.receivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    fn update(&self, name: &str, f: impl FnOnce(&mut ReceiverStatus)) {
        let mut m = self.receivers.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(name.to_string()).or_default());
    }
    /// Receivers that have failed for longer than [`UNHEALTHY_AFTER_MS`].
    pub fn problems(&self, now: i64) -> Vec<String> {
        let mut out: Vec<String> = self
            .snapshot()
            .into_iter()
            .filter_map(|(name, s)| {
                let since = s.failing_since_ms?;
                (now - since >= UNHEALTHY_AFTER_MS).then(|| {
                    format!(
                        "notifications to {name} have failed for {} min: {}",
                        (now - since) / 60_000,
                        s.last_error.unwrap_or_default()
                    )
                })
            })
            .collect();
        out.sort();
        out
    }
}

/// Waits between two sends to one receiver (its per-minute limit, evenly spaced: the
/// Bot API also asks for at most one message a second per chat).
fn spacing(r: &Receiver) -> Duration {
    Duration::from_millis(60_000 / u64::from(r.per_minute.max(1)))
}

/// Backoff after `attempts` failed tries: 5 s doubling, at most 10 min.
pub fn backoff(attempts: u32) -> Duration {
    let secs = 5u64.saturating_mul(1 << attempts.saturating_sub(1).min(7));
    Duration::from_secs(secs.min(600))
}

/// Everything a sender task needs.
#[derive(Clone)]
pub struct Ctx {
    pub cfg: Arc<NotifyConfig>,
    pub tz: jiff::tz::TimeZone,
    pub writer: Writer,
    pub readers: Readers,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    pub wake: Arc<Notify>,
    /// Set at shutdown: a sender finishes the send under way and stops.
    pub stop: tokio::sync::watch::Receiver<bool>,
    pub http: reqwest::Client,
}

impl Ctx {
    pub fn style(&self, repeat: bool) -> Style<'_> {
        Style {
            lang: self.cfg.lang,
            dashboard_url: self.cfg.dashboard_url.as_deref(),
            tz: &self.tz,
            repeat,
        }
    }
}

/// Records the outcome of a send, trying until the store takes it: going on without it
/// would send the message again.
async fn record<F>(ctx: &Ctx, what: &'static str, f: F)
where
    F: Fn(&rusqlite::Transaction<'_>) -> Result<(), crate::store::StoreError>
        + Clone
        + Send
        + 'static,
{
    let mut tries = 0u32;
    loop {
        let g = f.clone();
        match ctx.writer.exec(move |tx| g(tx)).await {
            Ok(()) => return,
            Err(e) => {
                tries += 1;
                if tries == 1 || tries.is_multiple_of(60) {
                    tracing::warn!(error = %e, what, "cannot record a notification's delivery; trying again");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Delivers one receiver's outbox until the task is dropped.
pub async fn run(ctx: Ctx, receiver: Receiver) {
    let name = receiver.name.clone();
    ctx.status
        .update(&name, |s| s.kind = receiver.kind.as_str());
    let buttons = ctx.cfg.bot.is_some();
    let gap = spacing(&receiver);
    let mut last_send: Option<tokio::time::Instant> = None;
    let mut stop = ctx.stop.clone();
    loop {
        if *stop.borrow() {
            return;
        }
        let n = name.clone();
        let waiting = ctx
            .readers
            .read(move |c| db::waiting(c, &n, 16))
            .await
            .unwrap_or_default();
        // In order: nothing overtakes a message waiting for its retry.
        let first_due = waiting.first().map(|d| d.due_ms);
        if first_due.is_none_or(|t| t > now_ms()) {
            let wait = first_due
                .map(|t| Duration::from_millis((t - now_ms()).clamp(50, 1000) as u64))
                .unwrap_or(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::timeout(wait, ctx.wake.notified()) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let due: Vec<db::Delivery> = waiting
            .into_iter()
            .take_while(|d| d.due_ms <= now_ms())
            .collect();
        for d in due {
            if let Some(t) = last_send {
                tokio::select! {
                    _ = tokio::time::sleep_until(t + gap) => {}
                    _ = stop.changed() => return,
                }
            }
            if *stop.borrow() {
                return;
            }
            let now = now_ms();
            if now - d.created_ms > MAX_AGE_MS {
                let id = d.id;
                let _ = ctx
                    .writer
                    .exec(move |tx| {
                        db::failed(tx, id, None, "not delivered within 24 hours; given up")
                    })
                    .await;
                ctx.metrics.notify_given_up(&name);
                ctx.status.update(&name, |s| s.given_up += 1);
                continue;
            }
            let Ok(n) = serde_json::from_str::<Notification>(&d.body) else {
                let id = d.id;
                let _ = ctx
                    .writer
                    .exec(move |tx| db::failed(tx, id, None, "unreadable message body"))
                    .await;
                continue;
            };
            let id = d.id;
            // Durably under way before anything leaves: a crash from here on is known.
            if ctx
                .writer
                .exec(move |tx| db::sending(tx, id))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
                break;
            }
            last_send = Some(tokio::time::Instant::now());
            let key = format!("tps-notify-{}", d.id);
            let result = channels::send(
                &ctx.http,
                &receiver,
                &n,
                &ctx.style(d.maybe_sent),
                &key,
                buttons,
            )
            .await;
            let done = now_ms();
            match result {
                Ok(remote) => {
                    record(&ctx, "sent", move |tx| {
                        db::sent(tx, id, done, remote.as_deref())
                    })
                    .await;
                    ctx.metrics
                        .notify_sent(&name, (done - d.first_event_ms).max(0) as f64 / 1000.0);
                    ctx.status.update(&name, |s| {
                        s.sent += 1;
                        s.last_sent_ms = Some(done);
                        s.failing_since_ms = None;
                        s.last_error = None;
                    });
                }
                Err(e) => {
                    let msg = e.to_string();
                    tracing::warn!(receiver = %name, message = d.id, attempt = d.attempts + 1, error = %msg, "notification not delivered");
                    let due = match &e {
                        SendError::Permanent(_) => None,
                        SendError::Retry { after, .. } => {
                            let wait = after.unwrap_or_default().max(backoff(d.attempts + 1));
                            Some(done + wait.as_millis() as i64)
                        }
                    };
                    let m = msg.clone();
                    record(&ctx, "failed", move |tx| db::failed(tx, id, due, &m)).await;
                    ctx.metrics.notify_failed(&name);
                    if due.is_none() {
                        ctx.metrics.notify_given_up(&name);
                    }
                    ctx.status.update(&name, |s| {
                        s.failed_attempts += 1;
                        if due.is_none() {
                            s.given_up += 1;
                        }
                        s.failing_since_ms.get_or_insert(done);
                        s.last_error = Some(msg);
                    });
                    if due.is_some() {
                        // Later rows would meet the same trouble; look again when due.
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_failing_for_ten_minutes_makes_health_fail() {
        let s = Status::default();
        let t0 = 1_000_000_000_000;
        s.update("tg", |r| {
            r.failing_since_ms = Some(t0);
            r.last_error =
                Some("Telegram sendMessage answered 403: Forbidden: bot was kicked".into());
        });
        s.update("mail", |r| r.last_sent_ms = Some(t0));
        assert!(s.problems(t0 + UNHEALTHY_AFTER_MS - 1).is_empty());
        assert_eq!(
            s.problems(t0 + UNHEALTHY_AFTER_MS),
            [
                "notifications to tg have failed for 10 min: Telegram sendMessage answered 403: Forbidden: bot was kicked"
            ]
        );
    }

    #[test]
    fn backoff_doubles_from_five_seconds_to_ten_minutes() {
        let secs: Vec<u64> = (1..=10).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
    }
}
