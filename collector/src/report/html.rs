//! The report as one self-contained HTML document (inline CSS and SVG, no requests),
//! laid out for A4 paper, in Bahasa Indonesia or English.

use std::fmt::Write;

use super::Lang;
use super::compute::{Area, Bin, Change, Figures, FollowUp, Report, Trend};

/// Lines drawn in the trend chart at most (the regencies with the highest uncovered share).
const TREND_LINES: usize = 10;
const PALETTE: [&str; TREND_LINES] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f",
];

/// Words of the report in one language.
struct Words {
    title: &'static str,
    week: &'static str,
    made: &'static str,
    partial: &'static str,
    data: &'static str,
    no_history: &'static str,
    summary: &'static str,
    vs_last_week: &'static str,
    stations: &'static str,
    covered_end: &'static str,
    uncovered_end: &'static str,
    availability: &'static str,
    below: &'static str,
    outages: &'static str,
    longest: &'static str,
    rtt: &'static str,
    loss: &'static str,
    by_province: &'static str,
    by_regency: &'static str,
    by_district: &'static str,
    code: &'static str,
    name: &'static str,
    share_covered: &'static str,
    trend: &'static str,
    trend_note: &'static str,
    all: &'static str,
    distribution: &'static str,
    distribution_note: &'static str,
    follow_up: &'static str,
    follow_up_note: &'static str,
    never: &'static str,
    never_note: &'static str,
    none: &'static str,
    village: &'static str,
    district: &'static str,
    reason: &'static str,
    cause: &'static str,
    last_seen: &'static str,
    flag: &'static str,
    assignee: &'static str,
    note: &'static str,
    threshold: &'static str,
    footer: &'static str,
}

const ID: Words = Words {
    title: "Laporan Mingguan Cakupan Konektivitas TPS",
    week: "Minggu",
    made: "Dibuat",
    partial: "Minggu ini belum selesai: angka sampai",
    data: "Data: riwayat status tersimpan sejak",
    no_history: "Belum ada riwayat status: semua TPS dihitung belum ada agen.",
    summary: "Ringkasan",
    vs_last_week: "dibanding minggu lalu",
    stations: "TPS terdaftar",
    covered_end: "Tercakup di akhir minggu",
    uncovered_end: "Tidak tercakup di akhir minggu",
    availability: "Ketersediaan (jam-TPS tercakup)",
    below: "TPS di bawah ambang",
    outages: "Gangguan",
    longest: "Gangguan terlama",
    rtt: "RTT target utama p50 / p95",
    loss: "Kehilangan paket p50 / p95",
    by_province: "Per provinsi",
    by_regency: "Per kabupaten/kota",
    by_district: "Per kecamatan",
    code: "Kode",
    name: "Nama",
    share_covered: "% tercakup",
    trend: "Tren harian TPS tidak tercakup per kabupaten/kota",
    trend_note: "Bagian waktu TPS tidak tercakup per hari (tertimbang waktu).",
    all: "Semua",
    distribution: "Sebaran ketersediaan TPS",
    distribution_note: "Jumlah TPS menurut ketersediaan selama minggu ini.",
    follow_up: "TPS yang perlu ditindaklanjuti",
    follow_up_note: "Pernah memiliki agen yang melapor; tidak tercakup di akhir minggu atau di bawah ambang ketersediaan.",
    never: "TPS yang belum pernah memiliki agen",
    never_note: "Belum ada agen yang pernah melapor dari TPS ini sampai akhir minggu.",
    none: "Tidak ada.",
    village: "Desa/Kelurahan",
    district: "Kecamatan",
    reason: "Alasan",
    cause: "Penyebab gangguan",
    last_seen: "Terakhir terlihat",
    flag: "Status tindak lanjut",
    assignee: "Petugas",
    note: "Catatan terakhir",
    threshold: "ambang",
    footer: "Dihasilkan oleh tps-collector dari riwayat status tersimpan; laporan untuk minggu yang telah lewat selalu sama.",
};

