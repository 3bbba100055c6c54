//! What a notification says: the planned content stored in the outbox (a region, the
//! stations in it and what happened to them) and its rendering for each channel, in
//! Bahasa Indonesia or English, short enough for a phone.

use serde::{Deserialize, Serialize};

use crate::report::Lang;

/// Stations listed by name in one message; the rest are counted.
pub const LISTED: usize = 10;
/// Stations carried in a stored notification (the webhook lists this many alerts).
pub const CARRIED: usize = 200;

/// What happened to a station, as told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A flag opened: the station needs follow-up.
    Firing,
    /// Still unacknowledged after the repeat interval.
    Reminder,
    /// Unacknowledged past the route's escalation time (sent to the next route).
    Escalation,
    /// The station recovered, or a person resolved the flag.
    Resolved,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Firing => "firing",
            Kind::Reminder => "reminder",
            Kind::Escalation => "escalation",
            Kind::Resolved => "resolved",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        [
            Kind::Firing,
            Kind::Reminder,
            Kind::Escalation,
            Kind::Resolved,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One station in a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub kind: Kind,
    pub flag_id: i64,
    pub tps_code: String,
    pub village: String,
    pub district: String,
    pub regency: String,
    /// offline, no_agent, high_loss, high_latency, not_measured.
    pub reason: String,
    /// For offline: link_down, power_off, agent_stopped.
    pub cause: Option<String>,
    /// When the station became uncovered.
    pub since_ms: i64,
}

/// Counts of a region in a province summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub code: String,
    pub name: String,
    pub counts: Counts,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub firing: u32,
    pub reminder: u32,
    pub escalation: u32,
    pub resolved: u32,
}

impl Counts {
    pub fn add(&mut self, k: Kind) {
        match k {
            Kind::Firing => self.firing += 1,
            Kind::Reminder => self.reminder += 1,
            Kind::Escalation => self.escalation += 1,
            Kind::Resolved => self.resolved += 1,
        }
    }
    pub fn total(&self) -> u32 {
        self.firing + self.reminder + self.escalation + self.resolved
    }
    /// Stations still needing someone.
    pub fn problems(&self) -> u32 {
        self.firing + self.reminder + self.escalation
    }
}

/// A planned notification, as stored in the outbox: rendered the same way every time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub route: String,
    /// The region it is about (`21.71`), and its name.
    pub scope_code: String,
    pub scope_name: String,
    pub counts: Counts,
    /// Up to [`CARRIED`] stations, problems first.
    pub items: Vec<Item>,
    /// A province summary: per region counts instead of a station list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
    pub at_ms: i64,
    /// A test message sent by an admin.
    #[serde(default)]
    pub test: bool,
}

/// How a message is rendered.
#[derive(Debug, Clone)]
pub struct Style<'a> {
    pub lang: Lang,
    pub dashboard_url: Option<&'a str>,
    pub tz: &'a jiff::tz::TimeZone,
    /// This delivery may have reached the receiver already (a crash mid-send).
    pub repeat: bool,
}

fn reason_text(lang: Lang, reason: &str, cause: Option<&str>) -> String {
    let id = lang == Lang::Id;
    let r = match (reason, id) {
        ("offline", true) => "tidak melapor",
        ("offline", false) => "offline",
        ("no_agent", true) => "belum ada agen",
        ("no_agent", false) => "no agent",
        ("high_loss", true) => "paket banyak hilang",
        ("high_loss", false) => "high packet loss",
        ("high_latency", true) => "latensi tinggi",
        ("high_latency", false) => "high latency",
        ("not_measured", true) => "target utama tidak diukur",
        ("not_measured", false) => "primary target not measured",
        (other, _) => other,
    };
    let c = match (cause, id) {
        (Some("link_down"), true) => Some("jaringan putus"),
        (Some("link_down"), false) => Some("link down"),
        (Some("power_off"), true) => Some("perangkat mati"),
        (Some("power_off"), false) => Some("device off"),
        (Some("agent_stopped"), true) => Some("agen berhenti"),
        (Some("agent_stopped"), false) => Some("agent stopped"),
        _ => None,
    };
    match c {
        Some(c) => format!("{r}, {c}"),
        None => r.to_string(),
    }
}

fn clock(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    let z = jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(tz.clone());
    let abbrev = z
        .time_zone()
        .to_offset_info(z.timestamp())
        .abbreviation()
        .to_string();
    format!("{} {}", z.strftime("%d/%m %H:%M"), abbrev)
}

