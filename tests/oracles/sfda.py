"""SFDA oracle (Shao et al., ECCV 2022): the authors' algorithm in float64 NumPy/SciPy, in the D
feature columns, with the generalised eigenproblem (Sb, Sigma) as published."""

import numpy as np
from scipy import linalg

from tests.oracles._common import as_f64


def _shrunk(cov, s):
    d = cov.shape[0]
    return (1 - s) * cov + s * np.trace(cov) / d * np.eye(d)


def top_eigenvalue_power(a, iters=3):
    """The authors' iterative_A: power method from a.sum(axis=1), returns x^T A y."""
    x = a.sum(axis=1)
    y = x
    for _ in range(iters):
        t = a @ x
        y = t / np.linalg.norm(t)
        t = a @ y
        x = t / np.linalg.norm(t)
    return float(x @ a @ y)


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def lda_fit_predict(x, y, shrinkage=None, power_iters=3):
    """One SFDA stage: returns (posteriors [N, C], shrinkage). Labels y in 0..C-1, all present."""
    n, d = x.shape
    classes = np.unique(y)
    priors = np.array([np.mean(y == c) for c in classes])
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    sw = np.zeros((d, d))
    for k, c in enumerate(classes):
        xc = x[y == c] - means[k]
        sw += priors[k] * (xc.T @ xc) / len(xc)
    if shrinkage is None:
        lam = top_eigenvalue_power(sw, power_iters) if power_iters else np.linalg.eigvalsh(sw)[-1]
        shrinkage = max(np.exp(-5 * lam), 1e-10)
    xt = x - x.mean(axis=0)
    st = _shrunk(xt.T @ xt / n, shrinkage)
    sw_s = _shrunk(sw, shrinkage)
    sb = st - sw_s
    evals, evecs = linalg.eigh(sb, sw_s)
    evecs = evecs[:, np.argsort(evals)[::-1]]
    coef = means @ evecs @ evecs.T
    intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
    return _softmax(x @ coef.T + intercept), shrinkage


def sfda(features, labels, num_classes=None, shrinkage=None, power_iters=3):
    """SFDA = mean second-stage posterior of the true class after ConfMix. Absent classes of
    `num_classes` are dropped (labels remapped to the present ones)."""
    x = as_f64(features)
    _, y = np.unique(np.asarray(labels), return_inverse=True)
    c = y.max() + 1
    n = len(y)
    prob, s = lda_fit_predict(x, y, shrinkage, power_iters)
    prob = np.exp(prob) / np.exp(prob).sum(axis=1, keepdims=True)
    means = np.stack([x[y == k].mean(axis=0) for k in range(c)])
    outer = np.stack([(means.sum(axis=0) - means[k]) / (c - 1) for k in range(c)])
    for k in range(c):
        idx = np.where(y == k)[0]
        p = prob[idx, k][:, None]
        x[idx] = p * x[idx] + (1 - p) * outer[k]
    prob2, _ = lda_fit_predict(x, y, s)
    return float(np.sum(prob2[np.arange(n), y]) / n)
