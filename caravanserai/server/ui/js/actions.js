// The dashboard's writes: delete a project, cordon / uncordon / drain a node. They are the
// same requests `caractrl delete`, `cordon`, `uncordon` and `drain` send (cli/commands),
// with the same resourceVersion preconditions and retries, so a heartbeat racing a cordon
// never loses either write.

import { ApiError, request } from "./api.js";
import { clearError, showError } from "./notice.js";

const RETRIES = 5;
// Phases whose containers live on the node; Terminating ones are torn down where they are.
const MOVABLE = new Set(["Scheduled", "Running", "Failed"]);

export function confirmDialog(title, text, action) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = action;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    document.getElementById("confirm-ok").focus();
  });
}

async function guarded(fn) {
  clearError();
  try {
    await fn();
  } catch (err) {
    showError(err);
  }
}

export function deleteProject(name) {
  return guarded(async () => {
    const ok = await confirmDialog(`Delete project "${name}"?`,
      `The agent stops and removes every container, network and volume of project "${name}". This cannot be undone.`,
      `Delete ${name}`);
    if (!ok) return;
    await request("DELETE", `/api/v1/projects/${encodeURIComponent(name)}`);
  });
}

const nodePath = (name) => `/api/v1/nodes/${encodeURIComponent(name)}`;

/** Read-modify-write a node with its resourceVersion, retrying when someone wrote first. */
async function writeNode(name, change) {
  for (let attempt = 0; ; attempt++) {
    const node = await request("GET", nodePath(name));
    try {
      return await change(node);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 409) || attempt === RETRIES - 1) throw err;
    }
  }
}

function setUnschedulable(name, value) {
  return writeNode(name, async (node) => {
    if (Boolean(node.spec?.unschedulable) === value) return false;
    node.spec = { ...(node.spec || {}), unschedulable: value };
    await request("PUT", nodePath(name), { body: node });
    return true;
  });
}

function setState(name, wanted, onlyFrom) {
  return writeNode(name, async (node) => {
    const state = node.status?.state;
    if (state === wanted || (onlyFrom && state !== onlyFrom)) return false;
    node.status = { ...(node.status || {}), state: wanted };
    await request("PUT", `${nodePath(name)}/status`, { body: node });
    return true;
  });
}

export function cordon(name) {
  return guarded(() => setUnschedulable(name, true));
}

export function uncordon(name) {
  return guarded(async () => {
    await setUnschedulable(name, false);
    await setState(name, "Ready", "Draining");
  });
}

export function drain(name, projects) {
  return guarded(async () => {
    const movable = projects.filter((p) => MOVABLE.has(p.status?.phase));
    const ok = await confirmDialog(`Drain node "${name}"?`,
      `Node "${name}" is cordoned and its ${movable.length} project(s) move to other nodes (Ephemeral volumes do not move).`,
      `Drain ${name}`);
    if (!ok) return;
    await setUnschedulable(name, true);
    await setState(name, "Draining", null);
    for (const p of movable) {
      try {
        await request("PATCH", `/api/v1/projects/${encodeURIComponent(p.metadata.name)}/status`, {
          body: {
            phase: "Pending",
            reason: "NodeDrained",
            message: `node "${name}" is being drained; project moved for rescheduling`,
            resourceVersion: p.metadata.resourceVersion,
          },
        });
      } catch (err) {
        // It moved or went away meanwhile: nothing to drain (as caractrl drain).
        if (!(err instanceof ApiError && (err.status === 409 || err.status === 404))) throw err;
      }
    }
  });
}
