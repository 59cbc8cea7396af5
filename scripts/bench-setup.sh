#!/usr/bin/env bash
# Create .venv-bench/ with llama-cpp-python built from its sdist for the CPU.
# Used by scripts/bench_llamacpp.py and scripts/make_tokenizer_fixtures.py.
# Idempotent: does nothing when the pinned llama-cpp-python is already importable.
# The native build takes ~12 minutes on 2 cores; it runs under `nice`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-bench"
reqs="$root/scripts/bench-requirements.txt"
want="$(sed -n 's/^llama-cpp-python==//p' "$reqs")"

if [[ -x "$venv/bin/python" ]] &&
    "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$want')" 2>/dev/null; then
    echo "llama-cpp-python $want already installed in $venv"
    exit 0
fi

python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)

# 1. Everything but llama-cpp-python itself (build tools and runtime deps), as wheels.
"${pip[@]}" -r <(grep -v '^llama-cpp-python==' "$reqs")

# 2. llama-cpp-python from source, CPU only, with the pinned build tools above.
#    Examples, tools, tests, the server, multimodal and libcurl are not needed here.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF}"
nice -n 15 "${pip[@]}" --no-deps --no-build-isolation --no-binary llama-cpp-python \
    "llama-cpp-python==$want"

"$venv/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__, 'ready in $venv')"
