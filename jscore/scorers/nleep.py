"""N-LEEP, Gaussian-mixture LEEP (Li et al., "Ranking Neural Checkpoints", CVPR 2021)."""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from jscore._numerics import einsum, eps, mm
from jscore.scorers.leep import leep_from_onehot
from jscore.stats import FeatureStats, feature_stats, pc_scores


# N-LEEP's EM budget (scikit-learn's GaussianMixture default is 100; `fit_gmm` keeps it). See
# `nleep`, "Iterations", and docs/scorers.md: past this, EM only crawls along a slow tail whose
# length grows with N, while N-LEEP moves by less than the spread between seeds.
MAX_ITERS = 30


class Gmm(NamedTuple):
    """A full-covariance Gaussian mixture: weights [K], means [K, d], covariances [K, d, d],
    the mean log-likelihood of the last E-step, and the number of EM iterations run."""

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array
    mean_log_likelihood: jax.Array
    num_iters: jax.Array


def _dim_mask(dim_mask, d, dtype):
    return jnp.ones((d,), dtype) if dim_mask is None else jnp.asarray(dim_mask, dtype)


def component_batch(num_components: int) -> int:
    """Components per step of the centred E-step that `gmm_log_posteriors` runs once after the
    fit (static; EM itself runs in moment form, `_moment_sums`). On the CPU one at a time: the
    [N, d] tiles stay in cache, where an [N, K, d] intermediate (0.45 GB at N = 50,000, K = 40,
    d = 56) goes through memory several times. On an accelerator all at once."""
    return 1 if jax.default_backend() == "cpu" else num_components


def _log_gaussians(x, means, covariances, dim_mask):
    """[N, K] log N(x_n | mu_k, Sigma_k) over the valid dimensions (masked ones carry identity).

    Precision-Cholesky form: with L_k L_k^T = Sigma_k, the whitened residual L_k^{-1}(x - mu_k)
    is a GEMM of x against the small inverse factor (K d^3 to invert, then GEMM speed, instead
    of K triangular solves with N right-hand sides), one component (or batch) at a time.
    """
    chol = jnp.linalg.cholesky(covariances)  # [K, d, d]
    eye = jnp.broadcast_to(jnp.eye(x.shape[1], dtype=x.dtype), chol.shape)
    inv = jax.vmap(lambda l, i: solve_triangular(l, i, lower=True))(chol, eye)  # [K, d, d] L^{-1}
    shift = einsum("kd,ked->ke", means, inv)  # [K, d] L^{-1} mu

    def one(args):
        inv_k, shift_k = args
        white = mm(x, inv_k.T) - shift_k[None, :]
        return jnp.sum(white**2, axis=-1)

    mahalanobis = lax.map(one, (inv, shift), batch_size=component_batch(means.shape[0]))  # [K, N]
    log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)  # [K]
    d_eff = dim_mask.sum()
    return -0.5 * (d_eff * math.log(2 * math.pi) + log_det[:, None] + mahalanobis).T


def _e_step(x, weights, means, covariances, dim_mask, sample_w):
    """(mean log-likelihood, log responsibilities [N, K])."""
    lp = _log_gaussians(x, means, covariances, dim_mask) + jnp.log(weights)[None, :]
    log_norm = logsumexp(lp, axis=1)
    mean_ll = jnp.sum(sample_w * log_norm) / sample_w.sum()
    return mean_ll, lp - log_norm[:, None]


def gmm_log_posteriors(gmm: Gmm, x, *, dim_mask=None):
    """[N, K] log responsibilities of each sample under `gmm`. x [N, d]."""
    dm = _dim_mask(dim_mask, x.shape[1], x.dtype)
    return _e_step(x * dm, gmm.weights, gmm.means, gmm.covariances, dm, jnp.ones(x.shape[:1], x.dtype))[1]


# The second moments x x^T of every sample, packed (upper triangle), are precomputed once when
# they fit in this many bytes; above it each EM pass forms them block by block (slower: the
# gather that packs them costs about twice the two GEMMs it feeds).
MOMENTS_BYTES = 1 << 29  # 512 MiB: N = 80,000 at d = 56 in float32
MOMENTS_BLOCK_BYTES = 1 << 25  # 32 MiB per block on the blocked path


def _packed_index(d: int):
    """Static (rows, cols, [d, d] position of (i, j) in the packed upper triangle)."""
    iu, ju = np.triu_indices(d)
    pos = np.zeros((d, d), np.int32)
    pos[iu, ju] = np.arange(iu.size)
    pos[ju, iu] = np.arange(iu.size)
    return iu, ju, pos


