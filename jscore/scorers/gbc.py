"""GBC, the Gaussian Bhattacharyya Coefficient (Pandy et al., "Transferability Estimation using
Bhattacharyya Class Separability", CVPR 2022)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jscore._numerics import mm, safe_div
from jscore.stats import FeatureStats, feature_stats, pc_scores

GAUSSIANS = ("spherical", "diagonal", "textbook_spherical")
VARIANCE_FLOOR = 1e-4  # the authors' floor for constant features


def _class_gaussians(x, fs: FeatureStats, valid_dims):
    """Per-class means [C, k] and floored per-dimension variances [C, k] (ddof 0)."""
    counts = fs.labels.counts[:, None]
    means = safe_div(mm(fs.labels.onehot.T, x), counts)
    # Two-pass variance: deviations from each sample's own class mean.
    dev = x - mm(fs.labels.onehot, means)
    var = safe_div(mm(fs.labels.onehot.T, dev**2), counts)
    return means, jnp.where(valid_dims, jnp.maximum(var, VARIANCE_FLOOR), 1)


def _class_gaussians_streamed(fs: FeatureStats, k: int, valid_dims):
    """`_class_gaussians` from streamed statistics: on the top k principal directions V_k, the
    class means are V_k^T (mu_c - mu) and the variances diag(V_k^T W_c V_k) / n_c."""
    if fs.class_scatter is None:
        raise ValueError("streamed gbc needs the per-class scatters (jscore.moments with class_scatter=True)")
    v = fs.evecs[:, :k]
    means = mm(fs.class_dev, v) * valid_dims[None, :]
    proj = jax.lax.map(lambda w_c: jnp.sum(v * mm(w_c, v), axis=0), fs.class_scatter)  # [C, k]
    var = safe_div(proj, fs.labels.counts[:, None])
    return means, jnp.where(valid_dims, jnp.maximum(var, VARIANCE_FLOOR), 1)


def gbc_from_stats(fs: FeatureStats, *, dims: int = 64, gaussian: str = "spherical"):
    """GBC from the shared decomposition (see `gbc`)."""
    if gaussian not in GAUSSIANS:
        raise ValueError(f"gaussian must be one of {GAUSSIANS}, got {gaussian!r}")
    k = min(dims, fs.evals.shape[0])
    # PCA keeps min(dims, D, n) components (as scikit-learn's PCA(dims) would), padding excluded.
    valid_dims = jnp.arange(k) < jnp.minimum(jnp.minimum(dims, fs.d_eff), fs.labels.n)
    if fs.streamed:
        means, var = _class_gaussians_streamed(fs, k, valid_dims)
    else:
        x = pc_scores(fs, dims) * valid_dims[None, :]
        means, var = _class_gaussians(x, fs, valid_dims)
    num_dims = valid_dims.sum()
    diff_sq = (means[:, None, :] - means[None, :, :]) ** 2 * valid_dims  # [C, C, k]
    if gaussian == "diagonal":
        avg = (var[:, None, :] + var[None, :, :]) / 2
        mahal = jnp.sum(diff_sq / avg, axis=-1) / 8
        log_var = jnp.log(var)
        log_term = jnp.sum(jnp.log(avg) - (log_var[:, None, :] + log_var[None, :, :]) / 2, axis=-1)
    else:
        s = safe_div(jnp.sum(jnp.where(valid_dims, var, 0), axis=1), num_dims)  # [C]
        avg = (s[:, None] + s[None, :]) / 2
        mahal = jnp.sum(diff_sq, axis=-1) / avg / 8
        log_term = jnp.log(avg) - (jnp.log(s)[:, None] + jnp.log(s)[None, :]) / 2
        if gaussian == "textbook_spherical":
            log_term = log_term * num_dims
    distance = mahal + log_term / 2
    present = fs.labels.counts > 0
    pairs = present[:, None] & present[None, :] & ~jnp.eye(present.shape[0], dtype=bool)
    return -jnp.sum(jnp.where(pairs, jnp.exp(-distance), 0))


@partial(jax.jit, static_argnames=("num_classes", "dims", "gaussian"))
def gbc(features, labels, *, num_classes: int, sample_mask=None, feature_mask=None, dims: int = 64,
        gaussian: str = "spherical"):
    """GBC: minus the summed Bhattacharyya coefficients between per-class Gaussians in PCA space.

    Pandy et al., CVPR 2022. Project the centred features onto the top min(dims, D, n) principal
    directions (n samples: the most scikit-learn's PCA allows); fit per class c a Gaussian with mean mu_c and per-dimension variance v_c (ddof 0,
    floored at 1e-4); with v = (v_1 + v_2) / 2 the Bhattacharyya distance is
    DB = 1/8 sum_d (mu_1 - mu_2)_d^2 / v_d + 1/2 log(det v / sqrt(det v_1 det v_2)), and
    GBC = - sum over ordered pairs c1 != c2 of exp(-DB(c1, c2))  (<= 0; higher is better).

    Args:
      features: [N, D] float features.
      labels: [N] int labels in [0, num_classes).
      num_classes: C (static). Pairs with an absent class are left out.
      sample_mask: optional [N] 0/1 weights.
      feature_mask: optional [D] 0/1 weights.
      dims: PCA dimensions (static; default 64 as in the paper).
      gaussian: "spherical" (default; the authors' code: one variance per class, the mean of the
        floored per-dimension variances, whose log terms enter once), "diagonal", or
        "textbook_spherical" (the log terms once per dimension, as the textbook distance of two
        isotropic Gaussians).

    Returns:
      scalar GBC.

    Example:
      >>> gbc(features, labels, num_classes=4)

    Differences from the reference code: PCA comes from the eigendecomposition shared with the
    other scores (identical up to the signs of components, to which GBC is invariant).
    """
    fs = feature_stats(features, labels, num_classes=num_classes, sample_mask=sample_mask,
                       feature_mask=feature_mask, equilibrate=False)
    return gbc_from_stats(fs, dims=dims, gaussian=gaussian)
