"""Cross-validation of the scenario classifier: one fine-tune per fold (outputs kept in --work,
so a run resumes), every decision set-up of setups.py scored out of fold, the winner exported
and scored as the shipped int8 ONNX graph, and its calibration and threshold table."""

import json

import numpy as np
import torch

import setups
import train


def run_fold(ctx, args, fold, tr, te, work):
    """Fine-tune on the fold's training part; save every output the set-ups need."""
    path = work / f"fold{fold}.npz"
    if path.exists():
        train.log(f"fold {fold}: reusing {path}")
        return
    C, G = len(ctx["labels"]), len(ctx["gnames"])
    y, yg, ids, counts = ctx["y"], ctx["yg"], ctx["ids"], ctx["counts"]
    tr_in, va = train.val_split(ctx, tr, fold, args)
    train.log(f"fold {fold + 1}/{args.folds}: train {len(tr_in)} val {len(va)} test {len(te)}")
    enc, best_ep, hist = train.train_encoder(args, ids, y, yg, list(tr_in), list(va), C, G,
                                       seed=args.seed + fold)
    bow = train.BowModel(args.bow_c).fit(counts[tr_in], y[tr_in], C)
    demb = train.embed_descriptions(enc, ctx["desc_ids"])
    out = {"va": va, "te": te, "best_epoch": best_ep, "idf": bow.idf, "W": bow.W, "b": bow.b,
           "demb": demb, "hist": json.dumps(hist)}
    for part, idx in [("va", va), ("te", te)]:
        e, g, pooled = train.predict(enc, list(idx), ids)
        out.update({f"{part}_enc": e, f"{part}_grp": g, f"{part}_cos": train.cosines(pooled, demb),
                    f"{part}_bow": bow.logits(counts[idx])})
    torch.save(enc.state_dict(), work / f"fold{fold}.pt")
    np.savez(path, **out)


def fold_outputs(z, part):
    return {k: z[f"{part}_{k}"] for k in ["enc", "grp", "cos", "bow"]}


def evaluate_setups(ctx, folds_npz):
    """Every set-up: parameters picked on each fold's validation part, scored out of fold."""
    y, lg, G, src = ctx["y"], ctx["lg"], len(ctx["gnames"]), ctx["src"]
    res, params = {}, {}
    for name, spec in setups.SETUPS.items():
        summed = spec[3]
        oof = np.zeros((len(y), len(ctx["labels"])))
        params[name] = []
        for z in folds_npz:
            prm = setups.pick(fold_outputs(z, "va"), y[z["va"]], lg, G, name)
            params[name].append(prm)
            te = z["te"]
            oof[te] = setups.distribution(fold_outputs(z, "te"), lg, prm["alpha"], prm["beta"],
                                          prm["lambda"], prm["t"], prm["tg"])
        done = np.concatenate([z["te"] for z in folds_npz])
        res[name] = subset_scores(oof, y, lg, G, src, done, summed)
        train.log(f"set-up {name}: {res[name]['all']}")
    return res, params


def subset_scores(p, y, lg, G, src, done, summed=True):
    out = {}
    for tag, m in [("all", np.ones(len(y), bool)), ("training_rows", src == 0),
                   ("testdata_rows", src == 1)]:
        idx = np.intersect1d(done, np.nonzero(m)[0])
        if len(idx):
            s = setups.scores(p[idx], y[idx], lg, G, summed)
            out[tag] = {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()}
    return out


def load_encoder(ctx, state):
    enc = train.Encoder(len(ctx["labels"]), len(ctx["gnames"]))
    enc.load_state_dict(state)
    return enc.eval()


class SavedBow:
    def __init__(self, z):
        self.idf, self.W, self.b = z["idf"], z["W"], z["b"]


def int8_oof(ctx, folds_npz, prms, work):
    """The shipped pipeline on every test fold: export, int8 per channel, onnxruntime."""
    p = np.zeros((len(ctx["y"]), len(ctx["labels"])), dtype=np.float32)
    for fold, (z, prm) in enumerate(zip(folds_npz, prms)):
        enc = load_encoder(ctx, torch.load(work / f"fold{fold}.pt", weights_only=True))
        mod = train.Exported(enc, SavedBow(z), z["demb"], ctx["lg"], len(ctx["gnames"]), prm)
        fp32, int8 = work / f"fold{fold}.onnx", work / f"fold{fold}.int8.onnx"
        train.export_onnx(mod, fp32)
        train.quantize(fp32, int8, len(ctx["labels"]), len(ctx["gnames"]))
        p[z["te"]] = train.ort_predict(train.ort_session(int8), z["te"], ctx["ids"])
        train.log(f"fold {fold}: int8 scored")
    return p


def calibration(ctx, p, done):
    """ECE of the group confidence, threshold table and the recommended threshold."""
    y, lg, G = ctx["y"][done], ctx["lg"], len(ctx["gnames"])
    gp = setups.group_probs(p[done], lg, G)
    conf, correct = gp.max(1), (gp.argmax(1) == lg[y]).astype(float)
    top = p[done].max(1)
    table = setups.threshold_table(conf, correct)
    return {
        "group_confidence_ece": round(setups.ece(conf, correct), 4),
        "top1_confidence_ece": round(setups.ece(top, (p[done].argmax(1) == y).astype(float)), 4),
        "mean_group_confidence": round(float(conf.mean()), 4),
        "group_accuracy": round(float(correct.mean()), 4),
        "thresholds": table,
        "recommended_min_confidence": setups.recommend_threshold(table),
    }


def per_label(ctx, p, done, names):
    y, pred = ctx["y"][done], p[done].argmax(1)
    out = {}
    for n in names:
        i = ctx["labels"].index(n)
        tp = int(((pred == i) & (y == i)).sum())
        out[n] = {"held_out_rows": int((y == i).sum()), "predicted": int((pred == i).sum()),
                  "correct": tp}
    return out



def cross_validate(ctx, args, work):
    for fold, (tr, te) in enumerate(ctx["folds"]):
        run_fold(ctx, args, fold, tr, te, work)
    folds_npz = [np.load(work / f"fold{f}.npz") for f in range(len(ctx["folds"]))]
    res, params = evaluate_setups(ctx, folds_npz)
    # keep what wins out of fold: group + top-1 accuracy over all held-out rows
    winner = max(res, key=lambda n: res[n]["all"]["group"] + res[n]["all"]["top1"])
    train.log("winner:", winner)
    p8 = int8_oof(ctx, folds_npz, params[winner], work)
    done = np.concatenate([z["te"] for z in folds_npz])
    y, lg, G, src = ctx["y"], ctx["lg"], len(ctx["gnames"]), ctx["src"]
    cv = {
        "setups": res,
        "winner": winner,
        "shipped_onnx_int8": subset_scores(p8, y, lg, G, src, done),
        "shipped_onnx_int8_top1_group": subset_scores(p8, y, lg, G, src, done, summed=False),
        "calibration": calibration(ctx, p8, done),
        "never_trained_labels": per_label(ctx, p8, done, ["others", "post_summarization"]),
        "per_fold": [{"fold": f, "best_epoch": int(z["best_epoch"]), "params": prm,
                      "history": json.loads(str(z["hist"])),
                      "int8": setups.scores(p8[z["te"]], y[z["te"]], lg, G)}
                     for f, (z, prm) in enumerate(zip(folds_npz, params[winner]))],
    }
    train.log("CV", json.dumps({k: cv[k] for k in ["shipped_onnx_int8", "never_trained_labels"]}))
    return cv, params[winner], [int(z["best_epoch"]) for z in folds_npz]


