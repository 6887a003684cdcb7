// Calls to the taskforge REST API with the operator's bearer token.
//
// The token lives in sessionStorage: it survives reloads of this tab and is gone when the tab
// closes. A 401 from any call hands the error to the page (which asks for a token) and still
// rejects, so the view that made the call can show what it could not load.

const TOKEN_KEY = "taskforge.token";
// The page is served at <prefix>/ui/, the API at <prefix>/v1/: resolving against the page
// keeps both working behind a proxy that mounts taskforge under a path.
const API_ROOT = new URL("../", document.baseURI);

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

let unauthorized = () => {};

/** Call `handler(message)` whenever the API answers 401. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The page's own settings (trace link template, poll interval); served without a token. */
export async function loadConfig() {
  const response = await fetch(new URL("config.json", document.baseURI), { cache: "no-store" });
  if (!response.ok) throw new ApiError(response.status, "config", "the dashboard settings did not load");
  return response.json();
}

/**
 * `api("v1/jobs", {query: {status: "dead"}})` → the parsed JSON body, or an ApiError carrying
 * the API's `{"error": {code, message, details}}`.
 */
export async function api(path, { method = "GET", query = {}, body } = {}) {
  const url = new URL(path, API_ROOT);
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, "network_error", `the API did not answer (${err.message})`);
  }
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  const error = (data && data.error) || {};
  const failure = new ApiError(
    response.status,
    error.code || "http_error",
    error.message || `${response.status} ${response.statusText}`,
    error.details,
  );
  if (response.status === 401) unauthorized(failure.message);
  throw failure;
}
