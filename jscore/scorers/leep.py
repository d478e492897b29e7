"""LEEP, the Log Expected Empirical Prediction (Nguyen et al., ICML 2020)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jscore._numerics import as_mask, mm, safe_div, xlogy_safe
from jscore.stats import label_stats


def leep_conditional(joint):
    """P(y | z) [Cs, C] from the joint table [Cs, C]; rows of zero mass are all zero (neutral)."""
    return safe_div(joint, joint.sum(1, keepdims=True))


def leep_from_onehot(probs, onehot):
    """LEEP from probabilities [N, Cs] and weighted one-hot labels [N, C] (rows of masked samples
    all zero). Shared by `leep` and N-LEEP, whose probabilities are GMM posteriors."""
    joint = mm(probs.T, onehot)  # [Cs, C], n * P(z, y)
    return safe_div(leep_log_sum(probs, onehot, leep_conditional(joint)), onehot.sum())


def leep_log_sum(probs, onehot, cond):
    """sum_i w_i log sum_z theta_i(z) P(y_i | z) for probabilities [N, Cs], weighted one-hot labels
    [N, C] and P(y | z) `cond` [Cs, C]: a sum over samples, so a second pass over chunks (with
    `cond` from the first pass's joint table) gives LEEP = this sum / n."""
    weights = onehot.sum(1)
    # Expected empirical prediction of each sample's own label: sum_z theta_i(z) P(y_i | z).
    eep = jnp.sum(mm(probs, cond) * (onehot > 0), axis=1)
    return jnp.sum(xlogy_safe(weights, eep))


@partial(jax.jit, static_argnames=("num_classes",))
def leep(source_probs, labels, *, num_classes: int, sample_mask=None, source_mask=None):
    """LEEP: average log-likelihood of the target labels under the source model's predictions
    mapped through the empirical conditional P(y | z).

    Nguyen et al., ICML 2020. With theta_i the source probabilities of sample i:
    P(y, z) = (1/n) sum_i theta_i(z) [y_i = y],  P(y | z) = P(y, z) / P(z),
    LEEP = (1/n) sum_i log sum_z P(y_i | z) theta_i(z)  (<= 0; higher is better).

    Args:
      source_probs: [N, Cs] rows are probability distributions over the source classes.
      labels: [N] int labels in [0, num_classes).
      num_classes: C (static).
      sample_mask: optional [N] 0/1 weights.
      source_mask: optional [Cs] 0/1 weights over source classes (padding).

    Returns:
      scalar LEEP. About 0 for perfect source predictions; sum_y P(y) log P(y) (log(1/C) for
      balanced classes) for uniform ones.

    Example:
      >>> leep(jnp.eye(2)[jnp.array([0, 0, 1, 1])], jnp.array([0, 0, 1, 1]), num_classes=2)  # 0.0

    Differences from the reference code: a source class with zero total mass gets P(y | z) = 0
    (it cannot contribute, as every theta_i(z) is 0) instead of 0/0 = NaN; C is `num_classes`.
    """
    probs = jnp.asarray(source_probs)
    if probs.ndim != 2 or jnp.shape(labels) != probs.shape[:1]:
        raise ValueError(f"source_probs must be [N, Cs] and labels [N]; got {probs.shape} and {jnp.shape(labels)}")
    dtype = jnp.float64 if probs.dtype == jnp.float64 else jnp.float32
    probs = probs.astype(dtype)
    if source_mask is not None:
        probs = probs * as_mask(source_mask, probs.shape[1], dtype)[None, :]
    return leep_from_onehot(probs, label_stats(labels, num_classes, sample_mask, dtype).onehot)
