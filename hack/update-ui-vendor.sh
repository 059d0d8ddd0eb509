#!/usr/bin/env bash
# Re-vendor the dashboard's YAML library from the npm registry:
#
#   hack/update-ui-vendor.sh [VERSION]     # default: the version in the vendor README
#
# Bundles the yaml package's browser build into one ES module (esbuild, run here, never at
# install time) at caravanserai/server/ui/vendor/yaml.js, with its licence beside it. Needs
# npm; everything comes from the npm registry into a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
vendor=caravanserai/server/ui/vendor
version=${1:-$(sed -n 's/^| \[`yaml`\][^|]*| \([0-9.]*\) .*/\1/p' "$vendor/README.md")}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(
  cd "$tmp"
  npm init -y >/dev/null
  npm install --silent --no-audit --no-fund "yaml@$version" esbuild@0.25 >/dev/null
  echo 'export { LineCounter, parseAllDocuments, parseDocument, stringify } from "yaml";' \
    > entry.mjs
  ./node_modules/.bin/esbuild entry.mjs --bundle --format=esm --minify --platform=browser \
    --legal-comments=inline --log-level=warning --outfile=yaml.js
)
cp "$tmp/yaml.js" "$vendor/yaml.js"
cp "$tmp/node_modules/yaml/LICENSE" "$vendor/yaml.LICENSE"
sed -i "s/^\(| \[\`yaml\`\][^|]*| \)[0-9.]*\( .*\)/\1$version\2/" "$vendor/README.md"
echo "vendored yaml $version into $vendor/yaml.js" >&2
