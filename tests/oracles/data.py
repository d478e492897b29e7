"""Synthetic inputs with real class structure for the oracle and engine tests (NumPy only)."""

import numpy as np


def class_labels(rng, n, num_classes, imbalance=1.0):
    """Labels [N] with every class present; class 0 is `imbalance` times as frequent as the rest.

    The labels are shuffled (no sorted blocks, so order-dependent bugs show).
    """
    w = np.ones(num_classes)
    w[0] = imbalance
    counts = np.maximum(np.floor(w / w.sum() * n).astype(int), 2)
    counts[0] += n - counts.sum()
    labels = np.repeat(np.arange(num_classes), counts)
    return rng.permutation(labels)


def class_features(rng, labels, d, num_classes, separation=2.0, noise=1.0, rank_deficient=False,
                   offset=0.5):
    """Features [N, D]: class means ~ N(0, separation^2 I) plus N(0, noise^2) anisotropic noise.

    The noise has a spread of scales (so the covariance is not isotropic) and a common offset
    (so uncentred LogME differs from a centred one). With `rank_deficient`, one column is made
    constant and one duplicates another (needs D >= 3).
    """
    means = rng.normal(0.0, separation, size=(num_classes, d))
    scales = np.linspace(0.5, 1.5, d) * noise
    f = means[labels] + rng.normal(size=(len(labels), d)) * scales + offset
    if rank_deficient:
        f[:, 0] = 3.0
        f[:, 2] = f[:, 1]
    return f


def source_probs(rng, labels, num_source, strength=2.0):
    """Source probabilities [N, Cs]: softmax of noisy logits that favour a label-dependent class."""
    n = len(labels)
    pref = rng.integers(0, num_source, size=int(labels.max()) + 1)
    logits = rng.normal(size=(n, num_source))
    logits[np.arange(n), pref[labels]] += strength
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def source_case(case, seed=0):
    """A source-score grid case `(name, N, C, Cs, imbalance)` -> (probs [N, Cs], labels [N], C)."""
    _, n, c, cs, imb = case
    rng = np.random.default_rng(seed)
    y = class_labels(rng, n, c, imb)
    return source_probs(rng, y, cs, strength=1.5), y, c
