"""Class statistics in the principal basis of the shared decomposition: principal-component
scores, class means, within-class deviations and scatters, and the linear-discriminant
posterior that SFDA, ETran's LDA term and NCTI share.

All of these take a `jscore.stats.FeatureStats` (one eigendecomposition per feature matrix) and
work in its r-dimensional principal basis (r = min(N, D)) instead of the D feature columns: the
centred data live in that span, and everything here (class means, scatters, LDA posteriors) is
equivariant under the orthonormal change of basis, so the results equal the D-column ones.

Masked rows are zero in every [N, .] array (their one-hot rows are zero), so they are neutral.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jscore._numerics import eigh_descending, mm, mm_tn, safe_div
from jscore.stats import FeatureStats, LabelStats, default_rcond


def kept_pc_scores(fs: FeatureStats, k: int | None = None):
    """[N, k] centred principal-component scores on the top k directions (all r by default).

    Directions below the numerical-rank cut-off (`fs.kept`) are set to exactly zero: in float32
    the eigenvectors of round-off eigenvalues are arbitrary, and would otherwise add noise of
    about sqrt(eps) of the data's scale.
    """
    r = fs.evals.shape[0]
    k = r if k is None else min(k, r)
    kept = fs.kept[:k]
    if fs.is_gram:
        z = fs.evecs[:, :k] * jnp.sqrt(jnp.where(kept, fs.evals[:k], 0))[None, :]
    elif fs.pc is not None:  # formed by the eigenvalue re-measure
        z = fs.pc[:, :k]
    else:
        z = mm(fs.xc, fs.evecs[:, :k])
    return jnp.where(kept[None, :], z, 0) * fs.labels.weights[:, None]


def class_means(z, ls: LabelStats):
    """[C, k] class means of the rows of z [N, k]; zero for absent classes."""
    return safe_div(mm(ls.onehot.T, z), ls.counts[:, None])


def within_deviations(z, ls: LabelStats, means):
    """[N, k] each valid row minus its class mean (two-pass: accurate when classes are far apart
    relative to their spread); zero on masked rows (0/1 sample weights, masked rows of z zero)."""
    return z - mm(ls.onehot, means)


def scatter(a):
    """a^T a at the highest matmul precision, exactly symmetric."""
    s = mm(a.T, a)
    return 0.5 * (s + s.T)


def power_iteration_top_eigenvalue(a, start, iters: int):
    """The SFDA authors' `iterative_A`: `iters` double steps of the power method on the symmetric
    matrix `a` from the vector `start`, returning x^T A y for the last two normalised iterates
    (a slight underestimate of the largest eigenvalue after few steps)."""

    def step(_, carry):
        x, _y = carry
        t = mm(a, x)
        y = t / jnp.linalg.norm(t)
        t = mm(a, y)
        return t / jnp.linalg.norm(t), y

    x0 = start
    x, y = jax.lax.fori_loop(0, iters, step, (x0, x0))
    return jnp.dot(x, mm(a, y))


def shrunk_lda_logits(z, ls: LabelStats, means, within, shrinkage, num_dims):
    """Linear-discriminant log-posteriors (up to a per-row constant) with a shrunk within-class
    covariance, as scikit-learn's LinearDiscriminantAnalysis(solver="eigen", shrinkage=s) and
    the SFDA authors' code compute them.

    Sigma = (1 - s) Sw + s (tr Sw / num_dims) I with Sw = within / n (the prior-weighted class
    covariances, ddof 0); logits_ic = z_i^T Sigma^{-1} m_c - m_c^T Sigma^{-1} m_c / 2 + log pi_c,
    -inf for absent classes. The inverse goes through eigh of Sw (robust when Sw is singular and
    s tiny; the published generalised eigenproblem gives the same coefficients, means Sigma^{-1}).

    Args:
      z: [N, k] rows (centred or not: the softmax is invariant to a common shift).
      ls: the label statistics. means: [C, k] class means. within: [k, k] within-class scatter
      (sum, not mean). shrinkage: scalar s. num_dims: the feature count D of the trace target.
    """
    n = ls.n
    sw = within / n
    mu = jnp.trace(sw) / num_dims
    evals, evecs = eigh_descending(sw)
    # Re-measure each eigenvalue from the data (as feature_stats does): the float32 eigenvalues of
    # a scatter err by ~eps times the largest, which the 1/eigenvalue weights of the weak
    # directions turn into large logit errors; |dev v|^2 / n errs by ~eps times its own size.
    dev = within_deviations(z, ls, means)
    evals = jnp.sum(mm(dev, evecs) ** 2, axis=0) / n
    # Round-off floor: re-measured, an eigenvalue errs by ~eps of its own size plus ~eps^2 of the
    # largest, so only those below rcond^2 * the largest are unresolved; with the adaptive
    # shrinkage down to 1e-10 they would get weights up to 1e10, so they are raised to it. (The
    # floor was rcond * the largest before the re-measure: in float32 it lifted the weak
    # within-class directions of real-looking features and cost SFDA 4-7%.)
    floor = default_rcond(z.shape[0], z.shape[1], z.dtype) ** 2 * jnp.max(evals)
    evals = jnp.where(evals > 0, jnp.maximum(evals, floor), evals)
    inv = 1 / ((1 - shrinkage) * evals + shrinkage * mu)
    g = mm(evecs * inv[None, :], mm_tn(evecs, means.T))  # [k, C] Sigma^{-1} m_c
    present = ls.counts > 0
    log_prior = jnp.log(jnp.where(present, ls.counts / n, 1))
    logits = mm(z, g) - 0.5 * jnp.sum(means.T * g, axis=0)[None, :] + log_prior[None, :]
    return jnp.where(present[None, :], logits, -jnp.inf)


def true_class_mean(probs, ls: LabelStats):
    """(1/n) sum_i w_i P[i, y_i]: the mean probability of each sample's own label."""
    return safe_div(jnp.sum(probs * ls.onehot), ls.n)
