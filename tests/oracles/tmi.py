"""TMI oracle (Xu & Kang, ICCV 2023): Kozachenko-Leonenko class-conditional entropy with a
k-d tree (scipy cKDTree, as the authors' code) or brute-force distances."""

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln

from tests.oracles._common import as_f64, present_classes


def class_entropy(x, k=3, norm="max", min_dist=1.0):
    """h = -psi(k) + psi(n) + log c_d + d/n sum log(2 eps_i), eps_i the distance to the k-th
    nearest other point (the (k+1)-th including the point itself), floored at min_dist."""
    n, d = x.shape
    p = np.inf if norm == "max" else 2
    dist, _ = cKDTree(x).query(x, k + 1, p=p)
    eps = np.maximum(dist[:, -1], min_dist)
    log_c_d = 0.0 if norm == "max" else d / 2 * np.log(np.pi) - gammaln(d / 2 + 1)
    return -digamma(k) + digamma(n) + log_c_d + d / n * np.sum(np.log(2 * eps))


def tmi(features, labels, num_classes, k=3, norm="max", min_dist=1.0):
    """(1/K) sum_c (n_c/n) h_c over the K present classes (each with >= k + 1 samples)."""
    x = as_f64(features)
    x = x - x.mean(axis=0)
    y = np.asarray(labels)
    terms = [np.mean(y == c) * class_entropy(x[y == c], k, norm, min_dist)
             for c in present_classes(y, num_classes)]
    return float(np.mean(terms))
