"""ETran, Energy-based Transferability estimation (Gholami et al., "ETran: Energy-Based
Transferability Estimation", ICCV 2023): the energy term, the LDA term, and their min-max
combination over a set of models."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jscore._numerics import as_mask, mm
from jscore.class_scatter import (class_means, kept_pc_scores, scatter, shrunk_lda_logits,
                                  true_class_mean, within_deviations)
from jscore.scorers.sfda import _ones_in_basis, sfda_shrinkage
from jscore.stats import FeatureStats, feature_stats

TAILS = ("bottom", "top")
LDA_FORMS = ("published", "paper")


def energy_count(num_valid, percent: float):
    """Samples averaged by the energy term: the authors' int(10 percent) * n // 1000 (so
    `percent` is in per cent: 0.5 -> 0.5% of the samples), at least 1."""
    return jnp.maximum((int(10 * percent) * num_valid.astype(jnp.int32)) // 1000, 1)


def raw_features(fs: FeatureStats):
    """[N, D] the (uncentred) valid features back from the shared statistics: zero on masked rows
    and on masked columns."""
    return (fs.xc + fs.mean[None, :]) * fs.labels.weights[:, None]


def etran_energy_from_stats(fs: FeatureStats, feature_mask=None, *, percent: float = 0.5,
                            tail: str = "bottom"):
    """ETran's energy term from the shared statistics (see `etran_energy`)."""
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")
    x = raw_features(fs)
    fmask = as_mask(feature_mask, x.shape[1], x.dtype)
    lse = jax.nn.logsumexp(jnp.where(fmask[None, :] > 0, x, -jnp.inf), axis=1)  # [N]
    valid = fs.labels.weights > 0
    k = energy_count(fs.labels.n, percent)
    # Sort the valid samples' log-sum-exp (masked rows last) and average the first k.
    key = lse if tail == "bottom" else -lse
    ordered = jnp.sort(jnp.where(valid, key, jnp.inf))
    take = jnp.arange(ordered.shape[0]) < k
    total = jnp.sum(jnp.where(take, ordered, 0))
    return (total if tail == "bottom" else -total) / k


def nearest_mean_logits(xc, means, counts, n):
    """[N, C] logits of ETran's published LDA term: x_i^T m_c - |m_c|^2 / 2 + log(n_c / n) for
    centred rows xc [N, D] and centred class means [C, D]; -inf for absent classes. Shared by the
    one-shot form and the streamed second pass (`jscore.streaming`)."""
    present = counts > 0
    log_prior = jnp.log(jnp.where(present, counts / n, 1))
    logits = mm(xc, means.T) - 0.5 * jnp.sum(means**2, axis=1)[None, :] + log_prior[None, :]
    return jnp.where(present[None, :], logits, -jnp.inf)


def etran_lda_from_stats(fs: FeatureStats, *, form: str = "published"):
    """ETran's LDA term from the shared statistics (see `etran_lda`)."""
    if form not in LDA_FORMS:
        raise ValueError(f"form must be one of {LDA_FORMS}, got {form!r}")
    ls = fs.labels
    if form == "published":
        # coef_c = m_c E E^T with E orthogonal (eigh of a non-symmetric matrix reads one triangle):
        # the logits of a nearest-class-mean rule with priors, x^T m_c - |m_c|^2 / 2 + log pi_c.
        # Centred features: the softmax is invariant to a common shift of x and the means.
        if fs.streamed:
            raise ValueError("etran_lda from streamed statistics takes a second pass over the samples "
                             "(jscore.streaming.accumulate with lda=True)")
        logits = nearest_mean_logits(fs.xc, class_means(fs.xc, ls), ls.counts, ls.n)
    else:
        z = kept_pc_scores(fs)
        means = class_means(z, ls)
        within = scatter(within_deviations(z, ls, means))
        s = sfda_shrinkage(within / ls.n, mm(within, _ones_in_basis(fs)) / ls.n, 3)
        logits = shrunk_lda_logits(z, ls, means, within, s, fs.d_eff)
    return true_class_mean(jax.nn.softmax(logits, axis=1), ls)


