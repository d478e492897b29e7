"""Rank and linear correlations between a score and the ground truth, on masked vectors.

All functions take `x` (the transferability score, higher is better) and `y` (the ground truth,
e.g. test accuracy after fine-tuning) of shape `[M]` (models) with an optional boolean or 0/1
`mask` `[M]`: masked entries are exactly neutral, so datasets with different model counts are
padded to one shape and a single compiled program serves them all (vmap over datasets, scores
and bootstrap resamples). The work is O(M^2) pairwise comparisons, which is what a model zoo
(tens of models) wants: no sort, no data-dependent shapes, jit and vmap friendly.

Constant inputs. Kendall's tau (and Pearson, Spearman) are undefined when one side has no untied
pair; SciPy returns NaN. We return 0 instead, following Chaves et al. (TMLR, "Back to the Basics
on Predicting Transfer Performance"): a score that gives every model the same value has no
predictive power. The same rule covers a constant ground truth (there is nothing to rank);
`jscore.evaluate.diagnostics` flags that case on the real data.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class PairSums(NamedTuple):
    """Sums over model pairs i < j, the sufficient statistics of (weighted) Kendall tau-b.

    `num` = sum w_ij sgn(x_i - x_j) sgn(y_i - y_j); `den_x` = sum w_ij [x_i != x_j];
    `den_y` = sum w_ij [y_i != y_j]. Pooled across datasets by addition (grouped tau).
    """

    num: jax.Array
    den_x: jax.Array
    den_y: jax.Array

    def merge(self, other: "PairSums") -> "PairSums":
        return PairSums(*(a + b for a, b in zip(self, other)))


def _as_float(x, y, mask):
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of the same shape, got {x.shape} and {y.shape}")
    dtype = jnp.result_type(x.dtype, y.dtype, jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    m = jnp.ones(x.shape, dtype) if mask is None else jnp.asarray(mask).astype(dtype)
    if m.shape != x.shape:
        raise ValueError(f"mask must have shape {x.shape}, got {m.shape}")
    return x.astype(dtype), y.astype(dtype), m


def _safe_ratio(num, den):
    """num / den, and 0 where den == 0 (the constant-input rule above)."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), jnp.zeros_like(num))


def _pair_mask(m):
    """[M, M] weight of the unordered valid pairs (i < j)."""
    n = m.shape[0]
    upper = jnp.triu(jnp.ones((n, n), m.dtype), k=1)
    return m[:, None] * m[None, :] * upper


def _signs(v):
    return jnp.sign(v[:, None] - v[None, :])


def hyperbolic_ranks(x, y, mask=None):
    """0-based rank of each model when sorted by x descending, ties by y descending, then position.

    This is SciPy's `weightedtau` ranking (lexicographic on (x, y), most important first; a
    joint tie goes to the later position). Masked models are not counted.

    Args: x, y `[M]`, mask `[M]`. Returns: `[M]` float ranks (values for masked entries are
    meaningless).
    """
    x, y, m = _as_float(x, y, mask)
    n = x.shape[0]
    idx = jnp.arange(n)
    # before[j, i]: model j comes before model i in the order.
    xj, xi = x[:, None], x[None, :]
    yj, yi = y[:, None], y[None, :]
    before = (xj > xi) | ((xj == xi) & ((yj > yi) | ((yj == yi) & (idx[:, None] > idx[None, :]))))
    return jnp.sum(before.astype(x.dtype) * m[:, None], axis=0)


def kendall_pair_sums(x, y, mask=None) -> PairSums:
    """Unweighted pair sums: every valid pair has weight 1 (tau-b = num / sqrt(den_x den_y))."""
    x, y, m = _as_float(x, y, mask)
    pm = _pair_mask(m)
    sx, sy = _signs(x), _signs(y)
    return PairSums(jnp.sum(pm * sx * sy), jnp.sum(pm * jnp.abs(sx)), jnp.sum(pm * jnp.abs(sy)))


def weighted_pair_sums(x, y, mask=None) -> PairSums:
    """Pair sums with additive hyperbolic weights w_ij = 1/(r_i + 1) + 1/(r_j + 1).

    The ranks r come from `hyperbolic_ranks(x, y)`: the importance order is the one of x.
    """
    x, y, m = _as_float(x, y, mask)
    w = 1.0 / (hyperbolic_ranks(x, y, m) + 1.0)
    pm = _pair_mask(m) * (w[:, None] + w[None, :])
    sx, sy = _signs(x), _signs(y)
    return PairSums(jnp.sum(pm * sx * sy), jnp.sum(pm * jnp.abs(sx)), jnp.sum(pm * jnp.abs(sy)))


def tau_from_sums(s: PairSums) -> jax.Array:
    """tau-b = num / sqrt(den_x * den_y); 0 when either side has no untied pair."""
    return _safe_ratio(s.num, jnp.sqrt(s.den_x * s.den_y))


