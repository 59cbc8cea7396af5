#!/usr/bin/env python3
"""Checks `autoj quantize` against llama.cpp on a Hugging Face model directory (issue 27).

Run with the llama-cpp-python venv (scripts/bench-setup.sh):

  .venv-bench/bin/python scripts/llamacpp_interop.py greedy DIR [--types q8_0,q4_k_m] [--n 32]
  .venv-bench/bin/python scripts/llamacpp_interop.py quant-error DIR \
      [--types q4_k_m,q8_0,q5_k_m,q4_1]

`greedy`: `autoj quantize` writes DIR as each GGUF type; llama.cpp (llama-cpp-python) loads
the file and generates N greedy tokens for 8 fixed prompts (our tokenizer's ids of fixed
texts, or --prompt IDS); our engine does the same on the same file
(judge/examples/greedy_tokens.rs) and on DIR with `--quantize`. Tokens are compared step by
step up to the first step whose top-1 minus top-2 logit margin (ours or llama.cpp's) is
below --margin (0.05): past that point rounding may pick either token. The same is reported
with the margin at 3x the RMS difference of the two sides' prompt logits (the noise between
the two engines; on small random models it exceeds 0.05), with how far each side's prompt
logits are from the unquantized model's (ours on DIR in f32). Both sides choose among the
ids our tokenizer can produce (rows past it are padding). Then a few texts are tokenized by
llama.cpp on our GGUF (`tokenize(add_bos=True, special=False)`) and by our loader (on DIR's
tokenizer.json and on the GGUF) and compared.

`quant-error`: llama.cpp's converter (`convert_hf_to_gguf.py --outtype f32`, run with the
torch venv .venv-fixtures) writes DIR as f32; `llama_model_quantize` quantizes that file to
each type (llama-quantize without an importance matrix); `autoj quantize` writes ours from
DIR. For every tensor, the RMS error of each file's dequantized values (gguf-py) against the
f32 file's, by name (our query/key rows are interleaved as the converter's are, so names
line up), and whether both files chose the same block type.

llama.cpp's sources (convert_hf_to_gguf.py, conversion/, gguf-py) come from the
llama-cpp-python sdist pinned in scripts/bench-requirements.txt; --llama-cpp-src names an
unpacked `vendor/llama.cpp`, otherwise the sdist is fetched with pip into models/interop/.
Outputs go to --work (models/interop/work, git-ignored). Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AUTOJ = ROOT / "target/release/autoj"
GREEDY = ROOT / "target/release/examples/greedy_tokens"
FTYPES = {"q4_1": 3, "q8_0": 7, "q4_k_m": 15, "q5_k_m": 17}
PROMPTS = [
    "[INST] Which response is better, and why? [/INST] Response 1 is",
    "Write a critique of the answer below.",
    "Rating: [[",
    "The quick brown fox jumps over the lazy dog.",
    "Query: how do I sort a list in Python? Response: use sorted(xs).",
    "A",
    "Hello, world! 0123456789",
    "[INST] Is the response helpful? [/INST]",
]
TEXTS = [
    "Hello world",
    "The response is better than the other one.",
    "  two leading spaces, a\ttab and a\nnewline",
    "[INST] Which response is better, and why? [/INST]",
    "Unicode: café, naïve, 你好, 🙂",
    "Rating: [[7]]",
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def newest_source() -> float:
    newest = 0.0
    for d in ("judge/src", "services/src", "judge/examples"):
        for p in (ROOT / d).rglob("*.rs"):
            newest = max(newest, p.stat().st_mtime)
    for f in ("Cargo.lock", "judge/Cargo.toml", "services/Cargo.toml"):
        p = ROOT / f
        if p.exists():
            newest = max(newest, p.stat().st_mtime)
    return newest


def ensure_built(skip: bool):
    """target/release/autoj and the greedy example, rebuilt when older than the sources
    (--no-build: use them as they are)."""
    if skip:
        return
    src = newest_source()
    for exe, cmd in (
        (AUTOJ, ["cargo", "build", "--release", "-p", "autoj-services"]),
        (GREEDY, ["cargo", "build", "--release", "-p", "autoj-judge", "--example", "greedy_tokens"]),
    ):
        if not exe.exists() or exe.stat().st_mtime < src:
            log(f"building {exe.relative_to(ROOT)}: {' '.join(cmd)}")
            subprocess.run(["nice", "-n", "10", *cmd], cwd=ROOT, check=True)


def llama_cpp_src(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    want = next(
        line.split("==", 1)[1].strip()
        for line in (ROOT / "scripts/bench-requirements.txt").read_text().splitlines()
        if line.startswith("llama-cpp-python==")
    )
    base = ROOT / "models/interop"
    src = base / f"llama_cpp_python-{want}/vendor/llama.cpp"
    if (src / "convert_hf_to_gguf.py").exists() and (src / "conversion").is_dir():
        return src
    base.mkdir(parents=True, exist_ok=True)
    sdist = base / f"llama_cpp_python-{want}.tar.gz"
    if not sdist.exists():
        log(f"fetching the llama-cpp-python {want} sdist")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--no-build-isolation", f"llama-cpp-python=={want}", "-d", str(base)],
            check=True,
        )
    prefix = f"llama_cpp_python-{want}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tf:
        members = [
            m for m in tf.getmembers()
            if m.name.startswith(prefix + "gguf-py/") or m.name.startswith(prefix + "conversion/")
            or m.name == prefix + "convert_hf_to_gguf.py"
        ]
        tf.extractall(base, members=members, filter="data")
    return src


def import_gguf(src: Path):
    """gguf-py from llama.cpp's sources (its `metadata` module imports yaml, used only when
    writing: a stand-in keeps the reader and dequantizers importable without PyYAML)."""
    try:
        import yaml  # noqa: F401
    except ImportError:
        import types

        sys.modules["yaml"] = types.ModuleType("yaml")
    sys.path.insert(0, str(src / "gguf-py"))
    import gguf

    return gguf


class quiet_stderr:
    """llama.cpp's own logging (one line per tensor) written by C to fd 2, kept out of the
    report."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)


