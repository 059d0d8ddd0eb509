#!/usr/bin/env bash
# Build the images the e2e tests run, from local files only: no registry is
# reachable from these machines, so nothing is ever pulled.
#
#   hack/build-images.sh [--force] [--check]
#
# Talks to the engine in DOCKER_HOST (see hack/docker-up.sh). Each image is
# `FROM scratch` plus the host's static busybox (Debian's busybox-static, one
# symlink per applet) and the files in hack/images/NAME/:
#
#   cara-test/busybox:latest   sleeps until SIGTERM, then exits 0 at once
#   cara-test/web:latest       busybox httpd on :80 serving "hello from cara-test/web"
#
# Images carry a label with a hash of their inputs (busybox binary, Dockerfile,
# files); an image whose label matches is kept, so re-runs take well under a
# second. --force rebuilds anyway.
#
# Writing tests against these images: Debian's busybox-static 1.35 segfaults
# on `wget -T N` (even on the host); use `timeout N wget ...` instead. Its nc
# has no -z; `nslookup NAME` works against Docker's embedded DNS.
#
# --check then runs a smoke test against the engine: a web container and a
# client on one user-defined network (name resolution + HTTP), a published
# port reached from the host, and `docker stop` taking well under the grace
# period.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
images_dir=$here/images
label=io.caravanserai.test.inputs
# Bump when the staging below changes in a way the hashed inputs don't show.
staging_version=1

force=0
check=0
for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    --check) check=1 ;;
    -h | --help) sed -n '/^set -euo/q;2,$s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "build-images: unknown argument $arg" >&2; exit 2 ;;
  esac
done

images_prog=build-images
# shellcheck source-path=SCRIPTDIR source=lib/images.sh
. "$here/lib/images.sh"

require_docker_engine
ensure_static_busybox
new_stage cara-images

start=$SECONDS
for img in busybox web; do
  hash=$(dir_inputs_hash "$img")
  build_image "$img" "cara-test/$img:latest" "$hash"
done
"$here/build-postgres-image.sh" "$@" || die "cara-test/postgres: hack/build-postgres-image.sh failed"
say "images ready in $((SECONDS - start))s"

((check)) || exit 0

# --- smoke test -------------------------------------------------------------------

run_id=cara-check-$$
net=$run_id-net
cleanup_check() {
  docker rm -f "$run_id-web" "$run_id-pub" "$run_id-idle" >/dev/null 2>&1 || true
  docker network rm "$net" >/dev/null 2>&1 || true
  rm -rf "$stage"
}
trap cleanup_check EXIT

port=${CARA_CHECK_PORT:-18080}
docker network create "$net" >/dev/null
docker run -d --name "$run_id-web" --network "$net" cara-test/web:latest >/dev/null
docker run -d --name "$run_id-pub" -p "127.0.0.1:$port:80" cara-test/web:latest >/dev/null
docker run -d --name "$run_id-idle" cara-test/busybox:latest >/dev/null

# By container name over the network's embedded DNS. httpd may need a moment
# after `docker run` returns, hence the bounded retry in the client.
# NB: Debian's busybox-static 1.35 segfaults on `wget -T N`; use `timeout N wget`.
body=$(docker run --rm --network "$net" cara-test/busybox:latest \
  sh -c "for i in \$(seq 50); do timeout 2 wget -qO- http://$run_id-web/ && exit 0; sleep 0.1; done; exit 1") ||
  die "container-to-container HTTP by name failed"
[[ $body == *"hello from cara-test/web"* ]] || die "unexpected body from $run_id-web: $body"
say "ok: wget http://$run_id-web/ from another container on $net"

docker run --rm --network "$net" cara-test/busybox:latest nslookup "$run_id-web" >/dev/null ||
  die "nslookup $run_id-web failed"
say "ok: nslookup $run_id-web"

# Published port, from the host. Bounded retry for the same reason as above.
got=
deadline=$((SECONDS + 10))
until got=$({ exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && timeout 5 cat <&3; } 2>/dev/null) &&
  [[ $got == *"hello from cara-test/web"* ]]; do
  ((SECONDS < deadline)) || die "published port 127.0.0.1:$port did not serve the page"
  sleep 0.2
done
say "ok: host reached 127.0.0.1:$port"

for c in "$run_id-idle" "$run_id-web"; do
  t0=$(date +%s%N)
  docker stop "$c" >/dev/null
  ms=$((($(date +%s%N) - t0) / 1000000))
  code=$(docker inspect -f '{{.State.ExitCode}}' "$c")
  ((ms < 2000)) || die "docker stop $c took ${ms}ms"
  [[ $code == 0 ]] || die "$c exited $code on SIGTERM"
  say "ok: docker stop $c took ${ms}ms, exit code $code"
done

code=0
docker run --rm cara-test/busybox:latest false || code=$?
[[ $code == 1 ]] || die "'false' exited $code, want 1"
say "ok: crash exit code propagates"
say "check passed"
