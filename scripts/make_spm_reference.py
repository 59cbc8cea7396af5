#!/usr/bin/env python3
"""Write SentencePiece tokenizer files and reference ids for the Rust tokenizer tests.

From the LLaMA vocabulary in llama.cpp's models/vocab/ggml-vocab-llama-spm.gguf (read with
the gguf package), the real references write:
  llama/     tokenizer.model (sentencepiece's own ModelProto: BPE, byte fallback, a dummy
             prefix, as LLaMA-2's), and tokenizer.json, tokenizer_config.json,
             special_tokens_map.json as transformers' LlamaTokenizerFast converts it;
  yi-style/  the same pieces with add_dummy_prefix false (as Yi's tokenizer.model) and a
             tokenizer_config.json with add_bos_token false;
  squeeze/   the same pieces with remove_extra_whitespaces true (SentencePiece's default);
  reference.json  {"cases": [{"text", "llama", "yi_style", "squeeze"}]}: ids from the
             sentencepiece library itself (no BOS) for llama.cpp's .inp cases, hand-written
             cases, and Auto-J prompts filled from ../shared/autoj (when it is there).

Run by scripts/spm-reference.sh (pinned environment, scripts/spm-requirements.txt):
    .venv-spm/bin/python scripts/make_spm_reference.py --out models/spm-reference
"""

import argparse
import json
from pathlib import Path

import gguf
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb
from transformers import AutoTokenizer, LlamaTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
VOCAB = ROOT / "models" / "vocab" / "ggml-vocab-llama-spm.gguf"
SHARED = ROOT.parent / "shared" / "autoj"
SEP = "\n__ggml_vocab_test__\n"  # how llama.cpp's tests/test-tokenizer-0.cpp splits .inp

# Hand-written cases besides llama.cpp's: spaces in every position, scripts, bytes.
CASES = [
    "Hello world",
    " leading space",
    "trailing space ",
    "multiple   spaces    between  words",
    "   ",
    "line one\nline two\n\nline four\n",
    "tab\tseparated\tvalues\r\nwindows line end",
    "\u00a0no-break space and\u3000ideographic space",
    "你将要评价两个针对给定用户问题的回应",
    "日本語のテキストです。カタカナとひらがな。",
    "안녕하세요, 세계! 한국어 문장입니다.",
    "I love it 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️",
    "Café naïve résumé über Ångström façade São Paulo, Ελληνικά, Привет",
    "\U0001fbf9 \U000e0041 \x7f \x01",
    "[INST] hi [/INST]",
    "So, the final decision is Response 2. Rating: [[7]]",
]


def gguf_vocab(path: Path) -> tuple[list[str], list[float], list[int]]:
    r = gguf.GGUFReader(str(path))
    f = r.fields
    return (
        list(f["tokenizer.ggml.tokens"].contents()),
        [float(s) for s in f["tokenizer.ggml.scores"].contents()],
        [int(t) for t in f["tokenizer.ggml.token_type"].contents()],
    )


def model_proto(pieces, scores, types, add_dummy_prefix: bool, remove_extra: bool) -> bytes:
    """A LLaMA-style ModelProto (sentencepiece's own message) over the given pieces."""
    m = pb.ModelProto()
    for p, s, t in zip(pieces, scores, types):
        e = m.pieces.add()
        e.piece, e.score, e.type = p, s, t
    ts = m.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = len(pieces)
    ts.byte_fallback = True
    ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = 0, 1, 2, -1
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = add_dummy_prefix
    ns.remove_extra_whitespaces = remove_extra
    ns.escape_whitespaces = True
    return m.SerializeToString()


def llamacpp_cases(path: Path) -> list[str]:
    """The .inp cases as test-tokenizer-0.cpp splits them (a separator at the very end
    starts no case)."""
    raw = path.read_text(encoding="utf-8")
    cases = raw.split(SEP)
    if raw.endswith(SEP) or not raw:
        cases.pop()
    return cases


def autoj_prompts(shared: Path, per_set: int) -> list[str]:
    """Auto-J prompts (pairwise and single, English and Chinese) around real test items."""
    if not (shared / "prompt_templates.json").is_file():
        return []
    t = json.loads((shared / "prompt_templates.json").read_text(encoding="utf-8"))
    out = []
    pairwise = shared / "testdata_pairwise.jsonl"
    for line in pairwise.read_text(encoding="utf-8").splitlines()[:per_set]:
        item = json.loads(line)
        body = (
            t["en"]["pairwise_tie"]
            .replace("{prompt}", item["prompt"])
            .replace("{response_another}", item["response 2"])
            .replace("{response}", item["response 1"])
        )
        out.append(t["llama2_wrapper_without_system"].replace("{input}", body))
    for name, lang in [("testdata_critique.jsonl", "en"), ("zh_testdata_critique.jsonl", "zh")]:
        for line in (shared / name).read_text(encoding="utf-8").splitlines()[:per_set]:
            item = json.loads(line)
            body = (
                t[lang]["single"]
                .replace("{prompt}", item["prompt"])
                .replace("{response}", item["response"])
            )
            out.append(t["llama2_wrapper_without_system"].replace("{input}", body))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=Path, default=VOCAB)
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--per-set", type=int, default=12, help="Auto-J items per test set")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    pieces, scores, types = gguf_vocab(args.vocab)
    variants = {
        "llama": model_proto(pieces, scores, types, add_dummy_prefix=True, remove_extra=False),
        "yi_style": model_proto(pieces, scores, types, add_dummy_prefix=False, remove_extra=False),
        "squeeze": model_proto(pieces, scores, types, add_dummy_prefix=True, remove_extra=True),
    }
    dirs = {"llama": "llama", "yi_style": "yi-style", "squeeze": "squeeze"}
    processors = {}
    for name, proto in variants.items():
        d = args.out / dirs[name]
        d.mkdir(parents=True, exist_ok=True)
        (d / "tokenizer.model").write_bytes(proto)
        processors[name] = spm.SentencePieceProcessor(model_proto=proto)
    (args.out / "yi-style" / "tokenizer_config.json").write_text('{"add_bos_token": false}\n')

    # transformers' conversion of the LLaMA model, loaded as a model directory with only
    # tokenizer.model is (AutoTokenizer picks LlamaTokenizerFast and converts the slow one).
    llama = args.out / "llama"
    (llama / "config.json").write_text('{"model_type": "llama"}\n')
    fast = AutoTokenizer.from_pretrained(str(llama))
    assert isinstance(fast, LlamaTokenizerFast), type(fast)
    fast.save_pretrained(str(llama))
    (llama / "config.json").unlink()
    (llama / "tokenizer.model").write_bytes(variants["llama"])

    inp = args.vocab.with_name(args.vocab.name + ".inp")
    texts = llamacpp_cases(inp) + CASES + autoj_prompts(args.shared, args.per_set)
    cases = [
        {"text": text, **{name: sp.encode(text) for name, sp in processors.items()}}
        for text in texts
    ]
    meta = {
        "vocab": args.vocab.name,
        "sentencepiece": spm.__version__,
        "transformers": __import__("transformers").__version__,
        "autoj_prompts": len(texts) - len(CASES) - len(llamacpp_cases(inp)),
    }
    (args.out / "reference.json").write_text(
        json.dumps({"meta": meta, "cases": cases}, ensure_ascii=False, indent=1) + "\n",
        encoding="utf-8",
    )
    print(f"{len(cases)} cases ({meta['autoj_prompts']} Auto-J prompts) in {args.out}")


if __name__ == "__main__":
    main()