const EN: Words = Words {
    title: "Weekly TPS Connectivity Coverage Report",
    week: "Week",
    made: "Made",
    partial: "This week is not over: figures up to",
    data: "Data: status history stored since",
    no_history: "No status history yet: every station counts as having no agent.",
    summary: "Summary",
    vs_last_week: "vs last week",
    stations: "Registered stations",
    covered_end: "Covered at week end",
    uncovered_end: "Uncovered at week end",
    availability: "Availability (covered station-hours)",
    below: "Stations below threshold",
    outages: "Outages",
    longest: "Longest outage",
    rtt: "Primary target RTT p50 / p95",
    loss: "Packet loss p50 / p95",
    by_province: "By province",
    by_regency: "By regency",
    by_district: "By district",
    code: "Code",
    name: "Name",
    share_covered: "% covered",
    trend: "Daily uncovered share by regency",
    trend_note: "Share of time stations were not covered, per day (time-weighted).",
    all: "All",
    distribution: "Availability distribution",
    distribution_note: "Stations by their availability over the week.",
    follow_up: "Stations needing follow-up",
    follow_up_note: "Had an agent reporting; uncovered at the end of the week or below the availability threshold.",
    never: "Stations that never had an agent",
    never_note: "No agent has reported from these stations up to the end of the week.",
    none: "None.",
    village: "Village",
    district: "District",
    reason: "Reason",
    cause: "Outage cause",
    last_seen: "Last seen",
    flag: "Follow-up status",
    assignee: "Assignee",
    note: "Latest note",
    threshold: "threshold",
    footer: "Made by tps-collector from the stored status history; a report for a past week is the same every time it is made.",
};

fn words(lang: Lang) -> &'static Words {
    match lang {
        Lang::Id => &ID,
        Lang::En => &EN,
    }
}

/// A code from the data (reason, cause, state, flag status) in words.
fn term(lang: Lang, code: &str) -> String {
    let (id, en) = match code {
        "covered" => ("tercakup", "covered"),
        "degraded" => ("menurun", "degraded"),
        "offline" => ("luring", "offline"),
        "no_agent" => ("belum ada agen", "no agent"),
        "high_loss" => ("kehilangan paket tinggi", "high packet loss"),
        "high_latency" => ("latensi tinggi", "high latency"),
        "not_measured" => ("target utama tidak diukur", "primary target not measured"),
        "low_availability" => ("ketersediaan rendah", "low availability"),
        "ok" => ("baik", "ok"),
        "link_down" => ("jaringan putus", "link down"),
        "power_or_device" => ("listrik/perangkat mati", "power or device off"),
        "agent_stopped" => ("agen dihentikan", "agent stopped"),
        "open" => ("terbuka", "open"),
        "acknowledged" => ("ditangani", "acknowledged"),
        "resolved" => ("diselesaikan", "resolved"),
        "closed" => ("ditutup (pulih)", "closed (recovered)"),
        other => (other, other),
    };
    match lang {
        Lang::Id => id.to_string(),
        Lang::En => en.to_string(),
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An integer with the language's thousands separator (3.327 / 3,327).
pub fn int(n: i64, lang: Lang) -> String {
    let digits = n.unsigned_abs().to_string();
    let sep = if lang == Lang::Id { '.' } else { ',' };
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(sep);
        }
        out.push(c);
    }
    if n < 0 { format!("−{out}") } else { out }
}

/// A number with `places` decimals and the language's decimal mark (94,1 / 94.1).
pub fn dec(x: f64, places: usize, lang: Lang) -> String {
    let s = format!("{:.*}", places, x.abs());
    let (whole, frac) = s.split_once('.').unwrap_or((&s, ""));
    let whole = int(whole.parse().unwrap_or(0), lang);
    let sign = if x < 0.0 && s.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
        "−"
    } else {
        ""
    };
    match (frac.is_empty(), lang) {
        (true, _) => format!("{sign}{whole}"),
        (false, Lang::Id) => format!("{sign}{whole},{frac}"),
        (false, Lang::En) => format!("{sign}{whole}.{frac}"),
    }
}

