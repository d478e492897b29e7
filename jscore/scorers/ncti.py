"""NCTI, the Neural Collapse inspired Transferability Index (Wang et al., "How Far Pre-trained
Models Are from Neural Collapse on the Target Dataset Informs their Transferability", ICCV 2023):
three per-model terms and their min-max combination over a set of models."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jscore._numerics import eigh_descending, mm
from jscore.class_scatter import class_means, kept_pc_scores, scatter, true_class_mean, within_deviations
from jscore.scorers.etran import min_max
from jscore.stats import FeatureStats, feature_stats

SOLVER_SWITCH = 1e-10  # the authors' floor of exp(-sum of the top 32 PCA variances)
SVD_TOL = 1e-4  # scikit-learn's LinearDiscriminantAnalysis(solver="svd") rank tolerance
TERMS = ("seli", "ncc", "vc")


def _nuclear_norm(a):
    """Sum of the singular values of each [..., n, k] matrix."""
    return jnp.sum(jnp.linalg.svd(a, compute_uv=False), axis=-1)


SVD_DIVISORS = ("n-C", "n")


def ncti_terms_from_stats(fs: FeatureStats, *, dims: int = 64, variance_dims: int = 32, svd_divisor: str = "n-C"):
    """NCTI's three per-model terms from the shared decomposition: a [3] array
    (seli, ncc, -vc), each higher-is-better (see `ncti`)."""
    if svd_divisor not in SVD_DIVISORS:
        raise ValueError(f"svd_divisor must be one of {SVD_DIVISORS}, got {svd_divisor!r}")
    ls = fs.labels
    n = ls.n
    z = kept_pc_scores(fs, dims)  # PCA(dims) scores, centred
    k = z.shape[1]
    num_dims = jnp.minimum(jnp.minimum(dims, fs.d_eff), n)
    valid = jnp.arange(k) < num_dims
    z = z * valid[None, :]
    present = ls.counts > 0
    num_present = present.sum()
    # Which scikit-learn solver the authors' code picks: "svd" once the top 32 PCA variances
    # (ddof 1) sum past -log(1e-10), else "eigen" with that shrinkage.
    top_var = jnp.sum(jnp.where(jnp.arange(k) < jnp.minimum(variance_dims, num_dims), fs.evals[:k], 0)) / (n - 1)
    shrink = jnp.exp(-top_var)
    use_svd = shrink <= SOLVER_SWITCH

    means = class_means(z, ls)  # [C, k]; the global mean is 0
    dev = within_deviations(z, ls, means)
    within = scatter(dev)
    eye = jnp.diag(valid.astype(z.dtype))

    # "eigen" solver: Sw = (1 - s) W / n + s tr(W / n) / k I, St likewise, Sb = St - Sw.
    s = jnp.maximum(shrink, SOLVER_SWITCH)
    sw_e = (1 - s) * within / n + s * jnp.trace(within / n) / num_dims * eye
    total = scatter(z) / n
    st_e = (1 - s) * total + s * jnp.trace(total) / num_dims * eye
    sb_e = st_e - sw_e
    # "svd" solver: Sw = W / (n - C) (scaled to unit within-class standard deviations for the rank
    # test), Sb = sum_c n_c / (C - 1) m_c m_c^T.
    std = jnp.sqrt(jnp.diag(within) / n)
    std = jnp.where(std > 0, std, 1)
    divisor = n - num_present if svd_divisor == "n-C" else n
    sw_s = within / divisor / std[:, None] / std[None, :]
    weights = jnp.where(present, ls.counts / jnp.maximum(num_present - 1, 1), 0)
    scaled_means = means / std[None, :]
    sb_s = mm(scaled_means.T * weights[None, :], scaled_means)

    sw = jnp.where(use_svd, sw_s, sw_e)
    sb = jnp.where(use_svd, sb_s, sb_e)
    # Whitening: W1 = V diag(evals^-1/2) on the valid directions (the svd solver drops singular
    # values below 1e-4 of the unit-scaled within data, i.e. eigenvalues below 1e-8).
    ev, vec = eigh_descending(jnp.where(valid[:, None] & valid[None, :], sw, 0) + jnp.diag(~valid) * 1.0)
    # (The identity block put on the invalid directions is inert: sb, z and the means are zero there.)
    keep = (ev > jnp.where(use_svd, SVD_TOL**2, 0)) & (ev > 0)
    w1 = vec * jnp.where(keep, 1 / jnp.sqrt(jnp.where(keep, ev, 1)), 0)[None, :]
    b = w1.T @ sb @ w1
    bev, bvec = eigh_descending(0.5 * (b + b.T))
    num_components = jnp.minimum(num_present - 1, num_dims)
    take = (jnp.arange(bev.shape[0]) < num_components) & (~use_svd | (bev > SVD_TOL**2 * bev[0]))
    proj = mm(w1, bvec) * take[None, :]  # [k, k] scalings, first C - 1 columns used
    proj = jnp.where(use_svd, proj / std[:, None], proj)
    low = mm(z, proj)[:, : max(means.shape[0] - 1, 1)]  # [N, C - 1], centred
    seli = _nuclear_norm(low)

    # Posteriors. eigen: coef = M Sw^-1 (full inverse); svd: coef = M P P^T with P the scalings.
    inv_e = mm(vec * jnp.where(keep, 1 / jnp.where(keep, ev, 1), 0)[None, :], vec.T)
    coef = jnp.where(use_svd, mm(mm(means, proj), proj.T), mm(means, inv_e))  # [C, k]
    log_prior = jnp.log(jnp.where(present, ls.counts / n, 1))
    logits = mm(z, coef.T) - 0.5 * jnp.sum(means * coef, axis=1)[None, :] + log_prior[None, :]
    probs = jax.nn.softmax(jnp.where(present[None, :], logits, -jnp.inf), axis=1)
    probs = probs * ls.weights[:, None]
    ncc = true_class_mean(probs, ls)
    # Variability collapse: log sum_c ||P_c||_*, P_c the posteriors of the samples of class c.
    per_class = jnp.where((ls.onehot.T > 0)[:, :, None], probs[None, :, :], 0)  # [C, N, C]
    vc = jnp.log(jnp.sum(jnp.where(present, _nuclear_norm(per_class), 0)))
    return jnp.stack([seli, ncc, -vc])


@partial(jax.jit, static_argnames=("num_classes", "dims", "variance_dims", "svd_divisor"))
def ncti_terms(features, labels, *, num_classes: int, sample_mask=None, feature_mask=None, dims: int = 64,
               variance_dims: int = 32, svd_divisor: str = "n-C"):
    """NCTI's three per-model terms, a [3] array (seli, ncc, -vc), each higher-is-better.

    Wang et al., ICCV 2023, as the authors' code computes them. Project the centred features on
    their top `dims` (64) principal directions; with s = exp(-sum of the top `variance_dims` (32)
    PCA variances, ddof 1) fit scikit-learn's linear discriminant analysis: solver "eigen" with
    shrinkage s (Sw = (1 - s) W/n + s tr(W/n)/k I, Sb = the same shrinkage of the total covariance
    minus Sw) while s > 1e-10, else solver "svd" (Sw = W / (n - C), no shrinkage, rank tolerance
    1e-4; Sb = sum_c n_c/(C - 1) m_c m_c^T; recent scikit-learn (1.9) divides W by n instead, option
    svd_divisor="n"). Then
      seli = ||Z E||_*, the nuclear norm of the features projected on the top C - 1 discriminant
             directions E (E^T Sw E = I): the simplex-encoded-label-interpolation geometry;
      ncc  = (1/n) sum_i p(y_i | x_i), the discriminant's mean posterior of the true class;
      vc   = log sum_c ||P_c||_*, P_c [n_c, C] the posteriors of the samples of class c (within-class
             variability; lower is better, so the term returned is -vc).

    Args:
      features: [N, D] float features. labels: [N] int labels in [0, num_classes).
      num_classes: C (static). Absent classes are left out (no prior, no posterior, not in C - 1).
      sample_mask: optional [N] 0/1 weights. feature_mask: optional [D] 0/1 weights.
      dims: PCA dimensions (static; min(dims, D, n) are used). variance_dims: PCA variances summed
        for the shrinkage (static). svd_divisor: "n-C" (default; the scikit-learn the authors ran)
        or "n" (recent scikit-learn) for the svd solver's within-class covariance (static).

    Returns:
      [3] array: seli, ncc, -vc.

    Differences from the reference code: exact PCA from the shared decomposition (scikit-learn's
    PCA(64) picks a randomised solver for large inputs); fewer than 64 dimensions are allowed
    (min(64, D, n)); C is `num_classes`.
    """
    fs = feature_stats(features, labels, num_classes=num_classes, sample_mask=sample_mask,
                       feature_mask=feature_mask, equilibrate=False, remeasure=False)
    return ncti_terms_from_stats(fs, dims=dims, variance_dims=variance_dims, svd_divisor=svd_divisor)


def _term(index: int, doc: str):
    @partial(jax.jit, static_argnames=("num_classes", "dims", "variance_dims", "svd_divisor"))
    def term(features, labels, *, num_classes: int, sample_mask=None, feature_mask=None, dims: int = 64,
             variance_dims: int = 32, svd_divisor: str = "n-C"):
        return ncti_terms(features, labels, num_classes=num_classes, sample_mask=sample_mask,
                          feature_mask=feature_mask, dims=dims, variance_dims=variance_dims,
                          svd_divisor=svd_divisor)[index]

    term.__name__ = f"ncti_{TERMS[index]}"
    term.__doc__ = doc + "\n\n    One of NCTI's per-model terms; arguments as for `ncti_terms`."
    return term


ncti_seli = _term(0, "NCTI's SELI term: nuclear norm of the features on the top C - 1 discriminant directions.")
ncti_ncc = _term(1, "NCTI's nearest-centre term: mean discriminant posterior of the true class.")
ncti_vc = _term(2, "NCTI's variability-collapse term, negated: -log sum_c ||P_c||_* (higher is better).")


def ncti_combine(seli, ncc, neg_vc):
    """NCTI over a set of models, [M] x 3 -> [M]: min-max(seli) + min-max(ncc) - min-max(vc), each
    normalised over the models, exactly the authors' combination (min-max(-vc) = 1 - min-max(vc)).
    Relative to the set: only `score_zoo` computes it."""
    return min_max(seli) + min_max(ncc) + min_max(neg_vc) - np.where(np.ptp(np.asarray(neg_vc)) > 0, 1.0, 0.0)
