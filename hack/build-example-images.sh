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

images_prog=build-example-images
# shellcheck source-path=SCRIPTDIR source=lib/images.sh
. "$here/lib/images.sh"

command -v docker >/dev/null || die "no docker client on PATH"
require_docker_engine
ensure_static_busybox
new_stage cara-example-images

# One rootfs for all images (hack/lib/images.sh's stage_rootfs), plus
# /usr/local/bin; its inputs hash covers the files' modes too.
rootfs_extra_dirs=(usr/local/bin)
start=$SECONDS
for img in "${images[@]}"; do
  hash=$(dir_inputs_hash "$img" --modes)
  build_image "$img" "cara-example/$img:latest" "$hash" --quiet
done
say "images ready in $((SECONDS - start))s"
