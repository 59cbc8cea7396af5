#!/usr/bin/env bash
# The CUDA build check, for machines without a GPU (CI runs it; `scripts/test` runs it last
# when CI=true or AUTOJ_TEST_CUDA=1). It:
#   1. installs the pinned CUDA 13.0 toolchain and the link stubs (scripts/cuda-toolchain.sh);
#   2. builds `autoj` with the cuda feature, in release, into target/cuda;
#   3. runs `autoj serve --device cuda:0` against the stub libraries: it must exit non-zero
#      with a message naming the device, and must not panic;
#   4. runs the device-backend tests (those whose names match `device`) under the CUDA build;
#      the stubs stand in for the driver, so they exercise the CPU paths of a CUDA binary.
# Prints each step's wall time. A cold run takes ~25 min on 2 cores (candle-kernels' nvcc
# build is most of it); later runs reuse target/cuda.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${AUTOJ_CUDA_TARGET_DIR:-$root/target/cuda}"
jobs=()
[[ -n "${AUTOJ_CUDA_JOBS:-}" ]] && jobs=(-j "$AUTOJ_CUDA_JOBS")

timings=()
passed=0
failed=0
step_start=0
current=""
begin() {
  echo "== cuda: $1"
  current="$1"
  step_start=$(date +%s)
}
finish() { # name status
  local took=$(( $(date +%s) - step_start ))
  timings+=("$(printf '%-44s %-6s %5ss' "$1" "$2" "$took")")
  if [[ "$2" == ok ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  current=""
}
report() {
  # A step that stopped the script (set -e) counts as failed.
  [[ -z "$current" ]] || finish "$current" FAILED
  echo "== cuda: timings"
  printf '  %s\n' "${timings[@]}"
  echo "cuda: $passed passed, $failed failed"
}
trap report EXIT

begin "toolchain"
scripts/cuda-toolchain.sh
# shellcheck source=/dev/null
. "${AUTOJ_CUDA_TOOLS:-$root/.tools/cuda}/env.sh"
finish "toolchain" ok

# autoj-services gets its own `cuda` feature eventually; until then turn on the judge's.
services_features="$(cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "autoj-services":
        print(" ".join(p["features"]))
')"
if [[ " $services_features " == *" cuda "* ]]; then feature=cuda; else feature=autoj-judge/cuda; fi

begin "build autoj (--features $feature)"
cargo build --release --locked "${jobs[@]}" -p autoj-services --features "$feature" \
  --target-dir "$target_dir"
finish "build autoj (--features $feature)" ok
bin="$target_dir/release/autoj"
ls -l "$bin"

begin "autoj serve --device cuda:0 (stubs)"
# The stubs resolve libcuda & co; libcudart is the real one from the toolkit wheel.
export LD_LIBRARY_PATH="$AUTOJ_CUDA_STUBS:$CUDA_HOME/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd "$bin" | grep -q 'not found'; then
  ldd "$bin"
  echo "cuda: the CUDA binary has unresolved libraries" >&2
  exit 1
fi
ldd "$bin" | grep -E 'cuda|nvrtc|curand|cublas' | sed 's/^/  /'
scratch="$(mktemp -d)"
: > "$scratch/model.gguf" # validation wants the model to exist before it opens the device
set +e
# Without RUST_BACKTRACE: the message as an operator sees it (candle appends a captured
# backtrace to its errors when the variable is set).
timeout 120 env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$bin" serve --device cuda:0 --model "$scratch/model.gguf" \
  --listen 127.0.0.1:0 >"$scratch/out" 2>"$scratch/err"
status=$?
set -e
echo "  exit status: $status"
echo "  stderr:"
sed 's/^/    /' "$scratch/err"
verdict=ok
if [[ $status -eq 0 || $status -eq 124 ]]; then
  echo "cuda: expected a non-zero exit without a GPU, got $status" >&2
  verdict=FAILED
elif grep -q 'panicked' "$scratch/err"; then
  echo "cuda: the CUDA binary panicked instead of reporting the missing device" >&2
  verdict=FAILED
elif ! grep -qi 'cuda' "$scratch/err"; then
  echo "cuda: the error message does not name the CUDA device" >&2
  verdict=FAILED
fi
rm -rf "$scratch"
finish "autoj serve --device cuda:0 (stubs)" "$verdict"
[[ "$verdict" == ok ]] || exit 1

begin "device tests under the CUDA build"
# The judge library's unit tests plus any test file named *device*; the filter keeps the
# ones about the device backend. Zero matches is fine until that backend lands.
targets=(--lib)
for f in judge/tests/*device*.rs; do
  [[ -f "$f" ]] && targets+=(--test "$(basename "$f" .rs)")
done
cargo test --release --locked "${jobs[@]}" -p autoj-judge --features cuda \
  --target-dir "$target_dir" "${targets[@]}" device
finish "device tests under the CUDA build" ok