/// A 0–1 share as a percentage with one decimal.
pub fn pct(x: Option<f64>, lang: Lang) -> String {
    x.map_or_else(|| "–".into(), |x| format!("{} %", dec(x * 100.0, 1, lang)))
}

fn ms_value(x: Option<f64>, unit: &str, lang: Lang) -> String {
    x.map_or_else(|| "–".into(), |x| format!("{} {unit}", dec(x, 1, lang)))
}

fn num(x: Option<f64>, lang: Lang) -> String {
    x.map_or_else(|| "–".into(), |x| dec(x, 1, lang))
}

fn duration(ms: i64, lang: Lang) -> String {
    if ms <= 0 {
        return "–".into();
    }
    let mins = ms / 60_000;
    let (d, h, m) = (mins / 1440, mins / 60 % 24, mins % 60);
    let (dw, hw, mw) = match lang {
        Lang::Id => ("hari", "jam", "mnt"),
        Lang::En => ("d", "h", "min"),
    };
    if d > 0 {
        format!("{d} {dw} {h} {hw}")
    } else if h > 0 {
        format!("{h} {hw} {m} {mw}")
    } else if mins > 0 {
        format!("{m} {mw}")
    } else {
        format!("{} s", ms / 1000)
    }
}

fn signed(n: i64, lang: Lang) -> String {
    if n > 0 {
        format!("+{}", int(n, lang))
    } else {
        int(n, lang)
    }
}

fn signed_dec(x: Option<f64>, unit: &str, lang: Lang) -> String {
    match x {
        None => "–".into(),
        Some(x) if x > 0.0 => format!("+{}{unit}", dec(x, 1, lang)),
        Some(x) => format!("{}{unit}", dec(x, 1, lang)),
    }
}

/// The document.
pub fn render(r: &Report, lang: Lang) -> String {
    let w = words(lang);
    let mut h = String::with_capacity(64 * 1024 + r.stations.len() * 64);
    let scope = r
        .region
        .as_ref()
        .map(|n| format!(" — {} ({})", esc(&n.name), esc(&n.code)))
        .unwrap_or_default();
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} {week}{scope}</title>
<style>{CSS}</style></head><body>
<header><h1>{title}</h1>
<p class="sub"><b data-k="week">{wk} {week}</b>{scope} · {start} – {end} ({tz})</p>
<p class="meta">{made} <span data-k="made_at">{made_at}</span>. "#,
        title = w.title,
        week = r.week,
        wk = w.week,
        start = esc(&r.start[..10]),
        end = esc(&last_day(r)),
        tz = esc(&r.time_zone),
        made = w.made,
        made_at = esc(&r.made_at.replace('T', " ")),
    );
    match &r.data.history_since {
        Some(since) => {
            let _ = write!(
                h,
                "{} {}; {} · {} {}.",
                w.data,
                esc(&since[..10]),
                match lang {
                    Lang::Id => format!(
                        "{} perubahan status",
                        int(r.data.status_changes as i64, lang)
                    ),
                    Lang::En =>
                        format!("{} status changes", int(r.data.status_changes as i64, lang)),
                },
                int(r.data.rounds as i64, lang),
                match lang {
                    Lang::Id => "putaran pengukuran target utama",
                    Lang::En => "probe rounds of primary targets",
                }
            );
        }
        None => h.push_str(w.no_history),
    }
    h.push_str("</p>");
    if !r.complete {
        let _ = write!(
            h,
            r#"<p class="warn">{} {}.</p>"#,
            w.partial,
            esc(&r.until.replace('T', " "))
        );
    }
    h.push_str("</header>");

    headline(&mut h, r, lang, w);
    if r.provinces.len() > 1 {
        areas(&mut h, w.by_province, &r.provinces, lang, w);
    }
    areas(&mut h, w.by_regency, &r.regencies, lang, w);
    let _ = write!(
        h,
        r#"<section class="charts"><div><h2>{}</h2><p class="note">{}</p>{}</div><div><h2>{}</h2><p class="note">{}</p>{}</div></section>"#,
        w.trend,
        w.trend_note,
        trend_svg(&r.trend, r.headline.availability, lang, w),
        w.distribution,
        w.distribution_note,
        distribution_svg(&r.distribution, r.threshold_pct, lang)
    );
    areas(&mut h, w.by_district, &r.districts, lang, w);
    follow_up(
        &mut h,
        w.follow_up,
        w.follow_up_note,
        &r.follow_up,
        lang,
        w,
        true,
    );
    follow_up(
        &mut h,
        w.never,
        w.never_note,
        &r.never_had_agent,
        lang,
        w,
        false,
    );
    let _ = write!(h, r#"<footer>{}</footer></body></html>"#, w.footer);
    h
}

