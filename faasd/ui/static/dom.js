// What every page shares: building elements (text only, never HTML), the error line, polling, the
// header's log-out button.

import { forgetAuth, savedAuth, toLogin } from "./api.js";

export function $(id) {
  return document.getElementById(id);
}

/** A new element: attributes set as given ("text" becomes its text), children appended (strings as text). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** Show what went wrong in the page's error line (role="alert": read out by screen readers). */
export function showError(error) {
  const line = $("error");
  const message = error instanceof Error ? error.message : String(error);
  if (line) {
    line.textContent = message;
    line.hidden = false;
  }
}

export function clearError() {
  const line = $("error");
  if (line && !line.hidden) {
    line.hidden = true;
    line.textContent = "";
  }
}

/**
 * Run fn now and every ms milliseconds after it finishes (not while the tab is hidden). A failure is shown
 * in the error line until a later run succeeds; an error a user's action showed there is left alone.
 */
export function every(ms, fn) {
  let timer = null;
  let failing = false;
  const tick = async () => {
    timer = null;
    if (!document.hidden) {
      try {
        await fn();
        if (failing) clearError();
        failing = false;
      } catch (error) {
        showError(error);
        failing = true;
      }
    }
    timer = setTimeout(tick, ms);
  };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer !== null) {
      clearTimeout(timer);
      tick();
    }
  });
  tick();
}

/** Every page but the login one: needs credentials; wires "Log out" and marks the current link. */
export function setupPage() {
  if (!savedAuth()) {
    toLogin();
    return false;
  }
  $("logout")?.addEventListener("click", () => {
    forgetAuth();
    location.assign("login.html");
  });
  const page = location.pathname.split("/").pop() || "index.html";
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === page || (page === "index.html" && link.getAttribute("href") === "./")) {
      link.setAttribute("aria-current", "page");
    }
  }
  return true;
}

export function formatCount(value) {
  return Number.isFinite(value) ? Math.round(value).toLocaleString("en") : "–";
}

export function formatLoad(value) {
  if (!Number.isFinite(value)) return "–";
  return value >= 10 ? value.toFixed(0) : value.toFixed(value >= 1 ? 1 : 2);
}

/** "12 % (3 of 25)": the share of calls that failed, or "no calls yet". */
export function formatErrors(errors, calls) {
  return calls ? `${formatPercent(errors, calls)} (${formatCount(errors)} of ${formatCount(calls)})` : "no calls yet";
}

export function formatPercent(part, whole) {
  if (!whole) return "–";
  const percent = (100 * part) / whole;
  return (percent > 0 && percent < 0.1 ? "<0.1" : percent.toFixed(percent >= 10 ? 0 : 1)) + " %";
}

/**
 * "KEY=VALUE" (or another separator) per line into an object; blank lines skipped. A line without the
 * separator, or an empty key, throws naming the line (what), so a form can say which one is wrong.
 */
export function parsePairs(text, what, separator = "=") {
  const pairs = {};
  text.split("\n").forEach((raw, index) => {
    const line = raw.trim();
    if (!line) return;
    const at = line.indexOf(separator);
    if (at <= 0) throw new Error(`${what}, line ${index + 1}: expected NAME${separator}VALUE, got "${line}"`);
    pairs[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  });
  return pairs;
}

/** The function named in this page's query (?name=), or "" when none. */
export function queryName() {
  return new URLSearchParams(location.search).get("name") || "";
}

export function functionHref(name) {
  return "function.html?name=" + encodeURIComponent(name);
}

/**
 * Ask in the page's #confirm dialog (modal, Escape cancels) whether to delete what: resolves true only
 * when "Delete" is pressed. Focus starts on "Cancel", the harmless choice.
 */
export function confirmDelete(what) {
  const dialog = $("confirm");
  $("confirm-name").textContent = what;
  return new Promise((resolve) => {
    const finish = (answer) => {
      dialog.removeEventListener("close", onClose);
      $("confirm-delete").removeEventListener("click", onDelete);
      $("confirm-cancel").removeEventListener("click", onCancel);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onClose = () => finish(false);
    const onDelete = () => finish(true);
    const onCancel = () => finish(false);
    dialog.addEventListener("close", onClose);
    $("confirm-delete").addEventListener("click", onDelete);
    $("confirm-cancel").addEventListener("click", onCancel);
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}
