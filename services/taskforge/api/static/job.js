// One job: its fields, payload, result, error, history (job_events), trace link, and the
// cancel and retry actions. Refreshes itself until the job is finished.

import { api } from "./api.js";
import { alertError, fill, h, notice, refill } from "./dom.js";
import { badge, CANCELLABLE, duration, json, shortId, TERMINAL, traceLink, when } from "./format.js";

const RETRYABLE = TERMINAL; // completed, cancelled and dead jobs can be run again

function facts(job, config) {
  const rows = [
    ["Type", job.type],
    ["Queue", h("a", { href: `#/jobs?queue=${encodeURIComponent(job.queue)}` }, job.queue)],
    ["Attempts", `${job.attempts} of ${job.max_attempts}`],
    ["Priority", String(job.priority)],
    ["Timeout", duration(job.timeout_seconds)],
    ["Created", when(job.created_at)],
    ["Run at", when(job.run_at)],
    ["Started", when(job.started_at)],
    ["Finished", when(job.finished_at)],
    ["Worker", job.worker || h("span", { class: "muted" }, "—")],
    ["Idempotency key", job.idempotency_key || h("span", { class: "muted" }, "—")],
    ["Trace", traceLink(job.traceparent, config.trace_url_template)],
  ];
  if (job.cancel_requested && !TERMINAL.has(job.status)) rows.push(["Cancel", "requested; the worker is stopping it"]);
  return h("dl", { class: "facts" }, rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

/**
 * An event's error: its first line, with the rest (a traceback) folded away until opened.
 * `opened` remembers which ones the operator opened, so the page's refreshes keep them open.
 */
function errorBlock(event, opened) {
  const [first, ...rest] = event.error.trimEnd().split("\n");
  if (!rest.length) return h("pre", { class: "error" }, first);
  return h(
    "details",
    {
      class: "error",
      open: opened.has(event.id),
      ontoggle: (e) => (e.currentTarget.open ? opened.add(event.id) : opened.delete(event.id)),
    },
    h("summary", { "data-focus-key": `event/${event.id}` }, first),
    h("pre", { class: "error" }, event.error),
  );
}

function timeline(events, opened) {
  if (!events.length) return h("p", { class: "muted" }, "No events recorded.");
  const start = new Date(events[0].at).getTime();
  return h(
    "ol",
    { class: "timeline", id: "timeline" },
    events.map((e) =>
      h(
        "li",
        { "data-to": e.to_status },
        h("div", { class: "when" }, when(e.at), h("span", { class: "muted small" }, ` +${duration((new Date(e.at).getTime() - start) / 1000)}`)),
        h(
          "div",
          { class: "what" },
          e.from_status ? [badge(e.from_status), h("span", { class: "arrow", "aria-label": "to" }, " → ")] : h("span", { class: "muted" }, "created as "),
          badge(e.to_status),
          h("span", { class: "muted small" }, ` attempt ${e.attempt} · by ${e.actor}`),
        ),
        e.error ? errorBlock(e, opened) : null,
      ),
    ),
  );
}

export function renderJob(main, { id, config }) {
  let alive = true;
  let timer = 0;
  const opened = new Set(); // ids of events whose error the operator unfolded
  const body = h("div", { id: "job-body" });
  fill(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← Jobs")),
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Job ", h("span", { class: "mono", title: id }, shortId(id)))),
    body,
  );

  async function act(button, action) {
    button.disabled = true;
    try {
      const job = await api(`v1/jobs/${id}/${action}`, { method: "POST" });
      notice(
        action === "cancel"
          ? job.status === "cancelled"
            ? "Job cancelled."
            : "Cancel sent: the worker is stopping the job."
          : "Job sent to run again: it is pending.",
      );
    } catch (err) {
      alertError(`Could not ${action} the job: ${err.message}`);
    }
    await refresh();
  }

  async function refresh() {
    clearTimeout(timer);
    let again = true;
    try {
      const [job, history] = await Promise.all([api(`v1/jobs/${id}`), api(`v1/jobs/${id}/events`)]);
      if (!alive) return;
      refill(
        body,
        h(
          "div",
          { class: "job-head" },
          badge(job.status),
          h("span", { class: "mono muted small" }, job.id),
          h(
            "div",
            { class: "buttons" },
            h("button", { type: "button", "data-focus-key": "cancel", disabled: !CANCELLABLE.has(job.status), onclick: (e) => act(e.currentTarget, "cancel") }, "Cancel job"),
            h("button", { type: "button", class: "primary", "data-focus-key": "retry", disabled: !RETRYABLE.has(job.status), onclick: (e) => act(e.currentTarget, "retry") }, "Retry job"),
          ),
        ),
        h(
          "div",
          { class: "columns" },
          h("section", { class: "card", "aria-labelledby": "facts-title" }, h("h2", { id: "facts-title" }, "Details"), facts(job, config)),
          h(
            "section",
            { class: "card", "aria-labelledby": "timeline-title" },
            h("h2", { id: "timeline-title" }, "Timeline"),
            timeline(history.events, opened),
          ),
        ),
        h(
          "div",
          { class: "columns" },
          h("section", { class: "card", "aria-labelledby": "payload-title" }, h("h2", { id: "payload-title" }, "Payload"), json(job.payload)),
          h("section", { class: "card", "aria-labelledby": "result-title" }, h("h2", { id: "result-title" }, "Result"), json(job.result)),
        ),
        job.last_error
          ? h("section", { class: "card", "aria-labelledby": "error-title" }, h("h2", { id: "error-title" }, "Last error"), h("pre", { class: "error" }, job.last_error))
          : null,
      );
      // A finished job changes only when an operator acts; a live one is followed.
      again = !TERMINAL.has(job.status);
    } catch (err) {
      if (!alive) return;
      again = false;
      if (err.status === 404) fill(body, h("p", { class: "card empty" }, `No job with id ${id}.`));
      else if (err.status !== 401) alertError(`Could not load the job: ${err.message}`);
    } finally {
      if (alive && again) timer = setTimeout(refresh, 2000);
    }
  }

  refresh();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}
