#!/usr/bin/env python3
"""Write a random-weight LLaMA GGUF file at a real model's shape.

For benchmarking CPU kernels and memory at the sizes people run (docs/benchmarks.md).
The quantized blocks are written byte by byte with numpy: random quant values and
fixed small fp16 scales, chosen so that every weight row has mean ~0 and standard
deviation ~1/sqrt(in_features); activations then stay finite through all layers.
Norm weights are f32 ones. The tokenizer (every tokenizer.* key, chat template
included) is copied from a donor GGUF, and the vocabulary size is its token count.

Tensors are generated and written one at a time, so memory stays at about the
largest tensor (the token embedding).

    python3 -m venv .venv-gguf
    .venv-gguf/bin/pip install -r scripts/gguf-requirements.txt
    .venv-gguf/bin/python scripts/make_random_gguf.py --shape llama2-7b --type q4_k_m \
        --out models/random-llama2-7b.Q4_K_M.gguf
"""

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

SHAPES = {
    # hidden, layers, heads, kv heads, ffn, context, rope base, rms eps
    "llama2-7b": dict(hidden=4096, layers=32, heads=32, kv_heads=32, ffn=11008,
                      context=4096, rope_base=10000.0, eps=1e-5),
    "llama2-13b": dict(hidden=5120, layers=40, heads=40, kv_heads=40, ffn=13824,
                       context=4096, rope_base=10000.0, eps=1e-5),
    "yi-6b": dict(hidden=4096, layers=32, heads=32, kv_heads=4, ffn=11008,
                  context=4096, rope_base=5000000.0, eps=1e-5),
}

# llama.cpp's general.file_type values (enum llama_ftype).
FILE_TYPES = {"q4_0": 2, "q4_1": 3, "q8_0": 7, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}

BASE = {"q4_0": T.Q4_0, "q4_1": T.Q4_1, "q8_0": T.Q8_0, "q6_k": T.Q6_K,
        "q4_k_m": T.Q4_K, "q5_k_m": T.Q5_K}


