"""How good is the model a score picks: top-1 regret, rel@k and recall@k, on masked vectors.

Shapes as in `jscore.evaluate.correlation`: x (score) and y (ground truth) `[M]`, mask `[M]`.

Ties in the score are broken against the score: among models with the same score value, the
one with the lower ground truth is taken first (then the earlier position). A score that cannot
tell two models apart gets no credit for picking the better one by luck of the row order; a
constant score gets the regret of picking the worst model.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jscore.evaluate.correlation import _as_float, _safe_ratio


def selection_ranks(x, y, mask=None) -> jax.Array:
    """0-based position of each model in the score's pick order (ties against the score).

    Args: x, y `[M]`, mask `[M]`. Returns: `[M]` float ranks among valid models.
    """
    x, y, m = _as_float(x, y, mask)
    n = x.shape[0]
    idx = jnp.arange(n)
    xj, xi = x[:, None], x[None, :]
    yj, yi = y[:, None], y[None, :]
    before = (xj > xi) | ((xj == xi) & ((yj < yi) | ((yj == yi) & (idx[:, None] < idx[None, :]))))
    return jnp.sum(before.astype(x.dtype) * m[:, None], axis=0)


def _masked_max(y, m):
    return jnp.max(jnp.where(m > 0, y, -jnp.inf))


def selection_from_ranks(ranks, y, m, *, k: int):
    """(regret, rel@k, recall@k) from `selection_ranks` (shared work when all three are wanted)."""
    best = _masked_max(y, m)
    first = ((ranks < 1) & (m > 0)).astype(y.dtype)
    top = (ranks < k) & (m > 0)
    # No valid model (a padded slot of the bootstrap): 0, never inf - inf.
    regret = jnp.where(jnp.sum(m) > 0, best - _masked_max(y, first), jnp.zeros_like(best))
    rel = _safe_ratio(_masked_max(y, top.astype(y.dtype)), best)
    higher = jnp.sum((y[None, :] > y[:, None]).astype(y.dtype) * m[None, :], axis=1)
    hits = jnp.sum((top & (higher < k)).astype(y.dtype))
    recall = hits / jnp.minimum(jnp.asarray(k, y.dtype), jnp.maximum(jnp.sum(m), 1))
    return regret, rel, recall


@jax.jit
def top1_regret(x, y, mask=None) -> jax.Array:
    """Ground truth of the truly best model minus that of the model the score ranks first.

    0 when the score picks the best model; in the units of y (e.g. accuracy points).

    >>> float(top1_regret(jnp.array([3., 1, 2]), jnp.array([.7, .9, .8])))  # doctest: +ELLIPSIS
    0.2...
    """
    x, y, m = _as_float(x, y, mask)
    return selection_from_ranks(selection_ranks(x, y, m), y, m, k=1)[0]


@partial(jax.jit, static_argnames="k")
def rel_at_k(x, y, mask=None, *, k: int = 3) -> jax.Array:
    """Best ground truth among the score's top k, divided by the best ground truth overall.

    1 when the best model is in the score's top k. y must be positive (an accuracy).
    """
    x, y, m = _as_float(x, y, mask)
    top = ((selection_ranks(x, y, m) < k) & (m > 0)).astype(y.dtype)
    return _safe_ratio(_masked_max(y, top), _masked_max(y, m))


@partial(jax.jit, static_argnames="k")
def recall_at_k(x, y, mask=None, *, k: int = 3) -> jax.Array:
    """Fraction of the score's top k that belong to the true top k.

    A model is in the true top k when fewer than k models have a strictly higher ground truth
    (ties at the k-th place all count). Divides by min(k, number of valid models).
    """
    x, y, m = _as_float(x, y, mask)
    top = (selection_ranks(x, y, m) < k) & (m > 0)
    higher = jnp.sum((y[None, :] > y[:, None]).astype(y.dtype) * m[None, :], axis=1)
    in_true = higher < k
    hits = jnp.sum((top & in_true).astype(y.dtype))
    return hits / jnp.minimum(jnp.asarray(k, y.dtype), jnp.maximum(jnp.sum(m), 1))
