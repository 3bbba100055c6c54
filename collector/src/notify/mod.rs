//! Telling the operators: flag changes become messages grouped by region, delivered to
//! Telegram, WhatsApp, e-mail and webhooks exactly once, plus the active flags pushed to
//! an Alertmanager and a Telegram bot answering `/status` and `/ack`.
//!
//! The flow: flag changes are written to `flag_events` in the transaction that changes
//! the flag. The [`plan`]ner reads that log from a durable cursor and, in one
//! transaction each step, moves events to the routes' pending lists, and pending groups
//! whose window has passed into the outbox. One [`send`] task per receiver delivers its
//! outbox in order. [`config`] is the `[notify]` section, [`message`] what a message
//! says, [`channels`] the APIs, [`alertmanager`] and [`bot`] the two other directions.

pub mod alertmanager;
pub mod bot;
pub mod channels;
pub mod config;
pub mod message;
pub mod plan;
pub mod send;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::domain::now_ms;
use crate::metrics::Metrics;
use crate::store::writer::{WriteError, Writer};
use crate::store::{StoreError, notify as db, readers::Readers};
use config::NotifyConfig;
use message::{Counts, Notification};

/// How often the planner looks at the log and the windows.
pub const PLAN_EVERY: Duration = Duration::from_secs(1);
/// How long a stop waits for sends under way.
pub const DRAIN: Duration = Duration::from_secs(10);
/// Delivered and failed messages are kept this long (for the API), then deleted.
pub const KEEP_MS: i64 = 30 * 86_400_000;

/// The running notification tasks, and what the API reads of them.
#[derive(Clone)]
pub struct Notifier {
    pub cfg: Arc<NotifyConfig>,
    pub status: Arc<send::Status>,
    pub wake: Arc<Notify>,
    writer: Writer,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Notifier {{ {} receivers }}", self.cfg.receivers.len())
    }
}

/// Starts the planner, a sender per receiver, the Alertmanager push and the bot.
pub async fn start(
    cfg: NotifyConfig,
    tz: jiff::tz::TimeZone,
    writer: Writer,
    readers: Readers,
    snapshot: tokio::sync::watch::Receiver<Arc<crate::state::snapshot::Snapshot>>,
    metrics: Arc<Metrics>,
) -> Result<(Notifier, Tasks), StoreError> {
    let recovered = writer.exec(db::recover).await.map_err(into_store)?;
    if recovered > 0 {
        tracing::warn!(
            messages = recovered,
            "notifications were being sent when the collector stopped; they are sent again, marked as a possible repeat"
        );
    }
    let routes: Vec<String> = cfg.routes.iter().map(|r| r.name.clone()).collect();
    let receivers: Vec<String> = cfg.receivers.iter().map(|r| r.name.clone()).collect();
    let dropped = writer
        .exec(move |tx| db::forget_unconfigured(tx, &routes, &receivers))
        .await
        .map_err(into_store)?;
    if dropped > 0 {
        tracing::warn!(
            messages = dropped,
            "notifications for receivers no longer in [notify] were given up"
        );
    }
    let c = cfg.clone();
    let caught_up = writer
        .exec(move |tx| plan::catch_up_routes(tx, &c, now_ms()))
        .await
        .map_err(into_store)?;
    if caught_up > 0 {
        tracing::info!(
            flags = caught_up,
            "open flags routes had not been told of are on their way (a route added, or a first start)"
        );
    }
    if !cfg.receivers.is_empty() && cfg.dashboard_url.is_none() {
        tracing::warn!("notify.dashboard_url is not set: messages carry no links to the dashboard");
    }
    let cfg = Arc::new(cfg);
    let status = Arc::new(send::Status::default());
    let wake = Arc::new(Notify::new());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let ctx = send::Ctx {
        cfg: cfg.clone(),
        tz: tz.clone(),
        writer: writer.clone(),
        readers: readers.clone(),
        metrics: metrics.clone(),
        status: status.clone(),
        wake: wake.clone(),
        http: channels::http_client(),
        stop: stop_rx,
    };
    let mut drain = vec![tokio::spawn(planner(ctx.clone()))];
    for r in &cfg.receivers {
        drain.push(tokio::spawn(send::run(ctx.clone(), r.clone())));
    }
    let mut tasks = Vec::new();
    for am in &cfg.alertmanager {
        tasks.push(tokio::spawn(alertmanager::run(
            am.clone(),
            cfg.dashboard_url.clone(),
            readers.clone(),
            ctx.http.clone(),
        )));
    }
    if let Some(b) = &cfg.bot {
        tasks.push(tokio::spawn(bot::run(b.clone(), ctx.clone(), snapshot)));
    }
    if !cfg.is_off() {
        tracing::info!(
            receivers = cfg.receivers.len(),
            routes = cfg.routes.len(),
            alertmanagers = cfg.alertmanager.len(),
            bot = cfg.bot.is_some(),
            "notifications on"
        );
    }
    Ok((
        Notifier {
            cfg,
            status,
            wake,
            writer,
        },
        Tasks {
            drain,
            abort: tasks,
            stop,
        },
    ))
}

