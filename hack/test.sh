#!/usr/bin/env bash
# The one test command (README "Development"): installs what the suite needs, starts a
# private Docker engine, builds the local test images, lints, type-checks, then runs every
# test (unit, integration against real PostgreSQL, e2e against real Docker).
# Extra arguments go to pytest, e.g. `hack/test.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Quiet install: CI's last lines must be pytest's summary, not pip's chatter.
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

# A real Docker engine for the e2e suite (and testcontainers); a private one when none answers.
eval "$(hack/docker-up.sh cara)"
export DOCKER_HOST
hack/build-images.sh >&2
# PgBouncer and HAProxy for the HA tests (tests/chaos); missing ones fail those tests in CI.
hack/install-ha-tools.sh

# A real browser for the dashboard's tests: Debian's Chromium, driven by Playwright (its own
# browser download cannot work offline). Missing in CI, those tests fail rather than skip.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "== installing chromium" >&2
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
    >/dev/null 2>&1 || echo "hack/test.sh: could not install chromium" >&2
fi

echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy" >&2
.venv/bin/mypy

echo "== pytest" >&2
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