def autoj_quantize(model: Path, qtype: str, out: Path) -> float:
    t0 = time.monotonic()
    subprocess.run(
        [str(AUTOJ), "quantize", "--model", str(model), "--type", qtype, "--out", str(out)],
        check=True, stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - t0


def ours_greedy(model: Path, prompt: list[int], n: int, quantize: str | None = None) -> dict:
    cmd = [str(GREEDY), str(model), ",".join(map(str, prompt)), str(n), "--logits"]
    if quantize:
        cmd += ["--quantize", quantize]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ours_tokenize(model: Path, texts: list[str]) -> list[list[int]]:
    out = subprocess.run(
        [str(GREEDY), str(model), "--tokenize", *texts], check=True, capture_output=True, text=True
    ).stdout
    return [t["ids"] for t in json.loads(out.strip().splitlines()[-1])["texts"]]


def llama_greedy(llm, prompt: list[int], n: int, producible: int) -> dict:
    import llama_cpp
    import numpy as np

    def last_logits() -> np.ndarray:
        # With logits_all=False llama-cpp-python keeps no scores: read the context's own
        # logits of the batch's last position.
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))[:producible].astype(np.float64)

    llm.reset()
    llm.eval(prompt)
    tokens, margins, top1, first = [], [], [], None
    for i in range(n):
        logits = last_logits()
        if first is None:
            first = logits.tolist()
        top = int(np.argmax(logits))
        rest = np.delete(logits, top)
        tokens.append(top)
        margins.append(float(logits[top] - rest.max()))
        top1.append(float(logits[top]))
        if i + 1 < n:
            llm.eval([top])
    return {"tokens": tokens, "margins": margins, "top1": top1, "first_logits": first}


def abs_rms(a: list[float], b: list[float]) -> float:
    import numpy as np

    return float(np.sqrt(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)))