fn last_day(r: &Report) -> String {
    r.trend.days.last().cloned().unwrap_or_default()
}

fn headline(h: &mut String, r: &Report, lang: Lang, w: &Words) {
    let f = &r.headline;
    let c: &Change = &r.change;
    let card = |h: &mut String, key: &str, label: &str, value: String, delta: String| {
        let _ = write!(
            h,
            r#"<div class="card"><div class="label">{label}</div><div class="value" data-k="{key}">{value}</div><div class="delta">{delta}</div></div>"#,
            value = esc(&value),
            delta = esc(&delta),
        );
    };
    let vs = w.vs_last_week;
    let _ = write!(h, r#"<section><h2>{}</h2><div class="cards">"#, w.summary);
    card(
        h,
        "stations",
        w.stations,
        int(f.stations as i64, lang),
        format!("{} {vs}", signed(c.stations, lang)),
    );
    card(
        h,
        "covered_end",
        w.covered_end,
        format!(
            "{} ({})",
            int(f.covered_end as i64, lang),
            pct(Some(f.covered_share_end), lang)
        ),
        format!(
            "{} pp {vs}",
            signed_dec(Some(c.covered_share_end_pp), "", lang)
        ),
    );
    card(
        h,
        "uncovered_end",
        w.uncovered_end,
        format!(
            "{} ({})",
            int(f.uncovered_end as i64, lang),
            pct(Some(f.uncovered_share_end), lang)
        ),
        format!("{} {vs}", signed(c.uncovered_end, lang)),
    );
    card(
        h,
        "availability",
        w.availability,
        pct(f.availability, lang),
        format!("{} pp {vs}", signed_dec(c.availability_pp, "", lang)),
    );
    card(
        h,
        "below_threshold",
        &format!(
            "{} ({} {} %)",
            w.below,
            w.threshold,
            dec(r.threshold_pct, 0, lang)
        ),
        int(f.below_threshold as i64, lang),
        format!("{} {vs}", signed(c.below_threshold, lang)),
    );
    card(
        h,
        "outages",
        w.outages,
        int(f.outages as i64, lang),
        format!("{} {vs}", signed(c.outages, lang)),
    );
    card(
        h,
        "longest_outage",
        w.longest,
        duration(f.longest_outage_ms, lang),
        String::new(),
    );
    card(
        h,
        "rtt",
        w.rtt,
        format!(
            "{} / {}",
            ms_value(f.rtt_p50_ms, "ms", lang),
            ms_value(f.rtt_p95_ms, "ms", lang)
        ),
        format!("p50 {} ms {vs}", signed_dec(c.rtt_p50_ms, "", lang)),
    );
    card(
        h,
        "loss",
        w.loss,
        format!(
            "{} / {}",
            ms_value(f.loss_p50_pct, "%", lang),
            ms_value(f.loss_p95_pct, "%", lang)
        ),
        format!("p50 {} pp {vs}", signed_dec(c.loss_p50_pct, "", lang)),
    );
    h.push_str("</div>");
    // The state breakdown at the end of the week.
    let _ = write!(
        h,
        r#"<p class="states">{}: <b>{}</b> · {}: <b>{}</b> · {}: <b>{}</b> · {}: <b>{}</b></p></section>"#,
        term(lang, "covered"),
        int(f.covered_end as i64, lang),
        term(lang, "degraded"),
        int(f.degraded_end as i64, lang),
        term(lang, "offline"),
        int(f.offline_end as i64, lang),
        term(lang, "no_agent"),
        int(f.no_agent_end as i64, lang),
    );
}

fn areas(h: &mut String, title: &str, list: &[Area], lang: Lang, w: &Words) {
    let _ = write!(
        h,
        r#"<section><h2>{title}</h2><table class="num"><thead><tr><th>{}</th><th>{}</th><th>TPS</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>RTT p50 / p95</th><th>Loss p50 / p95</th></tr></thead><tbody>"#,
        w.code,
        w.name,
        term(lang, "covered"),
        match lang {
            Lang::Id => "tidak tercakup",
            Lang::En => "uncovered",
        },
        w.share_covered,
        match lang {
            Lang::Id => "ketersediaan",
            Lang::En => "availability",
        },
        match lang {
            Lang::Id => "< ambang",
            Lang::En => "< threshold",
        },
        w.outages,
        w.longest,
    );
    for a in list {
        let f: &Figures = &a.figures;
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"t\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{} / {}</td></tr>",
            esc(&a.code),
            esc(&a.name),
            int(f.stations as i64, lang),
            int(f.covered_end as i64, lang),
            int(f.uncovered_end as i64, lang),
            pct(Some(f.covered_share_end), lang),
            pct(f.availability, lang),
            int(f.below_threshold as i64, lang),
            int(f.outages as i64, lang),
            duration(f.longest_outage_ms, lang),
            num(f.rtt_p50_ms, lang),
            ms_value(f.rtt_p95_ms, "ms", lang),
            num(f.loss_p50_pct, lang),
            ms_value(f.loss_p95_pct, "%", lang),
        );
    }
    h.push_str("</tbody></table></section>");
}

