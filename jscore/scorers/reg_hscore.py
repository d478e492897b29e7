"""Regularised (shrinkage) H-score (Ibrahim et al., "Newer is not always better: Rethinking
transferability metrics, their peculiarities, stability and performance", NeurIPS 2021 / ECML 2022)."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jscore._numerics import safe_div
from jscore.stats import FeatureStats, feature_stats


class Shrinkage(NamedTuple):
    """Ledoit-Wolf shrinkage `alpha` in [0, 1] and the target scale `mu` = tr(Sigma) / D."""

    alpha: jax.Array
    mu: jax.Array


def ledoit_wolf_from_stats(fs: FeatureStats) -> Shrinkage:
    """Ledoit-Wolf (2004) shrinkage of the covariance towards mu * I, from the shared spectrum.

    With Sigma = S / n and x_i the centred rows:
      mu = tr(Sigma) / D,  delta = ||Sigma - mu I||_F^2 / D,
      beta = (sum_i ||x_i||^4 / n - ||Sigma||_F^2) / (D n), clipped to delta,
      alpha = beta / delta (0 when beta = 0).
    This is scikit-learn's `ledoit_wolf_shrinkage`, but both Frobenius norms come from the
    eigenvalues we already have, and ||Sigma - mu I||^2 is summed per eigenvalue to avoid the
    cancellation of ||Sigma||^2 - D mu^2.
    """
    n = fs.labels.n
    d = fs.d_eff
    s2 = _scale_sq(fs)  # computed on Xc / scale (a power of two): |x_i|^4 would overflow at 1e10
    lam = fs.evals / s2 / n  # eigenvalues of Sigma (the computed ones; the rest are 0)
    mu = jnp.sum(lam) / d
    # Computed pairs beyond the valid dimensions (padding) are zero and must not count.
    num_missing = d - lam.shape[0]
    delta = (jnp.sum((lam - mu) ** 2) + num_missing * mu**2) / d
    if fs.streamed:  # accumulated in the same units by jscore.moments
        beta_ = fs.row_norm4
    else:
        sq_norms = jnp.sum((fs.xc / jnp.sqrt(s2)) ** 2, axis=1)
        beta_ = jnp.sum(sq_norms**2)
    frob_sq = jnp.sum(lam**2)  # ||Sigma||_F^2
    beta = (beta_ / n - frob_sq) / (d * n)
    beta = jnp.minimum(beta, delta)
    alpha = jnp.where(beta == 0, 0.0, safe_div(beta, delta))
    return Shrinkage(alpha.astype(lam.dtype), mu * s2)


def _scale_sq(fs: FeatureStats):
    return jnp.ones((), fs.xc.dtype) if fs.scale is None else fs.scale**2


def reg_hscore_from_stats(fs: FeatureStats):
    """Regularised H-score from the shared decomposition (see `reg_hscore`)."""
    n = fs.labels.n
    alpha, mu = ledoit_wolf_from_stats(fs)
    # Sigma_LW shares Sigma's eigenvectors: eigenvalues (1 - a) s_k / n + a mu. The class-mean
    # deviations lie in the span of the data, so only the computed directions matter.
    s2 = _scale_sq(fs)  # in units of Xc / scale (exact): invariant, and no overflow
    shrunk = (1 - alpha) * fs.evals / s2 / n + alpha * mu / s2
    ok = fs.kept | (alpha * mu > 0)
    inv = jnp.where(ok, 1 / jnp.where(ok, shrunk, 1), 0)
    between = (fs.labels.counts / n)[:, None] * fs.class_proj**2 / s2
    return (1 - alpha) * jnp.sum(between * inv[None, :])


@partial(jax.jit, static_argnames=("num_classes",))
def reg_hscore(features, labels, *, num_classes: int, sample_mask=None, feature_mask=None):
    """Regularised H-score: H-score with a Ledoit-Wolf shrunk feature covariance.

    Ibrahim et al., NeurIPS 2021. H_a = tr(Sigma_LW^{-1} (1 - a) cov(E[f | y])), with
    Sigma_LW = (1 - a) Sigma + a (tr(Sigma) / D) I and a the Ledoit-Wolf shrinkage intensity
    computed from the centred features (see `ledoit_wolf_from_stats`). ddof 0 throughout.

    Args:
      features: [N, D] float features.
      labels: [N] int labels in [0, num_classes).
      num_classes: C (static). Absent classes contribute 0.
      sample_mask: optional [N] 0/1 weights.
      feature_mask: optional [D] 0/1 weights (D counts only the valid columns).

    Returns:
      scalar regularised H-score (higher is better).

    Example:
      >>> reg_hscore(features, labels, num_classes=3)

    Differences from the reference code: no explicit inverse (the shrunk covariance is inverted in
    the shared eigenbasis); the between-class covariance uses ddof 0 where the published code uses
    np.cov (ddof 1), a constant factor n / (n - 1) that leaves rankings unchanged.
    """
    fs = feature_stats(features, labels, num_classes=num_classes, sample_mask=sample_mask,
                       feature_mask=feature_mask, equilibrate=False)
    return reg_hscore_from_stats(fs)
