// The function list (index.html): every function's replicas, calls, error rate, a chart of load and
// replicas, and the autoscaler's decision with its reason; the daemon's health, backend and sandbox.
// Polled every 2 s from /system/functions, /system/scaling/NAME, /system/info and /metrics.

import { call, getJson } from "./api.js";
import { createChart, draw, loadUnit } from "./chart.js";
import { $, el, every, formatCount, formatErrors, formatLoad, functionHref, setupPage } from "./dom.js";
import { record, samples, save } from "./history.js";
import { invocations } from "./metrics.js";

const POLL_MS = 2000;
const cards = new Map();

function duration(seconds) {
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function showDaemon(info) {
  const daemon = info.faasd || {};
  const health = $("health");
  health.textContent = daemon.healthy ? "OK" : `degraded: ${daemon.health || "unknown"}`;
  health.className = daemon.healthy ? "ok" : "bad";
  $("backend").textContent = `${info.provider?.provider || "?"} (${info.provider?.orchestration || "?"})`;
  const sandbox = daemon.sandbox;
  const text = sandbox
    ? `${sandbox.mode}${sandbox.isolated ? "" : " (not isolated)"}${sandbox.reason ? `: ${sandbox.reason}` : ""}`
    : "not reported by this backend";
  $("sandbox").textContent = text;
  $("sandbox").className = sandbox && !sandbox.isolated ? "bad" : "";
  $("uptime").textContent = duration(daemon.uptime_seconds || 0);
  $("version").textContent = info.version?.release || "?";
}

function field(label, key) {
  return el("div", {}, el("dt", { text: label }), el("dd", { "data-field": key }));
}

function newCard(name) {
  const chart = createChart();
  const card = el(
    "li",
    { class: "card", "data-function": name },
    el("h3", {}, el("a", { href: functionHref(name), text: name }), " ", el("span", { class: "badge", "data-field": "state" })),
    el(
      "dl",
      { class: "facts" },
      field("Replicas", "replicas"),
      field("Calls", "calls"),
      field("Error rate", "errors"),
      field("Load", "load"),
    ),
    chart,
    el("p", { class: "decision", "data-field": "decision" }),
  );
  return { card, chart };
}

function set(card, key, text, className) {
  const node = card.querySelector(`[data-field="${key}"]`);
  node.textContent = text;
  if (className !== undefined) node.className = className;
}

function update(entry, status, scaling, counts) {
  const { card, chart } = entry;
  const state = status.faasd?.state || "deployed";
  set(card, "state", state === "failed" ? `failed: ${status.faasd?.reason || ""}` : state, `badge ${state}`);
  set(card, "replicas", `${status.availableReplicas} ready of ${status.replicas}`);
  set(card, "calls", formatCount(status.invocationCount));
  set(card, "errors", formatErrors(counts?.errors || 0, counts?.calls || 0));
  const unit = loadUnit(scaling?.load?.type);
  const load = scaling ? scaling.load.panic : 0;
  set(card, "load", scaling ? `${formatLoad(load)} ${unit}` : "–");
  if (scaling) {
    const verdict = `Autoscaler: ${scaling.desiredReplicas} replica${scaling.desiredReplicas === 1 ? "" : "s"}`;
    set(card, "decision", `${verdict}${scaling.panicking ? " (panic)" : ""}: ${scaling.reason}`);
  }
  record(status.name, { load, replicas: status.availableReplicas, desired: status.replicas });
  draw(chart, samples(status.name), unit);
}

async function scalingOf(name) {
  try {
    return await getJson(`/system/scaling/${encodeURIComponent(name)}`);
  } catch (error) {
    if (error.status === 404 || error.status === 501) return null; // Removed meanwhile; no autoscaler.
    throw error;
  }
}

async function refresh() {
  const [functions, info, metricsText] = await Promise.all([
    getJson("/system/functions"),
    getJson("/system/info"),
    call("/metrics", { auth: false }).then((response) => response.text()),
  ]);
  showDaemon(info);
  const counts = invocations(metricsText);
  functions.sort((a, b) => a.name.localeCompare(b.name));
  const scalings = await Promise.all(functions.map((status) => scalingOf(status.name)));
  const list = $("functions");
  const names = functions.map((status) => status.name);
  for (const [name, entry] of cards) {
    if (!names.includes(name)) {
      entry.card.remove();
      cards.delete(name);
    }
  }
  functions.forEach((status, index) => {
    let entry = cards.get(status.name);
    if (!entry) {
      entry = newCard(status.name);
      cards.set(status.name, entry);
    }
    if (list.children[index] !== entry.card) list.insertBefore(entry.card, list.children[index] || null);
    update(entry, status, scalings[index], counts.get(status.name));
  });
  save(names);
  $("empty").hidden = functions.length > 0;
  $("count").textContent = `(${functions.length})`;
  document.body.dataset.loaded = "true";
}

if (setupPage()) every(POLL_MS, refresh);