fn grouped(n: u32, lang: Lang) -> String {
    let s = n.to_string();
    let sep = if lang == Lang::Id { '.' } else { ',' };
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(sep);
        }
        out.push(c);
    }
    out
}

/// Rendered text, before channel escaping: a title and lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    pub title: String,
    pub lines: Vec<Line>,
    /// Where the whole message points (the region on the dashboard).
    pub link: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub text: String,
    /// The station page.
    pub link: Option<String>,
}

impl Notification {
    pub fn text(&self, s: &Style<'_>) -> Text {
        let id = s.lang == Lang::Id;
        let c = self.counts;
        let n = |x: u32| grouped(x, s.lang);
        let mut parts = Vec::new();
        if self.test {
            parts.push(if id {
                "Pesan uji dari TPS Monitor".to_string()
            } else {
                "Test message from TPS Monitor".to_string()
            });
        }
        if c.firing > 0 {
            parts.push(if id {
                format!("{} TPS perlu tindak lanjut", n(c.firing))
            } else {
                format!("{} TPS need follow-up", n(c.firing))
            });
        }
        if c.escalation > 0 {
            parts.push(if id {
                format!("ESKALASI: {} TPS belum ditangani", n(c.escalation))
            } else {
                format!("ESCALATION: {} TPS not acknowledged", n(c.escalation))
            });
        }
        if c.reminder > 0 {
            parts.push(if id {
                format!("pengingat: {} TPS masih belum ditangani", n(c.reminder))
            } else {
                format!("reminder: {} TPS still unacknowledged", n(c.reminder))
            });
        }
        if c.resolved > 0 {
            parts.push(if id {
                format!("{} TPS pulih", n(c.resolved))
            } else {
                format!("{} TPS recovered", n(c.resolved))
            });
        }
        let mark = if c.escalation > 0 {
            "⛔"
        } else if c.problems() > 0 {
            "🔴"
        } else if self.test {
            "🧪"
        } else {
            "✅"
        };
        let again = if s.repeat {
            if id {
                " (kirim ulang)"
            } else {
                " (sent again)"
            }
        } else {
            ""
        };
        let title = format!(
            "{mark} {} {}: {}{again}",
            self.scope_name,
            self.scope_code,
            parts.join("; ")
        );
        let base = s.dashboard_url;
        let mut lines = Vec::new();
        if !self.parts.is_empty() {
            for p in self.parts.iter().take(LISTED) {
                let mut bits = Vec::new();
                if p.counts.problems() > 0 {
                    bits.push(if id {
                        format!("{} bermasalah", n(p.counts.problems()))
                    } else {
                        format!("{} need follow-up", n(p.counts.problems()))
                    });
                }
                if p.counts.resolved > 0 {
                    bits.push(if id {
                        format!("{} pulih", n(p.counts.resolved))
                    } else {
                        format!("{} recovered", n(p.counts.resolved))
                    });
                }
                lines.push(Line {
                    text: format!("{} {}: {}", p.name, p.code, bits.join(", ")),
                    link: base.map(|b| format!("{b}#region={}", p.code)),
                });
            }
            if self.parts.len() > LISTED {
                let more = (self.parts.len() - LISTED) as u32;
                lines.push(Line {
                    text: if id {
                        format!("dan {} wilayah lainnya", n(more))
                    } else {
                        format!("and {} more regions", n(more))
                    },
                    link: None,
                });
            }
        } else {
            for it in self.items.iter().take(LISTED) {
                let what = match it.kind {
                    Kind::Resolved => {
                        if id {
                            "pulih".to_string()
                        } else {
                            "recovered".to_string()
                        }
                    }
                    _ => format!(
                        "{} {} {}",
                        reason_text(s.lang, &it.reason, it.cause.as_deref()),
                        if id { "sejak" } else { "since" },
                        clock(it.since_ms, s.tz)
                    ),
                };
                let glyph = if it.kind == Kind::Resolved {
                    "✅"
                } else {
                    "•"
                };
                lines.push(Line {
                    text: format!(
                        "{glyph} TPS {} {}, {} — {what} (#{})",
                        &it.tps_code[10..],
                        it.village,
                        it.district,
                        it.flag_id
                    ),
                    link: base.map(|b| format!("{b}#tps={}", it.tps_code)),
                });
            }
            let total = c.total() as usize;
            if total > LISTED.min(self.items.len()) {
                let more = (total - LISTED.min(self.items.len())) as u32;
                lines.push(Line {
                    text: if id {
                        format!("dan {} TPS lainnya", n(more))
                    } else {
                        format!("and {} more TPS", n(more))
                    },
                    link: None,
                });
            }
        }
        Text {
            title,
            lines,
            link: base.map(|b| format!("{b}#region={}", self.scope_code)),
        }
    }
}

