"""H-score (Bao et al., "An Information-theoretic Approach to Transferability in Task Transfer
Learning", ICIP 2019)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jscore.stats import FeatureStats, feature_stats, rank_mask


def hscore_from_stats(fs: FeatureStats, *, rcond: float | None = None):
    """H-score from the shared decomposition (see `hscore`)."""
    if rcond is None:
        kept = fs.kept
    else:
        kept = rank_mask(fs.evals, rcond)
    # tr(Sigma_f^+ Sigma_b) = sum_c n_c sum_k (V^T (mu_c - mu))_k^2 / s_k over the kept directions.
    inv = jnp.where(kept, 1 / jnp.where(kept, fs.evals, 1), 0)
    return jnp.sum(fs.labels.counts[:, None] * fs.class_proj**2 * inv[None, :])


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
                       feature_mask=feature_mask, rcond=rcond)
    return hscore_from_stats(fs)
