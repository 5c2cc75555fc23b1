// Shared by the review page (app.js) and the dashboard (dashboard.js), loaded
// before either: DOM building, the API call with the session's CSRF token, and
// sign-in / sign-out. Each page defines showLogin(message) and signedIn(session),
// which these call. Everything from the API goes through textContent.
"use strict";

const auth = { csrf: null };  // the signed-in session's CSRF token, sent on every write

const $ = (id) => document.getElementById(id);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

function detailOf(data, status) {
  if (data && typeof data.detail === "string") return data.detail;
  if (data && Array.isArray(data.detail) && data.detail.length) {
    const first = data.detail[0];
    return `${(first.loc || []).filter((p) => p !== "body").join(".")}: ${first.msg}`;
  }
  return `HTTP ${status}`;
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && auth.csrf) headers["X-CSRF-Token"] = auth.csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  if (response.status !== 204) { try { data = await response.json(); } catch { data = null; } }
  if (!response.ok) {
    if (response.status === 401 && path !== "/api/session") showLogin("Session ended; sign in again.");
    throw new ApiError(response.status, detailOf(data, response.status));
  }
  return data;
}

async function login(event) {
  event.preventDefault();
  try {
    const session = await api("POST", "/api/session", { token: $("token").value.trim() });
    $("token").value = "";
    await signedIn(session);
  } catch (error) {
    $("login-error").textContent = error.status === 401 ? "That token is not valid." : error.message;
  }
}

async function logout() {
  try { await api("DELETE", "/api/session"); } finally { showLogin("Signed out."); }
}
