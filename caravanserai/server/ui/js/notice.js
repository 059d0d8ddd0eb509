// The error banner under the header: one place for failed user actions to be told.

import { ApiError } from "./api.js";

export function showError(err) {
  const banner = document.getElementById("banner");
  banner.hidden = false;
  banner.textContent = err instanceof ApiError ? `${err.status}: ${err.message}` : String(err?.message || err);
}

export function clearError() {
  const banner = document.getElementById("banner");
  banner.hidden = true;
  banner.textContent = "";
}
