"""Decision set-ups compared on out-of-fold outputs, calibration and the confidence threshold.

Every set-up turns one fold's saved outputs (encoder scenario logits, encoder group logits,
TF-IDF logits, cosine similarity to the scenario descriptions) into a probability
distribution over the labels. Its parameters are picked on that fold's validation part and
applied to its test part, so the figures stay out-of-fold. The distribution is what the ONNX
graph emits; the router sums it per group (`group_decision` in router/src/classifier.rs).
"""

import itertools

import numpy as np

ALPHAS = [0.0, 0.5, 1.0, 2.0, 3.0]  # weight of the TF-IDF logits
BETAS = [0.0, 5.0, 10.0, 20.0]  # weight of the description cosine
LAMBDAS = [1.0, 0.5, 0.0]  # share of the flat distribution (1 = flat, 0 = hierarchical)
TEMPS = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0]

# name -> (allowed alphas, betas, lambdas, decide group by summed probabilities)
SETUPS = {
    "flat, top-1 group (previous rule)": ([0.0, 0.5, 1.0, 2.0, 3.0], [0.0], [1.0], False),
    "flat, summed group": (ALPHAS, [0.0], [1.0], True),
    "flat + description similarity": (ALPHAS, BETAS, [1.0], True),
    "hierarchical (group head x scenario within group)": (ALPHAS, [0.0], [0.0], True),
    "flat/hierarchical mixture": (ALPHAS, [0.0], LAMBDAS, True),
    "mixture + description similarity": (ALPHAS, BETAS, LAMBDAS, True),
}


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def group_matrix(label_group, n_groups):
    """[C, G] one-hot: label i belongs to group label_group[i]."""
    m = np.zeros((len(label_group), n_groups))
    m[np.arange(len(label_group)), label_group] = 1.0
    return m


def distribution(out, lg, a, b, lam, t, tg):
    """Scenario probabilities for one set of parameters.

    z = (enc + a * tfidf + b * cos) / t; flat = softmax(z); hierarchical = softmax(group
    logits / tg)[group(s)] * softmax of z within that group; p = lam * flat + (1 - lam) * hier.
    """
    z = (out["enc"] + a * out["bow"] + b * out["cos"]) / t
    flat = softmax(z)
    if lam >= 1.0:
        return flat
    gm = group_matrix(lg, out["grp"].shape[1])
    pg = softmax(out["grp"] / tg)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    within = e / (e @ gm @ gm.T)  # normalise inside each group
    hier = within * (pg @ gm.T)
    return lam * flat + (1.0 - lam) * hier


def group_probs(p, lg, n_groups):
    return p @ group_matrix(lg, n_groups)


def scores(p, y, lg, n_groups, summed=True):
    """top-1, top-3, group accuracy; the group is the summed decision unless summed=False."""
    order = np.argsort(-p, axis=1)
    if summed:
        g_pred = group_probs(p, lg, n_groups).argmax(1)
    else:
        g_pred = lg[order[:, 0]]
    return {
        "top1": float(np.mean(order[:, 0] == y)),
        "top3": float(np.mean((order[:, :3] == y[:, None]).any(1))),
        "group": float(np.mean(g_pred == lg[y])),
        "n": int(len(y)),
    }


def nll(p, y):
    return float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))


def fit_temperature(logits, y):
    return min(TEMPS, key=lambda t: nll(softmax(logits / t), y))


def pick(val, yv, lg, n_groups, setup):
    """Parameters maximising validation top-1 + group accuracy (then lower NLL)."""
    alphas, betas, lams, summed = SETUPS[setup]
    tg = fit_temperature(val["grp"], lg[yv])
    best = None
    for a, b, lam in itertools.product(alphas, betas, lams):
        z = val["enc"] + a * val["bow"] + b * val["cos"]
        t = fit_temperature(z, yv)
        p = distribution(val, lg, a, b, lam, t, tg)
        s = scores(p, yv, lg, n_groups, summed)
        key = (s["top1"] + s["group"], -nll(p, yv))
        if best is None or key > best[0]:
            best = (key, {"alpha": a, "beta": b, "lambda": lam, "t": t, "tg": tg})
    return best[1]


def ece(conf, correct, bins=15):
    """Expected calibration error with equal-width confidence bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(total)


def threshold_table(conf, correct, grid=None):
    """For each threshold: share of queries below it and the group accuracy on each side."""
    grid = grid if grid is not None else [round(x, 2) for x in np.arange(0.2, 0.95, 0.05)]
    rows = []
    for t in grid:
        lo = conf < t
        rows.append({
            "threshold": t,
            "share_below": round(float(lo.mean()), 4),
            "group_acc_below": round(float(correct[lo].mean()), 4) if lo.any() else None,
            "group_acc_at_or_above": round(float(correct[~lo].mean()), 4) if (~lo).any() else None,
        })
    return rows


def recommend_threshold(table):
    """The largest threshold whose below-threshold queries have their group right less than
    half the time: there the group decision is more often wrong than right, so the default
    pool (a judge for any scenario) is the better bet."""
    ok = [r["threshold"] for r in table if r["group_acc_below"] is not None
          and r["group_acc_below"] < 0.5]
    return max(ok) if ok else 0.0
