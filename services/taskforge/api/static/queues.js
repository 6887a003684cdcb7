// Queues: jobs per state, backlog, oldest wait, throughput sparkline, pause/resume; live.
//
// GET /v1/queues gives each queue's completions over the last minute. Sampling that on every
// poll and keeping the samples here (for this tab, across views and reloads) draws how the
// throughput moved over the last minutes without any history kept on the server.

import { api } from "./api.js";
import { alertError, fill, h, notice, refill, table } from "./dom.js";
import { duration, sparkline, STATES } from "./format.js";

const WINDOW_MS = 10 * 60 * 1000;
const HISTORY_KEY = "taskforge.throughput";
const history = loadHistory();

function loadHistory() {
  try {
    return new Map(Object.entries(JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "{}")));
  } catch {
    return new Map();
  }
}

function record(queues) {
  const now = Date.now();
  for (const queue of queues) {
    const samples = (history.get(queue.name) || []).filter((s) => now - s.t <= WINDOW_MS);
    samples.push({ t: now, v: queue.throughput_per_minute });
    history.set(queue.name, samples);
  }
  sessionStorage.setItem(HISTORY_KEY, JSON.stringify(Object.fromEntries(history)));
}

/** One sentence for the live region, announced only when it changes. */
function summarize(queues) {
  const sum = (pick) => queues.reduce((total, q) => total + pick(q), 0);
  const paused = queues.filter((q) => q.paused).length;
  return (
    `${queues.length} queue${queues.length === 1 ? "" : "s"}: ${sum((q) => q.backlog)} waiting, ` +
    `${sum((q) => q.counts.running)} running, ${sum((q) => q.counts.dead)} dead` +
    (paused ? `, ${paused} paused` : "")
  );
}

function countCell(queue, state) {
  const n = queue.counts[state] || 0;
  if (!n) return h("td", { class: "num zero" }, "0");
  const href =
    state === "dead"
      ? `#/dlq?queue=${encodeURIComponent(queue.name)}`
      : `#/jobs?queue=${encodeURIComponent(queue.name)}&status=${state}`;
  return h(
    "td",
    { class: "num", "data-state": state },
    h("a", { href, "data-focus-key": `${queue.name}/${state}`, "aria-label": `${n} ${state} jobs in ${queue.name}` }, n.toLocaleString()),
  );
}

function queueRow(queue, act) {
  const verb = queue.paused ? "Resume" : "Pause";
  return h(
    "tr",
    { "data-queue": queue.name },
    h(
      "th",
      { scope: "row" },
      h("a", { href: `#/jobs?queue=${encodeURIComponent(queue.name)}`, "data-focus-key": `${queue.name}/jobs` }, queue.name),
      queue.concurrency ? h("span", { class: "muted small" }, ` cap ${queue.concurrency}`) : null,
    ),
    h("td", {}, h("span", { class: `badge ${queue.paused ? "paused" : "active"}` }, queue.paused ? "paused" : "active")),
    STATES.map((state) => countCell(queue, state)),
    h("td", { class: "num strong" }, queue.backlog.toLocaleString()),
    h("td", { class: "num" }, queue.backlog ? duration(queue.oldest_age_seconds) : "—"),
    h(
      "td",
      {},
      h(
        "div",
        { class: "spark-cell" },
        sparkline(history.get(queue.name) || [], WINDOW_MS),
        h("span", { class: "num" }, `${queue.throughput_per_minute}/min`),
      ),
    ),
    h(
      "td",
      {},
      h(
        "button",
        { type: "button", class: queue.paused ? "primary" : "", "data-focus-key": `${queue.name}/toggle`, "aria-label": `${verb} queue ${queue.name}`, onclick: (e) => act(e.currentTarget, queue) },
        verb,
      ),
    ),
  );
}

export function renderQueues(main, { config }) {
  const updated = h("p", { class: "muted", id: "queues-updated" }, "Loading…");
  const summary = h("p", { class: "sr-only", "aria-live": "polite" });
  const body = h("div", { id: "queues-body" });
  fill(
    main,
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Queues"), updated),
    summary,
    body,
  );
  let alive = true;
  let timer = 0;
  let spoken = "";

  async function act(button, queue) {
    const action = queue.paused ? "resume" : "pause";
    button.disabled = true;
    try {
      await api(`v1/queues/${encodeURIComponent(queue.name)}/${action}`, { method: "POST" });
      notice(`Queue ${queue.name} ${action === "pause" ? "paused: its jobs wait until it is resumed" : "resumed"}.`);
    } catch (err) {
      alertError(`Could not ${action} ${queue.name}: ${err.message}`);
    }
    await refresh();
  }

  async function refresh() {
    clearTimeout(timer);
    let again = true;
    try {
      const { queues } = await api("v1/queues");
      if (!alive) return;
      record(queues);
      const headers = ["Queue", "State", ...STATES.map((s) => `#${s}`), "#Backlog", "#Oldest wait", "Completed / min", "Action"];
      refill(
        body,
        queues.length
          ? h("div", { class: "table-wrap" }, table("Queues with their jobs per state", headers, queues.map((q) => queueRow(q, act))))
          : h("p", { class: "card empty" }, "No queues yet: a queue appears with its first job (or when it is paused ahead)."),
      );
      updated.textContent = `Live · updated ${new Date().toLocaleTimeString()} · every ${config.poll_seconds} s`;
      const text = summarize(queues);
      if (text !== spoken) summary.textContent = spoken = text;
    } catch (err) {
      if (!alive) return;
      updated.textContent = err.status === 401 ? "Waiting for an API token." : `Not updated: ${err.message}`;
      again = err.status !== 401; // the token prompt restarts the view
    } finally {
      if (alive && again) timer = setTimeout(refresh, config.poll_seconds * 1000);
    }
  }

  refresh();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}
