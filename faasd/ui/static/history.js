// Load and replicas of each function over the last minutes, as this tab saw them: the server keeps no
// history for the UI. Kept in sessionStorage, so going from page to page (or reloading) keeps the chart.

const KEY = "faasd.history";
export const SPAN_MS = 5 * 60 * 1000;
const MAX_FUNCTIONS = 100;

function load() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(KEY) || "{}");
    return stored && typeof stored === "object" ? stored : {};
  } catch {
    return {};
  }
}

const series = load();

/** Add a sample {load, replicas, desired} for name at the time now (ms); drop what is older than SPAN_MS. */
export function record(name, sample, now = Date.now()) {
  const samples = (series[name] ||= []);
  samples.push({ t: now, ...sample });
  while (samples.length && samples[0].t < now - SPAN_MS) samples.shift();
}

export function samples(name) {
  return series[name] || [];
}

/** Forget the functions that are gone (only those are kept that are in names), then store. */
export function save(names) {
  if (names) {
    for (const name of Object.keys(series)) if (!names.includes(name)) delete series[name];
  }
  const kept = Object.keys(series).slice(-MAX_FUNCTIONS);
  const document = Object.fromEntries(kept.map((name) => [name, series[name]]));
  try {
    sessionStorage.setItem(KEY, JSON.stringify(document));
  } catch {
    // Storage full: the chart still works for this page.
  }
}
