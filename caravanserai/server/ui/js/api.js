// The dashboard's only door to the server: /api/v1 with the user's bearer token.
// The token lives in sessionStorage (gone with the tab), never in a cookie, so no other
// site can make the browser send it.

const TOKEN_KEY = "caravanserai.token";
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
  for (const fn of listeners) fn();
}

/** Called with no arguments whenever the token changes (sign in, sign out). */
export function onTokenChange(fn) {
  listeners.add(fn);
}

function headers(extra) {
  const h = { Accept: "application/json", ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function problemOf(resp) {
  try {
    return await resp.json();
  } catch {
    return { title: resp.statusText, status: resp.status };
  }
}

// Every plain request ends within this; streams are bounded by their own liveness checks.
export const REQUEST_TIMEOUT_MS = 30000;

function bounded(signal) {
  const timeout = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
  return signal ? AbortSignal.any([signal, timeout]) : timeout;
}

/** A JSON request; resolves to the parsed body (null for 204), rejects with ApiError. */
export async function request(method, path, { body, query, signal } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let resp;
  for (let attempt = 1; ; attempt++) {
    try {
      resp = await fetch(url, { ...init, signal: bounded(signal) });
      break;
    } catch (err) {
      // A read lost to the network (Chromium aborts requests when interfaces change) is
      // tried again; a write is not, as it may have reached the server.
      if (method !== "GET" || signal?.aborted || attempt === 3) throw err;
      await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
    }
  }
  if (!resp.ok) throw new ApiError(resp.status, await problemOf(resp));
  if (resp.status === 204) return null;
  const type = resp.headers.get("Content-Type") || "";
  return type.includes("json") ? resp.json() : resp.text();
}

/**
 * Open a streaming GET and call onChunk(text) for each decoded piece as it arrives.
 * Resolves when the server ends the stream; rejects with ApiError for a non-2xx answer,
 * or with the fetch error when the connection fails or breaks.
 */
export async function stream(path, query, onChunk, signal, onOpen) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const resp = await fetch(url, { headers: headers({ Accept: "application/x-ndjson, text/plain" }), signal });
  if (!resp.ok) throw new ApiError(resp.status, await problemOf(resp));
  onOpen?.();
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      onChunk(value);
    }
  } finally {
    reader.releaseLock();
  }
}

/** Like stream(), but calls onLine(obj) for each newline-delimited JSON value. */
export async function streamLines(path, query, onLine, signal, onOpen) {
  let buffered = "";
  await stream(path, query, (chunk) => {
    buffered += chunk;
    let nl;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (line) onLine(JSON.parse(line));
    }
  }, signal, onOpen);
}

let discovery = null;

/**
 * What this server offers, from its OpenAPI document: the dashboard shows events, or an
 * identity, only where the server has the routes (asking blindly would fill the browser's
 * console with 404s).
 */
export function capabilities() {
  if (!discovery) {
    discovery = fetch("/api/v1/openapi.json", { headers: { Accept: "application/json" }, signal: bounded() })
      .then((r) => (r.ok ? r.json() : { paths: {} }))
      .then((doc) => {
        const paths = Object.keys(doc.paths || {});
        return {
          events: paths.includes("/api/v1/events"),
          whoami: paths.includes("/api/v1/whoami"),
        };
      })
      .catch(() => {
        discovery = null; // try again next time: the server may just be restarting
        return { events: false, whoami: false };
      });
  }
  return discovery;
}
