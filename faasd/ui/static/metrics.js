// Calls and errors per function, read from /metrics (public, Prometheus text format): the gateway's
// gateway_function_invocation_total{function_name, code} counters, since the daemon started.

const COUNTER = "gateway_function_invocation_total{";
const LABEL = /(\w+)="((?:[^"\\]|\\.)*)"/g;

/** Map of function name -> {calls, errors}; an error is an answer of status 500 or above. */
export function invocations(text) {
  const counts = new Map();
  for (const line of text.split("\n")) {
    if (!line.startsWith(COUNTER)) continue;
    const close = line.lastIndexOf("}");
    const labels = {};
    for (const [, name, value] of line.slice(COUNTER.length, close).matchAll(LABEL)) labels[name] = value;
    const value = Number(line.slice(close + 1).trim().split(" ")[0]);
    if (!labels.function_name || !Number.isFinite(value)) continue;
    const entry = counts.get(labels.function_name) || { calls: 0, errors: 0 };
    entry.calls += value;
    if (Number(labels.code) >= 500) entry.errors += value;
    counts.set(labels.function_name, entry);
  }
  return counts;
}
