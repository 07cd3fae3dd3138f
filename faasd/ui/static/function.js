// One function (function.html?name=NAME): status with the chart and the autoscaler's reasoning, an
// invoke form, its logs as they come (/system/logs?follow=true, NDJSON), its spec, and delete.

import { call, getJson } from "./api.js";
import { createChart, draw, loadUnit } from "./chart.js";
import {
  $,
  confirmDelete,
  el,
  every,
  formatCount,
  formatErrors,
  formatLoad,
  parsePairs,
  queryName,
  setupPage,
  showError,
} from "./dom.js";
import { record, samples, save } from "./history.js";
import { invocations } from "./metrics.js";

const POLL_MS = 2000;
const MAX_LOG_LINES = 500;
const MAX_SHOWN_BODY = 64 * 1024;
const name = queryName();
const chart = createChart();
let gone = false;

function showSpec(status) {
  const skip = new Set(["name", "namespace", "replicas", "availableReplicas", "invocationCount", "faasd"]);
  const rows = [];
  for (const [key, value] of Object.entries(status)) {
    if (skip.has(key) || value === "" || value === null) continue;
    let text;
    if (Array.isArray(value)) text = value.join(", ");
    else if (typeof value === "object") {
      text = Object.entries(value)
        .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)
        .join("\n");
    } else text = String(value);
    rows.push(el("div", {}, el("dt", { text: key }), el("dd", {}, el("pre", { text }))));
  }
  $("spec").replaceChildren(...rows);
}

async function refresh() {
  if (gone) throw new Error(`No function named ${name} is deployed (any more).`);
  let status;
  try {
    status = await getJson(`/system/function/${encodeURIComponent(name)}`);
  } catch (error) {
    if (error.status === 404) {
      gone = true;
      $("state").textContent = "not deployed";
    }
    throw error;
  }
  const [scaling, metricsText] = await Promise.all([
    getJson(`/system/scaling/${encodeURIComponent(name)}`).catch(() => null),
    call("/metrics", { auth: false }).then((response) => response.text()),
  ]);
  const state = status.faasd?.state || "deployed";
  $("state").textContent = state === "failed" ? `failed: ${status.faasd?.reason || ""}` : state;
  $("state").className = `badge ${state}`;
  $("replicas").textContent = `${status.availableReplicas} ready of ${status.replicas}`;
  $("calls").textContent = formatCount(status.invocationCount);
  const counts = invocations(metricsText).get(name) || { calls: 0, errors: 0 };
  $("errors").textContent = formatErrors(counts.errors, counts.calls);
  const unit = loadUnit(scaling?.load?.type);
  const load = scaling ? scaling.load.panic : 0;
  if (scaling) {
    $("load").textContent =
      `${formatLoad(load)} ${unit} over 6 s · ${formatLoad(scaling.load.stable)} over 60 s · ` +
      `${formatLoad(scaling.load.inFlightNow)} in flight now · ${formatLoad(scaling.load.queued)} queued`;
    const s = scaling.settings;
    $("decision").textContent =
      `Autoscaler: ${scaling.desiredReplicas} replica${scaling.desiredReplicas === 1 ? "" : "s"}` +
      `${scaling.panicking ? " (panic)" : ""}: ${scaling.reason}`;
    $("settings").textContent =
      `Scaling ${s.enabled ? "on" : "off"}: ${s.min}–${s.max} replicas, target ${s.target} ${unit} per replica ` +
      `(scales at ${Math.round(s.targetProportion * 100)} %)` +
      (s.zero ? `, to zero after ${s.zeroDurationSeconds} s idle` : "");
  }
  record(name, { load, replicas: status.availableReplicas, desired: status.replicas });
  save();
  draw(chart, samples(name), unit);
  showSpec(status);
  document.body.dataset.loaded = "true";
}

// -- invoke ---------------------------------------------------------------------------------------

