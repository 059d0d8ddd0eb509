# shellcheck shell=bash disable=SC2154 # the variables below are the sourcing script's
# Shared by the image builders hack/build-images.sh, hack/build-example-images.sh
# and hack/build-postgres-image.sh (sourced, not run): the engine check, the
# static busybox (found, or installed from apt), the busybox rootfs staged with
# fixed modes and mtimes, and the input-hash labelling of FROM-scratch images.
# One copy, because the rootfs must stay byte-identical across the builders for
# its layer to be stored once, and the hashes must stay what already-built
# images carry in their labels.
#
# The sourcing script sets, before calling the functions that use them:
#   images_prog      prefix of every message (the script's name)
#   images_dir       the directory holding one build context per image
#   label            the image label the input hash is stored in
#   staging_version  bumped when the staging changes in a way the hash doesn't show
#   force            1: rebuild even when the label matches
#   rootfs_extra_dirs  (optional array) more directories in build_image's rootfs
# This file sets `busybox` (BUSYBOX, default /bin/busybox) and, through
# new_stage, `stage`.

say() { echo "$images_prog: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# The Docker engine in DOCKER_HOST (see hack/docker-up.sh) must answer.
require_docker_engine() {
  if ! timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    die "no Docker engine answers at DOCKER_HOST=${DOCKER_HOST:-<unset>}; start one with: eval \"\$(hack/docker-up.sh)\""
  fi
}

# --- the busybox binary -------------------------------------------------------

# It must be static: a FROM-scratch image has no libc to link against.
# Debian's dynamic `busybox` package installs the same path, hence the check.
busybox=${BUSYBOX:-/bin/busybox}
is_static() { [[ -x $1 ]] && ! ldd "$1" >/dev/null 2>&1; }

# Installs Debian's busybox-static when $busybox is not static (as root, and
# only for the default path: an explicit BUSYBOX is never replaced).
ensure_static_busybox() {
  is_static "$busybox" && return 0
  [[ -z ${BUSYBOX:-} ]] || die "BUSYBOX=$BUSYBOX is not a static executable"
  [[ $(id -u) == 0 ]] || die "need busybox-static installed (apt-get install busybox-static) and this is not root"
  say "installing busybox-static (apt)"
  {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends busybox-static ||
      { apt-get update -q && apt-get install -y -q --no-install-recommends busybox-static; }
  } >&2 || die "apt-get install busybox-static failed"
  is_static "$busybox" || die "$busybox is still not a static executable"
}

# --- staging ------------------------------------------------------------------

# $1: name prefix. Sets `stage`, a temporary directory removed on exit.
new_stage() {
  stage=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
}

# $1: the rootfs directory to make; $2...: extra directories in it.
# Fixed modes and mtimes make the COPY layer byte-identical between images and
# rebuilds, so it is stored once.
stage_rootfs() {
  local root=$1 applet dir
  shift
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root}
  for dir in "$@"; do mkdir -p "$root/$dir"; done
  install -m 0755 "$busybox" "$root/bin/busybox"
  # `--list-full` gives each applet's usual path (bin/sh, usr/bin/wget, ...), so
  # both PATH lookups and absolute paths like /usr/bin/env work.
  while read -r applet; do
    [[ $applet == bin/busybox || -e $root/$applet ]] && continue
    ln -s /bin/busybox "$root/$applet"
  done < <("$busybox" --list-full)
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  chmod 1777 "$root/tmp"
  find "$root" -exec touch -h -d @0 {} +
}

# --- busybox images from a directory ----------------------------------------------

# $1: image name (a directory in $images_dir); $2: --modes to hash the files'
# modes too. The hash covers what ends up in the image; paths are relative so
# that every clone of the repository computes the same value.
dir_inputs_hash() {
  local img=$1 modes=${2:-}
  {
    echo "staging $staging_version"
    sha256sum <"$busybox"
    if [[ $modes == --modes ]]; then
      (cd "$images_dir/$img" && find . -type f -printf '%p %m\n' | sort &&
        find . -type f -print0 | sort -z | xargs -0 sha256sum)
    else
      (cd "$images_dir/$img" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
    fi
  } | sha256sum | cut -c1-16
}

# $1: image name (a directory in $images_dir, built on the staged rootfs);
# $2: tag; $3: input hash; $4: --quiet to show docker build's output only on
# failure. An image whose label matches the hash is kept unless $force.
_images_staged=0
build_image() {
  local img=$1 tag=$2 hash=$3 quiet=${4:-} have
  have=$(docker image inspect -f "{{index .Config.Labels \"$label\"}}" "$tag" 2>/dev/null || true)
  if ((!force)) && [[ $have == "$hash" ]]; then
    say "$tag is up to date ($hash)"
    return
  fi
  if ((!_images_staged)); then stage_rootfs "$stage/rootfs" ${rootfs_extra_dirs[@]+"${rootfs_extra_dirs[@]}"}; _images_staged=1; fi
  local ctx=$stage/ctx-$img
  mkdir -p "$ctx"
  cp -a "$stage/rootfs" "$ctx/rootfs"
  cp -a "$images_dir/$img/." "$ctx/"
  find "$ctx" -exec touch -h -d @0 {} +
  say "building $tag ($hash)"
  # $quiet is kept for callers; the build is quiet either way (see classic_build).
  : "$quiet"
  classic_build "$tag" --label "$label=$hash" -t "$tag" "$ctx"
}

# $1: tag (for the error message); the rest: arguments of `docker build`.
# The classic builder: it needs no buildx plugin and no BuildKit image, and with a
# FROM scratch there is nothing for it to pull. Its output, and the four-line "legacy
# builder is deprecated" notice it prints on every run, only matter when it fails.
classic_build() {
  local tag=$1 out
  shift
  out=$(DOCKER_BUILDKIT=0 docker build --quiet "$@" 2>&1) ||
    { echo "$out" >&2; die "docker build of $tag failed"; }
}
