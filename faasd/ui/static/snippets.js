// The Flock-of-Birds snippets (snippets.html): their ids, functions, replicas, calls and source; an
// upload form (POST /api/gen) and a call form (GET /api/call/ID?k:v,...). Refreshed every 3 s.

import { call, errorText, getJson } from "./api.js";
import { $, confirmDelete, el, every, formatCount, functionHref, setupPage, showError } from "./dom.js";

const POLL_MS = 3000;
const cards = new Map();

function newCard(id) {
  const functionName = `fob-${id}`;
  const source = el("pre", { class: "source", hidden: true, tabindex: "0", "aria-label": `Source of ${id}` });
  const show = el("button", { type: "button", class: "quiet", "aria-expanded": "false", text: "Show source" });
  const remove = el("button", { type: "button", class: "danger", text: "Delete…" });
  show.addEventListener("click", () => toggleSource(id, show, source));
  remove.addEventListener("click", () => removeSnippet(id));
  const card = el(
    "li",
    { class: "card", "data-snippet": id },
    el("h3", {}, el("code", { text: id })),
    el(
      "dl",
      { class: "facts" },
      el("div", {}, el("dt", { text: "Function" }), el("dd", {}, el("a", { href: functionHref(functionName), text: functionName }))),
      el("div", {}, el("dt", { text: "Replicas" }), el("dd", { "data-field": "replicas", text: "–" })),
      el("div", {}, el("dt", { text: "Calls" }), el("dd", { "data-field": "calls", text: "–" })),
    ),
    el("div", { class: "buttons" }, show, remove),
    source,
  );
  return card;
}

async function toggleSource(id, button, pre) {
  if (!pre.hidden) {
    pre.hidden = true;
    button.textContent = "Show source";
    button.setAttribute("aria-expanded", "false");
    return;
  }
  try {
    pre.textContent = await (await call(`/api/cs/${encodeURIComponent(id)}`)).text();
    pre.hidden = false;
    button.textContent = "Hide source";
    button.setAttribute("aria-expanded", "true");
  } catch (error) {
    showError(error);
  }
}

async function removeSnippet(id) {
  if (!(await confirmDelete(id))) return;
  try {
    await call(`/api/gen/${encodeURIComponent(id)}`, { method: "DELETE" });
    await refresh();
  } catch (error) {
    showError(error);
  }
}

async function refresh() {
  const [stats, functions] = await Promise.all([
    getJson("/api/stats", { auth: false }),
    getJson("/system/functions"),
  ]);
  const ids = stats.functions;
  const byName = new Map(functions.map((status) => [status.name, status]));
  for (const [id, card] of cards) {
    if (!ids.includes(id)) {
      card.remove();
      cards.delete(id);
    }
  }
  const list = $("snippets");
  for (const id of ids) {
    let card = cards.get(id);
    if (!card) {
      card = newCard(id);
      cards.set(id, card);
      list.append(card);
    }
    const status = byName.get(`fob-${id}`);
    card.querySelector('[data-field="replicas"]').textContent = status
      ? `${status.availableReplicas} ready of ${status.replicas}`
      : "–";
    card.querySelector('[data-field="calls"]').textContent = status ? formatCount(status.invocationCount) : "–";
  }
  const select = $("call-id");
  const chosen = select.value;
  const options = [...select.options].map((option) => option.value);
  if (options.join() !== ids.join()) {
    select.replaceChildren(...ids.map((id) => el("option", { value: id, text: id })));
    if (ids.includes(chosen)) select.value = chosen;
  }
  $("empty").hidden = ids.length > 0;
  $("count").textContent = `(${ids.length})`;
  document.body.dataset.loaded = "true";
}

async function add(event) {
  event.preventDefault();
  const button = event.target.querySelector("button[type=submit]");
  const state = $("add-state");
  button.disabled = true;
  state.textContent = "Checking and starting the snippet…";
  try {
    const response = await call("/api/gen", {
      method: "POST",
      body: $("add-source").value,
      headers: { "Content-Type": "text/x-python; charset=utf-8" },
    });
    const { id } = await response.json();
    state.textContent = `Added: ${id}`;
    await refresh();
    $("call-id").value = id;
  } catch (error) {
    state.textContent = "";
    showError(error);
  } finally {
    button.disabled = false;
  }
}

async function callSnippet(event) {
  event.preventDefault();
  const id = $("call-id").value;
  if (!id) return;
  const args = $("call-args").value.trim().replace(/^\?/, "");
  const started = performance.now();
  try {
    const response = await fetch(`/api/call/${encodeURIComponent(id)}${args ? "?" + args : ""}`, {
      credentials: "omit",
      cache: "no-store",
    });
    const text = response.ok ? await response.text() : await errorText(response);
    $("result-status").textContent = String(response.status);
    $("result-time").textContent = `${(performance.now() - started).toFixed(0)} ms`;
    $("result-body").textContent = text.trim();
    $("result").hidden = false;
  } catch (error) {
    showError(error);
  }
}

async function loadFile(event) {
  const [file] = event.target.files;
  if (file) $("add-source").value = await file.text();
}

if (setupPage()) {
  $("add").addEventListener("submit", add);
  $("call").addEventListener("submit", callSnippet);
  $("add-file").addEventListener("change", (event) => loadFile(event).catch(showError));
  every(POLL_MS, refresh);
}
