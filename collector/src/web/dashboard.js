// The operators' dashboard: reads the status API with the operator's token (kept in
// this browser's localStorage until "sign out"), draws the map with the bundled
// Leaflet and regency outlines, and works the follow-up queue.
"use strict";
const T = {
  id: { title:"Konektivitas TPS", region:"Wilayah", covered:"Terjangkau", uncovered:"Belum terjangkau", total:"TPS terdaftar",
        uncoveredShare:"Porsi belum terjangkau", byRegency:"Per kabupaten/kota", map:"Peta", queue:"Antrean tindak lanjut",
        station:"TPS", reason:"Alasan", since:"Sejak", status:"Status", assignee:"Petugas", note:"Catatan", history:"Riwayat status",
        time:"Waktu", cause:"Penyebab", login:"Masuk", signIn:"Masuk", signOut:"Keluar", tokenLabel:"Token operator",
        loginHelp:"Tempel token operator (dibuat dengan: tps-collector operator add NAMA --role viewer).",
        ack:"Terima", assign:"Tugaskan", addNote:"Catat", resolve:"Selesaikan", all:"Semua", noCoords:"TPS tanpa koordinat (tidak dipetakan): ",
        outside:"TPS di luar batas kabupaten/kota-nya (periksa koordinatnya): ",
        asOf:"Per ", degraded:"Menurun", offline:"Terputus", no_agent:"Tanpa agen", open:"baru", acknowledged:"diterima", resolved:"selesai", closed:"ditutup",
        high_loss:"kehilangan paket tinggi", high_latency:"latensi tinggi", not_measured:"target utama tidak diukur", link_down:"jaringan putus", power_or_device:"listrik/perangkat mati", agent_stopped:"agen dihentikan",
        askAssignee:"Tugaskan ke siapa?", askNote:"Catatan:", askResolve:"Penyelesaian:", rtt:"RTT rata-rata (ms)", loss:"Kehilangan paket", report:"Laporan minggu ini",
        latest:"Ronde terakhir per target", target:"Target", replies:"Balasan", agents:"Agen", host:"Perangkat", lastSeen:"Terakhir terlihat",
        spool:"Antrean kirim", state:"Keadaan", regency:"Kabupaten/kota", close:"Tutup", noAgent:"Belum ada agen terdaftar.",
        check:"Yang perlu diperiksa", zoomIn:"Perbesar untuk melihat TPS satu per satu",
        hints: {
          no_agent:["Pasang agen di perangkat TPS dan daftarkan dengan kode pendaftaran dari operator.", "Pastikan TPS ini memang memakai perangkat berinternet."],
          link_down:["Periksa modem/router: lampu sinyal dan daya.", "Periksa kuota dan sinyal operator seluler di lokasi.", "Coba pindahkan modem ke tempat dengan sinyal lebih baik."],
          power_or_device:["Periksa listrik di lokasi dan apakah perangkat menyala.", "Setelah menyala, agen mengirim ulang hasil yang tersimpan."],
          agent_stopped:["Agen dihentikan di perangkat: jalankan lagi layanannya (tps-agent)."],
          high_loss:["Sinyal lemah atau jaringan padat: periksa letak modem dan antena.", "Bandingkan dengan operator seluler lain di lokasi."],
          high_latency:["Jaringan lambat: periksa apakah ada pemakaian lain yang berat.", "Satelit wajar lebih lambat; lapor bila terus memburuk."],
          not_measured:["Target utama tidak diukur: periksa konfigurasi agen (target gateway)."],
          degraded:["Koneksi menurun: periksa sinyal dan beban jaringan."],
        } },
  en: { title:"TPS connectivity", region:"Region", covered:"Covered", uncovered:"Uncovered", total:"Registered TPS",
        uncoveredShare:"Uncovered share", byRegency:"By regency", map:"Map", queue:"Follow-up queue",
        station:"TPS", reason:"Reason", since:"Since", status:"Status", assignee:"Assignee", note:"Note", history:"Status history",
        time:"Time", cause:"Cause", login:"Sign in", signIn:"Sign in", signOut:"Sign out", tokenLabel:"Operator token",
        loginHelp:"Paste an operator token (made with: tps-collector operator add NAME --role viewer).",
        ack:"Acknowledge", assign:"Assign", addNote:"Note", resolve:"Resolve", all:"All", noCoords:"TPS without coordinates (not mapped): ",
        outside:"TPS outside their own regency (check their coordinates): ",
        asOf:"As of ", degraded:"Degraded", offline:"Offline", no_agent:"No agent", open:"open", acknowledged:"acknowledged", resolved:"resolved", closed:"closed",
        high_loss:"high packet loss", high_latency:"high latency", not_measured:"primary target not measured", link_down:"link down", power_or_device:"power or device off", agent_stopped:"agent stopped",
        askAssignee:"Assign to whom?", askNote:"Note:", askResolve:"Resolution:", rtt:"Average RTT (ms)", loss:"Packet loss", report:"This week's report",
        latest:"Latest round per target", target:"Target", replies:"Replies", agents:"Agents", host:"Device", lastSeen:"Last seen",
        spool:"Waiting to send", state:"State", regency:"Regency", close:"Close", noAgent:"No agent enrolled yet.",
        check:"What to check", zoomIn:"Zoom in to see single stations",
        hints: {
          no_agent:["Install the agent on the station's device and enroll it with the code from the operator.", "Make sure this station really has an internet device."],
          link_down:["Check the modem/router: signal and power lights.", "Check the mobile data quota and the carrier's signal on site.", "Try moving the modem to a spot with better signal."],
          power_or_device:["Check the power on site and whether the device is on.", "Once it is on, the agent sends what it kept."],
          agent_stopped:["The agent was stopped on the device: start its service (tps-agent) again."],
          high_loss:["Weak signal or a busy network: check where the modem and antenna are.", "Compare with another carrier on site."],
          high_latency:["Slow network: check for other heavy use.", "Satellite links are slower; report it if it keeps getting worse."],
          not_measured:["The primary target is not measured: check the agent's config (gateway target)."],
          degraded:["The link is degraded: check the signal and the network load."],
        } },
};
let lang = localStorage.getItem("tps.lang") || "id";
const t = k => (T[lang][k] ?? k);
const STATES = ["covered", "degraded", "offline", "no_agent"];
const COLORS = { covered:"#1a9850", degraded:"#b86800", offline:"#d73027", no_agent:"#6b6b6b" };
// Shapes as well as colours, so the states read without colour: ● ▲ ■ ◆.
const GLYPHS = { covered:"●", degraded:"▲", offline:"■", no_agent:"◆" };
const $ = s => document.querySelector(s);
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const locale = () => lang === "id" ? "id-ID" : "en-GB";
const fmtTime = ms => ms ? new Date(ms).toLocaleString(locale(), { dateStyle:"short", timeStyle:"short" }) : "–";
const fmtPct = x => (100 * x).toLocaleString(locale(), { maximumFractionDigits: 1 }) + "%";
const fmtInt = n => Number(n).toLocaleString(locale());
const glyph = s => `<span class="glyph" style="color:${COLORS[s]}" aria-hidden="true">${GLYPHS[s]}</span>`;
const stateName = s => s === "covered" ? t("covered") : t(s);

