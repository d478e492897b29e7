"""H-score (Bao et al., "An Information-theoretic Approach to Transferability in Task Transfer
Learning", ICIP 2019)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jscore._numerics import mm, safe_div
from jscore.stats import FeatureStats, feature_stats, rank_mask


def _pinv_apply(evecs, evals, kept, r):
    """r [C, D] -> r S^+ over the kept eigenpairs of S (rows are vectors)."""
    inv = jnp.where(kept, 1 / jnp.where(kept, evals, 1), 0)
    return mm(mm(r, evecs) * inv[None, :], evecs.T)


def hscore_from_stats(fs: FeatureStats, *, rcond: float | None = None, refine_steps: int = 2):
    """H-score from the shared decomposition (see `hscore`).

    H-score does not change when a column of the features is scaled, so it is computed from the
    column-equilibrated decomposition (`fs.eq_*`). In the scatter path (N > D) the solves
    x_c = S^+ d_c (d_c = mu_c - mu, equilibrated) are refined `refine_steps` times against the
    data (residual d_c - Xs^T (Xs x_c), O(N D C) each) and H is taken in the variational form
    sum_c n_c (2 d_c^T x_c - |Xs x_c|^2), whose error is quadratic in that of x_c: the float32
    Gram's round-off (about eps * the largest eigenvalue) then no longer limits the result.
    """
    if fs.eq_evals is None:  # a FeatureStats built without the equilibrated part
        kept = fs.kept if rcond is None else rank_mask(fs.evals, rcond)
        inv = jnp.where(kept, 1 / jnp.where(kept, fs.evals, 1), 0)
        return jnp.sum(fs.labels.counts[:, None] * fs.class_proj**2 * inv[None, :])
    kept = fs.eq_kept if rcond is None else rank_mask(fs.eq_evals, rcond)
    counts = fs.labels.counts
    onehot = fs.labels.onehot
    if fs.is_gram:
        # H = sum_c |U_kept^T e_c|^2 / n_c: only the span of the kept directions matters.
        proj = mm(onehot.T, fs.eq_evecs) * kept[None, :]
        return jnp.sum(safe_div(jnp.sum(proj**2, axis=1), counts))
    xs = fs.xc / fs.col_scale[None, :]
    d = safe_div(mm(onehot.T, xs), counts[:, None])  # [C, D]
    x = _pinv_apply(fs.eq_evecs, fs.eq_evals, kept, d)
    for _ in range(refine_steps):
        sx = mm(mm(xs, x.T).T, xs)  # [C, D] rows S x_c, from the data
        x = x + _pinv_apply(fs.eq_evecs, fs.eq_evals, kept, d - sx)
    fitted = mm(xs, x.T)  # [N, C]
    return jnp.sum(counts * (2 * jnp.sum(d * x, axis=1) - jnp.sum(fitted**2, axis=0)))


@partial(jax.jit, static_argnames=("num_classes", "rcond"))
def hscore(features, labels, *, num_classes: int, sample_mask=None, feature_mask=None,
           rcond: float | None = None):
    """H-score: how much of the feature covariance the class means explain.

    Bao et al., ICIP 2019. H(f) = tr(cov(f)^+ cov(E[f | y])), with cov(f) the feature covariance
    and cov(E[f|y]) = sum_c (n_c / n)(mu_c - mu)(mu_c - mu)^T the between-class covariance
    (ddof 0 for both; the published code's ddof 1 cancels). 0 <= H <= C - 1.

    Args:
      features: [N, D] float features.
      labels: [N] int labels in [0, num_classes).
      num_classes: C (static). Absent classes contribute 0.
      sample_mask: optional [N] 0/1 weights; masked rows are exactly neutral.
      feature_mask: optional [D] 0/1 weights; masked columns are exactly neutral.
      rcond: eigenvalues of the covariance below rcond * the largest are treated as zero;
        default 10 sqrt(max(N, D)) eps(dtype) (see `jscore.stats.default_rcond`).

    Returns:
      scalar H-score (higher is better).

    Example:
      >>> hscore(jnp.array([[0.], [1.], [10.], [11.]]), jnp.array([0, 0, 1, 1]), num_classes=2)
      # = 25 / 25.25 ~= 0.990

    Differences from the reference code: the pseudo-inverse is taken through the eigendecomposition
    of the smaller Gram with a numerical-rank cut-off instead of `pinv(rcond=1e-15)`, so the bound
    C - 1 holds on ill-conditioned (e.g. ViT) features; C is `num_classes`, not max(label) + 1.
    """
    fs = feature_stats(features, labels, num_classes=num_classes, sample_mask=sample_mask,
                       feature_mask=feature_mask, spectrum=False)
    return hscore_from_stats(fs, rcond=rcond)
