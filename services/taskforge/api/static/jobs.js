// Jobs: the filterable, cursor-paged list (GET /v1/jobs).

import { api } from "./api.js";
import { fill, h } from "./dom.js";
import { badge, jobLink, STATES, when } from "./format.js";
import { filterForm, pagedTable, queryFrom, queueOptions } from "./pager.js";

const FILTERS = [
  ["status", "State", ["select", [["", "any state"], ...STATES.map((s) => [s, s])]]],
  ["queue", "Queue", "queue"],
  ["type", "Type", "text"],
  ["created_after", "Created from", "time"],
  ["created_before", "Created before", "time"],
  ["limit", "Per page", ["select", [["20", "20"], ["", "50"], ["100", "100"], ["200", "200"]]]],
];

/** The last error's first line, shortened; the whole text is the tooltip. */
export function errorText(error, max = 90) {
  if (!error) return h("span", { class: "muted" }, "—");
  const line = error.split("\n", 1)[0];
  return h("span", { class: "error-text", title: error }, line.length > max ? `${line.slice(0, max)}…` : line);
}

function jobRow(job) {
  return h(
    "tr",
    { "data-job": job.id },
    h("td", {}, jobLink(job.id)),
    h("td", {}, job.type),
    h("td", {}, job.queue),
    h("td", {}, badge(job.status)),
    h("td", { class: "num" }, `${job.attempts}/${job.max_attempts}`),
    h("td", {}, when(job.created_at)),
    h("td", {}, when(job.finished_at)),
    h("td", {}, errorText(job.last_error)),
  );
}

export function renderJobs(main, { params }) {
  const query = queryFrom(params, FILTERS.map(([name]) => name));
  const list = h("section", { "aria-label": "Job list" });
  fill(
    main,
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Jobs")),
    queueOptions(api),
    filterForm("jobs", params, FILTERS),
    list,
  );
  pagedTable(list, {
    caption: "Jobs, newest first",
    headers: ["Job", "Type", "Queue", "State", "#Attempts", "Created", "Finished", "Last error"],
    row: jobRow,
    load: (cursor) => api("v1/jobs", { query: { limit: 50, ...query, cursor } }),
    empty: Object.keys(query).some((k) => k !== "limit") ? "No job matches these filters." : "No jobs yet.",
  });
}