def rel_rms(a: list[float], b: list[float]) -> float:
    """RMS of a - b over the RMS of b."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


def compare(a: dict, b: dict, margin: float) -> dict:
    """Steps compared (before the first whose margin, either side, is below `margin`),
    whether they agree, the max |top-1 logit difference| over them, and where the tokens
    first differ at all (with both margins there)."""
    r = {"steps": 0, "agree": True, "stop": None, "dmax": 0.0, "first_diff": None}
    if max(b["margins"]) == 0.0 or max(a["margins"]) == 0.0:
        return {**r, "agree": False, "stop": "constant logits (none read?)"}
    for i, (ta, tb) in enumerate(zip(a["tokens"], b["tokens"])):
        if ta != tb and r["first_diff"] is None:
            r["first_diff"] = (i, a["margins"][i], b["margins"][i])
        if r["stop"] is None:
            if min(a["margins"][i], b["margins"][i]) < margin:
                r["stop"] = i
            elif ta != tb:
                r["agree"] = False
                r["stop"] = i
            else:
                r["dmax"] = max(r["dmax"], abs(a["top1"][i] - b["top1"][i]))
                r["steps"] += 1
        if ta != tb:
            break
    return r


def cmd_greedy(args) -> bool:
    from llama_cpp import Llama

    ensure_built(args.no_build)
    model = Path(args.model).resolve()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ok = True
    prompts = (
        [[int(x) for x in args.prompt.split(",")]] if args.prompt
        else ours_tokenize(model, PROMPTS)
    )
    dir_ids = ours_tokenize(model, TEXTS)
    # The unquantized model (f32 weights), for how far each side's logits are from it.
    f32 = [ours_greedy(model, p, 1) for p in prompts]
    print(
        f"# {model.name}: {len(prompts)} prompts of {min(map(len, prompts))}-"
        f"{max(map(len, prompts))} tokens, {args.n} greedy tokens each, compared up to a "
        f"margin below {args.margin}"
    )
    for qtype in args.types.split(","):
        gguf = work / f"{model.name}.autoj-{qtype}.gguf"
        secs = autoj_quantize(model, qtype, gguf)
        try:
            llm = Llama(
                model_path=str(gguf), n_ctx=max(256, max(map(len, prompts)) + args.n + 8),
                logits_all=False, verbose=False, n_threads=args.threads, n_batch=512,
            )
        except Exception as e:  # noqa: BLE001 - report llama.cpp's refusal as it is
            print(f"{qtype}: FAIL llama.cpp refused {gguf.name}: {e}")
            ok = False
            continue
        steps, dmax, agree, same_dir, diffs, lines = 0, 0.0, True, True, [], []
        dir_steps, dir_dmax, rms = 0, 0.0, {"ours-llama.cpp": [], "ours-f32": [], "llama.cpp-f32": []}
        n_steps, n_agree = 0, True
        for k, prompt in enumerate(prompts):
            ours = ours_greedy(gguf, prompt, args.n)
            ours_dir = ours_greedy(model, prompt, args.n, qtype)
            theirs = llama_greedy(llm, prompt, args.n, ours["producible"])
            r = compare(ours, theirs, args.margin)
            # The same with the margin scaled to the two sides' logit noise: 3 x the RMS of
            # (ours - llama.cpp) over the prompt's logits, when that is above --margin.
            noise = abs_rms(ours["first_logits"], theirs["first_logits"])
            rn = compare(ours, theirs, max(args.margin, 3 * noise))
            n_steps += rn["steps"]
            n_agree &= rn["agree"]
            steps += r["steps"]
            dmax = max(dmax, r["dmax"])
            agree &= r["agree"]
            rd = compare(ours, ours_dir, args.margin)
            same_dir &= rd["agree"]
            dir_steps += rd["steps"]
            dir_dmax = max(dir_dmax, rd["dmax"])
            rms["ours-llama.cpp"].append(rel_rms(ours["first_logits"], theirs["first_logits"]))
            rms["ours-f32"].append(rel_rms(ours["first_logits"], f32[k]["first_logits"]))
            rms["llama.cpp-f32"].append(rel_rms(theirs["first_logits"], f32[k]["first_logits"]))
            if r["first_diff"]:
                diffs.append(r["first_diff"])
            lines.append(
                f"  prompt {k}: {r['steps']} steps compared ({'agree' if r['agree'] else 'DISAGREE'}; "
                f"{rn['steps']} at margin {max(args.margin, 3 * noise):.3f}: "
                f"{'agree' if rn['agree'] else 'DISAGREE'}), "
                f"first difference "
                + (f"at step {r['first_diff'][0]} (margins ours {r['first_diff'][1]:.3f}, "
                   f"llama.cpp {r['first_diff'][2]:.3f})" if r["first_diff"] else "none")
            )
            if args.verbose or not r["agree"]:
                lines.append(f"    ours      {ours['tokens']}")
                lines.append(f"    llama.cpp {theirs['tokens']}")
        print(
            f"{qtype}: {'PASS' if agree and same_dir else 'FAIL'} llama.cpp vs ours on {gguf.name} "
            f"({gguf.stat().st_size / 1e6:.1f} MB, written in {secs:.1f} s): {steps} steps compared, "
            f"{'all equal' if agree else 'NOT equal'}; max |top-1 logit diff| {dmax:.4f}; "
            f"{len(diffs)}/{len(prompts)} prompts diverge later, at margins <= "
            f"{max((max(d[1], d[2]) for d in diffs), default=0):.3f}; ours on the directory with "
            f"--quantize {qtype} vs ours on the file: {dir_steps} steps compared, "
            f"{'all equal' if same_dir else 'NOT equal'}, max |top-1 logit diff| {dir_dmax:.4f}"
        )
        print(
            f"  with the margin at 3 x the RMS logit difference (ours - llama.cpp) of each prompt: "
            f"{n_steps} steps compared, {'all equal' if n_agree else 'NOT equal'}"
        )
        print(
            "  prompt logits, RMS difference over RMS (mean over prompts): "
            + ", ".join(f"{k} {statistics.mean(v):.4f}" for k, v in rms.items())
        )
        print("\n".join(lines))
        ok &= agree and same_dir
        # Tokenizer: llama.cpp on our GGUF vs our loader (directory and GGUF).
        gguf_ids = ours_tokenize(gguf, TEXTS)
        bad = []
        for text, d, g in zip(TEXTS, dir_ids, gguf_ids):
            lc = llm.tokenize(text.encode(), add_bos=True, special=False)
            if not (lc == d == g):
                bad.append((text, d, g, lc))
        print(
            f"  tokenizer: {'PASS' if not bad else 'FAIL'} {len(TEXTS) - len(bad)}/{len(TEXTS)} texts "
            f"give the same ids (llama.cpp on our GGUF, ours on tokenizer.json, ours on the GGUF)"
        )
        for text, d, g, lc in bad:
            print(f"    {text!r}: ours(dir) {d} ours(gguf) {g} llama.cpp {lc}")
            ok = False
        del llm
        if not args.keep:
            gguf.unlink()
    return ok


REFERENCE_TYPES = ("Q4_K", "Q5_K", "Q6_K")
REFERENCE_ROWS = 4


def save_reference(out: Path, theirs, values) -> None:
    """The first rows of the first tensor of each K-quant type: the f32 values llama.cpp
    quantized (`<type>.f32`, little-endian) and its blocks (`<type>.blocks`), for
    judge/tests/kquant_llamacpp_bytes.rs."""
    import numpy as np

    kind = theirs.tensor_type.name
    if kind not in REFERENCE_TYPES or (out / f"{kind}.blocks").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    cols = int(theirs.shape[0])
    blocks = np.asarray(theirs.data)[:REFERENCE_ROWS]
    (out / f"{kind}.f32").write_bytes(
        np.asarray(values[: REFERENCE_ROWS * cols], dtype="<f4").tobytes()
    )
    (out / f"{kind}.blocks").write_bytes(blocks.tobytes())
    log(f"reference: {REFERENCE_ROWS} rows of {theirs.name} ({kind}, {cols} columns) in {out}")


def cmd_quant_error(args) -> bool:
    import ctypes

    import llama_cpp
    import numpy as np

    ensure_built(args.no_build)
    src = llama_cpp_src(args.llama_cpp_src)
    gguf = import_gguf(src)
    model = Path(args.model).resolve()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    f32 = work / f"{model.name}.llamacpp-f32.gguf"
    t0 = time.monotonic()
    subprocess.run(
        [args.torch_python, str(src / "convert_hf_to_gguf.py"), str(model), "--outtype", "f32",
         "--outfile", str(f32)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    log(f"converted to f32 in {time.monotonic() - t0:.1f} s")

    def read(path: Path) -> dict:
        r = gguf.GGUFReader(str(path))
        return {t.name: t for t in r.tensors}

    def values(t) -> np.ndarray:
        return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float64).reshape(-1)

    ref = {n: values(t) for n, t in read(f32).items()}
    ok = True
    for qtype in args.types.split(","):
        theirs_path = work / f"{model.name}.llamacpp-{qtype}.gguf"
        ours_path = work / f"{model.name}.autoj-{qtype}.gguf"
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = FTYPES[qtype]
        params.nthread = args.threads
        t0 = time.monotonic()
        with quiet_stderr():
            rc = llama_cpp.llama_model_quantize(
                str(f32).encode(), str(theirs_path).encode(), ctypes.byref(params)
            )
        t_theirs = time.monotonic() - t0
        if rc != 0:
            print(f"{qtype}: FAIL llama_model_quantize returned {rc}")
            ok = False
            continue
        t_ours = autoj_quantize(model, qtype, ours_path)
        ours, theirs = read(ours_path), read(theirs_path)
        names = sorted(set(ref) & set(ours) & set(theirs))
        missing = sorted((set(ref) | set(theirs)) ^ set(ours))
        mix_diff, rows, same_bytes, by_type = [], [], 0, {}
        for n in names:
            if args.reference_out:
                save_reference(Path(args.reference_out), theirs[n], ref[n])
            to, tt = ours[n].tensor_type, theirs[n].tensor_type
            if to != tt:
                mix_diff.append(f"{n}: ours {to.name} llama.cpp {tt.name}")
            r = ref[n]
            eo = float(np.sqrt(np.mean((values(ours[n]) - r) ** 2)))
            et = float(np.sqrt(np.mean((values(theirs[n]) - r) ** 2)))
            rms = float(np.sqrt(np.mean(r**2)))
            if to == tt and np.array_equal(ours[n].data, theirs[n].data):
                same_bytes += 1
            if et > 0 or eo > 0:
                rows.append((eo / et if et > 0 else float("inf"), n, to.name, eo / rms, et / rms))
                by_type.setdefault(to.name, []).append(eo / et if et > 0 else float("inf"))
        ratios = [x[0] for x in rows]
        worst = sorted(rows, reverse=True)[: args.worst]
        med = statistics.median(ratios) if ratios else float("nan")
        mx = max(ratios) if ratios else float("nan")
        passed = not mix_diff and not missing and mx <= 1.0 + args.tolerance
        ok &= passed
        print(
            f"{qtype}: {'PASS' if passed else 'FAIL'} {len(names)} tensors ({len(rows)} quantized), "
            f"same block type per tensor: {'yes' if not mix_diff and not missing else 'NO'}; "
            f"RMS error ours/llama.cpp median {med:.4f} max {mx:.4f}; "
            f"relative RMS error median ours {statistics.median(x[3] for x in rows):.5f} "
            f"llama.cpp {statistics.median(x[4] for x in rows):.5f}; "
            f"files {ours_path.stat().st_size / 1e6:.2f} / {theirs_path.stat().st_size / 1e6:.2f} MB; "
            f"quantize {t_ours:.1f} s / {t_theirs:.1f} s"
        )
        print(
            f"  by block type (ratio ours/llama.cpp median, max; tensors): "
            + ", ".join(
                f"{t} {statistics.median(v):.4f} {max(v):.4f} ({len(v)})" for t, v in sorted(by_type.items())
            )
            + f"; {same_bytes}/{len(names)} tensors byte-identical"
        )
        for ratio, n, t, ro, rt in worst:
            print(f"  {n} ({t}): ratio {ratio:.4f} (rel. RMS ours {ro:.5f}, llama.cpp {rt:.5f})")
        for line in (mix_diff + [f"only in one file: {m}" for m in missing])[:10]:
            print(f"  mix: {line}")
        if not args.keep:
            ours_path.unlink()
            theirs_path.unlink()
    if not args.keep:
        f32.unlink()
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("greedy", help="llama.cpp's greedy tokens and tokenizer on our GGUF vs ours")
    g.add_argument("model")
    g.add_argument("--types", default="q8_0,q4_k_m")
    g.add_argument("--n", type=int, default=32)
    g.add_argument("--prompt", help="comma-separated token ids (default: our ids of 8 fixed texts)")
    g.add_argument("--verbose", action="store_true", help="print every prompt's tokens")
    g.add_argument("--margin", type=float, default=0.05)
    q = sub.add_parser("quant-error", help="per-tensor RMS error: ours vs llama-quantize")
    q.add_argument("model")
    q.add_argument("--types", default="q4_k_m,q8_0,q5_k_m,q4_1")
    q.add_argument("--torch-python", default=str(ROOT / ".venv-fixtures/bin/python"))
    q.add_argument("--llama-cpp-src")
    q.add_argument("--tolerance", type=float, default=0.01,
                   help="a tensor fails when its error ratio exceeds 1 + this")
    q.add_argument("--worst", type=int, default=3)
    q.add_argument("--reference-out",
                   help="write the first rows of one tensor per K-quant type, inputs and "
                        "llama.cpp's blocks, here (judge/tests/fixtures/kquant)")
    for p in (g, q):
        p.add_argument("--work", default=str(ROOT / "models/interop/work"))
        p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
        p.add_argument("--keep", action="store_true", help="keep the GGUF files")
        p.add_argument("--no-build", action="store_true",
                       help="use target/release/autoj and the example as they are")
    args = ap.parse_args()
    ok = cmd_greedy(args) if args.cmd == "greedy" else cmd_quant_error(args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
