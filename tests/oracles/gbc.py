"""GBC oracle (Pandy et al., CVPR 2022): minus the summed Bhattacharyya coefficients."""

import numpy as np

from tests.oracles._common import as_f64, present_classes

VAR_FLOOR = 1e-4


def pca_project(features, dims):
    """Centred features projected on the top min(dims, D, n) principal directions (no whitening;
    the most components scikit-learn's PCA allows, as the spec fixes it).

    Directions beyond the rank of the centred data (<= n - 1) carry zero variance; their
    coordinates are 0 (and their class variances get the floor).
    """
    f = as_f64(features)
    n, d = f.shape
    k = min(dims, d, n)
    fc = f - f.mean(axis=0)
    _, _, vt = np.linalg.svd(fc, full_matrices=False)  # rows: directions, by decreasing variance
    z = fc @ vt[:k].T
    if z.shape[1] < k:
        z = np.concatenate([z, np.zeros((n, k - z.shape[1]))], axis=1)
    return z


def bhattacharyya(mu1, var1, mu2, var2, gaussian):
    """Bhattacharyya distance between two axis-aligned Gaussians, per the spec's variants."""
    dims = len(mu1)
    diff2 = (mu1 - mu2) ** 2
    if gaussian == "diagonal":
        s = (var1 + var2) / 2
        return np.sum(diff2 / s) / 8 + 0.5 * np.sum(
            np.log(s) - 0.5 * np.log(var1) - 0.5 * np.log(var2)
        )
    s1, s2 = np.mean(var1), np.mean(var2)
    s = (s1 + s2) / 2
    log_term = 0.5 * (np.log(s) - 0.5 * np.log(s1) - 0.5 * np.log(s2))
    if gaussian == "textbook_spherical":
        log_term *= dims
    elif gaussian != "spherical":
        raise ValueError(gaussian)
    return np.sum(diff2) / (8 * s) + log_term


def gbc(features, labels, num_classes, dims=64, gaussian="spherical"):
    """GBC = - sum over ordered pairs of distinct present classes of exp(-DB)."""
    z = pca_project(features, dims)
    y = np.asarray(labels)
    stats = {}
    for c in present_classes(y, num_classes):
        zc = z[y == c]
        stats[c] = (zc.mean(axis=0), np.maximum(zc.var(axis=0), VAR_FLOOR))
    total = 0.0
    for c1 in stats:
        for c2 in stats:
            if c1 != c2:
                total -= np.exp(-bhattacharyya(*stats[c1], *stats[c2], gaussian))
    return float(total)
