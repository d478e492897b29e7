"""NCE, the Negative Conditional Entropy (Tran et al., "Transferability and Hardness of Supervised
Classification Tasks", ICCV 2019)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jscore._numerics import safe_div, xlogy_safe
from jscore.stats import SourceStats, source_stats


def nce_from_stats(st: SourceStats):
    """NCE from the (argmax source class, target class) count table [Cs, C]."""
    joint = safe_div(st.argmax_joint, st.n)
    marginal = joint.sum(1, keepdims=True)  # P(z)
    return jnp.sum(xlogy_safe(joint, safe_div(joint, marginal)))


@partial(jax.jit, static_argnames=("num_classes",))
def nce(source_probs, labels, *, num_classes: int, sample_mask=None, source_mask=None):
    """NCE: minus the conditional entropy of the target labels given the source model's
    predicted labels.

    Tran et al., ICCV 2019. With z_i = argmax_s theta_i(s) and the empirical joint P(y, z):
    NCE = -H(Y | Z) = sum_{y, z} P(y, z) log(P(y, z) / P(z))  (<= 0; higher is better).

    Args:
      source_probs: [N, Cs] source probabilities (or any scores: only the argmax is used; ties go
        to the first class).
      labels: [N] int labels in [0, num_classes).
      num_classes: C (static).
      sample_mask: optional [N] 0/1 weights.
      source_mask: optional [Cs] 0/1 weights; masked source classes are never the argmax.

    Returns:
      scalar NCE; 0 when Z determines Y.

    Example:
      >>> nce(jnp.eye(2)[jnp.array([0, 0, 1, 1])], jnp.array([0, 0, 1, 1]), num_classes=2)  # 0.0
    """
    return nce_from_stats(source_stats(source_probs, labels, num_classes=num_classes,
                                       sample_mask=sample_mask, source_mask=source_mask))
