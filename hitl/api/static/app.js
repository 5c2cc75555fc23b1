// hitl review page: the queue on the left, one decision at a time on the right.
// Keyboard first (? for help). Everything rendered from the API goes through
// textContent: model output and request context are data, never markup.
"use strict";

const PAGE_SIZE = 50;
const REFRESH_MS = 20000;
const state = {
  reviewer: null, vocabulary: null,
  items: [], total: 0, offset: 0, index: -1,
  view: null, panel: null, category: null, busy: false,
  openedAt: 0, hiddenMs: 0, hiddenSince: null,
};

// ------------------------------------------------------------------ helpers
// $, h, api, login and logout are in common.js.

function requestId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function toast(message, kind) {
  const el = $("toast");
  el.textContent = message;
  el.className = `toast ${kind || ""}`;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}

function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const hrs = Math.floor(m / 60);
  return hrs < 48 ? `${hrs}h ${String(m % 60).padStart(2, "0")}m` : `${Math.floor(hrs / 24)}d`;
}

function slaText(deadline, status) {
  if (status === "provisional") return "delivered · may be revised";
  if (!deadline) return "no SLA";
  const left = new Date(deadline).getTime() - Date.now();
  return left >= 0 ? `${duration(left)} left` : `overdue ${duration(-left)}`;
}

function badge(text, kind) { return h("span", { class: `badge ${kind || ""}` }, text); }
function pct(x) { return `${Math.round(x * 100)}%`; }

function bar(value, kind) {
  const fill = h("span", { class: `bar-fill ${kind || ""}` });
  fill.style.width = pct(Math.max(0, Math.min(1, value)));
  return h("span", { class: "bar" }, fill);
}

// ------------------------------------------------------------------ session

