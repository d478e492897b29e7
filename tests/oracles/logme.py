"""LogME oracle (You et al., ICML 2021 / JMLR 2022) with the full-rank-aware log-determinant.

Model per target column y [n]: y = F w + e, w ~ N(0, I / alpha), e ~ N(0, I / beta), F the
UNCENTRED features [n, D]. The evidence is maximised over (alpha, beta) by MacKay's fixed point.
"""

import numpy as np

from tests.oracles._common import as_f64, present_classes


def eigenvalues_ftf(f):
    """All D eigenvalues of F^T F (squared singular values of F, zeros appended when n < D)."""
    n, d = f.shape
    s = np.linalg.svd(f, compute_uv=False) ** 2
    return np.concatenate([s, np.zeros(d - len(s))])


class _Svd:
    """Thin SVD of the uncentred F [n, D] and the projections of one target y on it.

    Everything below is written in this basis so that it stays accurate when beta is huge (with
    n < D the evidence often keeps rising as beta -> infinity: the fixed point runs to
    max_iters and beta reaches 1e15, where forming and solving alpha I + beta F^T F directly
    loses all digits). `basis` = (u, s) reuses one SVD for several targets.
    """

    def __init__(self, f, y, basis=None):
        u, s = basis if basis is not None else np.linalg.svd(f, full_matrices=False)[:2]
        self.n, self.d = f.shape
        self.s2 = s**2  # the r = min(n, D) eigenvalues that can be nonzero
        self.sigma = np.concatenate([self.s2, np.zeros(self.d - len(s))])
        self.z = u.T @ y  # coordinates of y on the left singular vectors
        self.perp2 = np.sum((y - u @ self.z) ** 2)  # part of y outside the column space of F

    def moments(self, alpha, beta):
        """(m^T m, ||y - F m||^2) at the posterior mean m = beta A^-1 F^T y."""
        denom = alpha + beta * self.s2
        mm = np.sum((beta * np.sqrt(self.s2) * self.z / denom) ** 2)
        resid = self.perp2 + np.sum((alpha * self.z / denom) ** 2)
        return mm, resid


def posterior_mean(f, y, alpha, beta):
    """m = beta A^{-1} F^T y with A = alpha I + beta F^T F, solved directly (moderate beta only)."""
    d = f.shape[1]
    a = alpha * np.eye(d) + beta * f.T @ f
    return beta * np.linalg.solve(a, f.T @ y)


def evidence(f, y, alpha, beta, basis=None):
    """log p(y | alpha, beta) from the closed form, log det A over all D eigenvalues."""
    f, y = as_f64(f), as_f64(y)
    svd = _Svd(f, y, basis)
    mm, resid = svd.moments(alpha, beta)
    n, d = f.shape
    return (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - 0.5 * np.sum(np.log(alpha + beta * svd.sigma))
        - beta / 2 * resid
        - alpha / 2 * mm
        - n / 2 * np.log(2 * np.pi)
    )


def fit_alpha_beta(f, y, max_iters=100, tol=1e-5, basis=None):
    """MacKay fixed point from alpha = beta = 1; stops when |lam' - lam| / lam < tol, lam = a/b.

    One iteration: m, gamma from the current (alpha, beta); then alpha = gamma / m^T m and
    beta = (n - gamma) / ||y - F m||^2 together.
    """
    svd = _Svd(as_f64(f), as_f64(y), basis)
    alpha, beta = 1.0, 1.0
    lam = alpha / beta
    for _ in range(max_iters):
        mm, resid = svd.moments(alpha, beta)
        gamma = np.sum(beta * svd.sigma / (alpha + beta * svd.sigma))
        if mm < 1e-300 or gamma < 1e-300:
            # alpha -> infinity (the evidence is largest with w = 0): the iterate has reached the
            # limit to float64 precision; the evidence at this alpha equals the limit's.
            break
        alpha, beta = gamma / mm, (svd.n - gamma) / resid
        new_lam = alpha / beta
        done = abs(new_lam - lam) / lam < tol
        lam = new_lam
        if done:
            break
    return alpha, beta


def logme_column(f, y, max_iters=100, tol=1e-5, basis=None):
    """Maximised evidence divided by n for one target column."""
    f = as_f64(f)
    y = as_f64(y)
    alpha, beta = fit_alpha_beta(f, y, max_iters, tol, basis)
    return evidence(f, y, alpha, beta, basis) / f.shape[0]


def _basis(f):
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    return u, s


def logme(features, labels, num_classes, max_iters=100, tol=1e-5):
    """Mean over present classes of the per-class one-hot evidence / n."""
    f = as_f64(features)
    y = np.asarray(labels)
    basis = _basis(f)
    vals = [
        logme_column(f, (y == c).astype(np.float64), max_iters, tol, basis)
        for c in present_classes(y, num_classes)
    ]
    return float(np.mean(vals))


def logme_regression(features, targets, max_iters=100, tol=1e-5):
    """Mean over the K target columns [N, K] of the evidence / n."""
    f = as_f64(features)
    t = as_f64(targets)
    basis = _basis(f)
    return float(np.mean([logme_column(f, t[:, k], max_iters, tol, basis)
                          for k in range(t.shape[1])]))