const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) { localStorage.setItem("tps.token", hash.get("token")); history.replaceState(null, "", location.pathname); }
let token = localStorage.getItem("tps.token") || "";
let region = localStorage.getItem("tps.region") || "";
// Links in notifications: #tps=CODE opens a station page, #region=21.71 a region.
const linkTps = /^\d{13}$/.test(hash.get("tps") || "") ? hash.get("tps") : "";
const linkRegion = /^\d{2}(\.\d{2}){0,2}$/.test(hash.get("region") || "") ? hash.get("region") : "";
if (linkRegion) region = linkRegion;

async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json", ...(opts.headers || {}) } });
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) { showLogin(body.error); throw new Error(body.error); }
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function applyLang() {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-i18n]").forEach(e => e.textContent = t(e.dataset.i18n));
  $("#lang").textContent = lang === "id" ? "English" : "Bahasa Indonesia";
  $("#lang").lang = lang === "id" ? "en" : "id";
  $("#st-close").setAttribute("aria-label", t("close"));
  document.title = t("title");
  $("#state-legend").innerHTML = STATES.map(s => `<span>${glyph(s)} ${esc(stateName(s))} <b id="count-${s}"></b></span>`).join("");
  $("#map-legend").innerHTML = STATES.map(s => `<span>${glyph(s)} ${esc(stateName(s))}</span>`).join("");
}

