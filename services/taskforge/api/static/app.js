// The dashboard shell: hash routes (#/queues, #/jobs, #/jobs/<id>, #/dlq), the token prompt
// and the header. Each view renders into <main> and returns a function that stops it (its
// polling), called when the operator moves elsewhere.

import { clearToken, getToken, loadConfig, onUnauthorized, setToken } from "./api.js";
import { alertError, h, fill } from "./dom.js";
import { renderDeadLetters } from "./dlq.js";
import { renderJob } from "./job.js";
import { renderJobs } from "./jobs.js";
import { renderQueues } from "./queues.js";

const ROUTES = [
  [/^(queues)?$/, "queues", renderQueues],
  [/^jobs$/, "jobs", renderJobs],
  [/^jobs\/([0-9a-fA-F-]{36})$/, "jobs", renderJob],
  [/^dlq$/, "dlq", renderDeadLetters],
];

const main = document.getElementById("main");
const prompt = document.getElementById("token-prompt");
const tokenInput = document.getElementById("token-input");
let config = { trace_url_template: null, poll_seconds: 3 };
let stopView = () => {};

/** Parse "#/jobs?status=dead" into {path: "jobs", params: URLSearchParams}. */
function currentRoute() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?", 2);
  return { path, params: new URLSearchParams(query) };
}

function route({ focus = false } = {}) {
  stopView();
  stopView = () => {};
  alertError("");
  const { path, params } = currentRoute();
  const found = ROUTES.map(([pattern, section, view]) => [pattern.exec(path), section, view]).find(
    ([match]) => match,
  );
  if (!found) {
    fill(main, h("h1", { tabindex: "-1" }, "Not found"), h("p", {}, h("a", { href: "#/queues" }, "Back to the queues")));
    return;
  }
  const [match, section, view] = found;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.replaceChildren();
  stopView = view(main, { params, id: match[1], config }) || (() => {});
  // Moving focus to the new heading tells keyboard and screen-reader users the page changed.
  if (focus) main.querySelector("h1")?.focus();
}

function showSession() {
  const has = Boolean(getToken());
  document.getElementById("token-state").textContent = has ? "Token set for this tab" : "";
  document.getElementById("forget-token").hidden = !has;
}

function askForToken() {
  const wasHidden = prompt.hidden;
  prompt.hidden = false;
  fill(
    document.getElementById("token-reason"),
    getToken()
      ? "The API refused the token in use. Enter another one."
      : ["This API asks for a bearer token. Use one of the tokens listed in ", h("code", {}, "TASKFORGE_API_TOKENS"), "; it is kept in this browser tab only."],
  );
  if (wasHidden) tokenInput.focus();
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = tokenInput.value.trim();
  if (!value) return;
  setToken(value);
  tokenInput.value = "";
  prompt.hidden = true;
  showSession();
  route({ focus: true });
});

document.getElementById("forget-token").addEventListener("click", () => {
  clearToken();
  showSession();
  route();
});

onUnauthorized(askForToken);
window.addEventListener("hashchange", () => route({ focus: true }));

async function start() {
  showSession();
  try {
    config = { ...config, ...(await loadConfig()) };
    document.getElementById("version").textContent = `v${config.version}`;
  } catch (err) {
    alertError(`${err.message}; trace links are off.`);
  }
  route();
}

start();
