#!/usr/bin/env bash
# Loading memory and quantize time on a LLaMA-2-7B-shaped sharded checkpoint (issue 27),
# ours against llama.cpp's route, by hand (not CI). Prints one line per measured step:
# wall time, peak RSS (GNU time's "Maximum resident set size") and output size.
#
#   scripts/bench-checkpoint-7b.sh [WORK_DIR] [ROUNDS]
#
# 1. judge/examples/write_checkpoint.rs writes a random checkpoint with LLaMA-2-7B's shape
#    (hidden 4096, 32 layers, 32 heads, intermediate 11008) and Auto-J's 32,128 embedding
#    rows as 7 fp16 `.bin` shards (~1.9 GB each, 13.5 GB) with an index.
# 2. Per round, interleaved:
#    ours-quantize   autoj quantize --type q4_k_m (directory -> GGUF, one pass)
#    theirs-convert  llama.cpp's convert_hf_to_gguf.py --outtype f16 (torch venv)
#    ours-load       greedy_tokens DIR 1,2,3 1 --quantize q4_k_m: load the directory
#                    quantizing at load as `autoj serve --quantize q4_k_m` does, one forward
#    theirs-quantize llama_model_quantize f16 GGUF -> Q4_K_M (llama-quantize, no imatrix)
# 3. Deletes everything it wrote unless KEEP=1.
#
# Needs: target/release/autoj, the release examples write_checkpoint and greedy_tokens,
# .venv-bench (scripts/bench-setup.sh), .venv-fixtures (torch, transformers) and llama.cpp's
# converter unpacked by `scripts/llamacpp_interop.py quant-error` (models/interop/...).
# ~32 GB of free disk (checkpoint 13.5 + f16 GGUF 13.5 + a Q4_K_M file ~4).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-$root/models/interop/bench7b}"
rounds="${2:-2}"
src="${LLAMA_CPP_SRC:-$(ls -d "$root"/models/interop/llama_cpp_python-*/vendor/llama.cpp | tail -1)}"
ckpt="$work/rand-7b"
mkdir -p "$work"
export TIME="%e s wall, %M kB max RSS, %U s user, %S s sys"

measure() { # NAME OUTPUT_FILE COMMAND...
    local name="$1" out="$2"
    shift 2
    local log="$work/$name.time"
    nice -n 10 /usr/bin/time -o "$log" "$@" >"$work/$name.out" 2>"$work/$name.err" || {
        echo "$name: FAILED (see $work/$name.err)"
        tail -5 "$work/$name.err"
        return 1
    }
    local size=""
    [[ -n "$out" && -e "$out" ]] && size=", output $(du -b "$out" | awk '{printf "%.2f GB", $1/1e9}')"
    echo "$name: $(tail -1 "$log")$size"
}

echo "# $(uptime)"
echo "# $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
if [[ ! -e "$ckpt/pytorch_model.bin.index.json" ]]; then
    measure write-checkpoint "$ckpt" "$root/target/release/examples/write_checkpoint" \
        "$ckpt" 4096 32 32 32 11008 32128 7
fi
largest=$(ls -l "$ckpt"/pytorch_model-*.bin | awk '{print $5}' | sort -n | tail -1)
echo "# checkpoint: $(du -sb "$ckpt" | awk '{printf "%.2f GB", $1/1e9}'), largest shard $(awk -v b="$largest" 'BEGIN{printf "%.2f GB", b/1e9}')"

for r in $(seq 1 "$rounds"); do
    echo "# round $r ($(uptime | sed 's/.*load/load/'))"
    rm -f "$work/ours.q4_k_m.gguf" "$work/theirs.f16.gguf" "$work/theirs.q4_k_m.gguf"
    measure "ours-quantize.$r" "$work/ours.q4_k_m.gguf" "$root/target/release/autoj" quantize \
        --model "$ckpt" --type q4_k_m --out "$work/ours.q4_k_m.gguf"
    ours_gguf=$(du -b "$work/ours.q4_k_m.gguf" | cut -f1)
    rm -f "$work/ours.q4_k_m.gguf" # disk: the f16 file comes next
    measure "theirs-convert.$r" "$work/theirs.f16.gguf" "$root/.venv-fixtures/bin/python" \
        "$src/convert_hf_to_gguf.py" "$ckpt" --outtype f16 --outfile "$work/theirs.f16.gguf"
    measure "ours-load.$r" "" "$root/target/release/examples/greedy_tokens" "$ckpt" 1,2,3 1 \
        --quantize q4_k_m
    python3 - "$work/ours-load.$r.out" <<'EOF'
import json, sys
d = json.loads(open(sys.argv[1]).read().splitlines()[-1])
print(f"  ours-load: load {d['load_s']:.1f} s, peak RSS after load {d['peak_rss_kb_after_load'] / 1e6:.2f} GB "
      f"(whole run {d['peak_rss_kb'] / 1e6:.2f} GB), census {d['census']}")
EOF
    measure "theirs-quantize.$r" "$work/theirs.q4_k_m.gguf" "$root/.venv-bench/bin/python" -c '
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
p.nthread = 2
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))
' "$work/theirs.f16.gguf" "$work/theirs.q4_k_m.gguf"
    rm -f "$work/theirs.f16.gguf"
done

awk -v s="$largest" -v m="$ours_gguf" \
    'BEGIN{printf "# bound for ours-load: 1.2 x largest shard + Q4_K_M file = %.2f GB\n", (1.2*s+m)/1e9}'
if [[ "${KEEP:-0}" != 1 ]]; then
    rm -rf "$ckpt" "$work"/*.gguf
fi
