#!/usr/bin/env python3
"""Write reference tokenizations of SmolLM2-135M-Instruct for the Rust tokenizer tests.

llama.cpp (through llama-cpp-python, vocab only) is the reference. Output:
judge/tests/fixtures/smollm2_tokens.json with the GGUF tokenizer metadata a Rust loader
needs and a list of {text, ids} cases tokenized with add_bos=False, special=True.

Run from anywhere, after scripts/fetch-models.sh and scripts/bench-setup.sh:
    .venv-bench/bin/python scripts/make_tokenizer_fixtures.py
"""

import argparse
import ctypes
import json
from pathlib import Path

import llama_cpp

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
TEMPLATES = ROOT.parent / "shared" / "autoj" / "prompt_templates.json"
OUT = ROOT / "judge" / "tests" / "fixtures" / "smollm2_tokens.json"

# GGUF keys recorded verbatim (null when the file lacks them).
STRING_KEYS = ["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.chat_template"]
INT_KEYS = [
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.unknown_token_id",
]
BOOL_KEYS = ["tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"]

# Hand-written cases; the Auto-J prompts are appended from the template file.
CASES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "multiple   spaces    between  words",
    "   ",
    "",
    "line one\nline two\n\nline four\n",
    "tab\tseparated\tvalues\r\nwindows line end",
    "\u00a0no-break space and\u3000ideographic space",
    "12345 3.14159 2026-11-28",
    "1234567890123456789 and 007 and 1,000,000",
    'fn main() { println!("hi"); }',
    "def f(x):\n    return x**2  # square\n",
    "Hello!!! What?? ... (yes) [no] {maybe} <tag> @user #hash $5 %20 ^_^ &amp; `code` | \\ /",
    "don't, I'll, we've, she's, they're, it'd, DON'T",
    "你将要评价两个针对给定用户问题的回应",
    "日本語のテキストです。カタカナとひらがな。",
    "안녕하세요, 세계! 한국어 문장입니다.",
    "I love it 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️",
    "Café naïve résumé über Ångström façade São Paulo, Ελληνικά, Привет",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa !!!!!!!!!!!!!!!! ----------------",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "a<|endoftext|>b <|im_end|>",
    "<|im_start| almost special <|im_end <jupyter_code>",
    "[INST] hi [/INST]",
]


def autoj_prompts(path: Path) -> list[str]:
    """Fill the English and Chinese pairwise_tie templates and wrap them as [INST] ... [/INST]."""
    t = json.loads(path.read_text(encoding="utf-8"))
    filled = {
        "en": ("What is the capital of France?", "Paris.", "The capital of France is Lyon."),
        "zh": ("法国的首都是哪里？", "巴黎。", "法国的首都是里昂。"),
    }
    out = []
    for lang, (query, r1, r2) in filled.items():
        body = (
            t[lang]["pairwise_tie"]
            .replace("{prompt}", query)
            .replace("{response_another}", r2)
            .replace("{response}", r1)
        )
        out.append(t["llama2_wrapper_without_system"].replace("{input}", body))
    return out


def meta(model, key: str) -> str | None:
    """One GGUF metadata value as text, read at its full length (None when absent)."""
    n = llama_cpp.llama_model_meta_val_str(model, key.encode(), None, 0)
    if n < 0:
        return None
    buf = ctypes.create_string_buffer(n + 1)
    llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, n + 1)
    return buf.value.decode("utf-8")


def gguf_facts(llm: llama_cpp.Llama) -> dict:
    """The tokenizer metadata from the GGUF, plus what llama.cpp resolved from it."""
    facts: dict = {k: meta(llm.model, k) for k in STRING_KEYS}
    for k in INT_KEYS:
        v = meta(llm.model, k)
        facts[k] = None if v is None else int(v)
    for k in BOOL_KEYS:
        v = meta(llm.model, k)
        facts[k] = None if v is None else v == "true"
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    facts["resolved"] = {
        "n_vocab": llama_cpp.llama_vocab_n_tokens(vocab),
        "bos": llama_cpp.llama_vocab_bos(vocab),
        "eos": llama_cpp.llama_vocab_eos(vocab),
        "eot": llama_cpp.llama_vocab_eot(vocab),
        "pad": llama_cpp.llama_vocab_pad(vocab),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "add_eos": bool(llama_cpp.llama_vocab_get_add_eos(vocab)),
    }
    # Tokens that special=True matches as whole units in text (control and user-defined).
    special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    facts["special_tokens"] = [
        {"id": i, "text": llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8"),
         "control": bool(llama_cpp.llama_vocab_get_attr(vocab, i) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL)}
        for i in range(facts["resolved"]["n_vocab"])
        if llama_cpp.llama_vocab_get_attr(vocab, i) & special
    ]
    return facts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--templates", type=Path, default=TEMPLATES)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    if not args.templates.is_file():
        raise SystemExit(f"{args.templates} not found: the Auto-J prompt cases need ../shared/autoj")
    llm = llama_cpp.Llama(model_path=str(args.model), vocab_only=True, verbose=False)
    texts = CASES + autoj_prompts(args.templates)
    cases = []
    for text in texts:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        # Sanity: llama.cpp must give the bytes back (special tokens rendered as text).
        back = llm.detokenize(ids, special=True).decode("utf-8")
        assert back == text, f"round trip failed for {text!r}: {back!r}"
        cases.append({"text": text, "ids": ids})

    head = {
        "model": args.model.name,
        "reference": f"llama-cpp-python {llama_cpp.__version__}",
        "tokenize": "add_bos=False, special=True",
        "gguf": gguf_facts(llm),
    }
    # Pretty header, then one case per line so diffs stay readable.
    text = json.dumps(head, ensure_ascii=False, indent=1)[:-2] + ',\n "cases": [\n'
    text += ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n ]\n}\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
