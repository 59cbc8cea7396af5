#!/usr/bin/env bash
# Tests the page at `/` and the HTML evaluation report in a real browser:
#   1. Debian's chromium and chromium-driver (scripts/install-chromium.sh installs them
#      with apt-get when missing);
#   2. a virtual environment .venv-browser with the pinned clients/browser-tests/
#      requirements.txt (Selenium, pytest), made as scripts/python-env.sh makes them;
#   3. pytest in clients/browser-tests: starts `autoj serve --http-listen` on loopback (one
#      open, one with an API key), drives the page in headless Chromium, and opens an
#      `autoj eval --html` report from the file.
# Needs target/debug/autoj (built here unless AUTOJ_BIN names one), the default model and
# ONNX Runtime (fetched here if missing, as scripts/test does). Screenshots go to
# AUTOJ_SCREENSHOT_DIR when set (AUTOJ_SCREENSHOT_DIR=docs/images refreshes the docs' ones).
# Extra arguments go to pytest.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tests="$root/clients/browser-tests"
venv="$root/.venv-browser"

scripts/fetch-models.sh
router/fetch-onnxruntime.sh
if [[ -z "${AUTOJ_BIN:-}" ]]; then
    # Up to date after scripts/test's cargo test (the same dev profile): then a no-op.
    cargo build --locked -p autoj-services
fi
scripts/install-chromium.sh

# shellcheck source=scripts/python-env.sh
. "$root/scripts/python-env.sh"
python_env "$venv" "$tests/requirements.txt"
py() {
    if [[ -x "$venv/bin/python" ]]; then
        "$venv/bin/python" "$@"
    else
        PYTHONPATH="$venv/site" python3 "$@"
    fi
}

# Selenium finds chromedriver by its path; never let it fetch a driver from the network.
export SE_OFFLINE=true
cd "$tests"
py -m pytest -q -p no:cacheprovider "$@"