/// The notification tasks, for shutdown.
#[derive(Debug)]
pub struct Tasks {
    /// The planner and the senders: asked to stop, they finish a step or a send under way.
    drain: Vec<JoinHandle<()>>,
    /// The Alertmanager push and the bot: they hold nothing to finish.
    abort: Vec<JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Tasks {
    /// Stops everything; a send under way gets up to [`DRAIN`] to finish, so a routine
    /// restart does not leave a message to be sent again as a possible repeat.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.abort {
            t.abort();
            let _ = t.await;
        }
        // Well inside systemd's stop timeout (30 s in deploy/systemd); a send still
        // running then has most likely stalled.
        let limit = DRAIN;
        for mut t in self.drain {
            if tokio::time::timeout(limit, &mut t).await.is_err() {
                t.abort();
                let _ = t.await;
            }
        }
    }
}

fn into_store(e: WriteError) -> StoreError {
    match e {
        WriteError::Store(e) => e,
        busy => StoreError::CommitFailed(busy.to_string()),
    }
}

async fn planner(ctx: send::Ctx) {
    let mut tick = tokio::time::interval(PLAN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_housekeeping = 0;
    let mut last_timers = 0;
    let mut last_gauges = 0;
    let mut stop = ctx.stop.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let cfg = ctx.cfg.clone();
        let now = now_ms();
        let timers = now - last_timers >= 60_000;
        if timers {
            last_timers = now;
        }
        match ctx
            .writer
            .exec(move |tx| plan::step(tx, &cfg, now, timers))
            .await
        {
            Ok(p) => {
                ctx.metrics.notify_events.inc_by(p.events as u64);
                if p.messages > 0 {
                    tracing::info!(
                        messages = p.messages,
                        events = p.events,
                        "notifications planned"
                    );
                    ctx.wake.notify_waiters();
                }
            }
            Err(e) => tracing::warn!(error = %e, "notification planning failed; trying again"),
        }
        let now = now_ms();
        if now - last_housekeeping >= 60_000 {
            last_housekeeping = now;
            let _ = ctx
                .writer
                .exec(move |tx| db::prune(tx, now - KEEP_MS))
                .await;
        }
        // The queue gauges count the outbox: every 10 s, not every step.
        if now - last_gauges < 10_000 {
            continue;
        }
        last_gauges = now;
        for r in &ctx.cfg.receivers {
            let name = r.name.clone();
            if let Ok(b) = ctx.readers.read(move |c| db::backlog(c, &name)).await {
                ctx.metrics.notify_queued(&r.name, b.queued);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("no receiver named {0:?} in [notify]")]
    NoReceiver(String),
    #[error("{receiver}: {error}")]
    Send {
        receiver: String,
        error: channels::SendError,
    },
    #[error(transparent)]
    Store(#[from] WriteError),
}

/// A test message for one receiver, addressed to the whole province set.
pub fn test_message(route: &str, at_ms: i64) -> Notification {
    Notification {
        route: route.to_string(),
        scope_code: String::new(),
        scope_name: "TPS Monitor".into(),
        counts: Counts::default(),
        items: Vec::new(),
        parts: Vec::new(),
        at_ms,
        test: true,
    }
}

/// Sends a test message to `receiver` right away; returns the API's message id.
pub async fn send_test_now(
    cfg: &NotifyConfig,
    tz: &jiff::tz::TimeZone,
    receiver: &str,
) -> Result<Option<String>, TestError> {
    let r = cfg
        .receiver(receiver)
        .ok_or_else(|| TestError::NoReceiver(receiver.to_string()))?;
    let style = message::Style {
        lang: cfg.lang,
        dashboard_url: cfg.dashboard_url.as_deref(),
        tz,
        repeat: false,
    };
    let now = now_ms();
    let key = format!("tps-notify-test-{now}");
    channels::send(
        &channels::http_client(),
        r,
        &test_message("test", now),
        &style,
        &key,
        false,
    )
    .await
    .map_err(|error| TestError::Send {
        receiver: receiver.to_string(),
        error,
    })
}

impl Notifier {
    /// Puts a test message for `receiver` in the outbox; returns its id.
    pub async fn send_test(&self, receiver: &str, by: &str) -> Result<i64, TestError> {
        if self.cfg.receiver(receiver).is_none() {
            return Err(TestError::NoReceiver(receiver.to_string()));
        }
        let now = now_ms();
        let body = serde_json::to_string(&test_message(&format!("test by {by}"), now))
            .map_err(|e| WriteError::Store(StoreError::CommitFailed(e.to_string())))?;
        let r = receiver.to_string();
        let id = self
            .writer
            .exec(move |tx| db::enqueue(tx, &r, "test", "", now, &body, now))
            .await?;
        self.wake.notify_waiters();
        Ok(id)
    }
}
