#!/usr/bin/env bash
# Tests the HTTP door's OpenAI-compatible chat completions with clients nobody here wrote,
# against the real `autoj serve` (clients/openai-compat):
#   1. a virtual environment .venv-openai with the pinned clients/openai-compat/requirements.txt
#      (the official `openai` package, Inspect AI, pytest and their dependencies);
#   2. pytest: starts `autoj serve --http-listen` on loopback; the `openai` package drives
#      /v1/models and /v1/chat/completions (plain, streamed, log-probabilities, stop strings,
#      refusals, API keys), and Inspect AI runs a tiny evaluation graded by autoj.
# Needs target/debug/autoj (built here if missing), the default model and ONNX Runtime
# (fetched here if missing, as scripts/test does). Extra arguments go to pytest.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tests="$root/clients/openai-compat"
venv="$root/.venv-openai"

scripts/fetch-models.sh
router/fetch-onnxruntime.sh
if [[ -z "${AUTOJ_BIN:-}" && ! -x target/debug/autoj ]]; then
    cargo build --locked -p autoj-services
fi

# shellcheck source=scripts/python-env.sh
. "$root/scripts/python-env.sh"
python_env "$venv" "$tests/requirements.txt"
cd "$tests"
# Inspect AI writes its logs and caches under these; keep them in the test's temp space.
export INSPECT_LOG_DIR="${TMPDIR:-/tmp}/autoj-inspect-logs"
if [[ -x "$venv/bin/python" ]]; then
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
else
    PYTHONPATH="$venv/site" python3 -m pytest -q -p no:cacheprovider tests "$@"
fi
