// The dashboard: a hash router over pages that render from shared informers.
// Every table re-renders from the informer's cache on each watch event, synchronously, so
// what is on screen is exactly the cache: the state the informer library guarantees.

import { ApiError, capabilities, onTokenChange, request, setToken, stream, token } from "./api.js";
import { age, badge, byName, conditionSummary, h, kv, labels, matches, parseFilter, table } from "./dom.js";
import { allShared, Informer, sharedInformer } from "./informer.js";
import { applyPage } from "./editor.js";
import { cordon, deleteProject, drain, uncordon } from "./actions.js";
import { clearError } from "./notice.js";

const view = document.getElementById("view");
const filterBox = document.getElementById("filter");
const conn = document.getElementById("conn");
const logoutButton = document.getElementById("logout");
const identityBox = document.getElementById("identity");

export const session = { readOnly: false, identity: null };

let cleanup = () => {};
let tick = null;
let signingIn = false; // the sign-in form is shown instead of the page

// -- status line, banner, identity --------------------------------------------------------

function updateConn() {
  const states = allShared().filter((i) => i.running).map((i) => i.state);
  conn.hidden = states.length === 0; // a page without live tables (the editor)
  let state = "live";
  for (const s of ["unauthorized", "forbidden", "reconnecting", "connecting"]) {
    if (states.includes(s)) { state = s; break; }
  }
  const text = { live: "live", connecting: "connecting…", reconnecting: "reconnecting…",
    unauthorized: "signed out", forbidden: "forbidden" }[state];
  conn.dataset.state = state;
  conn.textContent = text;
  // Signed out: the sign-in form; signed in again (the informers restarted with the new
  // token and answered): back to the page the hash names.
  if ((state === "unauthorized") !== signingIn) route();
}

function informer(resource) {
  const inf = sharedInformer(resource);
  if (!inf.watchedByApp) {
    inf.watchedByApp = true;
    inf.onState(updateConn);
  }
  return inf;
}

async function loadIdentity() {
  session.readOnly = false;
  session.identity = null;
  identityBox.textContent = "";
  logoutButton.hidden = !token();
  const caps = await capabilities();
  if (!caps.whoami) return;
  try {
    const me = await request("GET", "/api/v1/whoami");
    session.identity = me;
    session.readOnly = me.role === "view";
    identityBox.textContent = `${me.name || "anonymous"} (${me.role || "?"})`;
  } catch {
    // Not signed in (401) or no identity endpoint: the informers say so in the status line.
  }
}

// -- pages --------------------------------------------------------------------------------

function filtered(items) {
  const terms = parseFilter(filterBox.value);
  return items.filter((o) => matches(o, terms)).sort(byName);
}

function live(informers, render) {
  // Re-render on every event of any of the informers, and every 5 s for the ages.
  const offs = informers.map((inf) => inf.subscribe(() => render()));
  const onFilter = () => render();
  filterBox.addEventListener("input", onFilter);
  render();
  return () => {
    offs.forEach((off) => off());
    filterBox.removeEventListener("input", onFilter);
  };
}

function replace(node) {
  view.replaceChildren(...(Array.isArray(node) ? node : [node]));
}

function projectsPage() {
  const projects = informer("projects");
  return live([projects], () => {
    const rows = filtered(projects.list()).map((p) =>
      h("tr", { dataset: { name: p.metadata.name } },
        h("td", {}, h("a", { href: `#/projects/${encodeURIComponent(p.metadata.name)}` }, p.metadata.name)),
        h("td", { class: "phase" }, badge(p.status?.phase || "Pending")),
        h("td", {}, p.status?.nodeRef ? h("a", { href: `#/nodes/${encodeURIComponent(p.status.nodeRef)}` }, p.status.nodeRef) : "—"),
        h("td", { class: "hide-narrow" }, conditionSummary(p)),
        h("td", { class: "age" }, age(p.metadata.creationTimestamp)),
      ));
    replace([
      h("h1", {}, "Projects", h("span", { class: "muted" }, projects.synced ? `${rows.length}` : "")),
      session.readOnly ? null : h("div", { class: "toolbar" }, h("a", { href: "#/apply", class: "button" }, "Apply a manifest…")),
      projects.synced
        ? table(["Name", "Phase", "Node", { label: "Conditions", cls: "hide-narrow" }, "Age"], rows, "No projects found.")
        : h("p", { class: "empty" }, "Loading…"),
    ]);
  });
}

