// Small DOM and formatting helpers. Every piece of server data reaches the page through
// text nodes (never innerHTML), so a project named "<img onerror=…>" is just text.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function badge(text, cls) {
  return h("span", { class: `badge ${cls || text || "Unknown"}` }, text || "Unknown");
}

export function table(headers, rows, emptyText) {
  if (!rows.length) return h("p", { class: "empty card" }, emptyText);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col", class: t.cls }, t.label ?? t)))),
      h("tbody", {}, rows),
    ),
  );
}

export function kv(pairs) {
  return h("dl", { class: "kv card" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

export function labels(map) {
  const entries = Object.entries(map || {});
  if (!entries.length) return h("span", { class: "muted" }, "<none>");
  return h("span", { class: "labels" }, entries.map(([k, v]) => h("span", {}, `${k}=${v}`)));
}

/** kubectl's short ages: 42s, 7m, 3h, 12d. */
export function age(timestamp, now = Date.now()) {
  if (!timestamp) return "—";
  const seconds = Math.max(0, Math.floor((now - Date.parse(timestamp)) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

export function byName(a, b) {
  return a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0;
}

/** Conditions that are True, as `caractrl get` shows them (the Phase condition aside). */
export function conditionSummary(obj) {
  const names = (obj.status?.conditions || [])
    .filter((c) => c.status === "True" && c.type !== "Phase")
    .map((c) => c.type);
  return names.length ? names.join(",") : "—";
}

/**
 * The global filter: comma-separated terms, all of which must hold.
 *   web          name contains "web", or a label "web" is set
 *   app=web      label app is web (also app==web); app!=web; !app (no label app)
 *   phase=Running / state=Ready / node=node-1   fields
 */
export function parseFilter(text) {
  const terms = [];
  for (const raw of (text || "").split(",")) {
    const term = raw.trim();
    if (!term) continue;
    let m;
    if ((m = term.match(/^!\s*([^=!\s]+)$/))) terms.push({ op: "absent", key: m[1] });
    else if ((m = term.match(/^([^=!\s]+)\s*!=\s*(.*)$/))) terms.push({ op: "ne", key: m[1], value: m[2].trim() });
    else if ((m = term.match(/^([^=!\s]+)\s*==?\s*(.*)$/))) terms.push({ op: "eq", key: m[1], value: m[2].trim() });
    else terms.push({ op: "text", value: term.toLowerCase() });
  }
  return terms;
}

const FIELDS = {
  phase: (o) => o.status?.phase,
  state: (o) => o.status?.state,
  node: (o) => o.status?.nodeRef,
  name: (o) => o.metadata.name,
};

export function matches(obj, terms) {
  const lbls = obj.metadata.labels || {};
  return terms.every((t) => {
    if (t.op === "text") {
      return obj.metadata.name.toLowerCase().includes(t.value) || Object.keys(lbls).some((k) => k.toLowerCase() === t.value);
    }
    if (t.op === "absent") return !(t.key in lbls);
    const field = FIELDS[t.key];
    const actual = field && !(t.key in lbls) ? field(obj) : lbls[t.key];
    if (t.op === "eq") {
      return field && !(t.key in lbls) ? String(actual || "").toLowerCase() === t.value.toLowerCase() : actual === t.value;
    }
    if (t.op === "ne") {
      return field && !(t.key in lbls) ? String(actual || "").toLowerCase() !== t.value.toLowerCase() : actual !== t.value;
    }
    return true;
  });
}
