#!/usr/bin/env python3
"""Write tiny random LLaMA checkpoints in the layouts GAIR publishes Auto-J in, with
reference tokenizations, logits and greedy generations, for the Rust loader tests.

Everything is written by the real libraries (torch.save through transformers'
save_pretrained, safetensors, sentencepiece, tokenizers' converter), with fixed seeds, into
judge/tests/fixtures/checkpoints/ (its README.md says more):

    autoj-13b-layout/       fp16 .bin shards (3) + index, tokenizer.json + added_tokens.json
                            (no tokenizer.model), vocab padded past the tokenizer
    autoj-bilingual-layout/ Yi-style (2 KV heads, rope_theta 5e6), fp16 .bin shards (2) +
                            index, tokenizer.json and tokenizer.model (no dummy prefix)
    safetensors-sharded/    the weights of autoj-13b-layout in bf16, safetensors shards + index
    gptq-4bit/              the weights of autoj-13b-layout, 4-bit, group 32, asymmetric,
                            packed as AutoGPTQ packs them ("gptq" format: zeros stored less 1)
    gptq-4bit-desc-act/     the same with act-order (desc_act true, permuted g_idx)
    reference.json          ids, last-position f32 logits, 16 greedy tokens and margins

Setup (what worked on a CPU-only Debian machine with Python 3.11):

    python3 -m venv .venv-fixtures
    .venv-fixtures/bin/pip install -r scripts/checkpoint-fixtures-requirements.txt
    .venv-fixtures/bin/python scripts/make_checkpoint_fixtures.py

torch: PyPI's Linux x86_64 wheel of torch 2.9.1 is the CUDA build. `pip install --no-deps
torch==2.9.1` plus the pure dependencies (filelock, typing-extensions, sympy, networkx,
jinja2, fsspec, mpmath, markupsafe) does NOT import: libtorch_global_deps.so and
libtorch_cuda.so have DT_NEEDED entries for libcudart.so.12, libcublas, libcudnn, libnccl,
libcusparseLt, libcufile, ... and `import torch` fails with "libcudart.so.12: cannot open
shared object file" then "libcublas.so.*[0-9] not found in the system path". The CPU-only
wheels live on the PyTorch index, which is not reachable here. What works is the plain
install with its dependencies (the nvidia-*-cu12 wheels, about 3 GB downloaded, the venv
6.7 GB): torch then imports and runs on the CPU (torch.cuda.is_available() is False).

transformers is pinned to 4.55.4: 4.56+ writes "dtype" instead of "torch_dtype" in
config.json, and 5.x writes only safetensors; the published Auto-J configs have
"torch_dtype".
"""

import argparse
import io
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import safetensors
import sentencepiece as spm
import tokenizers
import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT.parent / "shared" / "autoj" / "prompt_templates.json"
OUT = ROOT / "judge" / "tests" / "fixtures" / "checkpoints"

SEED = 20231015
GROUP_SIZE = 32
N_GREEDY = 16

# The query and responses put into Auto-J's prompts.
QUERY = "What is the capital of France?"
RESPONSE_1 = "The capital of France is Paris."
RESPONSE_2 = "I believe it is Lyon, but I am not sure."
QUERY_ZH = "用一句话介绍长城。"
RESPONSE_ZH = "长城是中国古代修建的军事防御工程，全长两万多公里。"

# Short texts whose ids every tokenizer records: ASCII, runs of spaces, Chinese, emoji.
TEXTS = [
    "Hello, world! The quick brown fox jumps over the lazy dog 42 times.",
    "multiple   spaces    and\ttabs\nand  newlines  ",
    "中文测试：今天天气很好，我们去公园散步吧。",
    "emoji 🙂👍🏽 and café ✓",
]

# ---------------------------------------------------------------------------------------
# Training text for the SentencePiece models (generated, deterministic).

