"""ETran oracles (Gholami et al., ICCV 2023): the energy and LDA terms as the authors' code
computes them, in float64 NumPy (the LDA through numpy's eigh of the non-symmetric
inv(Sigma) @ Sb, as published)."""

import numpy as np
from scipy.special import logsumexp

from tests.oracles._common import as_f64
from tests.oracles.sfda import _shrunk, _softmax, lda_fit_predict, top_eigenvalue_power


def etran_energy(features, percent=0.5, tail="bottom"):
    """Mean logsumexp of the k = max(1, int(10 percent) n // 1000) samples with the smallest
    (tail="bottom") or largest logsumexp."""
    e = logsumexp(as_f64(features), axis=1)
    n = len(e)
    k = max(int(percent * 10) * n // 1000, 1)
    order = np.argsort(e)
    chosen = order[:k] if tail == "bottom" else order[-k:]
    return float(e[chosen].mean())


def etran_lda(features, labels, form="published"):
    """Mean posterior of the true class. published: the authors' LDA (eigh of inv(Sigma) Sb);
    paper: the shrunk-covariance LDA (SFDA's first stage)."""
    x = as_f64(features)
    _, y = np.unique(np.asarray(labels), return_inverse=True)
    n, d = x.shape
    if form == "paper":
        prob, _ = lda_fit_predict(x, y)
        return float(np.mean(prob[np.arange(n), y]))
    classes = np.unique(y)
    priors = np.array([np.mean(y == c) for c in classes])
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    sw = sum(priors[k] * np.cov(x[y == c].T, bias=True).reshape(d, d) for k, c in enumerate(classes))
    s = max(np.exp(-5 * top_eigenvalue_power(sw, 3)), 1e-10)
    st = _shrunk(np.cov(x.T, bias=True).reshape(d, d), s)
    sw_s = _shrunk(sw, s)
    evals, evecs = np.linalg.eigh(np.linalg.inv(sw_s) @ (st - sw_s))
    evecs = evecs[:, np.argsort(evals)[::-1]]
    coef = means @ evecs @ evecs.T
    intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
    prob = _softmax(x @ coef.T + intercept)
    return float(np.mean(prob[np.arange(n), y]))


def min_max(v):
    v = np.asarray(v, np.float64)
    span = v.max() - v.min()
    return np.zeros_like(v) if span == 0 else (v - v.min()) / span


def etran(energies, ldas):
    return min_max(energies) + min_max(ldas)
