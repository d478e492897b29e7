"""NCE, the Negative Conditional Entropy (Tran et al., "Transferability and Hardness of Supervised
Classification Tasks", ICCV 2019)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jscore._numerics import safe_div, xlogy_safe
from jscore.stats import SourceStats, argmax_table, label_stats, source_stats


def nce_from_stats(st: SourceStats):
    """NCE from the (argmax source class, target class) count table [Cs, C]."""
    joint = safe_div(st.argmax_joint, st.n)
    marginal = joint.sum(1, keepdims=True)  # P(z)
    return jnp.sum(xlogy_safe(joint, safe_div(joint, marginal)))


@partial(jax.jit, static_argnames=("num_classes",))
def _nce(source_probs, labels, *, num_classes: int, sample_mask=None, source_mask=None):
    return nce_from_stats(source_stats(source_probs, labels, num_classes=num_classes,
                                       sample_mask=sample_mask, source_mask=source_mask))


@partial(jax.jit, static_argnames=("num_classes", "num_source_classes", "dtype"))
def nce_from_top(top, labels, *, num_classes: int, num_source_classes: int, sample_mask=None,
                 dtype=jnp.float32):
    """NCE from the predicted source classes top [N] (ints in [0, num_source_classes))."""
    ls = label_stats(labels, num_classes, sample_mask, dtype)
    return nce_from_stats(SourceStats(None, argmax_table(top, ls.onehot, num_source_classes), ls.n))


def _on_host(x):
    """x as a NumPy array when that costs no transfer (NumPy input, or a concrete array on the
    CPU backend), else None."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
        if all(d.platform == "cpu" for d in x.devices()):
            return np.asarray(x)
    return None


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

    On concrete inputs that live on the host (NumPy, or arrays on the CPU backend) the argmax runs
    in NumPy (XLA:CPU's argmax over [N, Cs] is several times slower); under a trace, or on an
    accelerator, it runs in JAX. Same result.
    """
    probs = _on_host(source_probs)
    if probs is not None and not isinstance(labels, jax.core.Tracer):
        if not np.isfinite(probs).all():  # NaN in, NaN out (the argmax would hide it)
            return jnp.asarray(np.nan, jnp.float64 if probs.dtype == np.float64 and jax.config.jax_enable_x64
                               else jnp.float32)
        if source_mask is not None:
            probs = np.where(np.asarray(source_mask)[None, :] > 0, probs, -np.inf)
        top = np.argmax(probs, axis=1).astype(np.int32)
        dtype = jnp.float64 if probs.dtype == np.float64 and jax.config.jax_enable_x64 else jnp.float32
        return nce_from_top(top, labels, num_classes=num_classes, num_source_classes=probs.shape[1],
                            sample_mask=sample_mask, dtype=dtype)
    return _nce(source_probs, labels, num_classes=num_classes, sample_mask=sample_mask,
                source_mask=source_mask)
