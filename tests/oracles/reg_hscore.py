"""Regularised H-score oracle (Ibrahim et al., NeurIPS 2021) with Ledoit-Wolf shrinkage."""

import numpy as np

from tests.oracles._common import as_f64, present_classes


def ledoit_wolf_shrinkage(x):
    """Ledoit & Wolf (2004) shrinkage towards mu * I for data `x` [N, D] (centred here).

    Textbook form: S = X^T X / n, m = tr(S) / D, d2 = ||S - m I||_F^2 / D,
    b2_bar = (1 / n^2) sum_k ||x_k x_k^T - S||_F^2 / D, b2 = min(b2_bar, d2), a = b2 / d2
    (0 when d2 = 0). Computed with an explicit loop over samples.
    """
    x = as_f64(x)
    x = x - x.mean(axis=0)
    n, d = x.shape
    s = x.T @ x / n
    m = np.trace(s) / d
    d2 = np.sum((s - m * np.eye(d)) ** 2) / d
    b2_bar = 0.0
    for k in range(n):
        b2_bar += np.sum((np.outer(x[k], x[k]) - s) ** 2) / d
    b2_bar /= n**2
    b2 = min(b2_bar, d2)
    return 0.0 if d2 == 0 else b2 / d2


def reg_hscore(features, labels, num_classes):
    """H_a = tr(Sigma_LW^{-1} (1 - a) Sigma_b) with Sigma_LW = (1 - a) Sigma_f + a tr(Sigma_f)/D I."""
    f = as_f64(features)
    y = np.asarray(labels)
    n, d = f.shape
    mu = f.mean(axis=0)
    cov_f = (f - mu).T @ (f - mu) / n
    a = ledoit_wolf_shrinkage(f)
    cov_lw = (1 - a) * cov_f + a * np.trace(cov_f) / d * np.eye(d)
    cov_b = np.zeros((d, d))
    for c in present_classes(y, num_classes):
        fc = f[y == c]
        diff = fc.mean(axis=0) - mu
        cov_b += (len(fc) / n) * np.outer(diff, diff)
    return float(np.trace(np.linalg.solve(cov_lw, (1 - a) * cov_b)))
