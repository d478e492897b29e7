"""NCTI oracle (Wang et al., ICCV 2023): the authors' pipeline with scikit-learn's exact PCA and
LinearDiscriminantAnalysis, in float64."""

import numpy as np
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from tests.oracles._common import as_f64


def ncti_terms(features, labels, dims=64, variance_dims=32, svd_divisor="n-C"):
    """(seli, ncc, vc, used_svd) as published (vc not negated). Absent classes are dropped.

    The installed scikit-learn's svd solver whitens with W / n; the authors' (older) one with
    W / (n - C): the scalings then shrink by sqrt((n - C) / n), so the projection and the
    discriminant coefficients are rescaled here from the fitted model.
    """
    x = as_f64(features)
    _, y = np.unique(np.asarray(labels), return_inverse=True)
    c = y.max() + 1
    n, d = x.shape
    pca = PCA(n_components=min(dims, d, n), svd_solver="full")
    z = pca.fit_transform(x)
    temp = max(np.exp(-pca.explained_variance_[:variance_dims].sum()), 1e-10)
    if temp == 1e-10:
        clf = LinearDiscriminantAnalysis(solver="svd")
    else:
        clf = LinearDiscriminantAnalysis(solver="eigen", shrinkage=float(temp))
    low = clf.fit_transform(z, y)
    pred = clf.predict_proba(z)
    if temp == 1e-10:
        inner = clf.scalings_.T @ np.cov((z - clf.means_[y]).T, bias=True) @ clf.scalings_
        if np.allclose(inner, np.eye(len(inner)), atol=1e-6) and svd_divisor == "n-C":  # W / n here
            scale = np.sqrt((n - c) / n)
            low = low * scale
            p = clf.scalings_ * scale
            coef = clf.means_ @ p @ p.T
            logits = z @ coef.T - 0.5 * np.sum(clf.means_ * coef, axis=1) + np.log(clf.priors_)
            logits -= logits.max(axis=1, keepdims=True)
            pred = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    low = low - low.mean(axis=0, keepdims=True)
    seli = np.linalg.norm(low, ord="nuc")
    ncc = np.sum(pred[np.arange(n), y]) / n
    vc = np.log(sum(np.linalg.norm(pred[y == k], ord="nuc") for k in range(c)))
    return float(seli), float(ncc), float(vc), temp == 1e-10


def min_max(v):
    v = np.asarray(v, np.float64)
    return (v - v.min()) / (v.max() - v.min())


def ncti(terms):
    """The authors' combination over models: terms [M, 3] of (seli, ncc, vc)."""
    t = np.asarray(terms, np.float64)
    return min_max(t[:, 1]) + min_max(t[:, 0]) - min_max(t[:, 2])
