// A small SVG chart of one function's load and ready replicas over the last minutes (history.js),
// drawn by hand: no library. The SVG is an image with a text alternative saying the latest values.

import { SPAN_MS } from "./history.js";

const NS = "http://www.w3.org/2000/svg";
const WIDTH = 300;
const HEIGHT = 64;
const PAD = 2;
const MIN_SPAN_MS = 60 * 1000;

function svg(tag, attributes) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

/** What the load of a scaling type is counted in. */
export function loadUnit(type) {
  return type === "rps" ? "calls/s" : "in flight";
}

/** An empty chart to put in a page; draw() fills it. */
export function createChart() {
  return svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: "chart",
    role: "img",
    preserveAspectRatio: "none",
    "aria-label": "Load and replicas: no samples yet",
  });
}

function points(samples, key, now, span, top, step) {
  const coordinates = [];
  let previousY = null;
  for (const sample of samples) {
    const x = PAD + ((WIDTH - 2 * PAD) * (sample.t - (now - span))) / span;
    const y = HEIGHT - PAD - ((HEIGHT - 2 * PAD) * (sample[key] || 0)) / top;
    if (step && previousY !== null) coordinates.push(`${x.toFixed(1)},${previousY.toFixed(1)}`);
    coordinates.push(`${x.toFixed(1)},${y.toFixed(1)}`);
    previousY = y;
  }
  return coordinates.join(" ");
}

function spanText(ms) {
  return ms < 120000 ? `${Math.round(ms / 1000)} s` : `${Math.round(ms / 60000)} minutes`;
}

/**
 * Draw samples ({t, load, replicas}) into chart; loadUnit names the load ("in flight", "calls/s"). The
 * time axis spans what was seen, from one minute up to SPAN_MS; the value axis starts at 0 and ends a
 * little above the largest value shown (at least 1).
 */
export function draw(chart, samples, loadUnit, now = Date.now()) {
  const span = Math.min(SPAN_MS, Math.max(MIN_SPAN_MS, samples.length ? now - samples[0].t : 0));
  const top = Math.max(1, ...samples.map((sample) => Math.max(sample.load || 0, sample.replicas || 0))) * 1.1;
  chart.replaceChildren(
    svg("line", { x1: 0, y1: HEIGHT - PAD, x2: WIDTH, y2: HEIGHT - PAD, class: "axis" }),
    svg("polyline", { points: points(samples, "replicas", now, span, top, true), class: "replicas" }),
    svg("polyline", { points: points(samples, "load", now, span, top, false), class: "load" }),
  );
  const last = samples[samples.length - 1];
  chart.setAttribute(
    "aria-label",
    last
      ? `Load and ready replicas over the last ${spanText(span)}; now load ${last.load} (${loadUnit}), ` +
          `${last.replicas} ready replicas; ${samples.length} samples`
      : "Load and replicas: no samples yet",
  );
  chart.dataset.samples = String(samples.length);
}