function serviceRows(project) {
  const statuses = new Map((project.status?.services || []).map((s) => [s.name, s]));
  return (project.spec?.services || []).map((svc) => {
    const st = statuses.get(svc.name) || {};
    const ports = (svc.ports || []).map((p) => `${p.hostPort ? `${p.hostPort}:` : ""}${p.containerPort}/${p.protocol || "tcp"}`);
    const health = st.health || (st.ready === true ? "healthy" : st.ready === false ? "unhealthy" : "—");
    return h("tr", { dataset: { service: svc.name } },
      h("td", {}, svc.name),
      h("td", { class: "hide-narrow" }, svc.image),
      h("td", { class: "state" }, st.state || "—", st.message ? h("div", { class: "muted msg" }, st.message) : null),
      h("td", {}, health),
      h("td", {}, String(st.restartCount ?? 0)),
      h("td", {}, ports.length ? ports.join(", ") : "—"),
    );
  });
}

function logPanel(project) {
  const services = (project.spec?.services || []).map((s) => s.name);
  const select = h("select", { id: "log-service", "aria-label": "Service" }, services.map((s) => h("option", { value: s }, s)));
  const follow = h("input", { type: "checkbox", id: "log-follow", checked: true });
  const out = h("pre", { class: "logs", id: "logs", tabindex: 0, "aria-label": "Log output", "aria-live": "off" });
  const note = h("span", { class: "muted", id: "log-state" });
  let abort = null;

  const start = (again = false) => {
    abort?.abort();
    abort = new AbortController();
    const mine = abort;
    if (!again) out.textContent = "";
    note.textContent = follow.checked ? "following…" : "";
    const name = project.metadata.name;
    stream(`/api/v1/projects/${encodeURIComponent(name)}/logs`,
      // After a lost connection, only what is new (the lines before are already shown).
      { service: select.value, follow: follow.checked ? "true" : "false", tail: again ? "0" : "200" },
      (chunk) => {
        const atBottom = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
        out.append(chunk);
        if (atBottom) out.scrollTop = out.scrollHeight;
      }, mine.signal)
      .then(() => { if (!mine.signal.aborted) note.textContent = follow.checked ? "stream ended" : ""; })
      .catch((err) => {
        if (mine.signal.aborted) return;
        if (err instanceof ApiError) {
          note.textContent = `${err.status}: ${err.message}`;
          return;
        }
        note.textContent = "connection lost, reconnecting…";
        if (follow.checked) setTimeout(() => { if (abort === mine) start(true); }, 1000);
      });
  };
  select.addEventListener("change", () => start());
  follow.addEventListener("change", () => start());
  const panel = h("section", { "aria-labelledby": "logs-title" },
    h("h2", { id: "logs-title" }, "Logs"),
    h("div", { class: "toolbar" },
      h("label", {}, "Service ", select),
      h("label", {}, follow, " follow"),
      h("button", { type: "button", class: "secondary", onclick: () => start() }, "Reload"),
      note),
    out);
  return { panel, start, stop: () => abort?.abort() };
}

