#!/usr/bin/env python3
"""With and without Auto-J's judging test queries, on the folds train.py uses, with models cheap
enough to train many times on one core: the in-graph TF-IDF linear model (also with an
instruction-only view of each training row as augmentation) and a linear model over the frozen
(not fine-tuned) MiniLM mean-pooled embedding. Each is scored on the same held-out rows.

    python router/classifier/cheap.py --data ../shared/autoj/scenario_classifier_train.jsonl \\
        --extra ../shared/autoj/testdata_pairwise.jsonl ../shared/autoj/testdata_critique.jsonl \\
        --json /tmp/cheap.json
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import sparse
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cv  # noqa: E402
import setups  # noqa: E402
import train  # noqa: E402


@torch.no_grad()
def frozen_embeddings(ids_list, bs=64):
    enc = train.Encoder(1, 1).eval()
    out = np.zeros((len(ids_list), enc.bert.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(ids_list)), key=lambda i: len(ids_list[i]))
    for j in range(0, len(order), bs):
        b = order[j : j + bs]
        ids, am = train.pad_batch([ids_list[i] for i in b])
        out[b] = enc.pooled(ids, am).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def dense_logits(x_tr, y_tr, x_te, n_classes):
    clf = LogisticRegression(C=10.0, max_iter=2000).fit(x_tr, y_tr)
    z = np.full((len(x_te), n_classes), -30.0)
    z[:, clf.classes_] = clf.decision_function(x_te)
    return z


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--extra", nargs="*", default=[])
    ap.add_argument("--scenarios", default=None)
    ap.add_argument("--json", required=True)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ctx = train.prepare(args)
    y, lg, G, src, C = ctx["y"], ctx["lg"], len(ctx["gnames"]), ctx["src"], len(ctx["labels"])
    counts = train.count_matrix(ctx["ids"])
    # instruction-only views of the training rows that have an input
    aug_rows = [i for i, v in enumerate(ctx["views"])
                if v is not None and v.strip() != ctx["texts"][i].strip()]
    aug_ids = [e.ids for e in ctx["tok"].encode_batch([ctx["views"][i] for i in aug_rows])]
    aug_counts = train.count_matrix(aug_ids)
    aug_of = {r: k for k, r in enumerate(aug_rows)}
    emb = frozen_embeddings(ctx["ids"])
    train.log("embedded", emb.shape)

    names = ["tfidf_without", "tfidf_with", "tfidf_with_aug", "frozen_minilm_without",
             "frozen_minilm_with"]
    oof = {n: np.zeros((len(y), C)) for n in names}
    for fold, (tr, te) in enumerate(ctx["folds"]):
        tr0 = tr[src[tr] == 0]
        oof["tfidf_without"][te] = train.BowModel(10.0).fit(counts[tr0], y[tr0], C).logits(counts[te])
        oof["tfidf_with"][te] = train.BowModel(10.0).fit(counts[tr], y[tr], C).logits(counts[te])
        a = [aug_of[i] for i in tr if i in aug_of]
        xa = sparse.vstack([counts[tr], aug_counts[a]]).tocsr()
        ya = np.concatenate([y[tr], y[[aug_rows[k] for k in a]]])
        oof["tfidf_with_aug"][te] = train.BowModel(10.0).fit(xa, ya, C).logits(counts[te])
        oof["frozen_minilm_without"][te] = dense_logits(emb[tr0], y[tr0], emb[te], C)
        oof["frozen_minilm_with"][te] = dense_logits(emb[tr], y[tr], emb[te], C)
        train.log(f"fold {fold} done")
    done = np.arange(len(y))
    res = {n: cv.subset_scores(setups.softmax(oof[n]), y, lg, G, src, done) for n in names}
    res["augmented_views"] = len(aug_rows)
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