EN_WORDS = (
    "the a an of to and in is it that for on with as was be by this are or at from his "
    "her not but have they you which one all were we when there can an your their said "
    "each she do how if will up other about out many then them these so some would make "
    "like him into time has look two more write go see number no way could people my than "
    "first water been call who oil its now find long down day did get come made may part "
    "response query answer judge critique rating score better worse tie final decision "
    "assess compare evaluate helpful harmless honest accurate clear concise detailed "
    "capital france paris city river mountain weather today question user assistant "
    "model language write explain reason because therefore however although example"
).split()

ZH_PHRASES = [
    "你好", "世界", "今天", "天气", "很好", "我们", "公园", "散步", "中文", "测试",
    "回应", "用户", "问询", "评价", "比较", "两个", "最终", "决定", "评分", "评论",
    "长城", "中国", "古代", "军事", "防御", "工程", "首都", "北京", "城市", "问题",
    "回答", "更好", "平局", "胜出", "因素", "关键", "确保", "一致", "综合", "提供",
]


def english_lines(rng, n):
    lines = []
    for _ in range(n):
        words = [rng.choice(EN_WORDS) for _ in range(rng.randint(4, 14))]
        if rng.random() < 0.5:
            words[0] = words[0].capitalize()
        if rng.random() < 0.2:
            words.insert(rng.randint(0, len(words)), str(rng.randint(0, 2023)))
        sep = "  " if rng.random() < 0.1 else " "
        lines.append(sep.join(words) + rng.choice([".", "?", "!", ",", ":", "."]))
    return lines


def chinese_lines(rng, n):
    lines = []
    for _ in range(n):
        s = "".join(rng.choice(ZH_PHRASES) for _ in range(rng.randint(3, 9)))
        lines.append(s + rng.choice(["。", "？", "，", "！"]))
    return lines


def train_spm(path_prefix, lines, vocab_size, bos, eos, add_dummy_prefix):
    """A LLaMA-style SentencePiece BPE model with byte fallback (ids: unk 0, bos 1, eos 2,
    then the 256 byte pieces)."""
    # Trained from an iterator into memory, so that no (temporary) path is recorded in
    # the model's trainer_spec and the file is the same on every run.
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=add_dummy_prefix,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece="<unk>",
        bos_piece=bos,
        eos_piece=eos,
        num_threads=1,
        minloglevel=2,
    )
    path = Path(str(path_prefix) + ".model")
    path.write_bytes(model.getvalue())
    return path


# ---------------------------------------------------------------------------------------
# Models.


def init_weights(model, seed, real_vocab):
    """Weights with logits of a few units (so greedy margins are clear in fp16), norm
    weights away from 1 (so a loader that skips them is caught), and lm_head rows past the
    tokenizer scaled down (never argmax, as in a trained model with padding rows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("embed_tokens.weight"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name == "lm_head.weight":
                p.copy_(4.0 * torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
                p[real_vocab:] *= 0.05
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def save_sharded(model, out_dir, n_shards, safe):
    """save_pretrained with the largest max_shard_size that gives exactly n_shards."""
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    suffix = ".safetensors" if safe else ".bin"
    for size in range(total // n_shards + 1, total + 1, 1024):
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp, safe_serialization=safe, max_shard_size=size)
            shards = sorted(f for f in os.listdir(tmp) if f.endswith(suffix))
            if len(shards) == n_shards:
                model.save_pretrained(out_dir, safe_serialization=safe, max_shard_size=size)
                return size
    raise SystemExit(f"no max_shard_size gives {n_shards} shards")


def drop_add_prefix_space(d):
    """Remove the add_prefix_space key that passing it wrote into tokenizer_config.json:
    the published LLaMA-2 and Yi configs have none, and with it transformers rebuilds the
    tokenizer from tokenizer.model at load (which autoj-13b lacks) instead of reading
    tokenizer.json. The behaviour is in tokenizer.json's normalizer and decoder."""
    p = d / "tokenizer_config.json"
    cfg = json.loads(p.read_text(encoding="utf-8"))
    cfg.pop("add_prefix_space", None)
    p.write_text(json.dumps(cfg, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                 encoding="utf-8")


def llama_config(**kw):
    base = dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        hidden_act="silu",
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=False,
        use_cache=True,
        pretraining_tp=1,
        rope_scaling=None,
        attention_bias=False,
        mlp_bias=False,
        architectures=["LlamaForCausalLM"],
    )
    base.update(kw)
    return LlamaConfig(**base)


