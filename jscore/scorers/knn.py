"""k-NN accuracy: leave-one-out k-nearest-neighbour classification accuracy on the features
(Sorkhei et al., "k-NN as a Simple and Effective Estimator of Transferability", TMLR 2025; the
hold-one-out k-NN of Bolya et al.'s PARC code, NeurIPS 2021)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jscore._numerics import safe_div
from jscore._pairwise import nearest_neighbors
from jscore.stats import FeatureStats, LabelStats, centred_features

LOO_RULES = ("published", "exact")


def _votes(onehot, idx):
    """[N, C] neighbour label counts; idx [N, k] with -1 for a missing neighbour."""
    got = jnp.where((idx >= 0)[..., None], onehot[jnp.maximum(idx, 0)], 0)
    return (got > 0).astype(onehot.dtype).sum(axis=1)


def knn_accuracy(xc, ls: LabelStats, *, k: int = 1, loo: str = "published", block: int | None = None):
    """Leave-one-out k-NN accuracy of centred, masked features xc [N, D] (see `knn`)."""
    if loo not in LOO_RULES:
        raise ValueError(f"loo must be one of {LOO_RULES}, got {loo!r}")
    n = xc.shape[0]
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if n < k + 1:
        raise ValueError(f"k-NN with k = {k} needs at least {k + 1} samples, got N = {n}")
    y = ls.onehot  # [N, C], weighted (zero on masked rows)
    if loo == "published":
        # The published code argsorts each row's distances (the row itself at exactly 0) and
        # drops the first entry. We sort by (distance, index): with an exact duplicate of smaller
        # index, the duplicate is dropped and the row votes for itself.
        m = min(k + 1, n - 1)
        d, idx = nearest_neighbors(xc, m, weights=ls.weights, block=block)
        self_idx = jnp.arange(n, dtype=idx.dtype)[:, None]
        d = jnp.concatenate([jnp.zeros((n, 1), d.dtype), jnp.where(idx >= 0, d, jnp.inf)], axis=1)
        idx = jnp.concatenate([self_idx, jnp.where(idx >= 0, idx, n)], axis=1)
        d, idx = jax.lax.sort((d, idx), dimension=1, num_keys=2)
        idx = idx[:, 1:k + 1]
        idx = jnp.where(idx < n, idx, -1)
        counts = _votes(y, idx)
        top = jnp.max(counts, axis=1)
        own = jnp.sum(counts * y, axis=1)
        # scipy.stats.mode: the smallest label among the most frequent; when every vote differs
        # (top count 1) the code scores each of the k votes, i.e. credit = own votes / k.
        first = jax.nn.one_hot(jnp.argmax(counts, axis=1), y.shape[1], dtype=y.dtype)
        credit = jnp.where(top <= 1, own / k, jnp.sum(first * y, axis=1))
    else:
        _, idx = nearest_neighbors(xc, k, weights=ls.weights, block=block)
        counts = _votes(y, idx)
        winners = (counts == jnp.max(counts, axis=1, keepdims=True)).astype(y.dtype)
        credit = safe_div(jnp.sum(winners * y, axis=1), jnp.sum(winners, axis=1))
    return safe_div(jnp.sum(credit * ls.weights), ls.n)


def knn_from_stats(fs: FeatureStats, *, k: int = 1, loo: str = "published"):
    """k-NN accuracy from the shared statistics (uses only the centred features; see `knn`)."""
    return knn_accuracy(fs.xc, fs.labels, k=k, loo=loo)


@partial(jax.jit, static_argnames=("num_classes", "k", "loo"))
def knn(features, labels, *, num_classes: int, sample_mask=None, feature_mask=None, k: int = 1,
        loo: str = "published"):
    """Leave-one-out k-nearest-neighbour accuracy (Euclidean), in [0, 1].

    Sorkhei et al., TMLR 2025 (the hold-one-out k-NN of Bolya et al.'s PARC code). Each valid
    sample is classified by the majority label of its k nearest other samples:
    acc = (1/n) sum_i [vote_k(i) = y_i].

    Distances come from `jscore._pairwise.nearest_neighbors`: row blocks of GEMM-expanded squared
    distances (memory O(N * block)), with the candidates' distances recomputed exactly.

    Args:
      features: [N, D] float features.
      labels: [N] int labels in [0, num_classes).
      num_classes: C (static).
      sample_mask: optional [N] 0/1 weights; masked rows are neither scored nor neighbours.
      feature_mask: optional [D] 0/1 weights.
      k: neighbours (static, default 1).
      loo: "published" (default) or "exact":
        - "published" follows the published code: the first entry of the row's distances sorted
          ascending is dropped as "self"; sorting by (distance, index), an exact duplicate with a
          smaller index is dropped instead and the sample votes for itself. Vote ties go to the
          smallest label (scipy.stats.mode), except when all k votes differ, where the sample
          scores (votes for its label) / k.
        - "exact": true leave-one-out (the sample itself is always excluded; duplicates are
          ordinary neighbours); a vote tie between t labels scores 1/t if the true label is
          among them. Invariant to relabelling classes.
        With k = 1 and no exact duplicates the two agree.

    Returns:
      scalar accuracy in [0, 1] (the published code reports 100 x this).

    Example:
      >>> knn(jnp.array([[0.], [.1], [5.], [5.1]]), jnp.array([0, 0, 1, 1]), num_classes=2)  # 1.0
    """
    xc, ls, _ = centred_features(features, labels, num_classes=num_classes, sample_mask=sample_mask,
                                 feature_mask=feature_mask)
    return knn_accuracy(xc, ls, k=k, loo=loo)
