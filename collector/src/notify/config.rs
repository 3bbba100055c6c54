//! The `[notify]` section: receivers (Telegram, WhatsApp, e-mail, webhook), routes by
//! region, the Alertmanager push and the Telegram bot, validated into typed values with
//! errors that name the key (`notify.receivers.kepri-tg.chat_id`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::RegionLevel;
use crate::report::Lang;
use crate::state::coverage::Reason;

/// What the operators are told, where and when. Empty (no receivers) by default.
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    pub lang: Lang,
    /// Where message links point (the dashboard as operators reach it), e.g.
    /// `https://monitor.kpu-kepri.go.id/`. Without it messages carry no link.
    pub dashboard_url: Option<String>,
    pub receivers: Vec<Receiver>,
    pub routes: Vec<Route>,
    pub alertmanager: Vec<AlertmanagerPush>,
    pub bot: Option<BotConfig>,
}

impl NotifyConfig {
    pub fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.name == name)
    }
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
    /// Nothing to plan or deliver.
    pub fn is_off(&self) -> bool {
        self.receivers.is_empty() && self.alertmanager.is_empty()
    }
}

/// One place messages go.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
    /// Messages a minute this receiver is sent at most (the API's own limit).
    pub per_minute: u32,
}

#[derive(Clone)]
pub enum ReceiverKind {
    /// Bot API `sendMessage` to a group (and a topic in it).
    Telegram {
        api_url: String,
        bot_token: String,
        chat_id: String,
        topic_id: Option<i64>,
    },
    /// WhatsApp Business Cloud API template messages to numbers.
    WhatsApp {
        api_url: String,
        token: String,
        phone_number_id: String,
        to: Vec<String>,
        template: String,
        template_lang: String,
    },
    Email {
        host: String,
        port: u16,
        security: SmtpSecurity,
        username: Option<String>,
        password: Option<String>,
        from: String,
        to: Vec<String>,
        /// Extra root certificate(s), PEM, for a mail server with a private CA.
        ca_pem: Option<Vec<u8>>,
    },
    /// A POST of the Alertmanager webhook (version 4) JSON.
    Webhook {
        url: String,
        bearer_token: Option<String>,
    },
}

impl std::fmt::Debug for ReceiverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        match self {
            ReceiverKind::Telegram {
                api_url, chat_id, ..
            } => write!(f, "Telegram {{ {api_url}, chat {chat_id} }}"),
            ReceiverKind::WhatsApp { api_url, to, .. } => {
                write!(f, "WhatsApp {{ {api_url}, {} numbers }}", to.len())
            }
            ReceiverKind::Email { host, port, to, .. } => {
                write!(f, "Email {{ {host}:{port}, {} recipients }}", to.len())
            }
            ReceiverKind::Webhook { url, .. } => write!(f, "Webhook {{ {url} }}"),
        }
    }
}

impl ReceiverKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReceiverKind::Telegram { .. } => "telegram",
            ReceiverKind::WhatsApp { .. } => "whatsapp",
            ReceiverKind::Email { .. } => "email",
            ReceiverKind::Webhook { .. } => "webhook",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587); refused if the server can't.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network.
    None,
}

/// Which flags go to which receivers, grouped how, how often.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// Region prefix (`21`, `21.71`, `21.71.01`); empty: every station.
    pub region: String,
    /// Reasons this route is for; empty: all.
    pub reasons: Vec<Reason>,
    pub receivers: Vec<String>,
    /// One message per region at this level per window.
    pub group_by: RegionLevel,
    /// How long the first message of a group waits for more stations.
    pub group_wait: Duration,
    /// Least time between two messages of the same group.
    pub group_interval: Duration,
    /// Reminders while a flag stays unacknowledged; `None`: none.
    pub repeat: Option<Duration>,
    /// Flags unacknowledged this long go to another route as well.
    pub escalate: Option<(Duration, String)>,
    /// Local times at which nothing is sent (messages wait until it ends).
    pub quiet: Option<QuietHours>,
    /// More groups than this ready at once in one province: one province summary.
    pub summary_after: usize,
    pub send_resolved: bool,
    /// Takes no flags of its own: only what other routes escalate to it.
    pub escalations_only: bool,
}

impl Route {
    pub fn matches(&self, tps_code: &str, reason: Reason) -> bool {
        if self.escalations_only {
            return false;
        }
        let digits: String = self.region.chars().filter(|c| *c != '.').collect();
        tps_code.starts_with(&digits) && (self.reasons.is_empty() || self.reasons.contains(&reason))
    }
}