# ---------------------------------------------------------------------------------------
# GPTQ (AutoGPTQ's QuantLinear.pack for the cuda-old / exllama kernels, 4 bits).


def quantize_rtn(w16, group_size, perm):
    """Round-to-nearest 4-bit, asymmetric, one scale and zero per (group, output), as
    GPTQ's Quantizer.find_params computes them (the range always includes 0). Groups are
    runs of `group_size` columns in `perm` order (act-order when perm is not the identity).
    Returns intweight [out, in] (0..15), scales f16 [groups, out], zeros int [groups, out],
    g_idx int32 [in]."""
    w = w16.float()
    out_f, in_f = w.shape
    n_groups = in_f // group_size
    invperm = torch.argsort(perm)
    g_idx = (invperm // group_size).to(torch.int32)  # GPTQ: g_idx[invperm] of i // gs
    scales = torch.empty(n_groups, out_f, dtype=torch.float16)
    zeros = torch.empty(n_groups, out_f, dtype=torch.int64)
    for g in range(n_groups):
        cols = perm[g * group_size:(g + 1) * group_size]
        blk = w[:, cols]
        xmin = torch.minimum(blk.min(1).values, torch.zeros(out_f))
        xmax = torch.maximum(blk.max(1).values, torch.zeros(out_f))
        scale = (xmax - xmin) / 15.0
        zero = torch.round(-xmin / scale)
        scales[g] = scale.half()
        zeros[g] = zero.long()
    # Zero points of 0 would be stored as -1, which AutoGPTQ's packing smears over the
    # other nibbles of the word; random weights never give one (every group has a
    # negative weight), and the fixture checks it.
    assert int(zeros.min()) >= 1 and int(zeros.max()) <= 15, "zero point out of 1..15"
    s = scales.float()[g_idx.long()].t()  # [out, in]
    z = zeros.float()[g_idx.long()].t()
    intweight = torch.clamp(torch.round(w / s) + z, 0, 15).to(torch.int64)
    return intweight, scales, zeros, g_idx


def pack_autogptq(intweight, zeros, bits=4):
    """AutoGPTQ's packing: qweight [in*bits/32, out], eight consecutive input rows per
    int32 (the first in the low nibble); qzeros [groups, out*bits/32], eight consecutive
    output columns per int32, storing zero - 1 (the original "gptq" checkpoint format)."""
    iw = intweight.t().contiguous().numpy().astype(np.uint32)  # [in, out]
    per = 32 // bits
    qweight = np.zeros((iw.shape[0] // per, iw.shape[1]), dtype=np.uint32)
    i, row = 0, 0
    while row < qweight.shape[0]:
        for j in range(i, i + per):
            qweight[row] |= iw[j] << (bits * (j - i))
        i += per
        row += 1
    z = (zeros.numpy() - 1).astype(np.uint32)
    qzeros = np.zeros((z.shape[0], z.shape[1] // per), dtype=np.uint32)
    i, col = 0, 0
    while col < qzeros.shape[1]:
        for j in range(i, i + per):
            qzeros[:, col] |= z[:, j] << (bits * (j - i))
        i += per
        col += 1
    return (torch.from_numpy(qweight.view(np.int32).copy()),
            torch.from_numpy(qzeros.view(np.int32).copy()))


def dequant_gptq(qweight, qzeros, scales, g_idx):
    """The packed tensors back to an f32 weight [out, in], as AutoGPTQ's cuda-old and
    exllama kernels read them: w[i][j] = scales[g][j] * (q[i][j] - (qzeros nibble + 1)),
    g = g_idx[i]. Written independently of pack_autogptq (shifts over whole tensors)."""
    qw = qweight.numpy().view(np.uint32)
    qz = qzeros.numpy().view(np.uint32)
    shifts = np.arange(0, 32, 4, dtype=np.uint32)
    q = ((qw[:, None, :] >> shifts[None, :, None]) & 0xF).reshape(-1, qw.shape[1])
    z = ((qz[:, :, None] >> shifts[None, None, :]) & 0xF).reshape(qz.shape[0], -1) + 1
    g = g_idx.numpy().astype(np.int64)
    s = scales.float().numpy()
    w = s[g] * (q.astype(np.float32) - z[g].astype(np.float32))  # [in, out]
    return torch.from_numpy(np.ascontiguousarray(w.T))


LINEAR = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def make_gptq(src_dir, out_dir, desc_act, seed, tok_files):
    """Quantize the fp16 model in src_dir; write model.safetensors, quantize_config.json,
    config.json (with quantization_config) and the tokenizer files. Returns the f32 state
    dict a loader should reconstruct (dequantized linears, upcast f16 rest)."""
    model = LlamaForCausalLM.from_pretrained(src_dir, torch_dtype=torch.float16)
    sd = model.state_dict()
    g = torch.Generator().manual_seed(seed)
    packed, dequant = {}, {}
    for name, t in sd.items():
        base = name[: -len(".weight")] if name.endswith(".weight") else None
        if base and any(base.endswith(l) for l in LINEAR):
            in_f = t.shape[1]
            if desc_act:
                # Act-order: columns by decreasing diag(H) of a synthetic calibration
                # Hessian H = X^T X, X with per-column activation scales.
                col_scale = torch.exp(torch.randn(in_f, generator=g))
                x = torch.randn(64, in_f, generator=g) * col_scale
                perm = torch.argsort(torch.diag(x.t() @ x), descending=True)
            else:
                perm = torch.arange(in_f)
            iw, scales, zeros, g_idx = quantize_rtn(t, GROUP_SIZE, perm)
            qweight, qzeros = pack_autogptq(iw, zeros)
            packed[base + ".qweight"] = qweight
            packed[base + ".qzeros"] = qzeros
            packed[base + ".scales"] = scales.contiguous()
            packed[base + ".g_idx"] = g_idx.contiguous()
            w = dequant_gptq(qweight, qzeros, scales, g_idx)
            # Cross-check unpacking against the integers packed.
            s = scales.float()[g_idx.long()].t()
            z = zeros.float()[g_idx.long()].t()
            assert torch.equal(w, s * (iw.float() - z)), base
            dequant[name] = w
        else:
            packed[name] = t.contiguous()  # embeddings, norms, lm_head: f16 as AutoGPTQ
            dequant[name] = t.float()
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    save_file(packed, out_dir / "model.safetensors", metadata={"format": "pt"})
    qcfg = {
        "bits": 4,
        "group_size": GROUP_SIZE,
        "damp_percent": 0.01,
        "desc_act": desc_act,
        "static_groups": False,
        "sym": False,
        "true_sequential": True,
        "model_name_or_path": None,
        "model_file_base_name": "model",
        "quant_method": "gptq",
        "checkpoint_format": "gptq",
    }
    (out_dir / "quantize_config.json").write_text(json.dumps(qcfg, indent=2) + "\n")
    cfg = LlamaConfig.from_pretrained(src_dir)
    cfg.quantization_config = dict(qcfg)
    cfg.torch_dtype = "float16"
    cfg.save_pretrained(out_dir)
    for f in tok_files:
        shutil.copy(src_dir / f, out_dir / f)
    return dequant


# ---------------------------------------------------------------------------------------
# References.


def f32_list(t):
    """Shortest decimal strings that round-trip each f32, as JSON numbers."""
    return [float(str(np.float32(v))) for v in t.detach().float().numpy().tolist()]


def top_margin(logits):
    top = torch.topk(logits.float(), 2).values
    return float(top[0] - top[1])


def run_reference(model, ids, real_vocab):
    model.eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0, -1]
        out = model.generate(
            x, attention_mask=torch.ones_like(x), do_sample=False,
            max_new_tokens=N_GREEDY, num_beams=1, output_logits=True,
            return_dict_in_generate=True,
        )
    tokens = out.sequences[0, len(ids):].tolist()
    margins = [top_margin(step[0]) for step in out.logits]
    # The same greedy tokens again without the KV cache, where the margin is clear.
    seq = list(ids)
    with torch.no_grad():
        for t, m in zip(tokens, margins):
            nxt = int(model(torch.tensor([seq]), use_cache=False).logits[0, -1].argmax())
            assert m < 1e-3 or nxt == t, (nxt, t, m)
            seq.append(t)
    assert all(t < real_vocab for t in tokens), "a padding row won the argmax"
    eos = model.generation_config.eos_token_id
    return {
        "last_logits": f32_list(logits),
        "last_argmax": int(logits.argmax()),
        "greedy": {
            "tokens": tokens,
            "margins": [float(str(np.float32(m))) for m in margins],
            "stopped_at_eos": bool(tokens and tokens[-1] == eos and len(tokens) < N_GREEDY),
        },
    }


def weight_sums(state):
    """Per logical weight (GPTQ linears dequantized; everything in f32): shape, sum and
    sum of squares in f64."""
    out = {}
    for name in sorted(state):
        t = state[name].double()
        out[name] = {"shape": list(t.shape), "sum": float(t.sum()),
                     "sum_sq": float((t * t).sum())}
    return out


def disk_tensors(d):
    """Name -> [dtype, shape] of every tensor in the directory's weight files."""
    out = {}
    for f in sorted(os.listdir(d)):
        p = d / f
        if f.endswith(".safetensors"):
            with safetensors.safe_open(p, "pt") as h:
                for k in h.keys():
                    t = h.get_slice(k)
                    out[k] = [t.get_dtype(), list(t.get_shape())]
        elif f.endswith(".bin"):
            for k, t in torch.load(p, map_location="cpu", weights_only=True).items():
                out[k] = [str(t.dtype).replace("torch.", ""), list(t.shape)]
    return dict(sorted(out.items()))


def tokenizer_cases(tok, raw, sp_model=None):
    """tok: transformers' tokenizer of the directory; raw: its tokenizer.json through the
    tokenizers library alone (what a Rust loader reads), which must agree."""
    cases = []
    for text in TEXTS:
        ids = tok(text).input_ids
        plain = tok(text, add_special_tokens=False).input_ids
        assert raw.encode(text).ids == ids, text
        assert raw.encode(text, add_special_tokens=False).ids == plain, text
        assert raw.decode(plain, skip_special_tokens=False) == tok.decode(plain), text
        case = {"text": text, "ids": ids, "ids_no_special": plain,
                "tokens": tok.convert_ids_to_tokens(plain),
                "decoded": tok.decode(plain)}
        if sp_model is not None:
            # What the SentencePiece model itself gives (no BOS); equal to ids_no_special
            # except where noted by sentencepiece_differs.
            case["sentencepiece_ids"] = sp_model.encode(text)
            case["sentencepiece_differs"] = case["sentencepiece_ids"] != plain
        cases.append(case)
    return cases


def prompts(templates):
    wrap = templates["llama2_wrapper_without_system"]
    pair = templates["en"]["pairwise_tie"].format(
        prompt=QUERY, response=RESPONSE_1, response_another=RESPONSE_2)
    single_zh = templates["zh"]["single"].format(prompt=QUERY_ZH, response=RESPONSE_ZH)
    return {
        "pairwise_en": wrap.format(input=pair),
        "single_zh": wrap.format(input=single_zh),
    }


# ---------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    out = args.out
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    templates = json.loads(TEMPLATES.read_text(encoding="utf-8"))
    texts = prompts(templates)
    out.mkdir(parents=True, exist_ok=True)
    for d in ["autoj-13b-layout", "autoj-bilingual-layout", "safetensors-sharded",
              "gptq-4bit", "gptq-4bit-desc-act"]:
        shutil.rmtree(out / d, ignore_errors=True)

    work = Path(tempfile.mkdtemp(prefix="ckpt-fixtures-"))
    rng = random.Random(SEED)
    reference = {
        "generated_by": "scripts/make_checkpoint_fixtures.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__,
                     "safetensors": safetensors.__version__,
                     "sentencepiece": spm.__version__},
        "templates": {"wrapper": templates["llama2_wrapper_without_system"],
                      "pairwise_en": templates["en"]["pairwise_tie"],
                      "single_zh": templates["zh"]["single"]},
        "prompt_fields": {"pairwise_en": {"prompt": QUERY, "response": RESPONSE_1,
                                          "response_another": RESPONSE_2},
                          "single_zh": {"prompt": QUERY_ZH, "response": RESPONSE_ZH}},
        "prompts": texts,
        "greedy_steps": N_GREEDY,
        "notes": [
            "ids: transformers' fast tokenizer loaded back from the directory, special "
            "tokens as its tokenizer_config adds them (BOS for the LLaMA ones, none for "
            "the Yi-style one, whose add_bos_token is false).",
            "last_logits: f32 logits of the last prompt position, model in float32 with "
            "the on-disk weights upcast (GPTQ: dequantized from the packed tensors).",
            "greedy: model.generate(do_sample=False) in float32; margins[k] is top-1 "
            "minus top-2 logit at step k (compare a step only where it is clear).",
            "weight_sums: per weight in f32 (GPTQ linears dequantized), sum and sum of "
            "squares in f64.",
        ],
        "models": {},
    }

    # 1. autoj-13b layout -------------------------------------------------------------
    en = english_lines(rng, 3000)
    sp13 = train_spm(work / "sp13", en, 416, "<s>", "</s>", add_dummy_prefix=True)
    # add_prefix_space must be given: left None, this transformers passes None on to the
    # slow tokenizer it converts and the tokenizer.json loses LLaMA's Prepend("▁")
    # normalizer and Strip decoder.
    tok = LlamaTokenizerFast(vocab_file=str(sp13), legacy=True, from_slow=True,
                             add_prefix_space=True, add_bos_token=True, add_eos_token=False,
                             clean_up_tokenization_spaces=False)
    tok.add_special_tokens({"pad_token": "<pad>"})
    n_tok = len(tok)  # pieces + <pad>
    vocab13 = (n_tok + 63) // 64 * 64  # padded, as 32000 + added -> 32128
    d13 = out / "autoj-13b-layout"
    tok.save_pretrained(d13)
    (d13 / "tokenizer.model").unlink()  # GAIR/autoj-13b ships no tokenizer.model
    drop_add_prefix_space(d13)
    cfg13 = llama_config(vocab_size=vocab13, num_key_value_heads=4, rope_theta=10000.0,
                         max_position_embeddings=8192, bos_token_id=1, eos_token_id=2,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(SEED)
    m13 = LlamaForCausalLM(cfg13)
    init_weights(m13, SEED + 1, n_tok)
    m13 = m13.half()
    save_sharded(m13, d13, 3, safe=False)
    tok_files13 = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json"]

    # 2. autoj-bilingual (Yi) layout --------------------------------------------------
    bi_lines = english_lines(rng, 2000) + chinese_lines(rng, 2000)
    rng.shuffle(bi_lines)
    spbi = train_spm(work / "spbi", bi_lines, 512, "<|startoftext|>", "<|endoftext|>",
                     add_dummy_prefix=False)
    tokbi = LlamaTokenizerFast(vocab_file=str(spbi), legacy=True, from_slow=True,
                               add_prefix_space=False, add_bos_token=False,
                               add_eos_token=False, bos_token="<|startoftext|>",
                               eos_token="<|endoftext|>", unk_token="<unk>",
                               pad_token="<unk>", clean_up_tokenization_spaces=False,
                               model_max_length=4096)
    dbi = out / "autoj-bilingual-layout"
    tokbi.save_pretrained(dbi)
    drop_add_prefix_space(dbi)
    cfgbi = llama_config(vocab_size=len(tokbi), num_key_value_heads=2,
                         rope_theta=5000000.0, max_position_embeddings=4096,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(SEED + 10)
    mbi = LlamaForCausalLM(cfgbi)
    init_weights(mbi, SEED + 11, len(tokbi))
    mbi = mbi.half()
    save_sharded(mbi, dbi, 2, safe=False)

    # 3. safetensors, bf16, sharded ----------------------------------------------------
    dst = out / "safetensors-sharded"
    mst = LlamaForCausalLM.from_pretrained(d13, torch_dtype=torch.float16).to(torch.bfloat16)
    save_sharded(mst, dst, 3, safe=True)
    for f in tok_files13:
        shutil.copy(d13 / f, dst / f)

    # 4. GPTQ --------------------------------------------------------------------------
    deq = {}
    for name, desc in [("gptq-4bit", False), ("gptq-4bit-desc-act", True)]:
        deq[name] = make_gptq(d13, out / name, desc, SEED + 20, tok_files13)

    # 5. References --------------------------------------------------------------------
    sp13_model = spm.SentencePieceProcessor(model_file=str(sp13))
    sp_models = {"autoj-bilingual-layout": spm.SentencePieceProcessor(model_file=str(spbi))}
    for name in ["autoj-13b-layout", "safetensors-sharded", "gptq-4bit", "gptq-4bit-desc-act"]:
        sp_models[name] = sp13_model
    layouts = {
        "autoj-13b-layout": "pytorch .bin shards, float16",
        "autoj-bilingual-layout": "pytorch .bin shards, float16, Yi-style",
        "safetensors-sharded": "safetensors shards, bfloat16",
        "gptq-4bit": "GPTQ 4-bit (gptq format), group_size 32, sym false, desc_act false",
        "gptq-4bit-desc-act": "GPTQ 4-bit (gptq format), group_size 32, sym false, "
                              "desc_act true",
    }
    for name, desc in layouts.items():
        d = out / name
        tk = AutoTokenizer.from_pretrained(d)
        raw = tokenizers.Tokenizer.from_file(str(d / "tokenizer.json"))
        cfg = LlamaConfig.from_pretrained(d)
        if name in deq:
            model = LlamaForCausalLM(cfg).float()
            model.load_state_dict(deq[name])
            state = deq[name]
        else:
            model = LlamaForCausalLM.from_pretrained(d, torch_dtype=torch.float32)
            state = {k: v.float() for k, v in model.state_dict().items()}
        model.config._attn_implementation = "eager"
        entry = {
            "layout": desc,
            "files": {f: (d / f).stat().st_size for f in sorted(os.listdir(d))},
            "vocab_size": cfg.vocab_size,
            "tokenizer_len": len(tk),
            "bos_token_id": tk.bos_token_id,
            "eos_token_id": tk.eos_token_id,
            "pad_token_id": tk.pad_token_id,
            "tensors": disk_tensors(d),
            "weight_sums": weight_sums(state),
            "texts": tokenizer_cases(tk, raw, sp_models.get(name)),
            "prompts": {},
        }
        if name.startswith("gptq"):
            w = deq[name]["model.layers.0.self_attn.q_proj.weight"]
            entry["dequant_sample"] = {
                "tensor": "model.layers.0.self_attn.q_proj",
                "rows_0_2_cols_0_8": [f32_list(w[r, :8]) for r in range(2)],
            }
        which = ["pairwise_en", "single_zh"] if name == "autoj-bilingual-layout" \
            else ["pairwise_en"]
        for p in which:
            ids = tk(texts[p]).input_ids
            assert raw.encode(texts[p]).ids == ids, (name, p)
            entry["prompts"][p] = {"ids": ids, **run_reference(model, ids, len(tk))}
        reference["models"][name] = entry
        print(f"{name}: {len(entry['tensors'])} tensors, "
              f"prompt {len(entry['prompts']['pairwise_en']['ids'])} ids, greedy "
              f"{entry['prompts']['pairwise_en']['greedy']['tokens']}")

    text = json.dumps(reference, ensure_ascii=False, indent=1)
    # Lists of numbers on one line each.
    text = re.sub(r"\[\s*(-?[0-9][-0-9.e+,\s]*?)\s*\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    assert json.loads(text) == reference
    (out / "reference.json").write_text(text + "\n", encoding="utf-8")
    shutil.rmtree(work)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    sys.exit(main())