def _packed_moments(x, iu, ju):
    """[n, d(d+1)/2] products x_i x_j over the upper triangle (i <= j)."""
    return x[:, iu] * x[:, ju]


def _moment_sums(x, moments, w, weights, means, covariances, dim_mask, index):
    """One EM pass in moment form: the E-step under (weights, means, covariances) and the sums
    the M-step needs, without a per-component [N, d] residual.

    The Mahalanobis distance (x - mu)^T P (x - mu) = <x x^T, P> - 2 (P mu)^T x + mu^T P mu is a
    GEMM of the packed second moments [N, d(d+1)/2] against the packed precisions
    [d(d+1)/2, K]; the M-step's scatter sum_n r_nk x_n x_n^T is a GEMM of the responsibilities
    against the same moments. Two GEMMs with long inner dimensions replace 2 K thin ones
    (round-off: `fit_gmm`).

    Returns (sum_n w_n log p(x_n), N_k [K], sum r x [K, d], sum r x x^T packed [K, P]).
    """
    iu, ju, _ = index
    d = x.shape[1]
    chol = jnp.linalg.cholesky(covariances)  # [K, d, d]
    eye = jnp.broadcast_to(jnp.eye(d, dtype=x.dtype), chol.shape)
    inv = jax.vmap(lambda l, i: solve_triangular(l, i, lower=True))(chol, eye)  # L^{-1}
    prec = einsum("kji,kjl->kil", inv, inv)  # Sigma^{-1} = L^{-T} L^{-1}
    prec_mean = einsum("kij,kj->ki", prec, means)  # [K, d]
    quad_mean = jnp.sum(prec_mean * means, axis=1)  # [K]
    # [P, K] gathered from a [d, d, K] copy: laid out for the GEMM as it is (a transposed
    # operand made XLA:CPU's GEMM 2x slower here).
    off_diagonal_twice = jnp.where(iu == ju, 1.0, 2.0).astype(x.dtype)[:, None]
    packed_prec = jnp.transpose(prec, (1, 2, 0))[iu, ju] * off_diagonal_twice
    log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
    const = dim_mask.sum() * math.log(2 * math.pi) + log_det - 2 * jnp.log(weights)  # [K]

    def block(xb, mb, wb):
        maha = mm(mb, packed_prec) - 2 * mm(xb, prec_mean.T) + quad_mean[None, :]
        lp = -0.5 * (jnp.maximum(maha, 0) + const[None, :])
        log_norm = logsumexp(lp, axis=1)
        resp = jnp.exp(lp - log_norm[:, None]) * wb[:, None]
        return jnp.sum(wb * log_norm), resp.sum(0), mm(resp.T, xb), mm(resp.T, mb)

    if moments is not None:
        return block(x, moments, w)
    k = means.shape[0]
    zero = (jnp.zeros((), x.dtype), jnp.zeros((k,), x.dtype), jnp.zeros((k, d), x.dtype),
            jnp.zeros((k, iu.size), x.dtype))
    return _sum_over_row_blocks(block, zero, index, x, w)


