"""TransRate oracle (Huang et al., ICML 2022): coding rates with explicit D x D slogdets."""

import numpy as np

from tests.oracles._common import as_f64, present_classes


def coding_rate(z, eps):
    """R(Z) = 1/2 log det(I + Z^T Z / (n eps)), n the rows of Z."""
    n, d = z.shape
    sign, logdet = np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))
    assert sign > 0
    return 0.5 * logdet


def transrate(features, labels, num_classes, eps=1e-4, class_weights="uniform"):
    """R(Z) - sum_c w_c R(Z_c), Z centred once; w_c = 1/K (K present classes) or n_c / n."""
    z = as_f64(features)
    z = z - z.mean(axis=0)
    y = np.asarray(labels)
    classes = present_classes(y, num_classes)
    rates = np.array([coding_rate(z[y == c], eps) for c in classes])
    if class_weights == "uniform":
        w = np.full(len(classes), 1 / len(classes))
    else:
        w = np.array([np.mean(y == c) for c in classes])
    return float(coding_rate(z, eps) - np.sum(w * rates))