@jax.jit
def kendall_tau(x, y, mask=None) -> jax.Array:
    """Kendall's tau-b between score and ground truth (equal to `scipy.stats.kendalltau`).

    tau_b = (C - D) / sqrt((P - T_x)(P - T_y)) with C, D the concordant and discordant pairs,
    P all pairs and T_x, T_y the pairs tied in x and in y (a pair tied in both is in both).

    Args:
      x: `[M]` scores. y: `[M]` ground truth. mask: `[M]` valid models (default all).
    Returns:
      scalar in [-1, 1]; 0 for a constant x or y (SciPy gives NaN).

    >>> float(kendall_tau(jnp.array([1., 2, 3]), jnp.array([1., 3, 2])))  # doctest: +ELLIPSIS
    0.33...
    """
    return tau_from_sums(kendall_pair_sums(x, y, mask))


@jax.jit
def weighted_tau(x, y, mask=None) -> jax.Array:
    """Weighted Kendall tau with hyperbolic weights, equal to `scipy.stats.weightedtau(x, y)`.

    Vigna's weighted tau (WWW 2015): each pair counts w_ij = 1/(r_i+1) + 1/(r_j+1), where r is
    the 0-based rank in decreasing order, so disagreements among the top models weigh most.
    SciPy's default (`rank=True`) averages two such taus, one ranked by x (ties by y) and one
    ranked by y (ties by x); so do we, ties included.

    Args: as `kendall_tau`. Returns: scalar in [-1, 1]; 0 for a constant x or y.
    """
    a = tau_from_sums(weighted_pair_sums(x, y, mask))
    b = tau_from_sums(weighted_pair_sums(y, x, mask))
    return 0.5 * (a + b)


def _grouped(pair_sums_fn, x, y, mask):
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"grouped statistics take [D, M] arrays, got shape {x.shape}")
    mask = jnp.ones(x.shape, bool) if mask is None else mask
    sums = jax.vmap(pair_sums_fn)(x, y, mask)
    return PairSums(*(jnp.sum(v) for v in sums))


@jax.jit
def grouped_kendall_tau(x, y, mask=None) -> jax.Array:
    """Kendall tau-b over several datasets, pairs formed only within each dataset, then pooled.

    As in Chaves et al. (TMLR): concordant, discordant and tied pairs are summed over datasets
    and one tau-b is formed from the totals, so scales that differ between datasets never meet.
    For one dataset it equals `kendall_tau`.

    Args: x, y `[D, M]` (datasets x padded models), mask `[D, M]`. Returns: scalar.
    """
    return tau_from_sums(_grouped(kendall_pair_sums, x, y, mask))


@jax.jit
def grouped_weighted_tau(x, y, mask=None) -> jax.Array:
    """Weighted tau over several datasets, pairs within each dataset, weights from within-dataset ranks.

    Pair sums are pooled over datasets once with ranks by x and once with ranks by y, and the
    two pooled taus are averaged, so for one dataset this equals `weighted_tau` (and SciPy).
    (The TMLR sequel's code instead adds the two weights inside each pair; the two agree
    when there are no ties in the leading models and differ slightly otherwise.)

    Args: x, y `[D, M]`, mask `[D, M]`. Returns: scalar.
    """
    a = tau_from_sums(_grouped(weighted_pair_sums, x, y, mask))
    b = tau_from_sums(_grouped(weighted_pair_sums, y, x, mask))
    return 0.5 * (a + b)


@jax.jit
def pearson(x, y, mask=None) -> jax.Array:
    """Pearson correlation over the valid models; 0 when either side is constant."""
    x, y, m = _as_float(x, y, mask)
    n = jnp.maximum(jnp.sum(m), 1)
    xc = (x - jnp.sum(m * x) / n) * m
    yc = (y - jnp.sum(m * y) / n) * m
    return _safe_ratio(jnp.sum(xc * yc), jnp.sqrt(jnp.sum(xc * xc) * jnp.sum(yc * yc)))


def average_ranks(v, mask=None) -> jax.Array:
    """1-based ranks of the valid entries, ties sharing their average rank (`scipy.stats.rankdata`)."""
    v, _, m = _as_float(v, v, mask)
    less = (v[:, None] > v[None, :]).astype(v.dtype) * m[None, :]
    equal = (v[:, None] == v[None, :]).astype(v.dtype) * m[None, :]
    return jnp.sum(less, axis=1) + (jnp.sum(equal, axis=1) + 1.0) / 2.0


@jax.jit
def spearman(x, y, mask=None) -> jax.Array:
    """Spearman's rho: Pearson on average ranks (equal to `scipy.stats.spearmanr`); 0 if constant."""
    return pearson(average_ranks(x, mask), average_ranks(y, mask), mask)
