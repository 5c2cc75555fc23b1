// hitl dashboard: the health metrics of /api/dashboard as tiles, the alerts with
// their diagnosis, and trend plots drawn here as inline SVG (no chart library).
// Everything from the API goes through textContent: task types are data.
"use strict";

const REFRESH_MS = 60000;
const SVG = "http://www.w3.org/2000/svg";
const W = 460, H = 200, PAD = { left: 54, right: 12, top: 12, bottom: 26 };
const state = { data: null, loading: false, again: false };

// ------------------------------------------------------------------ helpers
// $, h, api, login and logout are in common.js.

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function toast(message, kind) {
  const el = $("toast");
  el.textContent = message;
  el.className = `toast ${kind || ""}`;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}

const pct = (x, digits = 1) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(digits)}%`);
const money = (x) => (x === null || x === undefined ? "–" : `$${x < 1 ? x.toFixed(4) : x.toFixed(2)}`);
const num = (x, digits = 2) => (x === null || x === undefined ? "–" : x.toFixed(digits));

function secs(x) {
  if (x === null || x === undefined) return "–";
  if (x < 60) return `${Math.round(x)}s`;
  if (x < 3600) return `${Math.floor(x / 60)}m${String(Math.round(x % 60)).padStart(2, "0")}s`;
  return `${Math.floor(x / 3600)}h${String(Math.floor((x % 3600) / 60)).padStart(2, "0")}m`;
}

function when(iso, bucket) {
  const d = new Date(iso);
  const day = d.toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
  if (bucket !== "hour") return day;
  return `${day} ${String(d.getUTCHours()).padStart(2, "0")}:00`;
}

// ------------------------------------------------------------------ session

function showLogin(message) {
  auth.csrf = null;
  $("dash").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

async function signedIn(session) {
  auth.csrf = session.csrf_token;
  $("who").textContent = session.reviewer;
  $("login").hidden = true;
  $("dash").hidden = false;
  $("logout").hidden = false;
  await load();
}

// --------------------------------------------------------------------- load

async function load() {
  if (state.loading) { state.again = true; return; }  // the newest choice wins, once
  state.loading = true;
  state.again = false;
  if (!state.data) $("span").textContent = "computing the metrics…";
  const [days, bucket] = $("range").value.split(":");
  const params = new URLSearchParams({ days, bucket });
  if ($("task").value) params.set("task_type", $("task").value);
  try {
    state.data = await api("GET", `/api/dashboard?${params}`);
    render();
  } catch (error) {
    if (error.status !== 401) toast(`dashboard: ${error.message}`, "error");
  } finally {
    state.loading = false;
    if (state.again) load();
  }
}

function render() {
  const d = state.data;
  const select = $("task");
  const chosen = select.value;
  const types = new Set(d.task_types);
  if (chosen) types.add(chosen);
  select.replaceChildren(h("option", { value: "" }, "all task types"),
    ...[...types].sort().map((t) => h("option", { value: t }, t)));
  select.value = chosen;
  $("span").textContent = `${when(d.since, d.bucket)} – ${when(d.until, d.bucket)} UTC · `
    + `${d.headline.decisions} decisions · updated ${new Date(d.generated_at).toLocaleTimeString()}`;
  renderTiles(d);
  renderAlerts(d.alerts);
  renderCharts(d);
}

// -------------------------------------------------------------------- tiles

function tile(label, value, note, target, status) {
  return h("div", { class: `tile ${status || ""}`, "data-metric": label },
    h("span", { class: "tile-label" }, label),
    h("span", { class: "tile-value" }, value),
    h("span", { class: "tile-note" }, note),
    h("span", { class: "tile-target" }, target));
}

const ratio = (r) => `${r.count}/${r.total}`;

function renderTiles(d) {
  const m = d.headline;
  const e = m.error_escape;
  const k = m.reviewers.kappa;
  const a = m.reviewers.alpha;
  const agree = m.model_agreement;
  const within = (v, lo, hi) => (v === null ? "" : v >= lo && v <= hi ? "ok" : "warn");
  let escape = "";
  if (e.value !== null) escape = e.lower !== null && e.lower > 0.02 ? "bad" : e.value > 0.02 ? "warn" : "ok";
  let agreement = "";
  if (agree.value !== null) agreement = agree.value < 0.85 ? "bad" : agree.value > 0.9 && agree.total >= 20 ? "warn" : "ok";
  const latency = m.latency.p95 === null ? "" : m.latency.p95 < 300 ? "ok" : "warn";
  const kappa = k.value === null ? "" : k.value >= 0.6 ? "ok" : "bad";
  const feedback = m.feedback.structured.value === null ? "" : m.feedback.structured.value >= 0.8 ? "ok" : "warn";
  const backlog = m.backlog.arrivals > m.backlog.reviewed ? "warn" : "ok";
  const awaiting = m.audits_awaiting_verdict ? `; ${m.audits_awaiting_verdict} awaiting a verdict` : "";
  $("tiles").replaceChildren(
    tile("Escalation rate", pct(m.escalation.value), `${ratio(m.escalation)} routed to a person`,
      "target 15–30%, domain-dependent", within(m.escalation.value, 0.15, 0.30)),
    tile("Auto-resolve rate", pct(m.auto_resolve.value), `${ratio(m.auto_resolve)} ran alone`,
      "target 70–85%", within(m.auto_resolve.value, 0.70, 0.85)),
    tile("Error escape rate", pct(e.value), e.lower === null ? `${ratio(e)} audited${awaiting}`
      : `${ratio(e)} audited, ${Math.round(e.confidence * 100)}% CI ${pct(e.lower, 2)}–${pct(e.upper, 2)}${awaiting}`,
    "target < 2%", escape),
    tile("Review latency p95", secs(m.latency.p95), `p50 ${secs(m.latency.p50)} · n = ${m.latency.n} reviews`,
      "target p95 < 5 min", latency),
    tile("Model agreement", pct(agree.value), `${ratio(agree)} approved unchanged`,
      "target > 85%; > 90% may be too strict", agreement),
    tile("Reviewer agreement", k.value === null ? "–" : `κ ${num(k.value)}`,
      k.value === null ? k.reason : `${k.n} pairs · α ${a.value === null ? "–" : num(a.value)} (${a.n} decisions)`,
      "target κ ≥ 0.60", kappa),
    tile("Feedback utilization", pct(m.feedback.structured.value),
      `${ratio(m.feedback.structured)} corrections with an answer or category`,
      m.feedback.days_since_recalibration === null ? "last recalibration: never"
        : `recalibrated ${Math.round(m.feedback.days_since_recalibration)} days ago`, feedback),
    tile("Cost per decision", money(m.cost.per_decision),
      `${money(m.cost.total)} total · ${m.cost.judge_calls} judge calls · ${m.cost.human_reviews} reviews`,
      `judge $${d.unit_costs.judge}, human $${d.unit_costs.human.toFixed(2)} each`, ""),
    tile("Review backlog", `${m.backlog.waiting} waiting`,
      `${m.backlog.arrivals} arrived · ${m.backlog.reviewed} decided · ${m.backlog.unreviewed} unreviewed`,
      "arrivals ≤ reviews", backlog),
  );
}

// ------------------------------------------------------------------- alerts

function renderAlerts(alerts) {
  const list = $("alerts");
  if (!alerts.length) {
    list.replaceChildren(h("li", { class: "none" }, "No alerts: none of the known anti-patterns shows in this range."));
    return;
  }
  list.replaceChildren(...alerts.map((a) => h("li", { class: `alert ${a.severity}` },
    h("div", { class: "alert-head" }, h("span", { class: `badge sev-${a.severity}` }, a.severity),
      h("span", { class: "alert-code" }, a.code), h("span", { class: "muted" }, a.scope)),
    h("div", {}, a.message),
    h("div", { class: "alert-action" }, a.action))));
}

// ------------------------------------------------------------------- charts

function renderCharts(d) {
  const pts = d.series;
  const x = pts.map((p) => p.since);
  const rate = (key) => pts.map((p) => ({ y: p[key].value, note: `${p[key].count}/${p[key].total}` }));
  $("charts").replaceChildren(
    chart({ title: "Escalation and auto-resolve rate", x, bucket: d.bucket, format: pct, max: 1,
      band: [0.15, 0.30], bandLabel: "escalation target",
      series: [{ name: "escalation", values: rate("escalation") },
        { name: "auto-resolve", values: rate("auto_resolve") }] }),
    chart({ title: "Review latency", x, bucket: d.bucket, format: secs,
      targets: [{ y: 300, label: "p95 target 5 min" }],
      series: [{ name: "p50", values: pts.map((p) => ({ y: p.latency.p50, note: `n = ${p.latency.n}` })) },
        { name: "p95", values: pts.map((p) => ({ y: p.latency.p95, note: `n = ${p.latency.n}` })) }] }),
    chart({ title: "Model agreement (approved unchanged)", x, bucket: d.bucket, format: pct, max: 1,
      targets: [{ y: 0.85, label: "85%" }], series: [{ name: "agreement", values: rate("model_agreement") }] }),
    chart({ title: "Error escape rate, with 95% interval", x, bucket: d.bucket, format: (v) => pct(v, 2),
      targets: [{ y: 0.02, label: "2%" }],
      series: [{ name: "audited errors", values: pts.map((p) => ({ y: p.error_escape.value,
        lo: p.error_escape.lower, hi: p.error_escape.upper,
        note: `${p.error_escape.count}/${p.error_escape.total}` + (p.error_escape.lower === null ? ""
          : `, CI ${pct(p.error_escape.lower, 2)}–${pct(p.error_escape.upper, 2)}`) })) }] }),
    chart({ title: "Volume", x, bucket: d.bucket, format: (v) => String(Math.round(v)), bars: 0, integer: true,
      series: [{ name: "decisions", values: pts.map((p) => ({ y: p.decisions })) },
        { name: "reached a person", values: pts.map((p) => ({ y: p.arrivals })) },
        { name: "reviews", values: pts.map((p) => ({ y: p.reviews })) }] }),
    chart({ title: "Cost per decision", x, bucket: d.bucket, format: money,
      series: [{ name: "cost", values: pts.map((p) => ({ y: p.cost_per_decision, note: `${p.decisions} decisions` })) }] }),
  );
}

function niceMax(value, integer) {
  if (!(value > 0)) return integer ? 4 : 1;
  const power = 10 ** Math.floor(Math.log10(value));
  let top = 10 * power;
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) { top = step * power; break; }
  return integer ? Math.ceil(top / 4) * 4 : top;  // four whole-number gridlines
}

// A line chart (or, for series index ``bars``, bars) over the buckets ``x``.
// Points with y = null are gaps, never zeros; each point has a <title> and the
// chart reads out the bucket under the pointer or the keyboard cursor.
function chart({ title, x, bucket, series, format, max, targets = [], band, bandLabel, bars, integer }) {
  const n = x.length;
  const innerW = W - PAD.left - PAD.right, innerH = H - PAD.top - PAD.bottom;
  const all = series.flatMap((sr) => sr.values.flatMap((v) => [v.y, v.hi])).filter((v) => v !== null && v !== undefined);
  const top = max ?? niceMax(Math.max(...all, ...targets.map((t) => t.y * 1.15), 0), integer);
  const px = (i) => PAD.left + (n <= 1 ? innerW / 2 : (i * innerW) / (n - 1));
  const py = (v) => PAD.top + innerH - (Math.min(v, top) / top) * innerH;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "trend", role: "img", tabindex: 0,
    "aria-label": `${title}: ${n} buckets; use the arrow keys to read them` });

  for (let t = 0; t <= 4; t++) {
    const v = (top * t) / 4;
    svg.append(s("line", { class: "grid-line", x1: PAD.left, x2: W - PAD.right, y1: py(v), y2: py(v) }),
      s("text", { class: "axis-label", x: PAD.left - 6, y: py(v) + 4, "text-anchor": "end" }, format(v)));
  }
  for (const i of [...new Set([0, Math.floor((n - 1) / 2), n - 1])].filter((i) => i >= 0)) {
    svg.append(s("text", { class: "axis-label", x: px(i), y: H - 6,
      "text-anchor": n <= 1 ? "middle" : i === 0 ? "start" : i === n - 1 ? "end" : "middle" }, when(x[i], bucket)));
  }
  if (band) {
    svg.append(s("rect", { class: "band", x: PAD.left, width: innerW, y: py(band[1]),
      height: Math.max(0, py(band[0]) - py(band[1])) }, s("title", {}, `${bandLabel} ${format(band[0])}–${format(band[1])}`)));
  }
  for (const target of targets) {
    if (target.y > top) continue;
    svg.append(s("line", { class: "target", x1: PAD.left, x2: W - PAD.right, y1: py(target.y), y2: py(target.y) }),
      s("text", { class: "target-label", x: W - PAD.right, y: py(target.y) - 3, "text-anchor": "end" }, target.label));
  }
  const cursor = s("line", { class: "cursor", y1: PAD.top, y2: PAD.top + innerH, visibility: "hidden" });
  svg.append(cursor);

  const slot = n ? innerW / n : innerW;
  let plotted = 0;
  series.forEach((sr, k) => {
    const cls = `s${k % 3}`;
    if (bars === k) {
      sr.values.forEach((v, i) => {
        if (v.y === null || v.y === undefined) return;
        const width = Math.max(2, Math.min(24, slot * 0.6));
        svg.append(s("rect", { class: `bar-rect ${cls}`, x: px(i) - width / 2, y: py(v.y), width,
          height: Math.max(0, PAD.top + innerH - py(v.y)) }, s("title", {}, `${when(x[i], bucket)}: ${sr.name} ${format(v.y)}`)));
        plotted += 1;
      });
      return;
    }
    let d = "";
    let open = false;
    sr.values.forEach((v, i) => {
      if (v.y === null || v.y === undefined) { open = false; return; }
      d += `${open ? "L" : "M"}${px(i).toFixed(1)},${py(v.y).toFixed(1)}`;
      open = true;
    });
    if (d) svg.append(s("path", { class: `line ${cls}`, d }));
    sr.values.forEach((v, i) => {
      if (v.y === null || v.y === undefined) return;
      if (v.lo !== null && v.lo !== undefined && v.hi !== null && v.hi !== undefined) {
        svg.append(s("line", { class: `ci ${cls}`, x1: px(i), x2: px(i), y1: py(v.lo), y2: py(v.hi) }));
      }
      svg.append(s("circle", { class: `point ${cls}`, cx: px(i), cy: py(v.y), r: n > 60 ? 2.5 : 3.5,
        "data-index": i }, s("title", {}, `${when(x[i], bucket)}: ${sr.name} ${format(v.y)}${v.note ? ` (${v.note})` : ""}`)));
      plotted += 1;
    });
  });
  if (!plotted) {
    svg.append(s("text", { class: "empty-chart", x: PAD.left + innerW / 2, y: PAD.top + innerH / 2,
      "text-anchor": "middle" }, "no data in this range"));
  }

  const readout = h("div", { class: "chart-readout", "aria-live": "polite" });
  let at = -1;
  const show = (i) => {
    at = Math.max(0, Math.min(n - 1, i));
    cursor.setAttribute("visibility", "visible");
    cursor.setAttribute("x1", px(at));
    cursor.setAttribute("x2", px(at));
    for (const c of svg.querySelectorAll("circle.point")) c.classList.toggle("active", Number(c.dataset.index) === at);
    readout.textContent = `${when(x[at], bucket)}: ` + series.map((sr) => {
      const v = sr.values[at];
      return `${sr.name} ${v.y === null || v.y === undefined ? "–" : format(v.y)}${v.note && v.y !== null ? ` (${v.note})` : ""}`;
    }).join(" · ");
  };
  svg.addEventListener("mousemove", (event) => {
    const box = svg.getBoundingClientRect();
    const sx = ((event.clientX - box.left) / box.width) * W;
    if (n) show(n <= 1 ? 0 : Math.round(((sx - PAD.left) / innerW) * (n - 1)));
  });
  svg.addEventListener("keydown", (event) => {
    if (!n) return;
    const moves = { ArrowRight: 1, ArrowLeft: -1, Home: -n, End: n };
    if (!(event.key in moves)) return;
    event.preventDefault();
    show(at < 0 ? (moves[event.key] > 0 ? 0 : n - 1) : at + moves[event.key]);
  });
  svg.addEventListener("focus", () => { if (at < 0 && n) show(n - 1); });

  const legend = h("div", { class: "chart-legend" }, series.map((sr, k) =>
    h("span", {}, h("span", { class: `key s${k % 3}` }), sr.name)));
  return h("section", { class: "chart", "data-chart": title }, h("h3", {}, title), legend, svg, readout);
}

// ------------------------------------------------------------------ wiring

function onKey(event) {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName);
  if (typing || event.ctrlKey || event.metaKey || event.altKey || $("dash").hidden) return;
  if (event.key === "u") { event.preventDefault(); load(); }
  else if (event.key === "q") { window.location.href = "/"; }
  else if (/^[1-4]$/.test(event.key)) {
    $("range").selectedIndex = Number(event.key) - 1;
    load();
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("controls").addEventListener("change", () => load());
  $("controls").addEventListener("submit", (e) => { e.preventDefault(); load(); });
  $("refresh").addEventListener("click", () => load());
  document.addEventListener("keydown", onKey);
  setInterval(() => { if (!$("dash").hidden && !document.hidden) load(); }, REFRESH_MS);
  try { await signedIn(await api("GET", "/api/session")); } catch { showLogin(); }
});
