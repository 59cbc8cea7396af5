#!/usr/bin/env python3
"""Measure llama.cpp prefill and greedy decode speed on a GGUF, for `autoj bench` to compare.

Per repeat: clear the KV cache, evaluate the whole prompt as one batch (prefill), then run
exactly --n-predict one-token forward passes, each feeding the argmax of the previous
logits (greedy; EOS is ignored so the count is exact). Only llama_decode and the argmax
are timed, never tokenization or loading. One untimed warm-up pass comes first.

With --concurrency 1,4,8,16 it also measures batched decoding: that many sequences step
together, one llama_batch per step holding one token of each sequence under its own
sequence id (llama.cpp's own batched decoding; see `batched_decode`).

Flash attention is on unless --flash-attn off (llama.cpp's own tools enable it on CPUs by
default; llama-cpp-python's `Llama` leaves it off unless asked); --kv-type picks the cache
type (f16 by default, q8_0 to match `autoj bench --kv-dtype q8`).

Prints one JSON line on stdout (medians over repeats); everything else goes to stderr:
    {"engine":"llama.cpp","version":...,"threads":N,"prompt_tokens":P,
     "prefill_tok_s":...,"decode_tok_s":...,"runs":R,"logits_finite":true,...}

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


# GGML type ids of the cache types `--kv-type` offers.
KV_TYPES = {"f32": 0, "f16": 1, "q8_0": 8}


def batched_context(llm: llama_cpp.Llama, n_ctx: int, n_batch: int, n_seq: int, args):
    """A second context on the loaded model that holds `n_seq` sequences in one unified
    KV cache (copied prompt cells are shared, as our forked caches are)."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = n_batch
    params.n_ubatch = n_batch
    params.n_seq_max = n_seq
    params.n_threads = args.threads
    params.n_threads_batch = args.threads
    params.type_k = params.type_v = KV_TYPES[args.kv_type]
    params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if args.flash_attn == "on"
                              else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    if hasattr(params, "kv_unified"):
        params.kv_unified = True
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    if not ctx:
        raise RuntimeError("llama_init_from_model failed")
    return ctx


def batched_decode(ctx, n_vocab: int, prompt: list[int], n_seq: int, n_predict: int) -> float:
    """Aggregate greedy decode tokens/s of `n_seq` sequences stepping together, each token of
    a step one entry of one llama_batch with its own sequence id. All start from the same
    prefilled prompt (sequence 0 copied to the others); only the decode steps are timed."""
    mem = llama_cpp.llama_get_memory(ctx)
    llama_cpp.llama_memory_clear(mem, True)
    batch = llama_cpp.llama_batch_init(max(len(prompt), n_seq), 0, n_seq)
    try:
        def fill(entries):
            batch.n_tokens = len(entries)
            for i, (tok, pos, seq, want) in enumerate(entries):
                batch.token[i] = tok
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = want
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")

        last = len(prompt) - 1
        fill([(t, p, 0, p == last) for p, t in enumerate(prompt)])
        first = int(np.argmax(np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(ctx, last), shape=(n_vocab,))))
        for s in range(1, n_seq):
            llama_cpp.llama_memory_seq_cp(mem, 0, s, -1, -1)
        nxt = [first] * n_seq
        t0 = time.perf_counter()
        for step in range(n_predict):
            fill([(nxt[s], len(prompt) + step, s, True) for s in range(n_seq)])
            nxt = [int(np.argmax(np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(ctx, s), shape=(n_vocab,)))) for s in range(n_seq)]
        return n_seq * n_predict / (time.perf_counter() - t0)
    finally:
        llama_cpp.llama_batch_free(batch)


def concurrency_levels(llm, prompt, levels, args) -> list[dict]:
    """Median aggregate decode speed per level; the levels take turns, as in autoj bench."""
    top = max(levels)
    n_ctx = len(prompt) + top * (args.n_predict + 8) + 16
    ctx = batched_context(llm, n_ctx, max(512, len(prompt)), top, args)
    try:
        batched_decode(ctx, llm.n_vocab(), prompt, min(2, top), min(2, args.n_predict))  # warm-up
        runs = {b: [] for b in levels}
        for _ in range(args.repeat):
            for b in levels:
                runs[b].append(batched_decode(ctx, llm.n_vocab(), prompt, b, args.n_predict))
                log(f"{b} sequences: {runs[b][-1]:.2f} tok/s")
    finally:
        llama_cpp.llama_free(ctx)
    return [{"concurrent_sequences": b, "aggregate_decode_tok_s": round(statistics.median(r), 3)}
            for b, r in runs.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-file", type=Path, required=True)
    ap.add_argument("--n-predict", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--concurrency", default="",
                    help="comma-separated sequence counts for batched decode (empty: skip)")
    ap.add_argument("--kv-type", choices=sorted(KV_TYPES), default="f16",
                    help="KV cache type (q8_0 needs flash attention for the values)")
    ap.add_argument("--flash-attn", choices=["on", "off"], default="on",
                    help="llama.cpp's own tools turn it on by default on CPUs (llama-cpp-python "
                         "turns it off unless asked)")
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
        type_k=KV_TYPES[args.kv_type],
        type_v=KV_TYPES[args.kv_type],
        flash_attn=args.flash_attn == "on",
        verbose=False,
    )
    log(f"model {args.model.name}: {n_prompt} prompt tokens, {args.threads} threads")
    log(llama_cpp.llama_print_system_info().decode().strip())

    run_once(llm, prompt, min(4, args.n_predict))  # warm-up, untimed
    # Whether the file loads into something usable: the warm-up's last logits all finite.
    last = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
    finite = bool(np.isfinite(last).all())
    prefill, decode_ = [], []
    for i in range(args.repeat):
        tp, td = run_once(llm, prompt, args.n_predict)
        prefill.append(n_prompt / tp)
        decode_.append(args.n_predict / td)
        log(f"run {i + 1}: prefill {tp * 1e3:.1f} ms ({prefill[-1]:.1f} tok/s), "
            f"decode {td * 1e3:.1f} ms ({decode_[-1]:.1f} tok/s)")

    levels = [int(v) for v in args.concurrency.split(",") if v.strip()]
    batched = concurrency_levels(llm, prompt, levels, args) if levels else []

    print(json.dumps({
        "engine": "llama.cpp",
        "batched_decode": batched,
        "version": llama_cpp.__version__,
        "threads": args.threads,
        "prompt_tokens": n_prompt,
        "prefill_tok_s": round(statistics.median(prefill), 2),
        "decode_tok_s": round(statistics.median(decode_), 2),
        "runs": args.repeat,
        "n_predict": args.n_predict,
        "model": args.model.name,
        "logits_finite": finite,
        "kv_type": args.kv_type,
        "flash_attn": args.flash_attn,
    }), flush=True)


if __name__ == "__main__":
    main()
