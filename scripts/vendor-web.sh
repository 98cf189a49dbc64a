#!/usr/bin/env bash
# Re-vendors the web UI's third-party browser libraries into web/vendor/:
# fetches each pinned package with `npm pack` (npm checks the registry's
# integrity hash), copies the one ES module the UI imports and its licence,
# and rewrites web/vendor/SHA256SUMS. Nothing is fetched at build or run time;
# the test suite checks the files against SHA256SUMS.
#
#   bash scripts/vendor-web.sh            # re-vendor the pinned versions
#   HTM=3.1.1 MARKED=18.3.0 DOMPURIFY=3.5.0 bash scripts/vendor-web.sh   # other versions
#
# After changing a version, update the table in web/vendor/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

HTM=${HTM:-3.1.1}
MARKED=${MARKED:-18.3.0}
DOMPURIFY=${DOMPURIFY:-3.5.0}

out=web/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() { # package version -> extracted directory
  local pkg=$1 version=$2
  (cd "$work" && npm pack --silent "$pkg@$version" >/dev/null)
  local tgz
  tgz=$(ls "$work"/"${pkg//\//-}"-"$version".tgz)
  mkdir -p "$work/$pkg"
  tar xzf "$tgz" -C "$work/$pkg"
  echo "$work/$pkg/package"
}

mkdir -p "$out/licenses"
d=$(fetch htm "$HTM")
cp "$d/preact/standalone.mjs" "$out/htm-preact-standalone.mjs"
cp "$d/LICENSE" "$out/licenses/htm.txt"

d=$(fetch marked "$MARKED")
cp "$d/lib/marked.esm.js" "$out/marked.esm.js"
cp "$d/LICENSE" "$out/licenses/marked.txt"

d=$(fetch dompurify "$DOMPURIFY")
cp "$d/dist/purify.es.mjs" "$out/purify.es.mjs"
cp "$d/LICENSE" "$out/licenses/dompurify.txt"

cat > "$out/VERSIONS" <<VERSIONS
htm $HTM htm-preact-standalone.mjs
marked $MARKED marked.esm.js
dompurify $DOMPURIFY purify.es.mjs
VERSIONS

(cd "$out" && sha256sum htm-preact-standalone.mjs marked.esm.js purify.es.mjs licenses/*.txt VERSIONS > SHA256SUMS)
echo "vendored into $out:"
cat "$out/VERSIONS"
