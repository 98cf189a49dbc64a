#!/usr/bin/env bash
# Tests of the web UI and the JavaScript SDK (run by scripts/test.sh after
# the Rust tests):
#   - the vendored browser libraries match web/vendor/SHA256SUMS;
#   - the SDK's JSDoc types pass `tsc --checkJs`;
#   - the SDK under Node against a real `chorus serve`;
#   - the UI in the system Chromium (driven by playwright-core; never a
#     downloaded browser) against a real `chorus serve`, with axe on every page.
# npm packages (pinned in web/package-lock.json) are installed into
# web/node_modules when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

(cd web/vendor && sha256sum --quiet -c SHA256SUMS)

if ! command -v node >/dev/null 2>&1 || ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "scripts/test-web.sh: node 20 or newer is needed" >&2
  exit 1
fi
export CHORUS_CHROMIUM=${CHORUS_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHORUS_CHROMIUM" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "scripts/test-web.sh: $CHORUS_CHROMIUM is missing (apt-get install chromium)" >&2
    exit 1
  fi
fi

# The server under test: the workspace's debug build.
cargo build -q -p chorus
export CHORUS_BIN=${CHORUS_BIN:-$PWD/target/debug/chorus}

cd web
if [ ! -d node_modules ] || ! npm ls --silent >/dev/null 2>&1; then
  npm ci --silent --no-audit --no-fund
fi
npx --no-install tsc -p tsconfig.json
node --experimental-websocket --test --test-force-exit --test-reporter=spec test/sdk/
node --experimental-websocket --test --test-force-exit --test-reporter=spec --test-concurrency=2 test/browser/
