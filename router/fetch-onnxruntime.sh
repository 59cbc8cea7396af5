#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library the router's scenario classifier loads at run time
# (`ort` with `load-dynamic`), from the PyPI `onnxruntime` wheel: the one registry package
# that ships it. Idempotent: does nothing when the library is already in place.
#
#   router/fetch-onnxruntime.sh            # -> models/onnxruntime/libonnxruntime.so
#
# The router finds it there by default (run from the repository root), or through
# ORT_DYLIB_PATH / `[classifier] ort_dylib`.
set -euo pipefail

# The version the classifier was exported and checked with (router/classifier/requirements.txt).
VERSION="${AUTOJ_ORT_VERSION:-1.20.1}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/models/.cache"
DEST="$ROOT/models/onnxruntime"
LIB="$DEST/libonnxruntime.so.$VERSION"

if [[ -f "$LIB" ]]; then
    ln -sfn "libonnxruntime.so.$VERSION" "$DEST/libonnxruntime.so"
    echo "ONNX Runtime $VERSION already at $LIB"
    exit 0
fi

case "$(uname -m)" in
    x86_64) PLATFORM=manylinux_2_27_x86_64 ;;
    aarch64) PLATFORM=manylinux_2_27_aarch64 ;;
    *) echo "no onnxruntime wheel for $(uname -m)" >&2; exit 1 ;;
esac

PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE" "$DEST"
# Any CPython ABI carries the same library; pin one so the local Python version does not matter.
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform "$PLATFORM" --platform "${PLATFORM/2_27/2_28}" \
    --python-version 3.11 --implementation cp --abi cp311 \
    --dest "$CACHE" "onnxruntime==$VERSION"

WHEEL="$(ls "$CACHE"/onnxruntime-"$VERSION"-*.whl | head -n1)"
"$PYTHON" - "$WHEEL" "$DEST" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist()
             if n.startswith("onnxruntime/capi/libonnxruntime.so.")]
    if not names:
        sys.exit(f"{wheel} has no onnxruntime/capi/libonnxruntime.so.*")
    for name in names:
        target = os.path.join(dest, os.path.basename(name))
        with z.open(name) as src, open(target + ".part", "wb") as out:
            out.write(src.read())
        os.replace(target + ".part", target)
        print("extracted", target)
PY
ln -sfn "libonnxruntime.so.$VERSION" "$DEST/libonnxruntime.so"
echo "ONNX Runtime $VERSION at $DEST/libonnxruntime.so"