fn follow_up(
    h: &mut String,
    title: &str,
    note: &str,
    list: &[FollowUp],
    lang: Lang,
    w: &Words,
    with_outage: bool,
) {
    let key = if with_outage {
        "follow_up"
    } else {
        "never_had_agent"
    };
    let _ = write!(
        h,
        r#"<section class="list"><h2>{title} (<span data-k="{key}">{}</span>)</h2><p class="note">{note}</p>"#,
        int(list.len() as i64, lang)
    );
    if list.is_empty() {
        let _ = write!(h, "<p>{}</p></section>", w.none);
        return;
    }
    let _ = write!(
        h,
        "<table><thead><tr><th>TPS</th><th>{}</th><th>{}</th><th>{}</th>",
        w.village, w.district, w.reason
    );
    if with_outage {
        let _ = write!(
            h,
            "<th>{}</th><th>{}</th><th>{}</th>",
            w.cause,
            match lang {
                Lang::Id => "ketersediaan",
                Lang::En => "availability",
            },
            w.last_seen
        );
    }
    let _ = write!(
        h,
        "<th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        w.flag, w.assignee, w.note
    );
    for f in list {
        let _ = write!(
            h,
            "<tr><td class=\"code\">{}</td><td>{}</td><td>{}</td><td>{}</td>",
            esc(&f.tps_code),
            esc(&f.village),
            esc(&f.district),
            esc(&term(lang, &f.reason)),
        );
        if with_outage {
            let _ = write!(
                h,
                "<td>{}</td><td class=\"r\">{}</td><td>{}</td>",
                f.cause
                    .as_deref()
                    .map(|c| esc(&term(lang, c)))
                    .unwrap_or_else(|| "–".into()),
                pct(f.availability, lang),
                f.last_seen
                    .as_deref()
                    .map(|t| esc(&t[..16].replace('T', " ")))
                    .unwrap_or_else(|| "–".into()),
            );
        }
        let (status, assignee, note) = match &f.flag {
            Some(fl) => (
                esc(&term(lang, &fl.status)),
                esc(fl.assignee.as_deref().unwrap_or("–")),
                esc(fl.note.as_deref().unwrap_or("–")),
            ),
            None => ("–".into(), "–".into(), "–".into()),
        };
        let _ = write!(
            h,
            "<td>{status}</td><td>{assignee}</td><td>{note}</td></tr>"
        );
    }
    h.push_str("</tbody></table></section>");
}

