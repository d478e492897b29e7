"""N-LEEP oracle (Li et al., CVPR 2021): LEEP with GMM posteriors on PCA-reduced features.

The k-means++ seeding is random, so the oracle takes the seeded means (in the PCA space) as an
argument; everything after the seeding (Lloyd steps, hard-assignment init, EM, final posteriors,
LEEP) and the PCA are computed here the textbook way: an SVD for the PCA, scipy's multivariate normal log-density
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


def nearest(x, means):
    """[N] index of each sample's nearest mean (squared Euclidean; lowest index on ties)."""
    return np.array([int(np.argmin([np.sum((xi - m) ** 2) for m in means])) for xi in x])


def lloyd(x, means, num_iters):
    """`num_iters` k-means (Lloyd) steps: assign to the nearest mean, move each mean to its
    cluster's average; a cluster left empty keeps its mean."""
    x = as_f64(x)
    means = as_f64(means).copy()
    for _ in range(num_iters):
        assign = nearest(x, means)
        for j in range(len(means)):
            if np.any(assign == j):
                means[j] = x[assign == j].mean(axis=0)
    return means


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


def nleep(features, labels, num_classes, seeded_means, variance=0.8, max_iters=100, tol=1e-3,
          reg_covar=1e-6, kmeans_iters=10):
    """N-LEEP from k-means++ seeded means [K, k] in the PCA space of `features` (refined by
    `kmeans_iters` Lloyd steps, as the spec's initialisation)."""
    z, _ = pca_reduce(features, variance)
    means0 = lloyd(z, seeded_means, kmeans_iters)
    w, m, c = hard_assignment_init(z, means0, reg_covar)
    w, m, c, _, _ = em(z, w, m, c, max_iters, tol, reg_covar)
    return leep(posteriors(z, w, m, c), labels, num_classes)