impl Text {
    /// Plain text: e-mail bodies and WhatsApp template parameters.
    pub fn plain(&self, with_links: bool) -> String {
        let mut out = self.title.clone();
        for l in &self.lines {
            out.push('\n');
            out.push_str(&l.text);
            if with_links && let Some(u) = &l.link {
                out.push_str("\n  ");
                out.push_str(u);
            }
        }
        if let Some(u) = &self.link {
            out.push_str("\n\n");
            out.push_str(u);
        }
        out
    }

    /// Telegram's HTML parse mode: only `<b>` and `<a>`, everything else escaped.
    pub fn telegram_html(&self) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let mut out = format!("<b>{}</b>", esc(&self.title));
        for l in &self.lines {
            out.push('\n');
            match &l.link {
                Some(u) => out.push_str(&format!(
                    "<a href=\"{}\">{}</a>",
                    esc(u).replace('"', "&quot;"),
                    esc(&l.text)
                )),
                None => out.push_str(&esc(&l.text)),
            }
        }
        if let Some(u) = &self.link {
            out.push_str(&format!(
                "\n\n<a href=\"{}\">Dashboard</a>",
                esc(u).replace('"', "&quot;")
            ));
        }
        out
    }

    /// One line for a WhatsApp template parameter (no newlines or tabs allowed there,
    /// at most 1,024 characters).
    pub fn one_line(&self, max: usize) -> String {
        let mut s = self.title.clone();
        for l in &self.lines {
            s.push_str(" | ");
            s.push_str(&l.text);
        }
        if let Some(u) = &self.link {
            s.push_str(" | ");
            s.push_str(u);
        }
        let s = s.replace(['\n', '\t'], " ");
        if s.chars().count() <= max {
            s
        } else {
            let mut t: String = s.chars().take(max - 1).collect();
            t.push('…');
            t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: Kind, n: u32) -> Item {
        Item {
            kind,
            flag_id: i64::from(n),
            tps_code: format!("2171011001{n:03}"),
            village: "Tanjung Ayun Sakti".into(),
            district: "Bukit Bestari".into(),
            regency: "Kota Tanjung Pinang".into(),
            reason: "offline".into(),
            cause: Some("link_down".into()),
            since_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn a_long_list_names_ten_stations_and_counts_the_rest() {
        let mut counts = Counts::default();
        let items: Vec<Item> = (1..=25).map(|n| item(Kind::Firing, n)).collect();
        items.iter().for_each(|i| counts.add(i.kind));
        let n = Notification {
            route: "kepri".into(),
            scope_code: "21.72".into(),
            scope_name: "Kota Tanjung Pinang".into(),
            counts,
            items,
            parts: vec![],
            at_ms: 0,
            test: false,
        };
        let tz = jiff::tz::TimeZone::get("Asia/Jakarta").unwrap();
        let t = n.text(&Style {
            lang: Lang::Id,
            dashboard_url: Some("https://m.example/"),
            tz: &tz,
            repeat: false,
        });
        assert_eq!(
            t.title,
            "🔴 Kota Tanjung Pinang 21.72: 25 TPS perlu tindak lanjut"
        );
        assert_eq!(t.lines.len(), 11);
        assert_eq!(
            t.lines[0].text,
            "• TPS 001 Tanjung Ayun Sakti, Bukit Bestari — tidak melapor, jaringan putus sejak 15/11 05:13 WIB (#1)"
        );
        assert_eq!(
            t.lines[0].link.as_deref(),
            Some("https://m.example/#tps=2171011001001")
        );
        assert_eq!(t.lines[10].text, "dan 15 TPS lainnya");
        let html = t.telegram_html();
        assert!(
            html.starts_with("<b>🔴 Kota Tanjung Pinang 21.72"),
            "{html}"
        );
        assert!(html.chars().count() < 4096, "fits one Telegram message");
        let wa = t.one_line(1024);
        assert!(!wa.contains('\n') && wa.chars().count() <= 1024);
    }

    #[test]
    fn thousands_are_grouped_the_local_way() {
        assert_eq!(grouped(10_000, Lang::Id), "10.000");
        assert_eq!(grouped(1_234_567, Lang::En), "1,234,567");
        assert_eq!(grouped(999, Lang::Id), "999");
    }
}
