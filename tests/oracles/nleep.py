"""N-LEEP oracle (Li et al., CVPR 2021): LEEP with GMM posteriors on PCA-reduced features.

The k-means++ seeding is random, so the oracle takes the initial means (in the PCA space) as an
argument; everything after the seeding (PCA, hard-assignment init, EM, final posteriors, LEEP)
is computed here the textbook way: an SVD for the PCA, scipy's multivariate normal log-density
for the E-step, loops over components for the M-step.
"""

import numpy as np
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from tests.oracles._common import as_f64
from tests.oracles.leep import leep


def pca_reduce(features, variance=0.8):
    """Project the centred features on the fewest principal directions whose cumulative
    explained variance ratio is strictly greater than `variance` (as sklearn PCA(0.8)).

    Returns (z [N, k], k). Directions are the right singular vectors of the centred features.
    """
    f = as_f64(features)
    fc = f - f.mean(axis=0)
    _, s, vt = np.linalg.svd(fc, full_matrices=False)
    ratio = s**2 / np.sum(s**2)
    cum = np.cumsum(ratio)
    k = 1
    while cum[k - 1] <= variance:
        k += 1
    return fc @ vt[:k].T, k


def hard_assignment_init(x, means_init, reg_covar=1e-6):
    """Initial (weights [K], means [K, d], covariances [K, d, d]) from the spec's rule.

    Each sample goes to its nearest initial mean (lowest index on ties); weights are the cluster
    fractions; each covariance is that cluster's ddof-0 covariance around the cluster's own
    sample mean, plus reg_covar on the diagonal (as sklearn does from one-hot responsibilities);
    the means stay as given.
    """
    x = as_f64(x)
    means = as_f64(means_init)
    n, d = x.shape
    k = len(means)
    assign = np.empty(n, int)
    for i in range(n):
        dist = [np.sum((x[i] - means[j]) ** 2) for j in range(k)]
        assign[i] = int(np.argmin(dist))  # argmin returns the first (lowest) index on ties
    weights = np.zeros(k)
    covs = np.zeros((k, d, d))
    for j in range(k):
        xj = x[assign == j]
        weights[j] = len(xj) / n
        if len(xj):
            diff = xj - xj.mean(axis=0)
            covs[j] = diff.T @ diff / len(xj)
        covs[j] += reg_covar * np.eye(d)
    return weights, means, covs


def log_joint(x, weights, means, covs):
    """[N, K] log w_k + log N(x_i; mu_k, Sigma_k)."""
    cols = [
        np.log(weights[j]) + multivariate_normal(means[j], covs[j], allow_singular=False).logpdf(x)
        for j in range(len(weights))
    ]
    return np.stack(cols, axis=1).reshape(len(x), len(weights))


def em(x, weights, means, covs, max_iters=100, tol=1e-3, reg_covar=1e-6):
    """Full-covariance EM with sklearn's stopping rule.

    Each iteration: E-step with the current parameters (its mean log-likelihood is the "lower
    bound"), then M-step; stop when |lower bound - previous lower bound| < tol.
    Returns (weights, means, covs, lower_bound, num_iters).
    """
    x = as_f64(x)
    n, d = x.shape
    lower = -np.inf
    it = 0
    for it in range(1, max_iters + 1):
        prev = lower
        lj = log_joint(x, weights, means, covs)
        norm = logsumexp(lj, axis=1)
        resp = np.exp(lj - norm[:, None])
        lower = float(np.mean(norm))
        nk = resp.sum(axis=0)
        weights = nk / n
        means = np.stack([resp[:, j] @ x / nk[j] for j in range(len(nk))])
        covs = np.stack(
            [
                ((x - means[j]).T * resp[:, j]) @ (x - means[j]) / nk[j] + reg_covar * np.eye(d)
                for j in range(len(nk))
            ]
        )
        if abs(lower - prev) < tol:
            break
    return weights, means, covs, lower, it


def posteriors(x, weights, means, covs):
    """[N, K] responsibilities under the given mixture."""
    lj = log_joint(as_f64(x), weights, means, covs)
    return np.exp(lj - logsumexp(lj, axis=1, keepdims=True))


def mean_log_likelihood(x, weights, means, covs):
    """Mean over samples of log p(x_i) under the mixture."""
    return float(np.mean(logsumexp(log_joint(as_f64(x), weights, means, covs), axis=1)))


def nleep(features, labels, num_classes, means_init, variance=0.8, max_iters=100, tol=1e-3,
          reg_covar=1e-6):
    """N-LEEP from given initial means [K, k] in the PCA space of `features`."""
    z, _ = pca_reduce(features, variance)
    w, m, c = hard_assignment_init(z, means_init, reg_covar)
    w, m, c, _, _ = em(z, w, m, c, max_iters, tol, reg_covar)
    return leep(posteriors(z, w, m, c), labels, num_classes)
