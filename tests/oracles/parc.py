"""PARC oracle (Bolya et al., NeurIPS 2021): PCA, StandardScaler, np.corrcoef dissimilarity
matrices and scipy.stats.spearmanr over the upper triangle, all in float64.

The randomized PCA is written out from Halko et al.'s algorithm as scikit-learn's PCA(svd_solver=
"randomized", random_state=1919, iterated_power=1) runs it (one unnormalised power iteration on
a RandomState(1919) Gaussian test matrix with k + 10 columns, on X^T when n < d, signs with the
largest loading positive); `test_oracle_selfchecks` compares it with scikit-learn itself.
"""

import numpy as np
import scipy.linalg
import scipy.stats

from tests.oracles._common import as_f64


def randomized_pca(x, k, random_state=1919, oversamples=10):
    """[n, k] scores U * S of the randomized SVD of the centred x."""
    xc = x - x.mean(axis=0)
    n, d = xc.shape
    a = xc.T if n < d else xc
    g = np.random.RandomState(random_state).normal(size=(a.shape[1], k + oversamples))
    q = a.T @ (a @ g)
    q, _ = scipy.linalg.qr(a @ q, mode="economic")
    uhat, s, vt = scipy.linalg.svd(q.T @ a, full_matrices=False)
    u = q @ uhat
    if n < d:  # a = X^T: components are u's columns, scores are X u
        comps = u[:, :k].T
    else:
        comps = vt[:k]
    signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    comps = comps * signs[:, None]
    if n < d:
        return xc @ comps.T
    return (u[:, :k] * s[:k]) * signs[None, :]


def exact_pca(x, k):
    """[n, k] exact PCA scores (SVD of the centred x), largest loading of each component positive."""
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    comps = vt[:k]
    comps = comps * np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])[:, None]
    return xc @ comps.T


def parc(features, labels, num_classes, dims=32, pca="randomized"):
    x = as_f64(features)
    y = np.asarray(labels)
    n, d = x.shape
    k = min(dims, n, d)
    z = randomized_pca(x, k) if pca == "randomized" else exact_pca(x, k)
    std = z.std(axis=0)
    z = (z - z.mean(axis=0)) / np.where(std > 0, std, 1.0)
    rdm_features = 1 - np.corrcoef(z)
    # The label dissimilarity 1 - r(onehot_i, onehot_j), in exact arithmetic: 0 within a class and
    # 1 + 1/(C - 1) between classes (np.corrcoef would leave some within-class values at 2e-16).
    rdm_labels = (y[:, None] != y[None, :]) * (num_classes / (num_classes - 1))
    iu = np.triu_indices(n, 1)
    return float(scipy.stats.spearmanr(rdm_features[iu], rdm_labels[iu])[0] * 100)