function projectPage(name) {
  const projects = informer("projects");
  let events = null;
  let logs = null;
  let shownUid = null;
  const sections = h("div");
  const header = h("div");
  const tail = h("div");
  replace([header, sections, tail]);

  const render = () => {
    const p = projects.items.get(name);
    if (!p) {
      header.replaceChildren(h("h1", {}, name));
      sections.replaceChildren(h("p", { class: "empty card" }, projects.synced ? `Project "${name}" not found.` : "Loading…"));
      logs?.stop();
      logs = null;
      shownUid = null;
      tail.replaceChildren();
      return;
    }
    const phase = p.status?.phase || "Pending";
    header.replaceChildren(
      h("h1", {}, name, badge(phase)),
      h("div", { class: "toolbar" },
        h("button", { type: "button", class: "secondary", disabled: session.readOnly,
          onclick: () => { location.hash = `#/apply?project=${encodeURIComponent(name)}`; } }, "Edit YAML"),
        h("button", { type: "button", class: "danger", id: "delete", disabled: session.readOnly || phase === "Terminating",
          onclick: () => deleteProject(name) }, phase === "Terminating" ? "Deleting…" : "Delete")));
    const spec = p.spec || {};
    const st = p.status || {};
    sections.replaceChildren(
      kv([
        ["Node", st.nodeRef ? h("a", { href: `#/nodes/${encodeURIComponent(st.nodeRef)}` }, st.nodeRef) : "—"],
        ["Labels", labels(p.metadata.labels)],
        ["Created", `${p.metadata.creationTimestamp} (${age(p.metadata.creationTimestamp)} ago)`],
        ["Expire at", spec.expireAt || "—"],
        ["Conditions", conditionSummary(p)],
        ["Resource version", p.metadata.resourceVersion],
      ]),
      h("h2", {}, "Services"),
      table(["Service", { label: "Image", cls: "hide-narrow" }, "State", "Health", "Restarts", "Ports"], serviceRows(p), "No services."),
      h("h2", {}, "Volumes"),
      table(["Name", "Type"], (spec.volumes || []).map((v) => h("tr", {}, h("td", {}, v.name), h("td", {}, v.type || "Ephemeral"))), "No volumes."),
      h("h2", {}, "Ingress"),
      table(["Name", "Host", "Target", "Scope"], (spec.ingress || []).map((r) => h("tr", {},
        h("td", {}, r.name),
        h("td", {}, r.host.includes(".") ? h("a", { href: `http://${r.host}/`, rel: "noopener noreferrer", target: "_blank" }, r.host) : r.host),
        h("td", {}, `${r.target.service}:${r.target.port}`),
        h("td", {}, r.access?.scope || "Internal"))), "No ingress."),
      h("h2", {}, "Conditions"),
      table(["Type", "Status", "Reason", "Last transition", "Message"], (st.conditions || []).map((c) => h("tr", {},
        h("td", {}, c.type), h("td", {}, c.status), h("td", {}, c.reason || "—"),
        h("td", {}, age(c.lastTransitionTime)), h("td", { class: "msg" }, c.message || ""))), "No conditions."),
      h("h2", {}, "Phase history"),
      table(["Phase", "Reason", "Message", "Age"], (st.history || []).slice().reverse().map((t) => h("tr", {},
        h("td", {}, badge(t.phase)), h("td", {}, t.reason || "—"), h("td", { class: "msg" }, t.message || ""), h("td", {}, age(t.time)))), "No history."),
      events ? eventsSection(events) : null,
    );
    if (shownUid !== p.metadata.uid) {
      // A new project under this name (or the first render): a fresh log panel.
      shownUid = p.metadata.uid;
      logs?.stop();
      logs = logPanel(p);
      tail.replaceChildren(logs.panel);
      logs.start();
    }
  };

  const offs = [projects.subscribe(render)];
  capabilities().then((caps) => {
    if (!caps.events || events === false) return;
    events = new Informer("events", { fieldSelector: `involvedObject.kind=Project,involvedObject.name=${name}` });
    offs.push(events.subscribe(render));
    events.start();
  });
  render();
  return () => {
    offs.forEach((off) => off());
    events?.stop();
    events = false;
    logs?.stop();
  };
}

function eventsSection(events) {
  const rows = events.list()
    .sort((a, b) => Date.parse(b.lastTimestamp || 0) - Date.parse(a.lastTimestamp || 0))
    .map((e) => h("tr", {},
      h("td", {}, badge(e.type, e.type === "Warning" ? "warn" : "ok")),
      h("td", {}, e.reason || ""),
      h("td", {}, age(e.lastTimestamp || e.firstTimestamp)),
      h("td", {}, String(e.count ?? 1)),
      h("td", { class: "hide-narrow" }, e.reportingComponent || e.source?.component || ""),
      h("td", { class: "msg" }, e.message || "")));
  return [h("h2", {}, "Events"), table(["Type", "Reason", "Age", "Count", { label: "From", cls: "hide-narrow" }, "Message"], rows, "No events.")];
}