function showLogin(message) {
  auth.csrf = null;
  $("app").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

async function signedIn(session) {
  auth.csrf = session.csrf_token;
  state.reviewer = session.reviewer;
  $("who").textContent = `${session.reviewer} · may decide ${session.risks.join(", ")}`;
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  if (!state.vocabulary) {
    state.vocabulary = await api("GET", "/api/vocabulary");
    for (const zone of state.vocabulary.zones) $("f-zone").append(h("option", { value: zone }, zone));
    for (const risk of state.vocabulary.risks) $("f-risk").append(h("option", { value: risk }, risk));
  }
  await loadQueue({ select: 0 });
}

// -------------------------------------------------------------------- queue

function filters() {
  const params = new URLSearchParams({ limit: PAGE_SIZE, offset: state.offset });
  for (const [key, id] of [["zone", "f-zone"], ["risk", "f-risk"], ["task_type", "f-task"],
    ["overdue", "f-overdue"]]) {
    const value = $(id).value.trim();
    if (value) params.set(key, value);
  }
  return params;
}

async function loadQueue({ select } = {}) {
  const current = state.items[state.index]?.decision_id;
  let page;
  try { page = await api("GET", `/api/queue?${filters()}`); } catch (error) {
    if (error.status !== 401) $("queue-count").textContent = `queue unavailable: ${error.message}`;
    return;
  }
  state.items = page.items;
  state.total = page.total;
  renderQueue();
  let index = select ?? state.items.findIndex((item) => item.decision_id === current);
  if (index < 0) index = Math.min(Math.max(state.index, 0), state.items.length - 1);
  if (state.items[index]?.decision_id !== current || !state.view) await open(index);
  else { state.index = index; markSelected(); }
}

function renderQueue() {
  const list = $("queue");
  list.replaceChildren();
  state.items.forEach((item, i) => {
    const provisional = item.status === "provisional";
    const kind = item.overdue ? "overdue" : provisional ? "provisional" : `p${item.priority}`;
    list.append(h("li", { class: `item ${kind}`, dataset: { index: i, id: item.decision_id },
      onclick: () => open(i) },
    h("div", { class: "item-top" },
      h("span", { class: "item-id" }, item.decision_id),
      item.overdue ? badge("overdue", "danger") : null,
      provisional ? badge("may be revised", "warn") : null),
    h("div", { class: "item-meta" },
      h("span", { class: "task" }, item.task_type || "?"),
      badge(item.zone || "?", `zone-${item.zone}`), badge(item.risk || "?", `risk-${item.risk}`)),
    h("div", { class: "item-meta" },
      h("span", { class: "conf" }, bar(item.confidence ?? 0), (item.confidence ?? 0).toFixed(2)),
      h("span", { class: "sla", dataset: { deadline: item.sla_deadline || "", status: item.status } },
        slaText(item.sla_deadline, item.status)))));
  });
  const first = state.total ? state.offset + 1 : 0;
  const last = state.offset + state.items.length;
  $("queue-count").textContent = `${first}–${last} of ${state.total} waiting`;
  $("prev-page").disabled = state.offset === 0;
  $("next-page").disabled = last >= state.total;
  markSelected();
}

function markSelected() {
  for (const li of $("queue").children) {
    li.classList.toggle("selected", Number(li.dataset.index) === state.index);
  }
  $("queue").children[state.index]?.scrollIntoView({ block: "nearest" });
}

function move(step) {
  if (!state.items.length) return;
  open(Math.max(0, Math.min(state.items.length - 1, state.index + step)));
}

// ----------------------------------------------------------------- decision

async function open(index) {
  closePanel();
  state.index = index;
  markSelected();
  const item = state.items[index];
  if (!item) { state.view = null; renderEmpty(); return; }
  let view;
  try {
    view = await api("GET", `/api/decisions/${encodeURIComponent(item.decision_id)}/review`);
  } catch (error) {
    if (state.index === index && error.status !== 401) {
      toast(`${item.decision_id}: ${error.message}`, "error");
    }
    return;
  }
  // A reviewer pressing j twice fires two loads; the slower, older one must not
  // overwrite the decision the selection has since moved to.
  if (state.index !== index || state.items[index] !== item) return;
  state.view = view;
  state.openedAt = performance.now();
  state.hiddenMs = 0;
  state.hiddenSince = document.hidden ? performance.now() : null;
  renderDecision();
}

function timeOnPage() {
  const now = performance.now();
  const hidden = state.hiddenMs + (state.hiddenSince === null ? 0 : now - state.hiddenSince);
  return Math.max(0, (now - state.openedAt - hidden) / 1000);
}

function renderEmpty() {
  $("decision").replaceChildren(h("div", { class: "empty" },
    h("p", {}, state.total ? "Select a decision." : "The queue is empty."),
    h("p", { class: "hint" }, "Press ? for the keyboard shortcuts.")));
}

function card(title, ...body) {
  return h("section", { class: "card" }, h("h3", {}, title), ...body);
}

function kv(rows) {
  return h("table", { class: "kv" }, rows.filter(Boolean).map(([key, value]) =>
    h("tr", {}, h("th", {}, key), h("td", {}, value))));
}

function fmtValue(value) {
  return typeof value === "object" && value !== null ? JSON.stringify(value) : String(value);
}

function renderDecision() {
  const { state: s, request: r, content: c, similar } = state.view;
  const assessment = s.rules?.assessment;
  const overdue = s.overdue || (s.status === "pending_review" && s.sla_deadline
    && new Date(s.sla_deadline) < new Date());
  const head = h("header", { class: "d-head" },
    h("div", { class: "d-title" },
      h("h2", {}, s.decision_id),
      h("div", { class: "badges" },
        badge(s.status.replace("_", " "), `status-${s.status}`), badge(s.zone || "?", `zone-${s.zone}`),
        badge(`${s.risk || "?"} risk`, `risk-${s.risk}`),
        overdue ? badge("overdue", "danger") : null,
        s.status === "provisional" ? badge("delivered · may be revised", "warn") : null)),
    h("div", { class: "d-sub" },
      h("span", {}, s.task_type), h("span", {}, `submitted ${duration(Date.now() - new Date(s.submitted_at))} ago`),
      assessment ? h("span", {}, `policy ${assessment.policy_version}`) : null,
      h("span", { id: "on-page" }, "0s on this decision")),
    h("div", { class: "d-figures" },
      h("div", { class: "figure" }, h("span", { class: "figure-label" }, "confidence"),
        h("span", { class: "figure-value" }, s.confidence.toFixed(2)),
        assessment ? h("span", { class: "figure-note" }, `threshold ${assessment.threshold.toFixed(2)}`) : null),
      h("div", { class: `figure ${overdue ? "danger" : ""}` }, h("span", { class: "figure-label" }, "SLA"),
        h("span", { class: "figure-value sla", dataset: { deadline: s.sla_deadline || "", status: s.status } },
          slaText(s.sla_deadline, s.status))),
      h("div", { class: "figure" }, h("span", { class: "figure-label" }, "approvals"),
        h("span", { class: "figure-value" }, `${s.approved_by.length} / ${s.approvals_required}`))));

  // What is up for approval now: a reviewer's edit (shown as a diff against the model's
  // proposal) or the proposal itself, after any regeneration. Approving names its digest.
  const action = c.action;
  const edited = c.edited_by ? h("div", { class: "edit-note" },
    badge(`edited by ${c.edited_by}`, "warn"),
    " Approving approves this edit, not the model's proposal. Changes:",
    h("pre", { class: "diff" }, c.diff.map((line) => h("span", {
      class: line.startsWith("+") && !line.startsWith("+++") ? "add"
        : line.startsWith("-") && !line.startsWith("---") ? "del" : "" }, `${line}\n`)))) : null;
  const output = card(c.edited_by ? "Edited output (up for approval)" : "Model output",
    edited,
    h("pre", { class: "output" }, c.output || "(empty)"),
    kv([["action", h("code", {}, action.type)],
      ["params", h("code", {}, JSON.stringify(action.params))],
      ["reversible", action.reversible ? "yes" : badge("no: runs once, cannot be undone", "danger")],
      action.target_url ? ["target", action.target_url] : null,
      r.outcome ? ["outcome", r.outcome] : null,
      c.rule_failures.length ? ["rules on this content", h("span", { class: "fail" }, c.rule_failures.join(", "))] : null,
      ["content", h("code", { class: "digest", title: c.sha256 }, `sha256:${c.sha256.slice(0, 16)}`)]]));

  const why = [];
  for (const reason of s.routing?.reasons || []) why.push(h("li", {}, reason));
  const rules = s.rules?.findings || [];
  const failed = rules.filter((f) => !f.passed);
  const whyCard = card("Why it needs a person",
    h("ul", { class: "reasons" }, why),
    kv([
      assessment ? ["threshold", `${assessment.threshold.toFixed(2)} (${assessment.threshold_source})`] : null,
      assessment ? ["risk", assessment.risk_reasons.join("; ") || assessment.risk] : null,
      ["rules", failed.length
        ? h("span", {}, ...failed.map((f) => h("div", { class: "fail" }, `✗ ${f.rule}`, f.detail ? `: ${f.detail}` : "")))
        : `all ${rules.length} passed`],
      s.judge ? ["judge", h("span", {}, badge(s.judge.status, `layer-${s.judge.status}`),
        s.judge.score !== null && s.judge.score !== undefined ? ` score ${s.judge.score.toFixed(2)}` : "",
        s.judge.reasons.length ? ` · ${s.judge.reasons.join("; ")}` : "")] : null,
    ]));

  const candidates = [...r.candidates].sort((a, b) => b.score - a.score).slice(0, 5);
  const alternatives = card("Top alternatives",
    candidates.length ? h("ol", { class: "candidates" }, candidates.map((c, i) =>
      h("li", { class: i === 0 ? "best" : "" }, h("span", { class: "cand-name" }, c.outcome),
        bar(c.score, i === 0 ? "accent" : ""), h("span", { class: "cand-score" }, c.score.toFixed(2)))))
      : h("p", { class: "muted" }, "The model reported no alternatives."));

  const context = card("Request context", kv(Object.entries(r.context).map(([k, v]) => [k, fmtValue(v)])));

  const reviews = s.reviews.map((rv) => h("li", { class: rv.accepted ? "" : "refused" },
    badge(rv.verdict, rv.verdict === "approve" ? "ok" : "danger"), ` ${rv.reviewer}`,
    rv.reason ? ` · ${rv.reason}` : "", rv.edited ? " · edited" : "",
    rv.flag_for_monitoring ? " · flagged" : "", rv.accepted ? "" : ` · refused: ${rv.refusal}`));
  const approvals = card(`Approvals (${s.approved_by.length} of ${s.approvals_required})`,
    s.blind_review ? h("p", { class: "muted" }, `Blind double review: your verdict is independent; ${s.hidden_reviews} other verdict(s) in, hidden until all are.`)
      : s.approvals_required > 1 ? h("p", { class: "muted" }, "Four-eyes: distinct approvers needed; one rejection vetoes.") : null,
    reviews.length ? h("ul", { class: "reviews" }, reviews) : h("p", { class: "muted" }, "No reviews yet."));

  const past = card("Similar past decisions",
    similar.length ? h("ul", { class: "similar" }, similar.map((p) => h("li", {},
      h("div", {}, badge(p.verdict, p.verdict === "approve" ? "ok" : "danger"),
        h("span", { class: "muted" }, ` ${pct(p.similarity)} alike · conf ${p.confidence.toFixed(2)} · ${p.reviewers.join(", ")}`),
        p.error_category ? badge(p.error_category, "") : null, p.edited ? badge("edited", "") : null),
      h("div", { class: "sim-output" }, p.output),
      p.correct_answer ? h("div", { class: "sim-correct" }, `correct: ${p.correct_answer}`) : null,
      p.reason ? h("div", { class: "muted" }, p.reason) : null)))
      : h("p", { class: "muted" }, "No human-reviewed decisions of this task type yet."),
    h("p", { class: "hint" }, "Same task type, ranked by word overlap of the output, then nearest confidence."));

  const actions = h("div", { class: "actions" },
    h("button", { class: "primary", type: "button", onclick: () => openPanel("approve") }, h("kbd", {}, "a"), " Approve"),
    h("button", { type: "button", onclick: () => openPanel("flag") }, h("kbd", {}, "f"), " Let through, flag"),
    h("button", { type: "button", onclick: () => openPanel("edit") }, h("kbd", {}, "e"), " Edit & approve"),
    h("button", { class: "danger", type: "button", onclick: () => openPanel("reject") }, h("kbd", {}, "r"), " Reject"),
    h("span", { class: "spacer" }),
    h("span", { class: "muted" }, h("kbd", {}, "j"), h("kbd", {}, "k"), " next/prev · ", h("kbd", {}, "?"), " help"));

  $("decision").replaceChildren(head,
    h("div", { class: "grid" }, output, whyCard, alternatives, context, approvals, past),
    h("div", { id: "panel", class: "panel", hidden: true }), actions);
}

// ------------------------------------------------------------------- panels

function openPanel(kind) {
  if (!state.view || state.busy) return;
  state.panel = kind;
  state.category = null;
  const panel = $("panel");
  const r = state.view.content;
  let body;
  if (kind === "approve" || kind === "flag") {
    const what = r.action.reversible ? "" : " It is irreversible.";
    body = [h("p", {}, kind === "flag"
      ? "Let it through and flag for monitoring. Enter confirms, Esc cancels."
      : `Approve: runs ${r.action.type} once enough approvers agree.${what} Enter confirms, Esc cancels.`),
    h("input", { id: "p-reason", type: "text", placeholder: "note (optional)", maxlength: 5000 })];
  } else if (kind === "reject") {
    const cats = state.vocabulary.error_categories;
    body = [h("p", {}, "Reject: pick the error category (1–9), then Enter."),
      h("ol", { class: "categories" }, cats.map((c, i) => h("li", { dataset: { category: c },
        onclick: () => pickCategory(c) }, h("kbd", {}, String(i + 1)), ` ${c.replace("_", " ")}`))),
      h("input", { id: "p-reason", type: "text", placeholder: "reason (optional; defaults to the category)", maxlength: 5000 }),
      h("input", { id: "p-correct", type: "text", placeholder: "correct answer (optional)" })];
  } else {
    body = [h("p", {}, "Edit what gets delivered, then Ctrl+Enter approves. Esc cancels."),
      h("label", { for: "p-output" }, "output"),
      h("textarea", { id: "p-output", rows: 4 }, r.output),
      h("label", { for: "p-action" }, "action (JSON)"),
      h("textarea", { id: "p-action", rows: 4, class: "mono" }, JSON.stringify(r.action, null, 2)),
      h("input", { id: "p-reason", type: "text", placeholder: "note (optional)", maxlength: 5000 })];
  }
  panel.replaceChildren(h("div", { class: `panel-inner ${kind}` }, ...body));
  panel.hidden = false;
  // Keys go to the page (digits pick a category, Enter confirms) until the
  // reviewer clicks into a field; the edit panel starts in its text.
  document.activeElement?.blur?.();
  if (kind === "edit") $("p-output").focus();
}

function pickCategory(category) {
  state.category = category;
  for (const li of $("panel").querySelectorAll("[data-category]")) {
    li.classList.toggle("picked", li.dataset.category === category);
  }
}

function closePanel() {
  state.panel = null;
  const panel = $("panel");
  if (panel) { panel.hidden = true; panel.replaceChildren(); }
}

async function submitPanel() {
  const kind = state.panel;
  if (!kind || state.busy) return;
  const s = state.view.state;
  const common = { request_id: requestId(), time_on_page_seconds: Number(timeOnPage().toFixed(2)),
    reason: $("p-reason")?.value.trim() || "", content_sha256: state.view.content.sha256 };
  let path = "approve";
  let body = common;
  if (kind === "flag") path = "flag";
  else if (kind === "reject") {
    if (!state.category) { toast("Pick an error category first (1–9).", "error"); return; }
    path = "reject";
    body = { ...common, error_category: state.category, reason: common.reason || state.category,
      correct_answer: $("p-correct").value.trim() || null };
  } else if (kind === "edit") {
    path = "edit";
    const original = state.view.content;
    body = { ...common };
    const output = $("p-output").value;
    if (output !== original.output) body.output = output;
    try {
      const action = JSON.parse($("p-action").value);
      if (JSON.stringify(action) !== JSON.stringify(original.action)) body.action = action;
    } catch { toast("The action is not valid JSON.", "error"); return; }
    if (body.output === undefined && body.action === undefined) {
      toast("Nothing edited: use a to approve as is.", "error"); return;
    }
  }
  state.busy = true;
  try {
    const ack = await api("POST", `/api/decisions/${encodeURIComponent(s.decision_id)}/${path}`, body);
    toast(`${s.decision_id}: ${ack.message}`, "ok");
    done(s.decision_id, ack);
  } catch (error) {
    if (error.status === 409 && /content up for approval changed/.test(error.message)) {
      toast(`${s.decision_id}: it changed while you looked; reloaded, review it again`, "warn");
      closePanel(); open(state.index);
    } else if (error.status === 409) { toast(`${s.decision_id}: ${error.message}`, "warn"); done(s.decision_id, null); }
    else if (error.status !== 401) toast(`${s.decision_id}: ${error.message}`, "error");
  } finally { state.busy = false; }
}

function done(decisionId, ack) {
  closePanel();
  const partial = ack && ack.accepted && ack.message.includes("another approver");
  if (!partial) {  // visibility lags a moment: drop it here rather than show it again
    const i = state.items.findIndex((item) => item.decision_id === decisionId);
    if (i >= 0) { state.items.splice(i, 1); state.total -= 1; }
    renderQueue();
    open(Math.min(state.index, state.items.length - 1));
  } else if (state.index < state.items.length - 1) move(1);
  else open(state.index);  // last one: show the approval just recorded
}

// ----------------------------------------------------------------- keyboard

function onKey(event) {
  if (event.ctrlKey && event.key === "Enter" && state.panel === "edit") {
    event.preventDefault(); submitPanel(); return;
  }
  if (event.key === "Escape") {
    if (!$("help").hidden) $("help").hidden = true; else closePanel();
    document.activeElement?.blur?.();
    return;
  }
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName);
  if (event.key === "Enter" && state.panel && state.panel !== "edit" && !$("app").hidden) {
    event.preventDefault(); submitPanel(); return;
  }
  if (typing || event.ctrlKey || event.metaKey || event.altKey || $("app").hidden) return;
  if (state.panel === "reject" && /^[1-9]$/.test(event.key)) {
    const category = state.vocabulary.error_categories[Number(event.key) - 1];
    if (category) pickCategory(category);
    event.preventDefault();
    return;
  }
  const actions = {
    j: () => move(1), n: () => move(1), ArrowDown: () => move(1),
    k: () => move(-1), ArrowUp: () => move(-1),
    a: () => openPanel("approve"), f: () => openPanel("flag"), e: () => openPanel("edit"),
    r: () => openPanel("reject"), u: () => loadQueue(), "?": () => { $("help").hidden = !$("help").hidden; },
  };
  const action = actions[event.key];
  if (action) { event.preventDefault(); action(); }
}