/// A daily span of local time, e.g. 22:00–06:00 (may run past midnight).
#[derive(Debug, Clone)]
pub struct QuietHours {
    pub from: jiff::civil::Time,
    pub to: jiff::civil::Time,
    pub tz: jiff::tz::TimeZone,
}

impl QuietHours {
    pub fn contains(&self, ms: i64) -> bool {
        let t = jiff::Timestamp::from_millisecond(ms)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(self.tz.clone())
            .time();
        if self.from <= self.to {
            t >= self.from && t < self.to
        } else {
            t >= self.from || t < self.to
        }
    }
}

/// Active flags pushed to a Prometheus Alertmanager (`POST /api/v2/alerts`).
#[derive(Debug, Clone)]
pub struct AlertmanagerPush {
    pub url: String,
    pub region: String,
    /// How often every active flag is sent again (Alertmanager forgets alerts not
    /// re-sent within its resolve timeout).
    pub every: Duration,
}

/// The Telegram bot answering `/status` and `/ack` in the receivers' chats.
#[derive(Clone)]
pub struct BotConfig {
    pub api_url: String,
    pub bot_token: String,
    /// Chats it answers in (those of the Telegram receivers with its token).
    pub chats: HashSet<String>,
    /// Telegram user id → operator name (whose role is checked at each `/ack`).
    pub operators: HashMap<i64, String>,
}

impl std::fmt::Debug for BotConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BotConfig {{ {}, {} chats, {} operators }}",
            self.api_url,
            self.chats.len(),
            self.operators.len()
        )
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    lang: Option<String>,
    dashboard_url: Option<String>,
    #[serde(default)]
    receivers: Vec<RawReceiver>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    alertmanager: Vec<RawAlertmanager>,
    bot: Option<RawBot>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    per_minute: Option<u32>,
    api_url: Option<String>,
    // telegram
    chat_id: Option<toml::Value>,
    topic_id: Option<i64>,
    bot_token: Option<String>,
    bot_token_file: Option<PathBuf>,
    // whatsapp
    phone_number_id: Option<String>,
    to: Option<Vec<String>>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    template: Option<String>,
    template_lang: Option<String>,
    // email
    smtp: Option<String>,
    security: Option<SmtpSecurity>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    from: Option<String>,
    ca_file: Option<PathBuf>,
    // webhook
    url: Option<String>,
    bearer_token: Option<String>,
    bearer_token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    reasons: Vec<String>,
    receivers: Vec<String>,
    group_by: Option<String>,
    group_wait_secs: Option<u64>,
    group_interval_mins: Option<u64>,
    repeat_hours: Option<u64>,
    escalate_after_hours: Option<u64>,
    escalate_to: Option<String>,
    quiet_hours: Option<String>,
    summary_after: Option<usize>,
    send_resolved: Option<bool>,
    #[serde(default)]
    escalations_only: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertmanager {
    url: String,
    #[serde(default)]
    region: String,
    every_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBot {
    /// A Telegram receiver whose token and API URL the bot uses.
    receiver: String,
    #[serde(default)]
    operators: HashMap<String, String>,
}

/// A problem with one key: its full name and what is wrong.
pub type Problem = (String, String);

/// `v` if it lies in `lo..=hi`, else what to say about it.
fn in_range<T: PartialOrd + std::fmt::Display>(v: T, lo: T, hi: T) -> Result<T, String> {
    if v < lo || v > hi {
        Err(format!("{v} is outside {lo}..={hi}"))
    } else {
        Ok(v)
    }
}

/// A region prefix: empty (everywhere) or a dotted province, regency or district code.
fn region_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Ok(String::new());
    }
    crate::domain::parse_region(s).map_err(|e| e.to_string())
}

fn url_ok(u: &str) -> bool {
    u.starts_with("http://") || u.starts_with("https://")
}

/// A secret given inline or in a file (`key` or `key_file`, not both).
fn secret(
    key: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
    base: &Path,
    required: bool,
) -> Result<Option<String>, Problem> {
    match (inline, file) {
        (Some(_), Some(_)) => Err((
            format!("{key}_file"),
            format!("give either {key} or {key}_file, not both"),
        )),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(f)) => {
            let f = if f.is_absolute() { f } else { base.join(f) };
            let v = std::fs::read_to_string(&f)
                .map_err(|e| {
                    (
                        format!("{key}_file"),
                        format!("cannot read {}: {e}", f.display()),
                    )
                })?
                .trim()
                .to_string();
            if v.is_empty() {
                return Err((format!("{key}_file"), format!("{} is empty", f.display())));
            }
            Ok(Some(v))
        }
        (None, None) if required => Err((key.into(), format!("is missing (or give {key}_file)"))),
        (None, None) => Ok(None),
    }
}