async function invoke(event) {
  event.preventDefault();
  const method = $("invoke-method").value;
  let path = $("invoke-path").value.trim();
  if (path && !path.startsWith("/")) path = "/" + path;
  const query = $("invoke-query").value.trim().replace(/^\?/, "");
  const url = `/function/${encodeURIComponent(name)}${path}${query ? "?" + query : ""}`;
  const button = event.target.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const headers = parsePairs($("invoke-headers").value, "Headers", ":");
    const withBody = method !== "GET" && method !== "HEAD";
    const started = performance.now();
    // No credentials: a function must never see the admin's password (/function/* is public anyway).
    const response = await fetch(url, {
      method,
      headers,
      body: withBody ? $("invoke-body").value : undefined,
      credentials: "omit",
      cache: "no-store",
      redirect: "manual",
    });
    const bytes = new Uint8Array(await response.arrayBuffer());
    const elapsed = performance.now() - started;
    showAnswer(response, bytes, elapsed);
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

function showAnswer(response, bytes, elapsed) {
  const status = response.type === "opaqueredirect" ? "a redirect (not followed)" : String(response.status);
  $("answer-status").textContent = `${status}${response.statusText ? " " + response.statusText : ""}`;
  const own = response.headers.get("X-Duration-Seconds");
  $("answer-time").textContent =
    `${elapsed.toFixed(0)} ms${own ? ` (the function: ${(Number(own) * 1000).toFixed(0)} ms)` : ""}`;
  const lines = [];
  response.headers.forEach((value, key) => lines.push(`${key}: ${value}`));
  $("answer-headers").textContent = lines.join("\n");
  const text = new TextDecoder().decode(bytes.subarray(0, MAX_SHOWN_BODY));
  $("answer-body").textContent =
    bytes.length > MAX_SHOWN_BODY ? `${text}\n… (${bytes.length} bytes in all; the first ${MAX_SHOWN_BODY} shown)` : text;
  $("answer").hidden = false;
}

// -- logs -----------------------------------------------------------------------------------------

function addLogLine(message) {
  const list = $("logs");
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  const time = (message.timestamp || "").replace("T", " ").replace(/\.\d+Z$/, "Z");
  list.append(
    el(
      "li",
      {},
      el("time", { datetime: message.timestamp, text: time }),
      " ",
      el("span", { class: "instance", text: message.instance }),
      " ",
      el("span", { class: "text", text: message.text }),
    ),
  );
  while (list.children.length > MAX_LOG_LINES) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

async function followLogs(signal) {
  const state = $("logs-state");
  while (!signal.aborted && !gone) {
    try {
      const response = await call(`/system/logs?name=${encodeURIComponent(name)}&tail=100&follow=true`, { signal });
      $("logs").replaceChildren();
      state.textContent = "(following)";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, end).trim();
          buffer = buffer.slice(end + 1);
          if (line) addLogLine(JSON.parse(line));
        }
      }
      state.textContent = "(the stream ended; reconnecting)";
    } catch (error) {
      if (signal.aborted) return;
      state.textContent = `(stopped: ${error.message}; retrying)`;
      if (error.status === 404) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
}

// -- delete ---------------------------------------------------------------------------------------

async function remove() {
  if (!(await confirmDelete(name))) return;
  try {
    await call("/system/functions", { method: "DELETE", json: { functionName: name } });
    gone = true;
    location.assign("./");
  } catch (error) {
    showError(error);
  }
}

if (setupPage()) {
  if (!name) {
    showError("No function named: open this page from the function list.");
  } else {
    document.title = `${name} · faasd`;
    $("name").textContent = name;
    $("path-name").textContent = name;
    $("chart-slot").append(chart);
    $("invoke").addEventListener("submit", invoke);
    $("invoke-method").addEventListener("change", (event) => {
      $("invoke-body").disabled = event.target.value === "GET" || event.target.value === "HEAD";
    });
    $("delete").addEventListener("click", remove);
    const stop = new AbortController();
    addEventListener("pagehide", () => stop.abort());
    every(POLL_MS, refresh);
    followLogs(stop.signal).catch((error) => showError(error));
  }
}
