// A job table paged by the API's cursors, and the filter form above it.
//
// The API pages forward only (pass next_cursor back as cursor); the cursors of the pages the
// operator came through are kept so "Previous page" can go back.

import { alertError, field, fill, h, refill, select, table } from "./dom.js";

/**
 * Render a paged table into `container`.
 * `load(cursor)` → {jobs, next_cursor}; `row(job, reload)` → <tr>; `headers` as for table().
 * Returns {reload} to fetch the current page again (after an action changed it).
 */
export function pagedTable(container, { caption, headers, row, load, empty }) {
  const trail = []; // cursors of the pages before this one ("" = the first page)
  let cursor = "";
  let next = null;
  const info = h("p", { class: "muted", "aria-live": "polite" });
  const rows = h("div", { class: "table-wrap", tabindex: "-1" });
  const previous = h("button", { type: "button", "data-focus-key": "previous", onclick: () => go(trail[trail.length - 1], "previous") }, "← Previous page");
  const following = h("button", { type: "button", "data-focus-key": "next", onclick: () => go(next, "next") }, "Next page →");
  const nav = h("nav", { class: "pager", "aria-label": "Pages" }, previous, following);
  fill(container, info, rows, nav);

  // `direction` says how the trail changes once the page has loaded: "next", "previous", "same".
  async function go(to, direction) {
    info.textContent = "Loading…";
    try {
      const page = await load(to || undefined);
      if (direction === "next") trail.push(cursor);
      else if (direction === "previous") trail.pop();
      cursor = to || "";
      next = page.next_cursor;
      refill(
        rows,
        page.jobs.length
          ? table(caption, headers, page.jobs.map((job) => row(job, reload)))
          : h("p", { class: "card empty" }, empty),
      );
      const n = page.jobs.length;
      info.textContent = `Page ${trail.length + 1}: ${n} job${n === 1 ? "" : "s"}${next ? ", more on the next page" : ""}.`;
      previous.disabled = trail.length === 0;
      following.disabled = !next;
      alertError("");
    } catch (err) {
      info.textContent = err.status === 401 ? "Waiting for an API token." : `Could not load: ${err.message}`;
      if (err.status !== 401) alertError(err.message);
    }
  }

  function reload() {
    return go(cursor, "same");
  }

  previous.disabled = true;
  following.disabled = true;
  go("", "same");
  return { reload };
}

/** "2026-03-04T14:05:00Z" → "2026-03-04T15:05" (local) for a datetime-local input. */
function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const local = new Date(d.getTime() - d.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}

/**
 * The filter form of a listing. `fields` lists [name, label, kind] with kind "text", "time"
 * or ["select", options]; applying it navigates to `#/<path>?<filters>`, so filters live in the
 * address (bookmarkable) and the back button undoes them.
 */
export function filterForm(path, params, fields, { extra = [] } = {}) {
  const controls = fields.map(([name, label, kind]) => {
    const id = `filter-${name}`;
    let control;
    if (Array.isArray(kind)) control = select(id, name, kind[1], params.get(name) || "");
    else if (kind === "time") control = h("input", { id, name, type: "datetime-local", value: toLocalInput(params.get(name)) });
    else control = h("input", { id, name, type: "text", value: params.get(name) || "", spellcheck: "false", autocomplete: "off", list: kind === "queue" ? "known-queues" : null });
    return field(label, control);
  });
  const form = h(
    "form",
    { class: "filters card", role: "search", "aria-label": "Filters" },
    controls,
    h(
      "div",
      { class: "field actions" },
      h("button", { type: "submit", class: "primary" }, "Apply filters"),
      h("button", { type: "button", onclick: () => (location.hash = `#/${path}`) }, "Clear"),
      extra,
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [name, , kind] of fields) {
      const value = form.elements[name].value.trim();
      if (!value) continue;
      // datetime-local is the browser's local time without a zone; the API wants RFC 3339.
      query.set(name, kind === "time" ? new Date(value).toISOString() : value);
    }
    const target = `#/${path}${query.size ? `?${query}` : ""}`;
    if (location.hash === target) window.dispatchEvent(new HashChangeEvent("hashchange"));
    else location.hash = target;
  });
  return form;
}

/** The listing query from the address: only the parameters the form knows. */
export function queryFrom(params, names) {
  const query = {};
  for (const name of names) if (params.get(name)) query[name] = params.get(name);
  return query;
}

/** A <datalist> of queue names for the queue inputs, filled in the background. */
export function queueOptions(api) {
  const list = h("datalist", { id: "known-queues" });
  api("v1/queues")
    .then(({ queues }) => fill(list, queues.map((q) => h("option", { value: q.name }))))
    .catch(() => {});
  return list;
}
