"""H-score oracle (Bao et al., ICIP 2019): H = tr(cov(f)^+ cov_between(f))."""

import numpy as np

from tests.oracles._common import as_f64, present_classes


def default_rcond(n, d, dtype):
    """The spec's cut-off: eigenvalues below rcond * lambda_max are dropped, with
    rcond = 10 sqrt(max(N, D)) eps(dtype) (the round-off floor of a Gram matrix)."""
    return 10.0 * np.sqrt(max(n, d)) * float(np.finfo(dtype).eps)


def hscore(features, labels, num_classes, rcond=None, dtype=np.float64):
    """H-score of features [N, D] for labels [N]; ddof 0 covariances.

    `rcond` defaults to the spec's 10 * sqrt(max(N, D)) * eps(`dtype`) so that a float32 engine can be
    compared with the cut-off it uses (the score depends on which eigenvalues are dropped).
    """
    f = as_f64(features)
    y = np.asarray(labels)
    n, d = f.shape
    if rcond is None:
        rcond = default_rcond(n, d, dtype)
    mu = f.mean(axis=0)
    cov_f = (f - mu).T @ (f - mu) / n
    cov_b = np.zeros((d, d))
    for c in present_classes(y, num_classes):
        fc = f[y == c]
        diff = fc.mean(axis=0) - mu
        cov_b += (len(fc) / n) * np.outer(diff, diff)
    # SVD-based pinv: singular values <= rcond * largest are zeroed (for a PSD matrix these are
    # its eigenvalues, so this is the spec's eigenvalue cut-off computed another way).
    return float(np.trace(np.linalg.pinv(cov_f, rcond=rcond) @ cov_b))
