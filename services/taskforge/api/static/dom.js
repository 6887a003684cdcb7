// Building the page from data without ever parsing data as markup: every value becomes a text
// node or an attribute, so a payload or error message cannot inject anything.

/**
 * h("a", {href: "#/jobs", class: "x", onclick: fn}, "text", child) → an element.
 * Attributes whose value is null, undefined or false are left out; true sets an empty one.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** Like h() for SVG elements. */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let noticeTimer = 0;

/** A short message in the polite live region (action results): read out, then cleared. */
export function notice(text) {
  const el = document.getElementById("notice");
  el.textContent = text;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (el.textContent = ""), 8000);
}

/** An error in the assertive region; empty text clears it. */
export function alertError(text) {
  document.getElementById("alert").textContent = text || "";
}

/**
 * Re-render `container` without losing the keyboard: the element that had focus (marked with
 * data-focus-key) gets it back after the refresh, so live views do not throw focus away.
 */
export function refill(container, ...children) {
  const active = document.activeElement;
  const key = container.contains(active) ? active.dataset.focusKey : undefined;
  fill(container, ...children);
  if (!key) return;
  // When the focused control is gone (its row left the list), keep focus in the container.
  const again = container.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
  if (again) again.focus();
  else if (container.hasAttribute("tabindex")) container.focus();
}

/** A labelled form field: <div class="field"><label for=id>…</label><control id=id></div>. */
export function field(label, control) {
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control);
}

/** A <select> with (value, text) options and the given value chosen. */
export function select(id, name, options, chosen) {
  return h(
    "select",
    { id, name },
    options.map(([value, text]) => h("option", { value, selected: value === chosen }, text)),
  );
}

/** A table with a caption, header row and body rows (each row an array of cells). */
export function table(caption, headers, rows, { className = "" } = {}) {
  return h(
    "table",
    { class: `data ${className}`.trim() },
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, headers.map((text) => headerCell(text)))),
    h("tbody", {}, rows),
  );
}

function headerCell(text) {
  if (text instanceof Node) return h("th", { scope: "col" }, text);
  const numeric = text.startsWith("#");
  return h("th", { scope: "col", class: numeric ? "num" : null }, numeric ? text.slice(1) : text);
}
