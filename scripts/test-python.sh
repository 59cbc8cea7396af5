#!/usr/bin/env bash
# Tests the Python client (clients/python) against the real server:
#   1. a virtual environment .venv-python with the pinned clients/python/requirements.txt
#      (where python3 lacks venv/ensurepip, `pip install --target` into the same folder);
#   2. the gRPC code generated from proto/proto/autoj/v1/autoj.proto with grpcio-tools
#      (git-ignored, regenerated every run so it always matches the .proto);
#   3. pytest: starts `autoj serve` on loopback and drives every RPC through the client.
# Needs target/debug/autoj (built here if missing), the default model and ONNX Runtime
# (fetched here if missing, as scripts/test does). Extra arguments go to pytest.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
client="$root/clients/python"
venv="$root/.venv-python"
req="$client/requirements.txt"

scripts/fetch-models.sh
router/fetch-onnxruntime.sh
if [[ -z "${AUTOJ_BIN:-}" && ! -x target/debug/autoj ]]; then
    cargo build --locked -p autoj-services
fi

# shellcheck source=scripts/python-env.sh
. "$root/scripts/python-env.sh"
python_env "$venv" "$req"
py() {
    if [[ -x "$venv/bin/python" ]]; then
        PYTHONPATH="$client/src" "$venv/bin/python" "$@"
    else
        PYTHONPATH="$client/src:$venv/site" python3 "$@"
    fi
}

py "$client/generate.py"
py "$client/examples/judge.py" --help >/dev/null
cd "$client"
py -m pytest -q -p no:cacheprovider "$@"