/// Line chart: one line per regency (the highest-uncovered ones when there are many),
/// over the week's days.
fn trend_svg(t: &Trend, availability: Option<f64>, lang: Lang, w: &Words) -> String {
    let (width, height, left, right, top, bottom) = (460.0, 250.0, 44.0, 22.0, 12.0, 34.0);
    let mean = |v: &[Option<f64>]| {
        let xs: Vec<f64> = v.iter().flatten().copied().collect();
        if xs.is_empty() {
            0.0
        } else {
            xs.iter().sum::<f64>() / xs.len() as f64
        }
    };
    let mut lines: Vec<&super::compute::TrendLine> = t.regencies.iter().collect();
    lines.sort_by(|a, b| mean(&b.uncovered_share).total_cmp(&mean(&a.uncovered_share)));
    lines.truncate(TREND_LINES);
    let top_value = lines
        .iter()
        .flat_map(|l| l.uncovered_share.iter().flatten())
        .copied()
        .fold(0.0f64, f64::max);
    // The y axis ends at the next 10 % above the highest point.
    let y_max = ((top_value * 10.0).floor() + 1.0).min(10.0) / 10.0;
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let x = |k: usize| left + plot_w * k as f64 / 6.0;
    let y = |v: f64| top + plot_h * (1.0 - v / y_max);
    let mut s = format!(
        r#"<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{}">"#,
        esc(w.trend)
    );
    for i in 0..=5 {
        let v = y_max * f64::from(i) / 5.0;
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            width - right,
            left - 4.0,
            y(v) + 3.0,
            pct(Some(v), lang).replace(" %", "%"),
            yy = y(v),
        );
    }
    for (k, day) in t.days.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
            x(k),
            height - bottom + 14.0,
            esc(day.get(5..).unwrap_or(day))
        );
    }
    for (i, l) in lines.iter().enumerate() {
        let pts: Vec<String> = l
            .uncovered_share
            .iter()
            .enumerate()
            .filter_map(|(k, v)| v.map(|v| format!("{:.1},{:.1}", x(k), y(v))))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            PALETTE[i % PALETTE.len()],
            pts.join(" "),
            esc(&l.name)
        );
    }
    s.push_str("</svg><ul class=\"legend\">");
    for (i, l) in lines.iter().enumerate() {
        let _ = write!(
            s,
            r#"<li><i style="background:{}"></i>{} ({})</li>"#,
            PALETTE[i % PALETTE.len()],
            esc(&l.name),
            pct(Some(mean(&l.uncovered_share)), lang)
        );
    }
    let _ = write!(
        s,
        "<li class=\"all\">{}: {} {}</li></ul>",
        w.all,
        pct(availability.map(|a| 1.0 - a), lang),
        match lang {
            Lang::Id => "tidak tercakup",
            Lang::En => "uncovered",
        }
    );
    s
}

