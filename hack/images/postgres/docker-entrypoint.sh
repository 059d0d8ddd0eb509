#!/bin/sh
# cara-test/postgres entrypoint (busybox ash). Enough of the official image's
# contract for testcontainers' PostgresContainer and for docker run by hand:
#
#   POSTGRES_USER      superuser name (postgres)
#   POSTGRES_PASSWORD  its password; TCP connections then need it (scram-sha-256)
#   POSTGRES_DB        database created on first start (POSTGRES_USER)
#   POSTGRES_HOST_AUTH_METHOD  pg_hba method for TCP (scram-sha-256 with a
#                      password, else trust); unix-socket connections always trust
#   POSTGRES_INITDB_ARGS  extra initdb arguments (word-split)
#   PGDATA             data directory (/var/lib/postgresql/data)
#
# `docker run IMAGE` or `docker run IMAGE postgres -c x=y ...` sets up PGDATA on
# first start, then runs the server in the foreground on 0.0.0.0:5432 with
# durability off (fsync, synchronous_commit, full_page_writes: a throwaway test
# server). Any other command is exec'd as is.
#
# First start: the image's PGDATA already holds a cluster initdb'd at build
# time (`postgres --bake-template`), so with POSTGRES_USER=postgres (the
# default, and what the test fixture uses) only pg_hba.conf, the password and
# POSTGRES_DB are applied, in single-user mode: well under a second instead of
# initdb's two to four. Another POSTGRES_USER, POSTGRES_INITDB_ARGS, or an
# empty PGDATA (a bind mount, another path) get a real initdb.
#
# Unlike the official image there is no temporary server during init, so
# "database system is ready to accept connections" is logged once, and only
# when TCP connections work. No /docker-entrypoint-initdb.d.
# shellcheck disable=SC3043 # busybox ash has `local`
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ $# = 0 ] || [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi
shift

# Started as root (docker run --user 0, or a root-owned volume on PGDATA):
# take ownership, then run this script again as postgres. PostgreSQL refuses
# to run as root.
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  [ "$(stat -c %u "$PGDATA")" = 999 ] || chown -R postgres:postgres "$PGDATA"
  chown postgres:postgres /var/run/postgresql
  chmod 700 "$PGDATA"
  # shellcheck disable=SC2016 # expanded by the inner shell
  exec su -s /bin/sh postgres -c 'exec "$0" postgres "$@"' "$0" "$@"
fi

# PID 1 ignores signals it has no handler for: without this, a stop during
# setup would wait out Docker's grace period. (A trap runs once the current
# command returns, so at worst after initdb.)
trap 'exit 143' TERM INT

log() { echo "cara-test/postgres: $*" >&2; }

user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
auth=${POSTGRES_HOST_AUTH_METHOD:-}
if [ -z "$auth" ]; then
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then auth=scram-sha-256; else auth=trust; fi
fi
# The image's PGDATA holds a cluster made at build time (superuser postgres, no
# password) with this marker: configuring it takes a fraction of initdb's time.
template_marker=$PGDATA/.cara-template

# SQL statements on stdin, one per line, in single-user mode: no server to
# start and stop just to run them.
single_user() {
  local out
  if ! out=$(postgres --single -D "$PGDATA" -c fsync=off postgres 2>&1) ||
    echo "$out" | grep -q ERROR; then
    echo "$out" | grep -v PASSWORD >&2
    return 1
  fi
}

sql_ident() { printf '"%s"' "$(printf '%s' "$1" | sed 's/"/""/g')"; }
sql_literal() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"; }

# initdb with $1 as the bootstrap superuser, POSTGRES_PASSWORD its password.
init_cluster() {
  local pwfile='' out
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  fi
  # --no-sync: nothing here needs to survive a host crash.
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is meant to be word-split
  if ! out=$(initdb -D "$PGDATA" -U "$1" -E UTF8 --no-locale --no-sync --no-instructions \
    ${pwfile:+--pwfile="$pwfile"} ${POSTGRES_INITDB_ARGS:-} 2>&1); then
    echo "$out" >&2
    [ -z "$pwfile" ] || rm -f "$pwfile"
    log "initdb failed"
    exit 1
  fi
  [ -z "$pwfile" ] || rm -f "$pwfile"
  cat >>"$PGDATA/postgresql.conf" <<'EOF'

# cara-test/postgres
listen_addresses = '*'
unix_socket_directories = '/var/run/postgresql,/tmp'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

# Unix-socket connections are trusted; TCP ones (Docker's port mapping, other
# containers) use $auth.
write_hba() {
  cat >"$PGDATA/pg_hba.conf" <<EOF
# cara-test/postgres
local all all trust
local replication all trust
host all all all $auth
host replication all all $auth
EOF
}

if [ "${1:-}" = --bake-template ]; then
  # At image build time (the Dockerfile's RUN), as postgres.
  init_cluster postgres
  touch "$template_marker"
  exit 0
fi

if [ -e "$template_marker" ]; then
  if [ "$user" != postgres ] || [ -n "${POSTGRES_INITDB_ARGS:-}" ]; then
    # The template's bootstrap superuser is postgres; anything else needs initdb.
    find "$PGDATA" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  else
    t0=$(date +%s)
    write_hba
    {
      if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        echo "ALTER ROLE postgres PASSWORD $(sql_literal "$POSTGRES_PASSWORD");"
      fi
      if [ "$db" != postgres ]; then echo "CREATE DATABASE $(sql_ident "$db");"; fi
    } | single_user || { log "configuring the cluster failed"; exit 1; }
    rm -f "$template_marker"
    log "configured $PGDATA in $(($(date +%s) - t0))s (superuser $user, database $db, host auth $auth)"
  fi
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  t0=$(date +%s)
  init_cluster "$user"
  write_hba
  if [ "$db" != postgres ]; then
    echo "CREATE DATABASE $(sql_ident "$db");" | single_user ||
      { log "creating database $db failed"; exit 1; }
  fi
  log "initialised $PGDATA in $(($(date +%s) - t0))s (superuser $user, database $db, host auth $auth)"
fi

# postgres as PID 1 would treat SIGTERM as a "smart" shutdown, which waits for
# every client to disconnect (a test's connection pool never does). So this
# shell stays PID 1 and turns TERM and INT into SIGINT, PostgreSQL's fast
# shutdown: running transactions are rolled back and it exits within a second.
pid=
stopping=0
# shellcheck disable=SC2317 # called from the trap
fast_stop() {
  stopping=1
  [ -z "$pid" ] || kill -INT "$pid" 2>/dev/null || true
}
trap fast_stop TERM INT
trap '[ -z "$pid" ] || kill -QUIT "$pid" 2>/dev/null || true' QUIT
postgres "$@" &
pid=$!
# A signal that came before $pid was known.
[ "$stopping" = 0 ] || kill -INT "$pid" 2>/dev/null || true
rc=0
while :; do
  # A trapped signal interrupts `wait` (status > 128); wait again until the
  # server itself has exited, then leave with its status.
  wait "$pid" && rc=0 || rc=$?
  kill -0 "$pid" 2>/dev/null || break
done
exit "$rc"