function showLogin(msg) {
  $("#app").style.display = "none"; $("#login").style.display = "block"; $("#signout").style.display = "none";
  $("#login-error").textContent = msg || "";
}

function signOut() {
  token = ""; localStorage.removeItem("tps.token");
  mapState.key = null;
  showLogin();
}

async function loadRegions() {
  const prov = await api("/api/v1/regions?level=province");
  const sel = $("#region");
  sel.innerHTML = `<option value="">${esc(t("all"))}</option>` + prov.regions.map(r => `<option value="${esc(r.code)}">${esc(r.name || r.code)}</option>`).join("");
  if (!region && prov.regions.length === 1) region = prov.regions[0].code;
  if (region && !prov.regions.some(r => r.code === region)) {
    const o = document.createElement("option"); o.value = region; o.textContent = region; sel.appendChild(o);
  }
  sel.value = region;
}

async function refresh() {
  const q = region ? `?region=${encodeURIComponent(region)}` : "";
  const [sum, regs, flags] = await Promise.all([
    api("/api/v1/summary" + q),
    api(`/api/v1/regions?level=${region.split(".").length >= 2 ? "district" : "regency"}${region ? "&parent=" + encodeURIComponent(region) : ""}`),
    api("/api/v1/flags?limit=500" + (region ? "&region=" + encodeURIComponent(region) : "")),
  ]);
  $("#covered-count").textContent = fmtInt(sum.covered);
  $("#uncovered-count").textContent = fmtInt(sum.uncovered);
  $("#total-count").textContent = fmtInt(sum.total);
  $("#uncovered-share").textContent = fmtPct(sum.uncovered_share);
  $("#uncovered-share").dataset.value = sum.uncovered_share;
  for (const s of STATES) { const e = $("#count-" + s); if (e) e.textContent = fmtInt(sum[s]); }
  $("#asof").textContent = t("asOf") + fmtTime(sum.as_of_ms);
  const lbl = k => `data-label="${esc(t(k))}"`;
  $("#regions tbody").innerHTML = regs.regions.map(r => `<tr data-region="${esc(r.code)}">
      <td>${esc(r.name || r.code)} <span class="muted">${esc(r.code)}</span></td>
      <td class="num" data-label="TPS">${fmtInt(r.total)}</td><td class="num" ${lbl("uncovered")}>${fmtInt(r.uncovered)} (${fmtPct(r.uncovered_share)})</td>
      <td><div class="bar" role="img" aria-label="${STATES.map(s => esc(stateName(s)) + " " + r[s]).join(", ")}">${STATES.map(s => `<span style="width:${100 * r[s] / Math.max(1, r.total)}%;background:${COLORS[s]}"></span>`).join("")}</div></td></tr>`).join("");
  renderFlags(flags.flags, flags.total);
  await drawMap(sum);
}