/// Bar chart of stations per availability bin.
fn distribution_svg(bins: &[Bin], threshold_pct: f64, lang: Lang) -> String {
    let (width, height, left, bottom, top) = (460.0, 250.0, 10.0, 34.0, 18.0);
    let max = bins.iter().map(|b| b.stations).max().unwrap_or(0).max(1) as f64;
    let slot = (width - 2.0 * left) / bins.len() as f64;
    let mut s = format!(r#"<svg viewBox="0 0 {width} {height}" width="100%" role="img">"#);
    for (i, b) in bins.iter().enumerate() {
        let bh = (height - top - bottom) * b.stations as f64 / max;
        let x = left + slot * i as f64 + 4.0;
        let color = if b.from_pct >= threshold_pct {
            "#2ca02c"
        } else if b.from_pct >= 80.0 {
            "#ff7f0e"
        } else {
            "#d62728"
        };
        let label = if b.from_pct >= 100.0 {
            "100".to_string()
        } else {
            format!("{}–{}", dec(b.from_pct, 0, lang), dec(b.to_pct, 0, lang))
        };
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text><text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{label} %</text>"#,
            height - bottom - bh,
            slot - 8.0,
            x + (slot - 8.0) / 2.0,
            height - bottom - bh - 3.0,
            int(b.stations as i64, lang),
            x + (slot - 8.0) / 2.0,
            height - bottom + 14.0,
        );
    }
    s.push_str("</svg>");
    s
}

const CSS: &str = r#"
@page { size: A4; margin: 14mm 12mm; }
* { box-sizing: border-box; }
body { font: 10.5pt/1.35 "Noto Sans", "DejaVu Sans", Arial, sans-serif; color: #1b1f24; margin: 0 auto; max-width: 190mm; padding: 8mm 0; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
h1 { font-size: 17pt; margin: 0 0 2mm; color: #7a0c0c; }
h2 { font-size: 12pt; margin: 6mm 0 2mm; border-bottom: 1.5pt solid #7a0c0c; padding-bottom: 1mm; break-after: avoid; }
.sub { font-size: 11pt; margin: 0; }
.meta, .note { color: #555; font-size: 9pt; margin: 1mm 0; }
.warn { background: #fff3cd; border: 1px solid #e0c060; padding: 2mm 3mm; font-size: 9.5pt; }
.cards { display: grid; grid-template-columns: repeat(3, 1fr); gap: 3mm; }
.card { border: 1px solid #ccd; border-radius: 2mm; padding: 2.5mm 3mm; break-inside: avoid; }
.card .label { font-size: 8.5pt; color: #555; }
.card .value { font-size: 15pt; font-weight: 700; margin: 1mm 0; }
.card .delta { font-size: 8.5pt; color: #555; }
.states { font-size: 9.5pt; }
table { width: 100%; border-collapse: collapse; font-size: 8pt; }
th, td { border-bottom: 0.5pt solid #ccc; padding: 0.8mm 1mm; vertical-align: top; }
th { font-weight: 600; }
th { background: #f1eeee; text-align: left; }
table.num td { text-align: right; }
table.num td.t, table.num td:first-child { text-align: left; white-space: normal; }
td.r { text-align: right; white-space: nowrap; }
td.code { font-family: "DejaVu Sans Mono", monospace; white-space: nowrap; }
tr { break-inside: avoid; }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 5mm; break-inside: avoid; }
.charts h2 { font-size: 10.5pt; }
.legend { list-style: none; padding: 0; margin: 1mm 0; font-size: 8pt; columns: 2; }
.legend i { display: inline-block; width: 3mm; height: 3mm; margin-right: 1.5mm; vertical-align: middle; }
.legend .all { font-weight: 700; }
footer { margin-top: 8mm; font-size: 8pt; color: #777; border-top: 0.5pt solid #ccc; padding-top: 2mm; }
@media print { body { padding: 0; max-width: none; } }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_the_language() {
        assert_eq!(int(3327, Lang::Id), "3.327");
        assert_eq!(int(820_161, Lang::En), "820,161");
        assert_eq!(int(-1200, Lang::En), "−1,200");
        assert_eq!(dec(94.06, 1, Lang::Id), "94,1");
        assert_eq!(dec(-0.04, 1, Lang::En), "0.0");
        assert_eq!(pct(Some(0.5), Lang::En), "50.0 %");
        assert_eq!(
            duration(2 * 3_600_000 + 15 * 60_000, Lang::Id),
            "2 jam 15 mnt"
        );
        assert_eq!(esc("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }
}
