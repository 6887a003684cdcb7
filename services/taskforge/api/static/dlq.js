// Dead letters: dead jobs with their errors, replayed one at a time or all that match the
// filter. A replay by filter first asks the API for a dry-run count and shows it, and only a
// second, explicit confirmation replays.

import { api } from "./api.js";
import { alertError, fill, h, notice } from "./dom.js";
import { ago, jobLink, shortId, when } from "./format.js";
import { errorText } from "./jobs.js";
import { filterForm, pagedTable, queryFrom, queueOptions } from "./pager.js";

const FILTERS = [
  ["type", "Type", "text"],
  ["queue", "Queue", "queue"],
  ["error", "Error contains", "text"],
];

function describe(filter) {
  const parts = Object.entries(filter).map(([k, v]) => (k === "error" ? `error contains “${v}”` : `${k} ${v}`));
  return parts.length ? `matching ${parts.join(", ")}` : "(no filter: every dead job)";
}

export function renderDeadLetters(main, { params }) {
  const filter = queryFrom(params, FILTERS.map(([name]) => name));
  const list = h("section", { "aria-label": "Dead jobs" });
  const confirm = h("div", { id: "replay-confirm", class: "confirm", "aria-live": "polite" });
  let table;

  async function replayOne(button, job) {
    button.disabled = true;
    try {
      const replayed = await api(`v1/dlq/${job.id}/replay`, { method: "POST" });
      notice(`Job ${shortId(job.id)} replayed: it is ${replayed.status} with its attempts reset.`);
    } catch (err) {
      alertError(`Could not replay job ${shortId(job.id)}: ${err.message}`);
    }
    await table.reload();
  }

  async function askReplayAll(button) {
    button.disabled = true;
    try {
      const { matched } = await api("v1/dlq/replay", { method: "POST", body: { ...filter, dry_run: true } });
      if (!matched) {
        fill(confirm, h("p", {}, `No dead job ${describe(filter)}.`));
        return;
      }
      const go = h("button", { type: "button", class: "danger", onclick: () => replayAll(go, matched) }, `Replay ${matched} job${matched === 1 ? "" : "s"}`);
      fill(
        confirm,
        h(
          "div",
          { class: "card warn", role: "group", "aria-labelledby": "confirm-text" },
          h("p", { id: "confirm-text" }, h("strong", {}, `${matched} dead job${matched === 1 ? "" : "s"}`), ` ${describe(filter)} would be replayed: sent back to pending with attempts reset.`),
          h("div", { class: "buttons" }, go, h("button", { type: "button", onclick: () => fill(confirm) }, "Keep them")),
        ),
      );
      go.focus();
    } catch (err) {
      alertError(`Could not count the matching dead jobs: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async function replayAll(button, counted) {
    button.disabled = true;
    try {
      const { replayed } = await api("v1/dlq/replay", { method: "POST", body: { ...filter, dry_run: false } });
      fill(confirm);
      // Jobs may have died or been replayed between the count and now; say what happened.
      notice(`Replayed ${replayed} job${replayed === 1 ? "" : "s"}${replayed !== counted ? ` (${counted} were counted)` : ""}.`);
    } catch (err) {
      alertError(`Replay failed: ${err.message}`);
    }
    await table.reload();
  }

  const replayAllButton = h("button", { type: "button", class: "danger", onclick: (e) => askReplayAll(e.currentTarget) }, "Replay all matching…");
  fill(
    main,
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Dead letters")),
    h("p", { class: "lead" }, "Jobs that used up their attempts or failed for good. A replay sends a job back to pending with its attempts reset; its history keeps every earlier attempt."),
    queueOptions(api),
    filterForm("dlq", params, FILTERS, { extra: replayAllButton }),
    confirm,
    list,
  );
  table = pagedTable(list, {
    caption: "Dead jobs, newest first",
    headers: ["Job", "Type", "Queue", "#Attempts", "Died", "Error", "Action"],
    row: (job) =>
      h(
        "tr",
        { "data-job": job.id },
        h("td", {}, jobLink(job.id)),
        h("td", {}, job.type),
        h("td", {}, job.queue),
        h("td", { class: "num" }, String(job.attempts)),
        h("td", {}, when(job.finished_at), h("div", { class: "muted small" }, ago(job.finished_at))),
        h("td", {}, errorText(job.last_error, 120)),
        h(
          "td",
          {},
          h("button", { type: "button", "data-focus-key": `replay/${job.id}`, "aria-label": `Replay job ${shortId(job.id)}`, onclick: (e) => replayOne(e.currentTarget, job) }, "Replay"),
        ),
      ),
    load: (cursor) => api("v1/dlq", { query: { ...filter, cursor, limit: 50 } }),
    empty: Object.keys(filter).length ? "No dead job matches these filters." : "The dead-letter queue is empty.",
  });
}
