#!/usr/bin/env bash
# Build the images the manifests in examples/ run, from local files only: no
# registry is needed (or reachable on these machines), so nothing is pulled.
#
#   hack/build-example-images.sh [--force] [--list]
#
# Talks to the engine in DOCKER_HOST (see hack/docker-up.sh); `cara-server --dev`
# runs it for you when started from a checkout. Each image is `FROM scratch`
# plus the host's static busybox (Debian's busybox-static, one symlink per
# applet) and the files in hack/example-images/NAME/:
#
#   cara-example/web:latest      busybox httpd serving /www on :80 (a welcome page)
#   cara-example/api:latest      answers GET / on :80 with $MESSAGE
#   cara-example/fetcher:latest  fetches $SOURCE_URL every $INTERVAL s into $OUTPUT
#
# Images carry a label with a hash of their inputs; an image whose label matches
# is kept, so re-runs take well under a second. --force rebuilds anyway.
# --list prints the image names and exits.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
images_dir=$here/example-images
label=io.caravanserai.example.inputs
images=(web api fetcher)
# Bump when the staging below changes in a way the hashed inputs don't show.
staging_version=1

force=0
for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    --list) printf 'cara-example/%s:latest\n' "${images[@]}"; exit 0 ;;
    -h | --help) sed -n '/^set -euo/q;2,$s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "build-example-images: unknown argument $arg" >&2; exit 2 ;;
  esac
done

say() { echo "build-example-images: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

command -v docker >/dev/null || die "no docker client on PATH"
if ! timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  die "no Docker engine answers at DOCKER_HOST=${DOCKER_HOST:-<unset>}; start one with: eval \"\$(hack/docker-up.sh)\""
fi

# It must be static: a FROM-scratch image has no libc to link against. Debian's
# dynamic `busybox` package installs the same path, hence the check.
busybox=${BUSYBOX:-/bin/busybox}
is_static() { [[ -x $1 ]] && ! ldd "$1" >/dev/null 2>&1; }
if ! is_static "$busybox"; then
  [[ -z ${BUSYBOX:-} ]] || die "BUSYBOX=$BUSYBOX is not a static executable"
  [[ $(id -u) == 0 ]] || die "need busybox-static installed (apt-get install busybox-static) and this is not root"
  say "installing busybox-static (apt)"
  {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends busybox-static ||
      { apt-get update -q && apt-get install -y -q --no-install-recommends busybox-static; }
  } >&2 || die "apt-get install busybox-static failed"
  is_static "$busybox" || die "$busybox is still not a static executable"
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/cara-example-images.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# One rootfs for all images, with fixed modes and mtimes: the COPY layer is then
# byte-identical between images and rebuilds (and with hack/build-images.sh's),
# so it is stored once.
stage_rootfs() {
  local root=$stage/rootfs applet
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,tmp,root}
  install -m 0755 "$busybox" "$root/bin/busybox"
  while read -r applet; do
    [[ $applet == bin/busybox || -e $root/$applet ]] && continue
    ln -s /bin/busybox "$root/$applet"
  done < <("$busybox" --list-full)
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  chmod 1777 "$root/tmp"
  find "$root" -exec touch -h -d @0 {} +
}

# Relative paths and modes: every clone of the repository computes the same hash.
inputs_hash() {
  local img=$1
  {
    echo "staging $staging_version"
    sha256sum <"$busybox"
    (cd "$images_dir/$img" && find . -type f -printf '%p %m\n' | sort &&
      find . -type f -print0 | sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -c1-16
}

staged=0
build() {
  local img=$1 tag="cara-example/$1:latest" hash have
  hash=$(inputs_hash "$img")
  have=$(docker image inspect -f "{{index .Config.Labels \"$label\"}}" "$tag" 2>/dev/null || true)
  if ((!force)) && [[ $have == "$hash" ]]; then
    say "$tag is up to date ($hash)"
    return
  fi
  if ((!staged)); then stage_rootfs; staged=1; fi
  local ctx=$stage/ctx-$img
  mkdir -p "$ctx"
  cp -a "$stage/rootfs" "$ctx/rootfs"
  cp -a "$images_dir/$img/." "$ctx/"
  find "$ctx" -exec touch -h -d @0 {} +
  say "building $tag ($hash)"
  # The classic builder needs no buildx plugin and no BuildKit image; with
  # FROM scratch there is nothing for it to pull.
  # Its output (and the legacy builder's deprecation notice) only matters on failure.
  local out
  out=$(DOCKER_BUILDKIT=0 docker build --quiet --label "$label=$hash" -t "$tag" "$ctx" 2>&1) ||
    { echo "$out" >&2; die "docker build of $tag failed"; }
}

start=$SECONDS
for img in "${images[@]}"; do
  build "$img"
done
say "images ready in $((SECONDS - start))s"
