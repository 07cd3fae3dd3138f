// The daemon's APIs as the UI calls them: the admin's credentials, same-origin fetch, errors as text.
//
// The credentials are kept in this tab's sessionStorage (gone when the tab closes) and sent by this
// script as an Authorization header. Every fetch uses credentials: "omit", so the browser neither
// stores them (no cookie, no HTTP-auth cache) nor shows its own login prompt on a 401: a request
// another site makes to this daemon carries no credentials (docs/ui.md, "Why it is safe").

const KEY = "faasd.auth";

export class ApiError extends Error {
  constructor(status, message, retryAfter = "") {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function base64(text) {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

export function basicAuth(user, password) {
  return "Basic " + base64(`${user}:${password}`);
}

export function savedAuth() {
  return sessionStorage.getItem(KEY);
}

export function saveAuth(header) {
  sessionStorage.setItem(KEY, header);
}

export function forgetAuth() {
  sessionStorage.removeItem(KEY);
}

/** This page (file and query), to come back to after logging in. */
function here() {
  return (location.pathname.split("/").pop() || "index.html") + location.search;
}

export function toLogin() {
  location.assign("login.html?next=" + encodeURIComponent(here()));
}

/** The message of an error answer: the gateway's one line, or the "error" of a JSON one (/api/*). */
export async function errorText(response) {
  const text = (await response.text()).trim();
  try {
    const document = JSON.parse(text);
    if (document && typeof document.error === "string") return document.error;
  } catch {
    // Not JSON: the gateway's one line of text.
  }
  return text || `HTTP ${response.status}`;
}

/**
 * fetch() for the daemon's own routes. auth: send the admin's credentials (a 401 goes to the login
 * page); json: send it as application/json (what /system/* writes need). Resolves with the Response
 * when it is a success (2xx); rejects with an ApiError saying why otherwise.
 */
export async function call(path, { method = "GET", json, body, headers, auth = true, signal } = {}) {
  const sent = new Headers(headers || {});
  if (auth) {
    const saved = savedAuth();
    if (!saved) {
      toLogin();
      throw new ApiError(401, "not logged in");
    }
    sent.set("Authorization", saved);
  }
  if (json !== undefined) {
    sent.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  }
  const response = await fetch(path, {
    method,
    headers: sent,
    body,
    credentials: "omit",
    cache: "no-store",
    redirect: "error",
    signal,
  });
  if (response.ok) return response;
  if (response.status === 401 && auth) {
    forgetAuth();
    toLogin();
  }
  throw new ApiError(response.status, await errorText(response), response.headers.get("Retry-After") || "");
}

export async function getJson(path, options) {
  return (await call(path, options)).json();
}