// --------------------------------------------------------------------- tick

function tick() {
  for (const el of document.querySelectorAll(".sla[data-deadline]")) {
    el.textContent = slaText(el.dataset.deadline, el.dataset.status);
    const overdue = el.dataset.status === "pending_review" && el.dataset.deadline
      && new Date(el.dataset.deadline) < new Date();
    el.classList.toggle("late", Boolean(overdue));
  }
  const onPage = $("on-page");
  if (onPage && state.view) onPage.textContent = `${duration(timeOnPage() * 1000)} on this decision`;
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) state.hiddenSince = performance.now();
  else if (state.hiddenSince !== null) {
    state.hiddenMs += performance.now() - state.hiddenSince;
    state.hiddenSince = null;
  }
});

document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("help-button").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
  $("help").addEventListener("click", () => { $("help").hidden = true; });
  $("filters").addEventListener("change", () => { state.offset = 0; loadQueue({ select: 0 }); });
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); state.offset = 0; loadQueue({ select: 0 }); });
  $("prev-page").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); loadQueue({ select: 0 }); });
  $("next-page").addEventListener("click", () => { state.offset += PAGE_SIZE; loadQueue({ select: 0 }); });
  document.addEventListener("keydown", onKey);
  setInterval(tick, 1000);
  setInterval(() => { if (!$("app").hidden && !state.panel && !document.hidden) loadQueue(); }, REFRESH_MS);
  try { await signedIn(await api("GET", "/api/session")); } catch { showLogin(); }
});
