#!/usr/bin/env bash
# Install what the HA tests and the chaos suite drive: Debian's PgBouncer (the pooler in
# transaction mode in front of PostgreSQL) and HAProxy (the load balancer in front of the
# cara-server replicas). Idempotent and quiet when both are present; called by hack/test.sh.
# A missing tool after this is a failure in CI (the tests say so), never a skip.
set -euo pipefail
need=()
command -v pgbouncer >/dev/null 2>&1 || [[ -x /usr/sbin/pgbouncer ]] || need+=(pgbouncer)
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy)
[[ ${#need[@]} == 0 ]] && exit 0
if [[ $(id -u) != 0 ]]; then
  echo "install-ha-tools: ${need[*]} missing and this is not root (apt-get install ${need[*]});" \
       "the HA tests will skip (and fail in CI)" >&2
  [[ ${CI:-} == true ]] && exit 1
  exit 0
fi
{
  export DEBIAN_FRONTEND=noninteractive
  # apt-get update once, and only when the install needs it (a fresh CI machine does).
  apt-get install -y -q --no-install-recommends "${need[@]}" ||
    { apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"; }
  # The packages start system services we do not want: ours run on private ports.
  for svc in pgbouncer haproxy; do
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$svc" 2>/dev/null || true; fi
    service "$svc" stop 2>/dev/null || true
  done
} >&2 || { echo "install-ha-tools: apt-get install ${need[*]} failed" >&2; exit 1; }
