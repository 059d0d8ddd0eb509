// The Apply page: a YAML editor that applies Projects (and, for admins, Nodes) the way
// `caractrl apply` does — create, or update with the live resourceVersion when it exists —
// and puts the server's validation errors next to the lines of the fields they name.

import { ApiError, request } from "./api.js";
import { h } from "./dom.js";
import { clearError, showError } from "./notice.js";

// The YAML library is loaded only here, on first use (and again after a failed load).
let yamlLib = null;
function loadYaml() {
  yamlLib ??= import("../vendor/yaml.js").catch((err) => {
    yamlLib = null;
    throw err;
  });
  return yamlLib;
}

const KINDS = { Project: "projects", Node: "nodes" };
const SERVER_FIELDS = ["uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp"];

const EXAMPLE = `apiVersion: caravanserai/v1
kind: Project
metadata:
  name: hello
  labels:
    app: hello
spec:
  services:
    - name: web
      image: cara-example/web:latest
`;

let draft = null; // the editor's text survives navigating away and back

/** "spec.services[0].image" → ["spec", "services", 0, "image"] */
export function fieldPath(field) {
  const out = [];
  for (const part of field.split(".")) {
    const m = part.match(/^([^[\]]*)((?:\[\d+\])*)$/);
    if (!m) { out.push(part); continue; }
    if (m[1]) out.push(m[1]);
    for (const idx of m[2].matchAll(/\[(\d+)\]/g)) out.push(Number(idx[1]));
  }
  return out;
}

/** The 1-based line of the deepest node of `path` present in `doc` (its parent when the
 *  field itself is missing, e.g. a required field not written). */
function lineOf(doc, path, counter) {
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    const offset = node?.range?.[0];
    if (offset !== undefined) {
      // A key's own line reads better than its value's for a mapping value.
      const keyNode = n > 0 && typeof path[n - 1] === "string" ? keyOf(doc, path.slice(0, n)) : null;
      return counter.linePos(keyNode?.range?.[0] ?? offset).line;
    }
  }
  return counter.linePos(doc.range?.[0] ?? 0).line;
}

function keyOf(doc, path) {
  const parent = path.length > 1 ? doc.getIn(path.slice(0, -1), true) : doc.contents;
  const pair = parent?.items?.find?.((it) => it.key?.value === path[path.length - 1]);
  return pair?.key || null;
}

function strip(obj) {
  const copy = structuredClone(obj);
  delete copy.status;
  for (const key of SERVER_FIELDS) delete copy.metadata?.[key];
  return copy;
}

async function applyOne(resource, obj) {
  // Apply is idempotent (create, else update with the live resourceVersion), so a request
  // lost to the network is simply tried again.
  for (let attempt = 1; ; attempt++) {
    try {
      return await applyOnce(resource, obj);
    } catch (err) {
      if (err instanceof ApiError || attempt === 3) throw err;
      await new Promise((resolve) => setTimeout(resolve, 300 * attempt));
    }
  }
}

async function applyOnce(resource, obj) {
  const name = obj.metadata?.name;
  const path = `/api/v1/${resource}`;
  try {
    await request("POST", path, { body: obj });
    return "created";
  } catch (err) {
    const exists = err instanceof ApiError && err.status === 409 && String(err.problem.type || "").endsWith("/already-exists");
    if (!exists) throw err;
  }
  for (let attempt = 0; attempt < 5; attempt++) {
    const live = await request("GET", `${path}/${encodeURIComponent(name)}`);
    const body = structuredClone(obj);
    body.metadata = { ...(body.metadata || {}), resourceVersion: live.metadata.resourceVersion };
    try {
      await request("PUT", `${path}/${encodeURIComponent(name)}`, { body });
      return "configured";
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 409)) throw err;
      const again = await request("GET", `${path}/${encodeURIComponent(name)}`);
      if (again.metadata.resourceVersion === live.metadata.resourceVersion) throw err; // refused, not stale
    }
  }
  throw new Error(`${name}: kept changing, gave up`);
}