function renderFlags(list, total) {
  $("#flag-count").textContent = fmtInt(total);
  const lbl = k => `data-label="${esc(t(k))}"`;
  $("#flags tbody").innerHTML = list.slice(0, 200).map(f => `<tr data-flag-id="${f.id}">
      <td><a class="station" href="#" data-tps="${esc(f.tps_code)}">${esc(f.tps_code)}</a><br><span class="muted">${esc(f.village)}, ${esc(f.district)}</span></td>
      <td ${lbl("reason")}>${esc(t(f.reason))}${f.cause ? "<br><span class=muted>" + esc(t(f.cause)) + "</span>" : ""}</td>
      <td ${lbl("since")}>${fmtTime(f.since_ms)}</td>
      <td class="flag-status" ${lbl("status")}>${esc(t(f.status))}</td>
      <td ${lbl("assignee")}>${esc(f.assignee || "–")}</td>
      <td ${lbl("note")}>${esc(f.latest_note || "–")}</td>
      <td class="actions">
        <button type="button" class="ack" data-act="ack">${esc(t("ack"))}</button><button type="button" data-act="assign">${esc(t("assign"))}</button>
        <button type="button" data-act="notes">${esc(t("addNote"))}</button><button type="button" data-act="resolve">${esc(t("resolve"))}</button>
      </td></tr>`).join("");
}

// ---- The map: Leaflet without tiles, regency outlines, stations on a canvas. ----
const mapState = { key: null, map: null, outlines: null, rows: [], drawn: [], canvas: null };

// Stations on a canvas over the map: a shape per state; past MAX_POINTS in view they
// are counted per grid cell instead (national view), and a tap zooms in.
const MAX_POINTS = 6000, CELL = 44;
function drawStations() {
  const { map, canvas } = mapState;
  if (!map || !canvas) return;
  const size = map.getSize(), dpr = window.devicePixelRatio || 1;
  canvas.width = size.x * dpr; canvas.height = size.y * dpr;
  canvas.style.width = size.x + "px"; canvas.style.height = size.y + "px";
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, size.x, size.y);
  const bounds = map.getBounds().pad(0.05);
  const inView = mapState.rows.filter(s => s.lat != null && s.lon != null && bounds.contains([s.lat, s.lon]));
  const order = { covered:0, degraded:1, no_agent:2, offline:3 };
  inView.sort((a, b) => order[a.state] - order[b.state]);
  mapState.drawn = [];
  mapState.cells = [];
  if (inView.length > MAX_POINTS) {
    const cells = new Map();
    for (const s of inView) {
      const p = map.latLngToContainerPoint([s.lat, s.lon]);
      const k = Math.floor(p.x / CELL) + ":" + Math.floor(p.y / CELL);
      const c = cells.get(k) || { x: 0, y: 0, n: 0, bad: 0, lat: 0, lon: 0 };
      c.x += p.x; c.y += p.y; c.n++; c.lat += s.lat; c.lon += s.lon; if (s.state !== "covered") c.bad++;
      cells.set(k, c);
    }
    for (const c of cells.values()) {
      const x = c.x / c.n, y = c.y / c.n, r = Math.min(CELL / 2, 7 + Math.sqrt(c.n) / 2);
      g.fillStyle = c.bad / c.n > 0.2 ? COLORS.offline : c.bad ? COLORS.degraded : COLORS.covered;
      g.globalAlpha = 0.85; g.beginPath(); g.arc(x, y, r, 0, 2 * Math.PI); g.fill(); g.globalAlpha = 1;
      g.fillStyle = "#fff"; g.font = "bold 11px system-ui, sans-serif"; g.textAlign = "center"; g.textBaseline = "middle";
      g.fillText(c.n > 999 ? Math.round(c.n / 1000) + "k" : String(c.n), x, y);
      mapState.cells.push({ x, y, r, lat: c.lat / c.n, lon: c.lon / c.n });
    }
    $("#map").dataset.mode = "cells";
    return;
  }
  $("#map").dataset.mode = "points";
  for (const s of inView) {
    const p = map.latLngToContainerPoint([s.lat, s.lon]);
    shape(g, s.state, p.x, p.y, s.state === "covered" ? 3.5 : 5);
    mapState.drawn.push({ code: s.tps_code, state: s.state, lat: s.lat, lon: s.lon, regency_code: s.regency_code, x: p.x, y: p.y });
  }
}

