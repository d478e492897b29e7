"""SFDA, Self-challenging Fisher Discriminant Analysis (Shao et al., "Not All Models Are Equal:
Predicting Model Transferability in a Self-challenging Fisher Space", ECCV 2022)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jscore._numerics import mm, safe_div
from jscore.class_scatter import (class_means, kept_pc_scores, power_iteration_top_eigenvalue, scatter,
                                  shrunk_lda_logits, true_class_mean, within_deviations)
from jscore.stats import FeatureStats, feature_stats

SHRINKAGE_FLOOR = 1e-10  # the authors' floor of the adaptive shrinkage


def _ones_in_basis(fs: FeatureStats):
    """V^T 1_D: the all-ones vector of the feature columns in the principal basis (kept directions;
    the authors' power iteration starts from Sw 1_D)."""
    kept = fs.kept
    if fs.is_gram:
        root = jnp.where(kept, jnp.sqrt(fs.evals), 1)
        return jnp.where(kept, mm(fs.evecs.T, fs.xc.sum(axis=1)) / root, 0)
    return jnp.where(kept, fs.evecs.sum(axis=0), 0)


def sfda_shrinkage(within_cov, start, power_iters: int | None):
    """The adaptive shrinkage max(exp(-5 lambda_max(Sw)), 1e-10): lambda_max by the authors'
    `power_iters`-step power method from `start`, or exactly (eigvalsh) when power_iters is None."""
    if power_iters is None:
        lam = jnp.linalg.eigvalsh(within_cov)[-1]
    else:
        lam = power_iteration_top_eigenvalue(within_cov, start, power_iters)
    return jnp.maximum(jnp.exp(-5 * lam), SHRINKAGE_FLOOR)


def sfda_from_stats(fs: FeatureStats, *, shrinkage: float | None = None, power_iters: int | None = 3):
    """SFDA from the shared decomposition (see `sfda`)."""
    ls = fs.labels
    z = kept_pc_scores(fs)  # [N, r] centred data in the principal basis
    dims = fs.d_eff
    # Stage 1: shrunk LDA on the features.
    means = class_means(z, ls)
    within = scatter(within_deviations(z, ls, means))
    if shrinkage is None:
        start = mm(within, _ones_in_basis(fs)) / ls.n
        s = sfda_shrinkage(within / ls.n, start, power_iters)
    else:
        s = jnp.asarray(shrinkage, z.dtype)
    probs = jax.nn.softmax(shrunk_lda_logits(z, ls, means, within, s, dims), axis=1)
    # ConfMix: soften the posteriors with a second softmax (over the present classes) and move each
    # sample towards the mean of the other classes' means by 1 - p(own class).
    present = ls.counts > 0
    soft = jax.nn.softmax(jnp.where(present[None, :], probs, -jnp.inf), axis=1)
    p_own = jnp.sum(soft * (ls.onehot > 0), axis=1, keepdims=True)  # [N, 1]; 0 on masked rows
    num_present = present.sum()
    outer = safe_div(jnp.sum(jnp.where(present[:, None], means, 0), axis=0)[None, :] - means,
                     num_present - 1)  # [C, r]
    z2 = p_own * z + (1 - p_own) * mm(ls.onehot, outer)
    # Stage 2: the same LDA, same shrinkage, on the mixed features.
    means2 = class_means(z2, ls)
    within2 = scatter(within_deviations(z2, ls, means2))
    probs2 = jax.nn.softmax(shrunk_lda_logits(z2, ls, means2, within2, s, dims), axis=1)
    return true_class_mean(probs2, ls)


@partial(jax.jit, static_argnames=("num_classes", "shrinkage", "power_iters"))
def sfda(features, labels, *, num_classes: int, sample_mask=None, feature_mask=None,
         shrinkage: float | None = None, power_iters: int | None = 3):
    """SFDA: mean posterior of the true class under a shrunk Fisher discriminant, refitted after the
    ConfMix self-challenge.

    Shao et al., ECCV 2022. Stage 1 fits linear discriminant analysis with the within-class
    covariance Sw = sum_c (n_c / n) cov_c (ddof 0) shrunk towards its mean eigenvalue:
    Sigma = (1 - s) Sw + s (tr Sw / D) I, with the adaptive s = max(exp(-5 lambda_max(Sw)), 1e-10);
    the posteriors are p(c | x) = softmax_c(x^T Sigma^{-1} m_c - m_c^T Sigma^{-1} m_c / 2 + log pi_c).
    ConfMix softens them with a second softmax, q_i = softmax(p_i)[y_i], and mixes each sample
    with the mean of the other classes' means: x_i <- q_i x_i + (1 - q_i) mean_{c != y_i} m_c.
    Stage 2 refits the same LDA (same s) on the mixed features, and
    SFDA = (1/n) sum_i p_2(y_i | x_i)  (in (0, 1]; higher is better).

    Args:
      features: [N, D] float features.
      labels: [N] int labels in [0, num_classes).
      num_classes: C (static). Absent classes get zero posterior and no prior; the "other
        classes" of ConfMix are the present ones.
      sample_mask: optional [N] 0/1 weights. feature_mask: optional [D] 0/1 weights (D in the
        trace target is the number of valid columns).
      shrinkage: a fixed s in (0, 1] instead of the adaptive rule (static).
      power_iters: steps of the authors' power method for lambda_max(Sw) (default 3, as
        published); None computes lambda_max exactly.

    Returns:
      scalar SFDA.

    Example:
      >>> sfda(features, labels, num_classes=5)

    Differences from the reference code: the LDA coefficients m_c^T Sigma^{-1} come from eigh of
    Sw instead of the generalised eigenproblem (Sb, Sigma), whose eigenvectors E satisfy
    E E^T = Sigma^{-1}, so the coefficients are the same; everything is computed in the principal
    basis of the shared decomposition (the class statistics are equivariant under that rotation;
    the power method starts from the same vector Sw 1_D); C is `num_classes`.
    """
    fs = feature_stats(features, labels, num_classes=num_classes, sample_mask=sample_mask,
                       feature_mask=feature_mask, equilibrate=False)
    return sfda_from_stats(fs, shrinkage=shrinkage, power_iters=power_iters)