@partial(jax.jit, static_argnames=("num_classes", "percent", "tail"))
def etran_energy(features, labels, *, num_classes: int, sample_mask=None, feature_mask=None,
                 percent: float = 0.5, tail: str = "bottom"):
    """ETran's energy term: the mean log-sum-exp of the features, read as logits, over a small tail
    of the samples.

    Gholami et al., ICCV 2023. With E(x) = -log sum_d exp(x_d) the energy of a sample, the
    published code averages -E(x) = logsumexp(x) over the k = int(10 percent) n // 1000 samples
    with the smallest logsumexp (the highest energy; percent = 0.5 -> 0.5% of the samples).
    Higher is better. The labels are not used (beyond the sample count).

    Args:
      features: [N, D] float features (uncentred, as extracted).
      labels: [N] int labels in [0, num_classes) (only their shape matters).
      num_classes: C (static; unused).
      sample_mask: optional [N] 0/1 weights. feature_mask: optional [D] 0/1 weights (masked
        columns are left out of the log-sum-exp).
      percent: the tail size in per cent (static; default 0.5 as published).
      tail: "bottom" (default, the published code: smallest logsumexp) or "top" (largest, the
        lowest-energy samples).

    Returns:
      scalar energy term (at least one sample is averaged).

    Example:
      >>> etran_energy(features, labels, num_classes=5)

    Differences from the reference code: k is at least 1 (the published code averages an empty
    set, NaN, when n < 200).
    """
    fs = feature_stats(features, labels, num_classes=num_classes, sample_mask=sample_mask,
                       feature_mask=feature_mask, spectrum=False, equilibrate=False)
    return etran_energy_from_stats(fs, feature_mask, percent=percent, tail=tail)


@partial(jax.jit, static_argnames=("num_classes", "form"))
def etran_lda(features, labels, *, num_classes: int, sample_mask=None, feature_mask=None,
              form: str = "published"):
    """ETran's LDA term: the mean posterior of the true class under the authors' discriminant.

    Gholami et al., ICCV 2023. The published code fits LDA with a shrunk within-class covariance
    Sigma and projection E from `numpy.linalg.eigh(inv(Sigma) @ Sb)`; as that matrix is not
    symmetric, eigh reads its lower triangle and returns an orthogonal E, so the coefficients
    m_c E E^T are the class means themselves and the posterior is
    p(c | x) = softmax_c(x^T m_c - |m_c|^2 / 2 + log pi_c). ETran_lda = (1/n) sum_i p(y_i | x_i).

    Args:
      features: [N, D] float features.
      labels: [N] int labels in [0, num_classes).
      num_classes: C (static). Absent classes get zero posterior.
      sample_mask: optional [N] 0/1 weights. feature_mask: optional [D] 0/1 weights.
      form: "published" (default; the code's behaviour above) or "paper": the discriminant the
        paper describes, p(c | x) with the shrunk Sigma^{-1} (the same LDA as SFDA's first stage,
        adaptive shrinkage and all).

    Returns:
      scalar in (0, 1] (higher is better).

    Example:
      >>> etran_lda(features, labels, num_classes=5)
    """
    fs = feature_stats(features, labels, num_classes=num_classes, sample_mask=sample_mask,
                       feature_mask=feature_mask, spectrum=form != "published", equilibrate=False)
    return etran_lda_from_stats(fs, form=form)


def min_max(values):
    """(v - min) / (max - min) over models, [M] -> [M]; all zeros when every model scores the same
    (the published code divides by zero there)."""
    v = np.asarray(values, np.float64)
    span = v.max() - v.min()
    return np.zeros_like(v) if span == 0 else (v - v.min()) / span


def etran_combine(energy, lda):
    """ETran over a set of models: min-max(energy) + min-max(lda) (each normalised over the
    models), [M], [M] -> [M]. Relative to the set: only `score_zoo` computes it."""
    return min_max(energy) + min_max(lda)