function shape(g, state, x, y, r) {
  g.fillStyle = COLORS[state]; g.strokeStyle = "#fff"; g.lineWidth = 1;
  g.beginPath();
  if (state === "degraded") { g.moveTo(x, y - r * 1.2); g.lineTo(x + r * 1.1, y + r * 0.8); g.lineTo(x - r * 1.1, y + r * 0.8); g.closePath(); }
  else if (state === "offline") { g.rect(x - r, y - r, 2 * r, 2 * r); }
  else if (state === "no_agent") { g.moveTo(x, y - r * 1.2); g.lineTo(x + r * 1.2, y); g.lineTo(x, y + r * 1.2); g.lineTo(x - r * 1.2, y); g.closePath(); }
  else { g.arc(x, y, r, 0, 2 * Math.PI); }
  g.fill(); g.stroke();
}

function mapTap(e) {
  const p = e.containerPoint;
  let best = null, bestD = 22 * 22;
  for (const s of mapState.drawn) {
    const d = (s.x - p.x) ** 2 + (s.y - p.y) ** 2;
    if (d < bestD) { best = s; bestD = d; }
  }
  if (best) return showStation(best.code).catch(err => alert(err.message));
  for (const c of mapState.cells || []) {
    if ((c.x - p.x) ** 2 + (c.y - p.y) ** 2 <= (c.r + 6) ** 2) return mapState.map.setView([c.lat, c.lon], mapState.map.getZoom() + 2);
  }
}

function ensureMap() {
  if (mapState.map) return mapState.map;
  const map = L.map("map", { zoomSnap: 0.25, minZoom: 3, maxZoom: 17, attributionControl: true, zoomControl: true });
  map.attributionControl.setPrefix('<a href="https://leafletjs.com" rel="noreferrer" target="_blank">Leaflet</a>');
  const canvas = L.DomUtil.create("canvas", "stations-layer");
  canvas.style.position = "absolute"; canvas.style.left = "0"; canvas.style.top = "0";
  canvas.style.zIndex = "450"; canvas.style.pointerEvents = "none";
  map.getContainer().appendChild(canvas);
  mapState.map = map; mapState.canvas = canvas;
  map.on("move zoom resize viewreset", drawStations);
  map.on("click", mapTap);
  map.setView([0.9, 104.5], 7);
  return map;
}

async function loadStations() {
  let rows = [], cursor = "";
  for (let page = 0; page < 10; page++) {
    const r = await api(`/api/v1/stations?limit=10000${region ? "&region=" + encodeURIComponent(region) : ""}${cursor ? "&cursor=" + cursor : ""}`);
    rows = rows.concat(r.stations);
    if (!r.next_cursor) break;
    cursor = r.next_cursor;
  }
  return rows;
}

async function drawMap(sum) {
  const map = ensureMap();
  const key = region;
  if (mapState.key !== key) {
    const fc = await fetch("/api/v1/boundaries" + (region ? "?region=" + encodeURIComponent(region) : ""), { headers: { "Authorization": "Bearer " + token } }).then(r => r.json());
    if (mapState.outlines) mapState.outlines.remove();
    if (mapState.source) map.attributionControl.removeAttribution(mapState.source);
    mapState.outlines = L.geoJSON(fc, { style: { color: "#14325c", weight: 1.2, fillColor: "#ffffff", fillOpacity: 0.9, className: "regency" }, interactive: false }).addTo(map);
    mapState.outlines.eachLayer(l => { const e = l.getElement && l.getElement(); if (e) { e.dataset.code = l.feature.properties.code; e.setAttribute("aria-label", l.feature.properties.name); } });
    mapState.source = esc(fc.source || "");
    map.attributionControl.addAttribution(mapState.source);
    mapState.fc = fc;
    $("#map").dataset.outlines = String(fc.features.length);
    if (fc.features.length) map.fitBounds(mapState.outlines.getBounds(), { padding: [8, 8] });
    mapState.key = key;
  }
  mapState.rows = await loadStations();
  const mapped = mapState.rows.filter(s => s.lat != null && s.lon != null).length;
  $("#map-note").textContent = t("noCoords") + fmtInt(mapState.rows.length - mapped) + " · " + t("outside") + fmtInt(sum.outside_regency || 0);
  drawStations();
  $("#map").dataset.drawn = String(mapState.drawn.length);
  // For tests and the curious: the outlines and the stations as drawn now.
  window.tpsMap = { boundaries: mapState.fc, get drawn() { return mapState.drawn; }, map };
}

