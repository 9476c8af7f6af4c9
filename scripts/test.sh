#!/usr/bin/env bash
# The README's test command: installs what the tests need that Rust does not bring, then
# runs every test of the workspace (the seeded simulations included) and prints one line
# over all of them. On a machine that has everything it installs nothing.
#
#   scripts/test.sh              # everything
#   scripts/test.sh -p sim       # arguments go to `cargo test`
#
# What it installs, and why:
#   - Debian's `prometheus` (for promtool): tests/monitoring.rs checks /metrics with
#     `promtool check metrics`, the scrapers' own parser.
#   - Debian's `chromium`: tests/dashboard.rs drives the dashboard in a real browser.
#   - Debian's `bind9-dnsutils` (dig): tests/dns.rs asks the DNS gateway as operators do.
#   - Node.js and npm (Debian's), if missing, and playwright-core (npm, the version
#     tests/browser/package-lock.json pins; it downloads no browser): what drives Chromium.
#   - Python's `websockets` (pip): tests/python_worker.rs and tests/pubsub.rs run the
#     Python examples, which need only it. (Python 3 itself, which Debian has: tests/cache.rs
#     also checks the documented cache key vectors with its `json` module.)
# Debian packages need root (or sudo without a password); `apt-get update` runs first, as a
# fresh machine may have no package lists.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

apt_wanted=()
command -v promtool >/dev/null || apt_wanted+=(prometheus)
command -v chromium >/dev/null || apt_wanted+=(chromium)
command -v npm >/dev/null || apt_wanted+=(nodejs npm)
command -v dig >/dev/null || apt_wanted+=(bind9-dnsutils)
if [ ${#apt_wanted[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${apt_wanted[*]} (promtool, the browser, npm and dig for the tests)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    "${apt_wanted[@]}" >/dev/null
fi
if ! python3 -c "import websockets" 2>/dev/null; then
  echo "== installing Python's websockets (the Python examples' tests)"
  python3 -m pip install --quiet --disable-pip-version-check websockets
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "== installing playwright-core (drives Chromium in tests/dashboard.rs; no browser download)"
  npm ci --prefix tests/browser --no-audit --no-fund --silent
fi

echo "== cargo test --workspace $*"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over all test binaries (cargo prints one `test result` per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