export function applyPage(replace, params, readOnly = false) {
  const textarea = h("textarea", { id: "manifest", spellcheck: "false", autocomplete: "off", "aria-label": "Manifest (YAML)", "aria-describedby": "apply-errors" });
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  const errorList = h("ul", { class: "errors", id: "apply-errors", "aria-live": "polite" });
  const results = h("ul", { class: "results", id: "apply-results", "aria-live": "polite" });
  const applyButton = h("button", { type: "button", id: "apply", disabled: readOnly,
    title: readOnly ? "your token may only read" : null }, "Apply");
  let marks = new Map(); // line → messages

  const renderGutter = () => {
    const lines = textarea.value.split("\n").length;
    const rows = [];
    for (let i = 1; i <= lines; i++) {
      const msgs = marks.get(i);
      rows.push(h("div", msgs ? { class: "err", title: msgs.join("\n"), dataset: { line: i } } : { dataset: { line: i } }, msgs ? `● ${i}` : String(i)));
    }
    gutter.replaceChildren(...rows);
    gutter.scrollTop = textarea.scrollTop;
  };

  const goToLine = (line) => {
    const lines = textarea.value.split("\n");
    const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
    textarea.focus();
    textarea.setSelectionRange(start, start + (lines[line - 1] || "").length);
    textarea.scrollTop = Math.max(0, (line - 3) * 20);
  };

  const setErrors = (errors) => {
    marks = new Map();
    for (const e of errors) {
      if (e.line) marks.set(e.line, [...(marks.get(e.line) || []), e.text]);
    }
    errorList.replaceChildren(...errors.map((e) => h("li", { dataset: { line: e.line || "" } },
      e.line ? h("button", { type: "button", onclick: () => goToLine(e.line) }, `line ${e.line}`) : null,
      e.line ? ": " : "", e.text)));
    renderGutter();
  };

  const apply = async () => {
    clearError();
    results.replaceChildren();
    let LineCounter, parseAllDocuments;
    try {
      ({ LineCounter, parseAllDocuments } = await loadYaml());
    } catch (err) {
      showError(new Error(`could not load the YAML parser (${err.message}); try again`));
      return;
    }
    const counter = new LineCounter();
    const docs = parseAllDocuments(textarea.value, { lineCounter: counter, prettyErrors: true });
    const list = Array.isArray(docs) ? docs : [docs];
    const syntax = list.flatMap((d) => d.errors.map((err) => ({ line: err.linePos?.[0]?.line, text: err.message.split("\n")[0] })));
    if (syntax.length) { setErrors(syntax); return; }
    const errors = [];
    const work = [];
    for (const doc of list) {
      const obj = doc.toJS();
      if (obj === null || obj === undefined) continue;
      const line = counter.linePos(doc.range?.[0] ?? 0).line;
      if (typeof obj !== "object" || Array.isArray(obj)) { errors.push({ line, text: "a manifest must be a mapping" }); continue; }
      const resource = KINDS[obj.kind];
      if (!resource) {
        errors.push({ line: lineOf(doc, ["kind"], counter), text: `kind: must be ${Object.keys(KINDS).join(" or ")}, not ${JSON.stringify(obj.kind ?? null)}` });
        continue;
      }
      work.push({ doc, obj, resource });
    }
    if (!work.length && !errors.length) errors.push({ line: 1, text: "nothing to apply: the editor holds no manifest" });
    if (errors.length) { setErrors(errors); return; }
    applyButton.disabled = true;
    try {
      for (const { doc, obj, resource } of work) {
        const name = obj.metadata?.name || "?";
        const label = `${obj.kind.toLowerCase()} "${name}"`;
        try {
          const outcome = await applyOne(resource, obj);
          results.append(h("li", {}, `${label} ${outcome}`, " ",
            resource === "projects" ? h("a", { href: `#/projects/${encodeURIComponent(name)}` }, "view") : null));
        } catch (err) {
          if (err instanceof ApiError && Array.isArray(err.problem.errors) && err.problem.errors.length) {
            for (const fe of err.problem.errors) {
              const where = fe.field ? lineOf(doc, fieldPath(fe.field), counter) : counter.linePos(doc.range?.[0] ?? 0).line;
              errors.push({ line: where, text: `${label}: ${fe.field ? `${fe.field}: ` : ""}${fe.message}` });
            }
          } else {
            errors.push({ line: counter.linePos(doc.range?.[0] ?? 0).line, text: `${label}: ${err instanceof ApiError ? `${err.status} ${err.message}` : err.message}` });
          }
        }
      }
    } finally {
      applyButton.disabled = false;
    }
    setErrors(errors);
  };
  loadYaml().catch(() => {}); // start fetching it while the user types

  applyButton.addEventListener("click", apply);
  textarea.addEventListener("input", () => { draft = textarea.value; renderGutter(); });
  textarea.addEventListener("scroll", () => { gutter.scrollTop = textarea.scrollTop; });
  textarea.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); apply(); }
  });

  const project = params.get("project");
  textarea.value = draft ?? EXAMPLE;
  if (project) {
    Promise.all([request("GET", `/api/v1/projects/${encodeURIComponent(project)}`), loadYaml()])
      .then(([obj, { stringify }]) => { textarea.value = stringify(strip(obj)); draft = textarea.value; renderGutter(); })
      .catch(showError);
  }
  replace([
    h("h1", {}, "Apply a manifest"),
    h("p", { class: "muted" }, "A Project (or several, separated by ", h("code", {}, "---"), "), as for ",
      h("code", {}, "caractrl apply -f"), ". Ctrl+Enter applies."),
    h("div", { class: "editor" }, gutter, textarea),
    h("div", { class: "toolbar" }, applyButton,
      h("button", { type: "button", class: "secondary", onclick: () => { textarea.value = EXAMPLE; draft = null; setErrors([]); } }, "Reset to example")),
    errorList,
    results,
  ]);
  renderGutter();
  return () => {};
}
