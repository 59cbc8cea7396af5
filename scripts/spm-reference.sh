#!/usr/bin/env bash
# Writes models/spm-reference/ (git-ignored): SentencePiece tokenizer.model files over
# llama.cpp's LLaMA test vocabulary, the tokenizer.json transformers converts from it, and
# reference ids from the sentencepiece library (scripts/make_spm_reference.py), for
# judge/tests/tokenizer_spm_model.rs. A pinned environment in .venv-spm/
# (scripts/spm-requirements.txt, ~20 s to install); the script itself takes a few seconds.
# Idempotent: kept while the script, its requirements, the vocabulary and ../shared/autoj
# (whose Auto-J prompts become cases when present) are unchanged.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="$root/models/spm-reference"
venv="$root/.venv-spm"
req="$root/scripts/spm-requirements.txt"
vocab="$root/models/vocab/ggml-vocab-llama-spm.gguf"
shared="$root/../shared/autoj"

scripts/fetch-vocabs.sh >/dev/null
key="$(
    {
        sha256sum scripts/make_spm_reference.py "$req" "$vocab" "$vocab.inp" | cut -d' ' -f1
        for f in prompt_templates.json testdata_pairwise.jsonl testdata_critique.jsonl zh_testdata_critique.jsonl; do
            if [[ -f "$shared/$f" ]]; then sha256sum "$shared/$f" | cut -d' ' -f1; else echo "no $f"; fi
        done
    } | sha256sum | cut -d' ' -f1
)"
if [[ -f "$out/.key" ]] && [[ "$(cat "$out/.key")" == "$key" ]]; then
    echo "SentencePiece reference ready: $out"
    exit 0
fi

# shellcheck source=scripts/python-env.sh
. "$root/scripts/python-env.sh"
python_env "$venv" "$req"
py() {
    if [[ -x "$venv/bin/python" ]]; then
        "$venv/bin/python" "$@"
    else
        PYTHONPATH="$venv/site" python3 "$@"
    fi
}

rm -rf "$out.part"
# transformers warns that neither PyTorch nor TensorFlow is there: only its tokenizers are used.
TRANSFORMERS_VERBOSITY=error HF_HUB_OFFLINE=1 py scripts/make_spm_reference.py \
    --vocab "$vocab" --shared "$shared" --out "$out.part"
echo "$key" >"$out.part/.key"
rm -rf "$out"
mv "$out.part" "$out"
echo "SentencePiece reference ready: $out"