def use_more_bits(i_layer, n_layers):
    """llama.cpp's rule for the K-quant mixes: first 1/8 of the layers, last 1/8,
    and every third layer in between (integer division as in C)."""
    return (i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8
            or (i_layer - n_layers // 8) % 3 == 2)


def tensor_type(ftype, name, i_layer, n_layers):
    base = BASE[ftype]
    if ftype in ("q4_k_m", "q5_k_m"):
        if name == "output.weight":
            return T.Q6_K
        if name.endswith(("attn_v.weight", "ffn_down.weight")) and use_more_bits(i_layer, n_layers):
            return T.Q6_K
    return base


def f16_bytes(x):
    return np.frombuffer(np.float16(x).tobytes(), dtype=np.uint8)


def pack_k_scales(sc, m):
    """The 12-byte 6-bit scale/min packing of Q4_K and Q5_K, for one block's
    8 sub-block scales sc and mins m (each 0..63)."""
    sc = np.asarray(sc, dtype=np.uint8)
    m = np.asarray(m, dtype=np.uint8)
    out = np.zeros(12, dtype=np.uint8)
    out[0:4] = (sc[0:4] & 0x3F) | ((sc[4:8] >> 4) << 6)
    out[4:8] = (m[0:4] & 0x3F) | ((m[4:8] >> 4) << 6)
    out[8:12] = (sc[4:8] & 0x0F) | ((m[4:8] & 0x0F) << 4)
    return out


# Standard deviations of a uniform integer on 0..n-1: sqrt((n^2 - 1) / 12).
STD16 = math.sqrt((16 * 16 - 1) / 12)   # 4-bit
STD32 = math.sqrt((32 * 32 - 1) / 12)   # 5-bit
STD64 = math.sqrt((64 * 64 - 1) / 12)   # 6-bit
STD256 = math.sqrt((256 * 256 - 1) / 12)  # 8-bit
SUB = 4  # the K-quants' 6-bit sub-block scale (small, so the fp16 d stays normal)


def random_blocks(rng, qtype, n_rows, in_features):
    """Bytes of an (n_rows, in_features) weight of type qtype, as uint8 of shape
    (n_rows, bytes per row)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    assert in_features % block == 0, (qtype.name, in_features)
    per_row = in_features // block
    n_blocks = n_rows * per_row
    b = np.frombuffer(rng.bytes(n_blocks * size), dtype=np.uint8).reshape(n_blocks, size).copy()
    s = 1.0 / math.sqrt(in_features)  # target std of a weight
    if qtype == T.Q4_0:      # d, 16 B nibbles; w = d * (q - 8)
        b[:, 0:2] = f16_bytes(s / STD16)
    elif qtype == T.Q4_1:    # d, m, 16 B nibbles; w = d * q + m
        d = s / STD16
        b[:, 0:2] = f16_bytes(d)
        b[:, 2:4] = f16_bytes(-7.5 * d)
    elif qtype == T.Q8_0:    # d, 32 int8; w = d * q
        b[:, 0:2] = f16_bytes(s / STD256)
    elif qtype == T.Q4_K:    # d, dmin, 12 B scales, 128 B nibbles; w = d*sc*q - dmin*m
        d = s / (SUB * STD16)
        b[:, 0:2] = f16_bytes(d)
        b[:, 2:4] = f16_bytes(d * 7.5)
        b[:, 4:16] = pack_k_scales([SUB] * 8, [SUB] * 8)
    elif qtype == T.Q5_K:    # d, dmin, 12 B scales, 32 B high bits, 128 B nibbles
        d = s / (SUB * STD32)
        b[:, 0:2] = f16_bytes(d)
        b[:, 2:4] = f16_bytes(d * 15.5)
        b[:, 4:16] = pack_k_scales([SUB] * 8, [SUB] * 8)
    elif qtype == T.Q6_K:    # 128 B low, 64 B high bits, 16 int8 scales, d; w = d*sc*(q-32)
        b[:, 192:208] = SUB
        b[:, 208:210] = f16_bytes(s / (SUB * STD64))
    else:
        raise ValueError(f"unsupported type {qtype.name}")
    return b.reshape(n_rows, per_row * size)


def copy_tokenizer(writer, donor):
    r = gguf.GGUFReader(donor)
    n_vocab = None
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = f.types[0]
        if main == V.ARRAY:
            sub = f.types[-1]
            val = f.contents()
            writer.add_key_value(key, val, V.ARRAY, sub_type=sub)
            if key == "tokenizer.ggml.tokens":
                n_vocab = len(val)
        else:
            writer.add_key_value(key, f.contents(), main)
    if n_vocab is None:
        sys.exit(f"{donor}: no tokenizer.ggml.tokens")
    return n_vocab


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama2-7b")
    ap.add_argument("--type", choices=sorted(FILE_TYPES), default="q4_k_m")
    ap.add_argument("--layers", type=int, help="fewer layers than the shape's (full width)")
    ap.add_argument("--tokenizer-from", default="models/SmolLM2-135M-Instruct.Q4_1.gguf",
                    help="GGUF whose tokenizer.* keys are copied (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    sh = dict(SHAPES[a.shape])
    n_layers = a.layers if a.layers is not None else sh["layers"]
    if not 1 <= n_layers <= sh["layers"]:
        sys.exit(f"--layers must be 1..{sh['layers']}")
    h, ffn, heads, kv = sh["hidden"], sh["ffn"], sh["heads"], sh["kv_heads"]
    head_dim = h // heads
    kv_dim = kv * head_dim
    t0 = time.time()

    w = gguf.GGUFWriter(a.out, "llama")
    name = f"random-{a.shape}" + (f"-{n_layers}layers" if n_layers != sh["layers"] else "")
    w.add_name(name)
    w.add_block_count(n_layers)
    w.add_context_length(sh["context"])
    w.add_embedding_length(h)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(sh["rope_base"])
    w.add_layer_norm_rms_eps(sh["eps"])
    w.add_rope_dimension_count(head_dim)
    w.add_file_type(FILE_TYPES[a.type])
    n_vocab = copy_tokenizer(w, a.tokenizer_from)
    w.add_vocab_size(n_vocab)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    # (name, kind, rows = out_features, cols = in_features, layer)
    plan = [("token_embd.weight", "q", n_vocab, h, -1)]
    for i in range(n_layers):
        p = f"blk.{i}."
        plan += [
            (p + "attn_norm.weight", "norm", 1, h, i),
            (p + "attn_q.weight", "q", h, h, i),
            (p + "attn_k.weight", "q", kv_dim, h, i),
            (p + "attn_v.weight", "q", kv_dim, h, i),
            (p + "attn_output.weight", "q", h, h, i),
            (p + "ffn_norm.weight", "norm", 1, h, i),
            (p + "ffn_gate.weight", "q", ffn, h, i),
            (p + "ffn_up.weight", "q", ffn, h, i),
            (p + "ffn_down.weight", "q", h, ffn, i),
        ]
    plan += [("output_norm.weight", "norm", 1, h, -1), ("output.weight", "q", n_vocab, h, -1)]

    types = {}
    for tname, kind, rows, cols, i in plan:
        if kind == "norm":
            w.add_tensor_info(tname, (cols,), np.dtype(np.float32), cols * 4)
            continue
        # token_embd: the file's base type (llama.cpp would keep Q4_K/Q5_K there too).
        qt = tensor_type(a.type, tname, i, n_layers)
        types[tname] = qt
        block, size = gguf.GGML_QUANT_SIZES[qt]
        row_bytes = cols // block * size
        w.add_tensor_info(tname, (rows, row_bytes), np.dtype(np.uint8), rows * row_bytes, raw_dtype=qt)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(a.seed)
    for tname, kind, rows, cols, i in plan:
        if kind == "norm":
            w.write_tensor_data(np.ones(cols, dtype=np.float32))
        else:
            w.write_tensor_data(random_blocks(rng, types[tname], rows, cols))
    w.close()

    counts = {}
    for qt in types.values():
        counts[qt.name] = counts.get(qt.name, 0) + 1
    size = Path(a.out).stat().st_size
    print(f"{a.out}: {a.shape} {a.type} layers={n_layers} vocab={n_vocab} "
          f"tensor types {counts} size {size / 2**20:.1f} MiB in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