function scheduling(node) {
  if (node.status?.state === "Draining") return badge("Draining");
  if (node.spec?.unschedulable) return badge("Cordoned", "warn");
  return "—";
}

function allocation(node) {
  const alloc = node.status?.allocatable || {};
  const keys = Object.keys(alloc);
  if (!keys.length) return "—";
  return keys.map((k) => `${k}: ${alloc[k]}`).join(", ");
}

function nodesPage() {
  const nodes = informer("nodes");
  const projects = informer("projects");
  return live([nodes, projects], () => {
    const counts = new Map();
    for (const p of projects.list()) {
      const n = p.status?.nodeRef;
      if (n) counts.set(n, (counts.get(n) || 0) + 1);
    }
    const rows = filtered(nodes.list()).map((n) => h("tr", { dataset: { name: n.metadata.name } },
      h("td", {}, h("a", { href: `#/nodes/${encodeURIComponent(n.metadata.name)}` }, n.metadata.name)),
      h("td", { class: "state" }, badge(n.status?.state || "Unknown")),
      h("td", { class: "hide-narrow" }, n.status?.network?.ip || "—"),
      h("td", {}, String(counts.get(n.metadata.name) || 0)),
      h("td", { class: "hide-narrow" }, allocation(n)),
      h("td", {}, n.status?.lastHeartbeat ? `${age(n.status.lastHeartbeat)} ago` : "never"),
      h("td", { class: "scheduling" }, scheduling(n)),
    ));
    replace([
      h("h1", {}, "Nodes", h("span", { class: "muted" }, nodes.synced ? `${rows.length}` : "")),
      nodes.synced
        ? table(["Name", "State", { label: "IP", cls: "hide-narrow" }, "Projects", { label: "Allocatable", cls: "hide-narrow" }, "Heartbeat", "Scheduling"], rows, "No nodes found.")
        : h("p", { class: "empty" }, "Loading…"),
    ]);
  });
}

function nodePage(name) {
  const nodes = informer("nodes");
  const projects = informer("projects");
  return live([nodes, projects], () => {
    const n = nodes.items.get(name);
    if (!n) {
      replace([h("h1", {}, name), h("p", { class: "empty card" }, nodes.synced ? `Node "${name}" not found.` : "Loading…")]);
      return;
    }
    const st = n.status || {};
    const info = st.info || {};
    const mine = projects.list().filter((p) => p.status?.nodeRef === name).sort(byName);
    const cordoned = n.spec?.unschedulable || st.state === "Draining";
    replace([
      h("h1", {}, name, badge(st.state || "Unknown"), scheduling(n)),
      h("div", { class: "toolbar" },
        h("button", { type: "button", class: "secondary", id: "cordon", disabled: session.readOnly || n.spec?.unschedulable, onclick: () => cordon(name) }, "Cordon"),
        h("button", { type: "button", class: "secondary", id: "uncordon", disabled: session.readOnly || !cordoned, onclick: () => uncordon(name) }, "Uncordon"),
        h("button", { type: "button", class: "danger", id: "drain", disabled: session.readOnly || st.state === "Draining", onclick: () => drain(name, mine) }, "Drain")),
      kv([
        ["IP", st.network?.ip || "—"],
        ["Agent port", st.network?.agentPort ?? "—"],
        ["Last heartbeat", st.lastHeartbeat ? `${st.lastHeartbeat} (${age(st.lastHeartbeat)} ago)` : "never"],
        ["Labels", labels(n.metadata.labels)],
        ["OS", info.osImage || "—"],
        ["Kernel", info.kernelVersion || "—"],
        ["Docker", info.dockerVersion || "—"],
        ["Agent", info.agentVersion || "—"],
        ["Capacity", Object.entries(st.capacity || {}).map(([k, v]) => `${k}: ${v}`).join(", ") || "—"],
        ["Allocatable", allocation(n)],
      ]),
      h("h2", {}, "Conditions"),
      table(["Type", "Status", "Reason", "Last transition", "Message"], (st.conditions || []).map((c) => h("tr", {},
        h("td", {}, c.type), h("td", {}, c.status), h("td", {}, c.reason || "—"),
        h("td", {}, age(c.lastTransitionTime)), h("td", { class: "msg" }, c.message || ""))), "No conditions."),
      h("h2", {}, "Projects"),
      table(["Name", "Phase", "Age"], mine.map((p) => h("tr", { dataset: { name: p.metadata.name } },
        h("td", {}, h("a", { href: `#/projects/${encodeURIComponent(p.metadata.name)}` }, p.metadata.name)),
        h("td", {}, badge(p.status?.phase || "Pending")),
        h("td", {}, age(p.metadata.creationTimestamp)))), "No projects on this node."),
    ]);
  });
}

