#!/usr/bin/env python3
"""Measure llama.cpp prefill and greedy decode speed on a GGUF, for `autoj bench` to compare.

Per repeat: clear the KV cache, evaluate the whole prompt as one batch (prefill), then run
exactly --n-predict one-token forward passes, each feeding the argmax of the previous
logits (greedy; EOS is ignored so the count is exact). Only llama_decode and the argmax
are timed, never tokenization or loading. One untimed warm-up pass comes first.

Prints one JSON line on stdout (medians over repeats); everything else goes to stderr:
    {"engine":"llama.cpp","version":...,"threads":N,"prompt_tokens":P,
     "prefill_tok_s":...,"decode_tok_s":...,"runs":R,...}

    .venv-bench/bin/python scripts/bench_llamacpp.py --prompt-file PROMPT.txt \
        --threads 2 --n-predict 64 --repeat 3
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import llama_cpp
import numpy as np

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def decode(ctx, tokens: list[int]) -> None:
    """One llama_decode call over `tokens` (positions continue from the KV cache)."""
    arr = (llama_cpp.llama_token * len(tokens))(*tokens)
    rc = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(tokens)))
    if rc != 0:
        raise RuntimeError(f"llama_decode returned {rc}")


def greedy(ctx, n_vocab: int) -> int:
    """Argmax of the last position's logits."""
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
    return int(np.argmax(logits))


def run_once(llm: llama_cpp.Llama, prompt: list[int], n_predict: int) -> tuple[float, float]:
    """Seconds spent on prefill and on the n_predict decode steps."""
    ctx, n_vocab = llm.ctx, llm.n_vocab()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    t0 = time.perf_counter()
    decode(ctx, prompt)
    tok = greedy(ctx, n_vocab)
    t1 = time.perf_counter()
    for _ in range(n_predict):
        decode(ctx, [tok])
        tok = greedy(ctx, n_vocab)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-file", type=Path, required=True)
    ap.add_argument("--n-predict", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    # Tokenize with a vocab-only load first, so the context can be sized to the prompt.
    text = args.prompt_file.read_text(encoding="utf-8")
    vocab = llama_cpp.Llama(model_path=str(args.model), vocab_only=True, verbose=False)
    prompt = vocab.tokenize(text.encode("utf-8"), add_bos=True, special=True)  # BOS only if the model wants it; special-token text (chat markup) parsed as in serving
    del vocab
    n_prompt = len(prompt)
    n_batch = max(512, n_prompt)  # the whole prompt goes in one batch and one ubatch

    llm = llama_cpp.Llama(
        model_path=str(args.model),
        n_ctx=n_prompt + args.n_predict + 16,
        n_batch=n_batch,
        n_ubatch=n_batch,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    log(f"model {args.model.name}: {n_prompt} prompt tokens, {args.threads} threads")
    log(llama_cpp.llama_print_system_info().decode().strip())

    run_once(llm, prompt, min(4, args.n_predict))  # warm-up, untimed
    prefill, decode_ = [], []
    for i in range(args.repeat):
        tp, td = run_once(llm, prompt, args.n_predict)
        prefill.append(n_prompt / tp)
        decode_.append(args.n_predict / td)
        log(f"run {i + 1}: prefill {tp * 1e3:.1f} ms ({prefill[-1]:.1f} tok/s), "
            f"decode {td * 1e3:.1f} ms ({decode_[-1]:.1f} tok/s)")

    print(json.dumps({
        "engine": "llama.cpp",
        "version": llama_cpp.__version__,
        "threads": args.threads,
        "prompt_tokens": n_prompt,
        "prefill_tok_s": round(statistics.median(prefill), 2),
        "decode_tok_s": round(statistics.median(decode_), 2),
        "runs": args.repeat,
        "n_predict": args.n_predict,
        "model": args.model.name,
    }), flush=True)


if __name__ == "__main__":
    main()
