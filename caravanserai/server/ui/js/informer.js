// A browser informer: list, then watch from the list's resourceVersion, exactly like the
// Python informer library (caravanserai.informer) the controllers and agents use.
//
//  - every event is applied in revision order to a local cache (a Map by name);
//  - bookmarks advance the resourceVersion while nothing changes;
//  - a watch the server ends cleanly (timeout) resumes from the last revision, losing nothing;
//  - a 410 (the revision left the server's retained log) relists, and the relist reports
//    its differences (deleted / added / modified) so the page ends up exactly right;
//  - a dropped connection (server restart, network) reconnects with jittered exponential
//    backoff, 0.8 s doubling to 30 s, and resumes from the last revision.
// It never polls: between events the only traffic is the open watch stream.

import { ApiError, request, streamLines } from "./api.js";

const BACKOFF_FIRST = 800;
// The server sends a BOOKMARK after 10 s without events (CARA_BOOKMARK_INTERVAL); a watch
// that has said nothing for much longer is dead even if its socket is not: reconnect.
const SILENCE_MS = 45000;
const BACKOFF_MAX = 30000;
const PAGE = 500;

export class Informer {
  /**
   * @param {string} resource  e.g. "projects", "nodes", "events"
   * @param {object} [query]   extra list/watch parameters (labelSelector, fieldSelector)
   */
  constructor(resource, query = {}) {
    this.resource = resource;
    this.query = query;
    this.items = new Map();
    this.resourceVersion = "";
    this.state = "connecting"; // connecting | live | reconnecting | unauthorized | forbidden | error
    this.detail = "";
    this.synced = false;
    this.handlers = new Set();
    this.stateHandlers = new Set();
    this.abort = null;
    this.running = false;
    this.generation = 0; // each start() runs its own loop; a stopped one must not go on
  }

  get path() {
    return `/api/v1/${this.resource}`;
  }

  /** handler(type, object) for ADDED/MODIFIED/DELETED; ("SYNC", null) after each (re)list. */
  subscribe(handler) {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  onState(handler) {
    this.stateHandlers.add(handler);
    return () => this.stateHandlers.delete(handler);
  }

  list() {
    return [...this.items.values()];
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.generation += 1;
    this.loop(this.generation);
  }

  stop() {
    this.running = false;
    this.abort?.abort();
  }

  /** Close the watch but keep the cache and revision (a hidden tab holds no connection:
   *  browsers allow only six per server). resume() watches on from the same revision. */
  pause() {
    this.stop();
  }

  resume() {
    this.start();
  }

  /** Start over (e.g. with a new token): relist from scratch. */
  restart() {
    this.stop();
    this.resourceVersion = "";
    this.start();
  }

  setState(state, detail = "") {
    if (state === this.state && detail === this.detail) return;
    this.state = state;
    this.detail = detail;
    for (const fn of this.stateHandlers) fn(state, detail);
  }

  emit(type, object) {
    for (const fn of this.handlers) fn(type, object);
  }

  async relist(alive, signal) {
    const fresh = new Map();
    let cont = "";
    let revision = "";
    do {
      const page = await request("GET", this.path, {
        query: { ...this.query, limit: PAGE, continue: cont },
        signal,
      });
      for (const obj of page.items) fresh.set(obj.metadata.name, obj);
      cont = page.metadata.continue || "";
      revision = revision || page.metadata.resourceVersion;
    } while (cont);
    if (!alive()) return;
    // Replace the cache and report the difference, as the Python cache's relist does.
    for (const [name, old] of this.items) {
      if (!fresh.has(name)) {
        this.items.delete(name);
        this.emit("DELETED", old);
      }
    }
    for (const [name, obj] of fresh) {
      const old = this.items.get(name);
      this.items.set(name, obj);
      if (!old) this.emit("ADDED", obj);
      else if (old.metadata.resourceVersion !== obj.metadata.resourceVersion) this.emit("MODIFIED", obj);
    }
    this.resourceVersion = revision;
    this.synced = true;
    this.emit("SYNC", null);
  }

  apply(event, alive = () => true) {
    if (!alive()) return; // a paused loop's last chunk: the next loop resumes from our revision
    const obj = event.object;
    switch (event.type) {
      case "ADDED":
      case "MODIFIED":
        this.items.set(obj.metadata.name, obj);
        this.resourceVersion = obj.metadata.resourceVersion;
        this.emit(event.type, obj);
        break;
      case "DELETED":
        this.items.delete(obj.metadata.name);
        this.resourceVersion = obj.metadata.resourceVersion;
        this.emit("DELETED", obj);
        break;
      case "BOOKMARK":
        this.resourceVersion = obj.metadata.resourceVersion;
        break;
      case "ERROR":
        throw new ApiError(obj.status || 500, obj);
      default:
        break;
    }
  }

  async loop(generation) {
    const alive = () => this.running && this.generation === generation;
    let failures = 0;
    let needList = !this.resourceVersion;
    while (alive()) {
      const controller = new AbortController();
      this.abort = controller;
      let silence = null;
      const arm = () => {
        clearTimeout(silence);
        silence = setTimeout(() => controller.abort(new Error("watch went silent")), SILENCE_MS);
      };
      try {
        if (needList) {
          await this.relist(alive, controller.signal);
          needList = false;
        }
        if (!alive()) return;
        arm();
        const query = { ...this.query, watch: "true", resourceVersion: this.resourceVersion, allowWatchBookmarks: "true" };
        const onEvent = (event) => {
          arm();
          this.apply(event, alive);
        };
        const onOpen = () => {
          if (!alive()) return;
          // "live" only once the server has accepted the watch, so a restart shows
          // "reconnecting…" until a watch is really open again.
          this.setState("live");
          failures = 0;
        };
        await streamLines(this.path, query, onEvent, controller.signal, onOpen);
        // The server ended the watch cleanly (its timeout): resume where we were.
      } catch (err) {
        if (!alive()) return;
        if (err instanceof ApiError && err.status === 410) {
          needList = true; // our revision is older than the server's log: list again
          continue;
        }
        if (err instanceof ApiError && err.status === 401) {
          this.setState("unauthorized", err.message);
          return; // nothing to retry until someone signs in (restart() does that)
        }
        if (err instanceof ApiError && err.status === 403) {
          this.setState("forbidden", err.message);
          return;
        }
        failures += 1;
        const delay = Math.min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1));
        const jittered = delay * (0.5 + Math.random() / 2);
        this.setState("reconnecting", err instanceof ApiError ? err.message : "connection lost");
        await new Promise((resolve) => setTimeout(resolve, jittered));
      } finally {
        clearTimeout(silence);
      }
    }
  }

}

const shared = new Map();

/** The one informer per resource that every page shares (started on first use). */
export function sharedInformer(resource) {
  let inf = shared.get(resource);
  if (!inf) {
    inf = new Informer(resource);
    shared.set(resource, inf);
  }
  inf.start();
  return inf;
}

export function allShared() {
  return [...shared.values()];
}
