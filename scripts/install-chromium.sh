#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver (for scripts/test-browser.sh) when either is
# missing: apt-get as root, else through sudo. Nothing is downloaded outside the distribution's
# own archive; CHROMIUM_BIN and CHROMEDRIVER_BIN name other binaries to use instead.
set -euo pipefail

chromium="${CHROMIUM_BIN:-/usr/bin/chromium}"
driver="${CHROMEDRIVER_BIN:-/usr/bin/chromedriver}"
if [[ -x "$chromium" && -x "$driver" ]]; then
    exit 0
fi
if [[ -n "${CHROMIUM_BIN:-}${CHROMEDRIVER_BIN:-}" ]]; then
    echo "CHROMIUM_BIN=$chromium or CHROMEDRIVER_BIN=$driver is not an executable" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "chromium and chromedriver are missing and this is not Debian (no apt-get):" \
         "install them and set CHROMIUM_BIN and CHROMEDRIVER_BIN" >&2
    exit 1
fi
as_root=()
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || { echo "installing chromium needs root or sudo" >&2; exit 1; }
    as_root=(sudo)
fi
echo "installing Debian's chromium and chromium-driver" >&2
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-dejavu-core >/dev/null
"$chromium" --version
"$driver" --version
