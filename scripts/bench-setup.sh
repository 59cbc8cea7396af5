#!/usr/bin/env bash
# Create .venv-bench/ with llama-cpp-python built from its sdist for the CPU.
# Used by scripts/bench_llamacpp.py and scripts/make_tokenizer_fixtures.py.
# Idempotent: does nothing when the pinned llama-cpp-python is already importable.
# The native build takes ~12 minutes on 2 cores; it runs under `nice`.
#
# `scripts/bench-setup.sh avx2` builds a second copy in .venv-bench-avx2/ limited to AVX2
# (no AVX-512, no AVX-VNNI), so that our AVX2 path (`AUTOJ_Q4_1_KERNEL=avx2`) is compared with
# llama.cpp on the same instruction set on an AVX-512 machine:
#   autoj bench --llamacpp-python .venv-bench-avx2/bin/python ...
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
variant="${1:-native}"
case "$variant" in
native)
    venv="$root/.venv-bench"
    isa="-DGGML_NATIVE=ON"
    ;;
avx2)
    venv="$root/.venv-bench-avx2"
    isa="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF"
    ;;
*)
    echo "usage: $0 [native|avx2]" >&2
    exit 2
    ;;
esac
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

# 2. llama-cpp-python from source, CPU only, with the pinned build tools above (never a
#    wheel cached from another variant's build).
#    Examples, tools, tests, the server, multimodal and libcurl are not needed here.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
export CMAKE_ARGS="${CMAKE_ARGS:-$isa -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF}"
nice -n 15 "${pip[@]}" --no-deps --no-build-isolation --no-cache-dir --no-binary llama-cpp-python \
    "llama-cpp-python==$want"

"$venv/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__, 'ready in $venv')"