/// Validates the section; `base` anchors relative `*_file` paths, `tz` is the report
/// time zone quiet hours are read in.
pub fn validate(
    raw: RawNotify,
    base: &Path,
    tz: &jiff::tz::TimeZone,
) -> Result<NotifyConfig, Problem> {
    let lang = match raw.lang.as_deref() {
        None => Lang::Id,
        Some(s) => s
            .parse()
            .map_err(|e: String| ("notify.lang".to_string(), e))?,
    };
    if let Some(u) = &raw.dashboard_url
        && !url_ok(u)
    {
        return Err((
            "notify.dashboard_url".into(),
            format!("{u:?} is not a URL like https://monitor.example.org/"),
        ));
    }
    let dashboard_url = raw
        .dashboard_url
        .map(|u| if u.ends_with('/') { u } else { format!("{u}/") });

    let mut receivers = Vec::new();
    let mut names = HashSet::new();
    for r in raw.receivers {
        let at = format!("notify.receivers.{}", r.name);
        let p = |k: &str, m: String| (format!("{at}.{k}"), m);
        if r.name.is_empty()
            || !r
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err((
                "notify.receivers.name".into(),
                format!(
                    "{:?} must be letters, digits, dots, dashes or underscores",
                    r.name
                ),
            ));
        }
        if !names.insert(r.name.clone()) {
            return Err(p("name", "is used by two receivers".into()));
        }
        let sec = |key: &str, inline, file, required| {
            secret(key, inline, file, base, required).map_err(|(k, m)| (format!("{at}.{k}"), m))
        };
        let api = |default: &str| -> Result<String, Problem> {
            let u = r
                .api_url
                .clone()
                .unwrap_or_else(|| default.to_string())
                .trim_end_matches('/')
                .to_string();
            if url_ok(&u) {
                Ok(u)
            } else {
                Err(p("api_url", format!("{u:?} is not a URL")))
            }
        };
        let (kind, per_minute) = match r.kind.as_str() {
            "telegram" => {
                let chat_id = match r.chat_id {
                    Some(toml::Value::Integer(i)) => i.to_string(),
                    Some(toml::Value::String(s)) if !s.is_empty() => s,
                    _ => {
                        return Err(p(
                            "chat_id",
                            "is missing: the group's id (like -1001234567890) or @channelname"
                                .into(),
                        ));
                    }
                };
                let bot_token =
                    sec("bot_token", r.bot_token, r.bot_token_file, true)?.unwrap_or_default();
                if !bot_token.contains(':') {
                    return Err(p(
                        "bot_token",
                        "does not look like a bot token from @BotFather (123456:ABC...)".into(),
                    ));
                }
                (
                    ReceiverKind::Telegram {
                        api_url: api("https://api.telegram.org")?,
                        bot_token,
                        chat_id,
                        topic_id: r.topic_id,
                    },
                    // Telegram allows about 20 messages a minute into one group.
                    20,
                )
            }
            "whatsapp" => {
                let to = r.to.clone().unwrap_or_default();
                if to.len() != 1 {
                    // One number per receiver: a number that fails is retried alone,
                    // and the others are not sent the message twice.
                    return Err(p(
                        "to",
                        "needs exactly one number like [\"6281234567890\"]; add a receiver per number".into(),
                    ));
                }
                if let Some(bad) = to
                    .iter()
                    .find(|n| n.len() < 8 || n.len() > 15 || !n.bytes().all(|b| b.is_ascii_digit()))
                {
                    return Err(p(
                        "to",
                        format!(
                            "{bad:?} is not a number in international form without + (6281234567890)"
                        ),
                    ));
                }
                (
                    ReceiverKind::WhatsApp {
                        api_url: api("https://graph.facebook.com/v21.0")?,
                        token: sec("token", r.token, r.token_file, true)?.unwrap_or_default(),
                        phone_number_id: r
                            .phone_number_id
                            .clone()
                            .filter(|s| !s.is_empty())
                            .ok_or_else(|| p("phone_number_id", "is missing".into()))?,
                        to,
                        template: r.template.clone().ok_or_else(|| {
                            p(
                                "template",
                                "is missing: an approved template with one body parameter \
                                     (WhatsApp opens conversations only with templates)"
                                    .into(),
                            )
                        })?,
                        template_lang: r.template_lang.clone().unwrap_or_else(|| "id".into()),
                    },
                    60,
                )
            }
            "email" => {
                let smtp = r.smtp.clone().ok_or_else(|| {
                    p(
                        "smtp",
                        "is missing: host:port like smtp.example.org:587".into(),
                    )
                })?;
                let (host, port) = smtp
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                    .filter(|(h, _)| !h.is_empty())
                    .ok_or_else(|| p("smtp", format!("{smtp:?} is not host:port")))?;
                let to = r.to.clone().unwrap_or_default();
                if to.is_empty() || to.iter().any(|a| !a.contains('@')) {
                    return Err(p("to", "needs one or more e-mail addresses".into()));
                }
                let from = r.from.clone().filter(|f| f.contains('@')).ok_or_else(|| {
                    p(
                        "from",
                        "needs an address like \"TPS Monitor <monitor@example.org>\"".into(),
                    )
                })?;
                let password = sec("password", r.password, r.password_file, false)?;
                let ca_pem = match &r.ca_file {
                    None => None,
                    Some(f) => {
                        let f = if f.is_absolute() {
                            f.clone()
                        } else {
                            base.join(f)
                        };
                        let pem = std::fs::read(&f).map_err(|e| {
                            p("ca_file", format!("cannot read {}: {e}", f.display()))
                        })?;
                        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                            return Err(p(
                                "ca_file",
                                format!("{} is not a PEM certificate", f.display()),
                            ));
                        }
                        Some(pem)
                    }
                };
                if password.is_some() != r.username.is_some() {
                    return Err(p("username", "username and password go together".into()));
                }
                (
                    ReceiverKind::Email {
                        host,
                        port,
                        security: r.security.unwrap_or(SmtpSecurity::Starttls),
                        username: r.username.clone(),
                        password,
                        from,
                        to,
                        ca_pem,
                    },
                    30,
                )
            }
            "webhook" => {
                let url = r.url.clone().ok_or_else(|| p("url", "is missing".into()))?;
                if !url_ok(&url) {
                    return Err(p("url", format!("{url:?} is not a URL")));
                }
                (
                    ReceiverKind::Webhook {
                        url,
                        bearer_token: sec(
                            "bearer_token",
                            r.bearer_token,
                            r.bearer_token_file,
                            false,
                        )?,
                    },
                    600,
                )
            }
            other => {
                return Err(p(
                    "type",
                    format!("{other:?} is not one of telegram, whatsapp, email, webhook"),
                ));
            }
        };
        let per_minute = in_range(r.per_minute.unwrap_or(per_minute), 1, 60_000)
            .map_err(|m| p("per_minute", m))?;
        receivers.push(Receiver {
            name: r.name,
            kind,
            per_minute,
        });
    }

    let mut routes = Vec::new();
    let route_names: HashSet<String> = raw.routes.iter().map(|r| r.name.clone()).collect();
    for r in raw.routes {
        let at = format!("notify.routes.{}", r.name);
        let p = |k: &str, m: String| (format!("{at}.{k}"), m);
        if routes.iter().any(|x: &Route| x.name == r.name) {
            return Err(p("name", "is used by two routes".into()));
        }
        let region = region_prefix(&r.region).map_err(|m| p("region", m))?;
        let mut reasons = Vec::new();
        for s in &r.reasons {
            // A state name stands for its reasons.
            match s.as_str() {
                "degraded" => reasons.extend([Reason::HighLoss, Reason::HighLatency, Reason::NotMeasured]),
                _ => reasons.push(Reason::parse(s).filter(|r| *r != Reason::Ok).ok_or_else(|| {
                    p(
                        "reasons",
                        format!("{s:?} is not one of offline, no_agent, degraded, high_loss, high_latency, not_measured"),
                    )
                })?),
            }
        }
        if r.receivers.is_empty() {
            return Err(p("receivers", "is empty".into()));
        }
        for n in &r.receivers {
            if !names.contains(n) {
                return Err(p(
                    "receivers",
                    format!("{n:?} is not a receiver in [[notify.receivers]]"),
                ));
            }
        }
        let group_by = match r.group_by.as_deref().unwrap_or("regency") {
            "province" => RegionLevel::Province,
            "regency" => RegionLevel::Regency,
            "district" => RegionLevel::District,
            other => {
                return Err(p(
                    "group_by",
                    format!("{other:?} is not one of province, regency, district"),
                ));
            }
        };
        let within = |k: &str, v: Option<u64>, d: u64, lo: u64, hi: u64| {
            in_range(v.unwrap_or(d), lo, hi).map_err(|m| p(k, m))
        };
        let group_wait =
            Duration::from_secs(within("group_wait_secs", r.group_wait_secs, 60, 0, 3600)?);
        let group_interval = Duration::from_secs(
            60 * within("group_interval_mins", r.group_interval_mins, 5, 0, 1440)?,
        );
        let repeat = within("repeat_hours", r.repeat_hours, 4, 0, 720)?;
        let repeat = (repeat > 0).then(|| Duration::from_secs(repeat * 3600));
        let escalate = match (r.escalate_after_hours, r.escalate_to) {
            (None, None) => None,
            (Some(h), Some(to)) => {
                if !route_names.contains(&to) || to == r.name {
                    return Err(p(
                        "escalate_to",
                        format!("{to:?} is not another route in [[notify.routes]]"),
                    ));
                }
                Some((
                    Duration::from_secs(3600 * within("escalate_after_hours", Some(h), h, 1, 720)?),
                    to,
                ))
            }
            (Some(_), None) => {
                return Err(p(
                    "escalate_to",
                    "is missing while escalate_after_hours is set".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(p(
                    "escalate_after_hours",
                    "is missing while escalate_to is set".into(),
                ));
            }
        };
        let quiet = match r.quiet_hours {
            None => None,
            Some(q) => {
                let bad = || {
                    p(
                        "quiet_hours",
                        format!("{q:?} is not a span like 22:00-06:00"),
                    )
                };
                let (a, b) = q.split_once('-').ok_or_else(bad)?;
                let t = |s: &str| jiff::civil::Time::strptime("%H:%M", s.trim()).map_err(|_| bad());
                let (from, to) = (t(a)?, t(b)?);
                if from == to {
                    return Err(bad());
                }
                Some(QuietHours {
                    from,
                    to,
                    tz: tz.clone(),
                })
            }
        };
        let summary_after =
            in_range(r.summary_after.unwrap_or(3), 1, 1000).map_err(|m| p("summary_after", m))?;
        routes.push(Route {
            name: r.name,
            region,
            reasons,
            receivers: r.receivers,
            group_by,
            group_wait,
            group_interval,
            repeat,
            escalate,
            quiet,
            summary_after,
            send_resolved: r.send_resolved.unwrap_or(true),
            escalations_only: r.escalations_only,
        });
    }

    let mut alertmanager = Vec::new();
    for (i, a) in raw.alertmanager.into_iter().enumerate() {
        let at = format!("notify.alertmanager[{i}]");
        if !url_ok(&a.url) {
            return Err((
                format!("{at}.url"),
                format!("{:?} is not a URL like http://alertmanager:9093", a.url),
            ));
        }
        let region = region_prefix(&a.region).map_err(|m| (format!("{at}.region"), m))?;
        let every = in_range(a.every_secs.unwrap_or(60), 1, 3600)
            .map_err(|m| (format!("{at}.every_secs"), m))?;
        alertmanager.push(AlertmanagerPush {
            url: a.url.trim_end_matches('/').to_string(),
            region,
            every: Duration::from_secs(every),
        });
    }

    let bot = match raw.bot {
        None => None,
        Some(b) => {
            let Some(ReceiverKind::Telegram {
                api_url, bot_token, ..
            }) = receivers
                .iter()
                .find(|r| r.name == b.receiver)
                .map(|r| &r.kind)
            else {
                return Err((
                    "notify.bot.receiver".into(),
                    format!("{:?} is not a Telegram receiver", b.receiver),
                ));
            };
            let chats = receivers
                .iter()
                .filter_map(|r| match &r.kind {
                    ReceiverKind::Telegram {
                        bot_token: t,
                        chat_id,
                        ..
                    } if t == bot_token => Some(chat_id.clone()),
                    _ => None,
                })
                .collect();
            let mut operators = HashMap::new();
            for (user, name) in b.operators {
                let id = user.parse::<i64>().map_err(|_| {
                    (
                        format!("notify.bot.operators.{user}"),
                        "keys are Telegram user ids (numbers)".to_string(),
                    )
                })?;
                operators.insert(id, name);
            }
            Some(BotConfig {
                api_url: api_url.clone(),
                bot_token: bot_token.clone(),
                chats,
                operators,
            })
        }
    };

    Ok(NotifyConfig {
        lang,
        dashboard_url,
        receivers,
        routes,
        alertmanager,
        bot,
    })
}

/// Reads a `[notify]` section on its own (tests, and `notify-test` with a bare file):
/// `text` holds the section's keys at the top level.
pub fn from_toml(
    text: &str,
    base: &Path,
    tz: &jiff::tz::TimeZone,
) -> Result<NotifyConfig, Problem> {
    let raw: RawNotify = toml::from_str(text).map_err(|e| ("notify".to_string(), e.to_string()))?;
    validate(raw, base, tz)
}