def _sum_over_row_blocks(fn, zero, index, x, *per_row):
    """sum over row blocks of fn(x_b, packed moments of x_b, *per_row_b), a pytree shaped like
    `zero`. x [N, d] and per_row arrays [N, ...] are zero-padded to whole blocks (padded rows
    must add nothing: their weights are 0); one block's moments take about
    `MOMENTS_BLOCK_BYTES`, so the [N, d(d+1)/2] moments never exist at once."""
    iu, ju, _ = index
    n = x.shape[0]
    rows = max(1, min(n, MOMENTS_BLOCK_BYTES // (iu.size * x.dtype.itemsize)))
    nb = -(-n // rows)
    blocks = tuple(jnp.pad(a, ((0, nb * rows - n),) + ((0, 0),) * (a.ndim - 1)).reshape((nb, rows) + a.shape[1:])
                   for a in (x,) + per_row)

    def body(acc, args):
        out = fn(args[0], _packed_moments(args[0], iu, ju), *args[1:])
        return jax.tree.map(jnp.add, acc, out), None

    return lax.scan(body, zero, blocks)[0]


def _params_from_sums(nk, sx, sxx, dim_mask, reg_covar, index):
    """M-step from the sums: weights [K], means [K, d], covariances [K, d, d] around the means
    plus `reg_covar` on the diagonal (masked dimensions: unit variance, neutral)."""
    _, _, pos = index
    nk = nk + 10 * eps(sx.dtype)  # as scikit-learn: no empty component divides by 0
    means = sx / nk[:, None]
    cov = sxx[:, pos] / nk[:, None, None] - means[:, :, None] * means[:, None, :]
    valid = jnp.outer(dim_mask, dim_mask)
    cov = cov * valid + jnp.diag(reg_covar * dim_mask + (1 - dim_mask))
    return nk / nk.sum(), means, cov


@partial(jax.jit, static_argnames=("max_iters",))
def fit_gmm(x, means_init, *, sample_mask=None, dim_mask=None, max_iters: int = 100, tol: float = 1e-3,
            reg_covar: float = 1e-6) -> Gmm:
    """Fit a full-covariance Gaussian mixture by EM, starting from given means.

    Initialisation (as scikit-learn's when it is given `means_init`): each sample is assigned to
    its nearest initial mean (ties to the lowest index); the initial weights and covariances are
    those of this hard clustering (covariances around the clusters' own means, plus `reg_covar`
    on the diagonal); the initial means are kept as given. EM then alternates E and M steps;
    it stops when the mean log-likelihood of the E-step changes by less than `tol`, or after
    `max_iters` iterations (scikit-learn's rule).

    Each EM iteration is two GEMMs against the samples' packed second moments (`_moment_sums`),
    computed once (N d (d + 1) / 2 numbers, below `MOMENTS_BYTES`) or block by block.
    Round-off: the moment form's covariances carry an error of about eps |x_i x_j|, below the
    float32 floor on the diagonal (10 d eps times the largest variance) for samples within
    sqrt(10 d) standard deviations of the origin; scikit-learn's centred form carries eps
    sigma_i sigma_j. In float64 both are far below any tolerance that matters.

    Args:
      x: [N, d] samples.
      means_init: [K, d] initial means.
      sample_mask: optional [N] 0/1 weights.
      dim_mask: optional [d] 0/1; masked dimensions are ignored (unit variance, zero data).
      max_iters: EM iterations at most (static).
      tol: convergence threshold on the change of the mean log-likelihood.
      reg_covar: added to every covariance's diagonal (at least 10 d eps(dtype) times the largest
        data variance, so that float32 Cholesky factorisations of thin components succeed).

    Returns:
      Gmm.
    """
    x = jnp.asarray(x)
    dtype = x.dtype if x.dtype == jnp.float64 else jnp.float32
    x = x.astype(dtype)
    n, d = x.shape
    dm = _dim_mask(dim_mask, d, dtype)
    w = jnp.ones((n,), dtype) if sample_mask is None else jnp.asarray(sample_mask, dtype)
    x = x * dm
    # float32 cannot factor a covariance whose spread is below its round-off: floor the added
    # diagonal at 10 d eps times the largest data variance (negligible in float64, where this
    # equals scikit-learn's reg_covar on any sensible data).
    variance = jnp.sum(w[:, None] * (x - mm(w, x) / w.sum()) ** 2, axis=0) / w.sum()
    reg_covar = jnp.maximum(reg_covar, 10 * dm.sum() * eps(dtype) * jnp.max(variance))
    means_init = jnp.asarray(means_init, dtype) * dm
    # Nearest initial mean: |mu|^2 - 2 x.mu (|x|^2 is the same for every k), no [N, K, d] array.
    dist = jnp.sum(means_init**2, axis=1)[None, :] - 2 * mm(x, means_init.T)
    hard = jax.nn.one_hot(jnp.argmin(dist, axis=1), means_init.shape[0], dtype=dtype) * w[:, None]

    index = _packed_index(d)
    moments = None
    if n * index[0].size * x.dtype.itemsize <= MOMENTS_BYTES:
        moments = _packed_moments(x, *index[:2])
    # The hard clustering's scatters block by block even when `moments` is stored: a second
    # consumer of `moments` outside the EM loop made XLA:CPU form (and transpose) it twice.
    sxx = _sum_over_row_blocks(lambda xb, mb, hb: mm(hb.T, mb),
                               jnp.zeros((hard.shape[1], index[0].size), dtype), index, x, hard)
    nk, sx = hard.sum(0), mm(hard.T, x)
    weights, _, covs = _params_from_sums(nk, sx, sxx, dm, reg_covar, index)
    means = means_init

    def step(state):
        weights, means, covs, _, ll, it = state
        total, nk, sx, sxx = _moment_sums(x, moments, w, weights, means, covs, dm, index)
        new_weights, new_means, new_covs = _params_from_sums(nk, sx, sxx, dm, reg_covar, index)
        return new_weights, new_means, new_covs, ll, total / w.sum(), it + 1

    def running(state):
        *_, prev, ll, it = state
        return (it < max_iters) & ~(jnp.abs(ll - prev) < tol)

    inf = jnp.asarray(jnp.inf, dtype)
    weights, means, covs, _, ll, it = lax.while_loop(running, step, (weights, means, covs, -inf, -inf, 0))
    return Gmm(weights, means, covs, ll, it)


def kmeans_plus_plus(x, num_components: int, key, sample_mask=None):
    """k-means++ seeding: [K, d] means drawn from the samples, each with probability proportional
    to its squared distance to the nearest mean chosen so far (the first uniformly)."""
    n = x.shape[0]
    w = jnp.ones((n,), x.dtype) if sample_mask is None else jnp.asarray(sample_mask, x.dtype)
    keys = jax.random.split(key, num_components)
    first = jax.random.choice(keys[0], n, p=w / w.sum())
    means = jnp.zeros((num_components, x.shape[1]), x.dtype).at[0].set(x[first])
    d2 = jnp.sum((x - x[first]) ** 2, axis=1)

    def body(i, carry):
        means, d2 = carry
        p = w * d2
        total = p.sum()
        p = jnp.where(total > 0, p / jnp.where(total > 0, total, 1), w / w.sum())
        pick = jax.random.choice(keys[i], n, p=p)
        means = means.at[i].set(x[pick])
        return means, jnp.minimum(d2, jnp.sum((x - x[pick]) ** 2, axis=1))

    means, _ = lax.fori_loop(1, num_components, body, (means, d2))
    return means


def lloyd(x, means, num_iters: int, sample_mask=None):
    """`num_iters` Lloyd (k-means) steps from `means` [K, d]; an empty cluster keeps its mean.
    scikit-learn initialises its mixtures with full k-means; a few steps after k-means++ seeding
    start EM as close to the optimum."""
    w = jnp.ones(x.shape[:1], x.dtype) if sample_mask is None else jnp.asarray(sample_mask, x.dtype)

    def body(_, means):
        dist = jnp.sum(means**2, axis=1)[None, :] - 2 * mm(x, means.T)  # |x|^2 is the same for all k
        hard = jax.nn.one_hot(jnp.argmin(dist, axis=1), means.shape[0], dtype=x.dtype) * w[:, None]
        counts = hard.sum(0)
        new = mm(hard.T, x) / jnp.where(counts > 0, counts, 1)[:, None]
        return jnp.where(counts[:, None] > 0, new, means)

    return lax.fori_loop(0, num_iters, body, means)


def variance_components(evals, variance: float):
    """Number of leading principal components whose cumulative explained-variance ratio first
    exceeds `variance` (scikit-learn's PCA(n_components=variance) rule). evals [r] descending."""
    ratio = jnp.cumsum(evals) / jnp.sum(evals)
    return jnp.minimum(jnp.sum(ratio <= variance) + 1, evals.shape[0])


def nleep_fit_from_stats(fs: FeatureStats, key, *, num_classes: int, variance: float = 0.8,
                         components_per_class: int = 5, max_iters: int = MAX_ITERS, tol: float = 1e-3,
                         reg_covar: float = 1e-6, max_dims: int | None = None, kmeans_iters: int = 10):
    """(N-LEEP, the fitted `Gmm`) from the shared decomposition: `nleep_from_stats` with the
    mixture (its `num_iters` tells how many EM iterations ran)."""
    r = fs.evals.shape[0]
    kmax = r if max_dims is None else min(max_dims, r)
    x = pc_scores(fs, kmax)
    k = variance_components(fs.evals, variance)
    dim_mask = (jnp.arange(kmax) < k).astype(x.dtype)
    x = x * dim_mask
    w = fs.labels.weights
    means0 = lloyd(x, kmeans_plus_plus(x, components_per_class * num_classes, key, w), kmeans_iters, w)
    gmm = fit_gmm(x, means0, sample_mask=w, dim_mask=dim_mask, max_iters=max_iters, tol=tol,
                  reg_covar=reg_covar)
    post = jnp.exp(gmm_log_posteriors(gmm, x, dim_mask=dim_mask)) * w[:, None]
    return leep_from_onehot(post, fs.labels.onehot), gmm


def nleep_from_stats(fs: FeatureStats, key, *, num_classes: int, variance: float = 0.8,
                     components_per_class: int = 5, max_iters: int = MAX_ITERS, tol: float = 1e-3,
                     reg_covar: float = 1e-6, max_dims: int | None = None, kmeans_iters: int = 10):
    """N-LEEP from the shared decomposition (see `nleep`). `max_dims` (static) bounds the PCA
    dimension; None uses every component (always right, slower)."""
    return nleep_fit_from_stats(fs, key, num_classes=num_classes, variance=variance,
                                components_per_class=components_per_class, max_iters=max_iters, tol=tol,
                                reg_covar=reg_covar, max_dims=max_dims, kmeans_iters=kmeans_iters)[0]


def nleep_dims(evals, variance: float = 0.8, multiple: int = 8) -> int:
    """Host-side: a static bound for N-LEEP's PCA dimension, the number of components that explain
    `variance` rounded up to a multiple of 8 (EM costs K N d^2, so tight buckets pay: 50 -> 56
    costs 12% less than 64; a bucket keeps recompilation to one per 8 dimensions)."""
    k = int(variance_components(evals, variance))
    return min(int(evals.shape[0]), -(-k // multiple) * multiple)


_nleep_jit = jax.jit(nleep_from_stats, static_argnames=(
    "num_classes", "variance", "components_per_class", "max_iters", "tol", "reg_covar", "max_dims",
    "kmeans_iters"))
_stats_jit = jax.jit(partial(feature_stats, equilibrate=False), static_argnames=("num_classes", "rcond"))


def nleep(features, labels, *, num_classes: int, key=None, sample_mask=None, feature_mask=None,
          variance: float = 0.8, components_per_class: int = 5, max_iters: int = MAX_ITERS,
          tol: float = 1e-3, reg_covar: float = 1e-6, max_dims: int | None = None, kmeans_iters: int = 10):
    """N-LEEP: LEEP with the source classifier replaced by a Gaussian mixture on PCA features.

    Li et al., CVPR 2021. Project the centred features onto the fewest principal components that
    explain more than `variance` (80%) of the variance; fit a full-covariance Gaussian mixture
    with components_per_class * C components by EM (k-means++ seeding from `key`); then LEEP with
    the mixture's posteriors theta_i(k) in place of the source probabilities.

    Args:
      features: [N, D] float features.
      labels: [N] int labels in [0, num_classes).
      num_classes: C (static).
      key: PRNG key for the k-means++ seeding (default PRNGKey(0)).
      sample_mask: optional [N] 0/1 weights.
      feature_mask: optional [D] 0/1 weights.
      variance: fraction of variance the PCA keeps.
      components_per_class: mixture components per class (5 in the paper).
      max_iters, tol, reg_covar: EM controls: scikit-learn's tol (1e-3 on the mean
        log-likelihood) and reg_covar; at most `MAX_ITERS` (30) iterations, not its 100 (below).
      max_dims: static bound on the PCA dimension. None: computed on the host from the spectrum
        (rounded up to a multiple of 8) when called eagerly, every component under a trace.

    Returns:
      scalar N-LEEP (<= 0; higher is better).

    Example:
      >>> nleep(features, labels, num_classes=3, key=jax.random.PRNGKey(0))

    Differences from the reference code: the mixture is fitted in JAX from k-means++ seeding
    and a few Lloyd steps rather than scikit-learn's full k-means, so values differ by the randomness of
    EM's local optimum (as between two seeds of the reference); PCA is shared with the other scores.
    Lloyd's steps stop after `kmeans_iters` rather than at convergence.

    Iterations: with 5 C full-covariance components EM ends in a slow tail whose per-step gain
    in mean log-likelihood decays smoothly at large N and jitters at small N, so scikit-learn's
    rule (stop when the gain drops below tol) fired after 35 iterations at N = 10,000 and 89 at
    N = 50,000 on the same synthetic features: cost K N d^2 per iteration times a count growing
    with N. Along that tail N-LEEP moves by less than its spread between k-means++ seeds
    (benchmarks/quality_nleep.py, docs/scorers.md), so the budget is 30 iterations: cost
    linear in N. Pass `max_iters=100` for scikit-learn's budget.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    fs = _stats_jit(features, labels, num_classes=num_classes, sample_mask=sample_mask,
                    feature_mask=feature_mask)
    if max_dims is None and not isinstance(fs.evals, jax.core.Tracer):
        max_dims = nleep_dims(fs.evals, variance)
    return _nleep_jit(fs, key, num_classes=num_classes, variance=variance,
                      components_per_class=components_per_class, max_iters=max_iters, tol=tol,
                      reg_covar=reg_covar, max_dims=max_dims, kmeans_iters=kmeans_iters)
