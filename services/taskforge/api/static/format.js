// How values read on the page: times, durations, job states, ids, trace links, sparklines.

import { h, svg } from "./dom.js";

export const STATES = ["pending", "queued", "running", "retrying", "completed", "dead", "cancelled"];
export const TERMINAL = new Set(["completed", "dead", "cancelled"]);
export const CANCELLABLE = new Set(["pending", "queued", "running", "retrying"]);

const pad = (n) => String(n).padStart(2, "0");

/** Local date and time, e.g. 2026-03-04 14:05:09 (with the full ISO value as a tooltip). */
export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  const text =
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return h("time", { datetime: iso, title: iso }, text);
}

/** Seconds as a short human duration: 850 ms, 4.2 s, 3 m 05 s, 2 h 10 m, 3 d 4 h. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} m ${pad(Math.floor(seconds % 60))} s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs} h ${pad(m % 60)} m`;
  return `${Math.floor(hrs / 24)} d ${hrs % 24} h`;
}

/** Time since an ISO timestamp, e.g. "12 s ago". */
export function ago(iso) {
  if (!iso) return "—";
  return `${duration(Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000))} ago`;
}

/** A job state as a coloured label (the word is always there; colour only adds to it). */
export function badge(state) {
  return h("span", { class: `badge state-${state}` }, state);
}

/**
 * The last 8 hex digits of a job id: ids are UUIDv7, whose leading digits are a timestamp
 * shared by every job of the same minute, so only the random tail tells them apart.
 */
export function shortId(id) {
  return `…${id.slice(-8)}`;
}

export function jobLink(id) {
  return h("a", { href: `#/jobs/${id}`, class: "mono", title: id }, shortId(id));
}

/** Pretty JSON in a <pre>, or a muted dash for nothing. */
export function json(value) {
  if (value === null || value === undefined) return h("p", { class: "muted" }, "none");
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

/** The trace id of a W3C traceparent (version-traceid-spanid-flags), or null. */
export function traceId(traceparent) {
  const match = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(traceparent || "");
  return match && !/^0+$/.test(match[1]) ? match[1] : null;
}

/** A link to the job's trace from TASKFORGE_TRACE_URL_TEMPLATE, or the bare id without one. */
export function traceLink(traceparent, template) {
  const id = traceId(traceparent);
  if (!id) return h("span", { class: "muted" }, "no trace recorded");
  if (template) {
    const url = template.replaceAll("{trace_id}", id);
    if (/^https?:\/\//i.test(url)) {
      return h(
        "a",
        { href: url, target: "_blank", rel: "noopener noreferrer", class: "mono", id: "trace-link" },
        `${id} ↗`,
      );
    }
  }
  return h("span", { class: "mono", title: "set TASKFORGE_TRACE_URL_TEMPLATE to link to Jaeger" }, id);
}

/**
 * An inline SVG line of `samples` ([{t: ms, v: number}]) scaled to its own maximum, spanning
 * the time the samples cover (at least a minute, at most `windowMs`), so a freshly opened page
 * shows a line rather than a dot at the right edge. Labelled with the span, latest and peak.
 */
export function sparkline(samples, windowMs, { width = 120, height = 28, unit = "/min" } = {}) {
  const now = Date.now();
  const shown = samples.filter((s) => now - s.t <= windowMs);
  const span = Math.min(windowMs, Math.max(60000, shown.length ? now - shown[0].t : 0));
  const max = Math.max(1, ...shown.map((s) => s.v));
  const latest = shown.length ? shown[shown.length - 1].v : 0;
  const minutes = Math.max(1, Math.round(span / 60000));
  const label =
    `completions per minute over the last ${minutes} minute${minutes === 1 ? "" : "s"}: ` +
    `now ${latest}${unit}, peak ${shown.length ? max : 0}${unit}`;
  const x = (t) => Math.max(0, (width * (span - (now - t))) / span);
  const y = (v) => height - 2 - ((height - 5) * v) / max;
  const coords = shown.map((s) => [x(s.t).toFixed(1), y(s.v).toFixed(1)]);
  const line = coords.map((c) => c.join(",")).join(" ");
  const area = coords.length > 1 ? `${coords[0][0]},${height - 1.5} ${line} ${coords[coords.length - 1][0]},${height - 1.5}` : "";
  return svg(
    "svg",
    { class: "spark", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label },
    svg("title", {}, label),
    svg("line", { x1: 0, x2: width, y1: height - 1.5, y2: height - 1.5, class: "spark-base" }),
    area ? svg("polygon", { points: area, class: "spark-area" }) : null,
    coords.length > 1 ? svg("polyline", { points: line, class: "spark-line" }) : null,
    coords.length ? svg("circle", { cx: coords[coords.length - 1][0], cy: coords[coords.length - 1][1], r: 2.2, class: "spark-dot" }) : null,
  );
}