// ---- The station page: what a field technician needs. ----
async function showStation(code) {
  const d = await api("/api/v1/stations/" + code);
  const series = await api(`/api/v1/stations/${code}/series`);
  const el = $("#station");
  el.style.display = "block";
  $("#st-title").textContent = `TPS ${d.tps_code} — ${d.village}, ${d.district}`;
  const cov = d.coverage || {};
  const st = cov.state || "no_agent";
  const facts = [
    [t("state"), `${glyph(st)} ${esc(stateName(st))}${cov.reason && cov.reason !== st ? " · " + esc(t(cov.reason)) : ""}${cov.cause ? " · " + esc(t(cov.cause)) : ""}`],
    [t("since"), esc(fmtTime(cov.since_ms))],
    [t("lastSeen"), esc(fmtTime(d.last_seen_ms))],
    [t("regency"), esc(d.regency)],
    [t("agents"), d.agents.length ? esc(String(d.agents.length)) : esc(t("noAgent"))],
  ];
  $("#st-facts").innerHTML = facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join("");
  const hints = st === "covered" ? [] : (T[lang].hints[cov.cause] || T[lang].hints[cov.reason] || T[lang].hints[st] || []);
  $("#st-hint").innerHTML = hints.length ? `<div class="hint"><b>${esc(t("check"))}</b><ul>${hints.map(h => `<li>${esc(h)}</li>`).join("")}</ul></div>` : "";
  const lbl = k => `data-label="${esc(t(k))}"`;
  const latest = d.agents.flatMap(a => a.latest || []);
  $("#st-latest tbody").innerHTML = latest.map(m => `<tr><td>${esc(m.target_name)} <span class="muted">${esc(m.target_address)}</span></td>
      <td ${lbl("time")}>${fmtTime(m.start_ms)}</td><td class="num" ${lbl("replies")}>${m.received}/${m.sent}</td>
      <td class="num" data-label="RTT">${m.rtt ? m.rtt.avg_ms.toFixed(0) + " ms" : "–"}</td></tr>`).join("");
  $("#st-agents tbody").innerHTML = d.agents.map(a => `<tr><td>${esc(a.hostname)} <span class="muted">${esc(a.os)} · ${esc(a.agent_version)}</span></td>
      <td ${lbl("lastSeen")}>${fmtTime(a.last_seen_ms)}</td><td ${lbl("spool")}>${a.status ? fmtInt(a.status.spool_depth) : "–"}</td></tr>`).join("");
  $("#st-chart").innerHTML = chart(series.points);
  $("#st-transitions tbody").innerHTML = d.transitions.map(x => `<tr><td>${fmtTime(x.at_ms)}</td><td ${lbl("status")}>${glyph(x.state)} ${esc(stateName(x.state))}</td><td ${lbl("reason")}>${esc(t(x.reason))}</td><td ${lbl("cause")}>${esc(x.cause ? t(x.cause) : "–")}</td></tr>`).join("");
  $("#st-close").focus();
}

function chart(points) {
  const W = 900, H = 180, P = 30;
  if (!points.length) return `<p class="muted">–</p>`;
  const ts = points.map(p => p.t), tmin = Math.min(...ts), tmax = Math.max(...ts) || tmin + 1;
  const rmax = Math.max(1, ...points.map(p => p.rtt_avg_ms || 0));
  const X = tm => P + (W - 2 * P) * (tm - tmin) / Math.max(1, tmax - tmin);
  const line = (f, max) => points.filter(p => f(p) != null).map((p, i) => `${i ? "L" : "M"}${X(p.t).toFixed(1)},${(H - P - (H - 2 * P) * f(p) / max).toFixed(1)}`).join(" ");
  return `<svg viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="${esc(t("rtt"))}, ${esc(t("loss"))}">
    <path d="${line(p => p.rtt_avg_ms, rmax)}" fill="none" stroke="#14325c" stroke-width="1.5"/>
    <path d="${line(p => p.loss, 1)}" fill="none" stroke="${COLORS.offline}" stroke-width="1.2" stroke-dasharray="4 3"/>
    <text x="${P}" y="12">${esc(t("rtt"))}: max ${rmax.toFixed(0)} ms</text>
    <text x="${W / 2}" y="12" fill="${COLORS.offline}">--- ${esc(t("loss"))} (0–100%)</text>
    <text x="${P}" y="${H - 8}">${fmtTime(tmin)}</text><text x="${W - P - 90}" y="${H - 8}">${fmtTime(tmax)}</text></svg>`;
}

