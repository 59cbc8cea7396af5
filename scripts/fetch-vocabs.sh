#!/usr/bin/env bash
# Fetch llama.cpp's tokenizer test vocabularies: models/ggml-vocab-*.gguf with their
# .gguf.inp/.gguf.out cases (inputs and llama.cpp's own ids), and tests/test-tokenizer-0.cpp
# (how those files are read), as vendored in the llama-cpp-python sdist pinned in
# scripts/bench-requirements.txt. The files are extracted to models/vocab/ (git-ignored; about
# 75 MB) and the 77 MB sdist is deleted after. Idempotent: a complete models/vocab/ from the
# pinned sdist is kept. Needs python3 with pip; works from any directory.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$root/models/vocab"
version="0.3.36"
sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
stamp="$target/.from-llama-cpp-python-$version"

hash_ok() { [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$sha256" ]]; }

if [[ -f "$stamp" ]]; then
    echo "vocabularies ready: $target"
    exit 0
fi

mkdir -p "$root/models"
cache="$(mktemp -d "$root/models/.vocab-download.XXXXXX")"
trap 'rm -rf "$cache"' EXIT
echo "downloading the llama-cpp-python==$version sdist" >&2
# Only this package from source: its build tools come as wheels for pip's metadata step.
python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --no-binary llama-cpp-python --dest "$cache" "llama-cpp-python==$version"
sdist="$cache/llama_cpp_python-$version.tar.gz"
if ! hash_ok "$sdist"; then
    echo "sha256 mismatch for $sdist (expected $sha256)" >&2
    exit 1
fi

# Extract with python's tarfile into a temporary folder, then rename it into place, so an
# interrupted run never leaves a partial models/vocab/ behind.
tmp="$target.part"
rm -rf "$tmp"
mkdir -p "$tmp"
python3 - "$sdist" "$tmp" "$version" <<'PY'
import os, shutil, sys, tarfile
sdist, out, version = sys.argv[1:]
prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
wanted = 0
with tarfile.open(sdist) as tar:
    for m in tar:
        if not (m.isfile() and m.name.startswith(prefix)):
            continue
        rel = m.name[len(prefix):]
        name = os.path.basename(rel)
        if (rel.startswith("models/ggml-vocab-") and "/" not in rel[len("models/"):]) \
                or rel == "tests/test-tokenizer-0.cpp":
            with tar.extractfile(m) as src, open(os.path.join(out, name), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            wanted += 1
if wanted < 10:
    sys.exit(f"only {wanted} vocabulary files found in {sdist}")
print(f"extracted {wanted} files", file=sys.stderr)
PY
touch "$tmp/.from-llama-cpp-python-$version"
rm -rf "$target"
mv "$tmp" "$target"
echo "vocabularies ready: $target"