function loginPage() {
  const input = h("input", { type: "password", id: "token", autocomplete: "off", required: true, "aria-describedby": "login-help" });
  const failed = allShared().find((i) => i.state === "unauthorized");
  const form = h("form", { class: "login card", onsubmit: (ev) => {
    ev.preventDefault();
    setToken(input.value.trim());
  } },
  h("h1", {}, "Sign in"),
  h("p", { id: "login-help", class: "muted" }, "Paste an API token (", h("code", {}, "caractrl config view --raw"), " shows yours)."),
  failed?.detail ? h("p", { class: "banner", role: "alert" }, failed.detail) : null,
  h("label", { for: "token" }, "Token"), input,
  h("button", { type: "submit" }, "Sign in"));
  replace(form);
  input.focus();
  return () => {};
}

// -- router -------------------------------------------------------------------------------

const ROUTES = [
  [/^#\/projects\/?$/, () => projectsPage()],
  [/^#\/projects\/([^/?]+)$/, (m) => projectPage(decodeURIComponent(m[1]))],
  [/^#\/nodes\/?$/, () => nodesPage()],
  [/^#\/nodes\/([^/?]+)$/, (m) => nodePage(decodeURIComponent(m[1]))],
  [/^#\/apply(?:\?(.*))?$/, (m) => applyPage(replace, new URLSearchParams(m[1] || ""), session.readOnly)],
];

export function route() {
  cleanup();
  cleanup = () => {};
  clearError();
  signingIn = allShared().some((i) => i.state === "unauthorized");
  if (signingIn) {
    cleanup = loginPage();
    return;
  }
  const hash = location.hash || "#/projects";
  for (const [re, page] of ROUTES) {
    const m = hash.match(re);
    if (m) {
      const section = hash.split(/[/?]/)[1];
      for (const a of document.querySelectorAll("[data-nav]")) {
        if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
        else a.removeAttribute("aria-current");
      }
      cleanup = page(m) || (() => {});
      updateConn();
      return;
    }
  }
  location.hash = "#/projects";
}

function start() {
  window.addEventListener("hashchange", () => { route(); view.focus({ preventScroll: true }); });
  logoutButton.addEventListener("click", () => setToken(""));
  // The skip link must not touch the hash: the hash is the router's.
  document.querySelector(".skip").addEventListener("click", (ev) => {
    ev.preventDefault();
    view.focus();
  });
  onTokenChange(async () => {
    await loadIdentity();
    for (const inf of allShared()) inf.restart();
    route();
  });
  // A hidden tab holds no watch (browsers allow six connections per server, and every
  // visible tab needs its own); back in view it resumes from the revision it had.
  document.addEventListener("visibilitychange", () => {
    for (const inf of allShared()) {
      if (document.visibilityState === "hidden") inf.pause();
      else inf.resume();
    }
  });
  // Ages tick locally (no network): re-render the current page's ages every 5 s.
  tick = setInterval(() => {
    for (const inf of allShared()) inf.emit("TICK", null);
  }, 5000);
  loadIdentity().then(route);
}

start();