document.addEventListener("click", async ev => {
  const a = ev.target.closest("a.station");
  if (a) { ev.preventDefault(); return showStation(a.dataset.tps).catch(e => alert(e.message)); }
  const b = ev.target.closest("button[data-act]");
  if (!b) return;
  const id = b.closest("tr").dataset.flagId, act = b.dataset.act;
  let body;
  if (act === "assign") { const v = prompt(t("askAssignee")); if (!v) return; body = { assignee: v }; }
  if (act === "notes") { const v = prompt(t("askNote")); if (!v) return; body = { text: v }; }
  if (act === "resolve") { const v = prompt(t("askResolve")); if (!v) return; body = { resolution: v }; }
  try {
    const f = await api(`/api/v1/flags/${id}/${act}`, { method: "POST", body: body ? JSON.stringify(body) : "{}" });
    b.closest("tr").querySelector(".flag-status").textContent = t(f.status);
    await refresh();
  } catch (e) { alert(e.message); }
});
const closeStation = () => { $("#station").style.display = "none"; };
$("#st-close").onclick = closeStation;
document.addEventListener("keydown", e => { if (e.key === "Escape") closeStation(); });
$("#lang").onclick = () => { lang = lang === "id" ? "en" : "id"; localStorage.setItem("tps.lang", lang); applyLang(); refresh(); };
$("#region").onchange = e => { region = e.target.value; localStorage.setItem("tps.region", region); refresh(); };
$("#signout").onclick = signOut;
// The report opens from a short-lived link, on its own sandboxed origin: the report
// page cannot read this page's storage, where the token is.
$("#report").onclick = async () => {
  const w = window.open("about:blank", "_blank");
  if (w) w.opener = null;
  const params = { week: "current", lang, format: "html" };
  if (region) params.region = region;
  try {
    const link = await api("/api/v1/reports/links", { method: "POST", body: JSON.stringify(params) });
    if (w) w.location.href = link.url; else location.href = link.url;
  } catch (e) { if (w) w.close(); alert(e.message); }
};
$("#save-token").onclick = () => { token = $("#token").value.trim(); localStorage.setItem("tps.token", token); $("#token").value = ""; start(); };
$("#token").addEventListener("keydown", e => { if (e.key === "Enter") $("#save-token").click(); });

async function start() {
  applyLang();
  if (!token) return showLogin();
  try {
    await api("/api/v1/me");
    $("#login").style.display = "none"; $("#app").style.display = "grid"; $("#signout").style.display = "";
    await loadRegions();
    await refresh();
    if (linkTps) await showStation(linkTps).catch(() => {});
    document.body.dataset.ready = "1";
  } catch (e) { if (!$("#login").style.display || $("#login").style.display === "none") showLogin(e.message); }
}
// A link followed while the page is open changes only the hash.
window.addEventListener("hashchange", () => {
  const h = new URLSearchParams(location.hash.slice(1));
  const r = h.get("region") || "", code = h.get("tps") || "";
  if (/^\d{2}(\.\d{2}){0,2}$/.test(r) && r !== region) { region = r; loadRegions().then(refresh).catch(() => {}); }
  if (/^\d{13}$/.test(code)) showStation(code).catch(() => {});
});
setInterval(() => { if (token && $("#app").style.display !== "none") refresh().catch(() => {}); }, 30000);
start();
