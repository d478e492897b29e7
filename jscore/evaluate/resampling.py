"""All statistics for many scores and datasets at once, with bootstrap intervals, in one jit.

Layout: `scores [S, D, M]` (score names x datasets x padded models), `truth [D, M]`,
`mask [S, D, M]` (a model has this score on this dataset), `counts [D]` (models of each dataset,
stored first along M). The bootstrap resamples the models of each dataset with replacement
(B resamples; the sequel of the DART paper uses B = 1000) and recomputes every statistic:
per dataset, and pooled over datasets (grouped taus, mean regret, ...). The same gathered
indices serve every score, so the scores are compared on the same resamples. Everything runs
in one compiled program: vmap over a batch of resamples, scores and datasets, `lax.map` over
batches.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jscore.evaluate.correlation import PairSums, _as_float, pearson, tau_from_sums
from jscore.evaluate.selection import selection_from_ranks

# Per-dataset statistics, in table order.
STATISTICS = ("tau", "wtau", "pearson", "spearman", "regret", "rel_at_k", "recall_at_k")
# Across-dataset statistics: pooled taus and means of the per-dataset selection measures.
SUMMARY_STATISTICS = ("grouped_tau", "grouped_wtau", "mean_tau", "mean_wtau", "mean_regret", "mean_rel_at_k", "mean_recall_at_k")


def _per_dataset_with_sums(x, y, mask, *, k: int):
    """Statistics of one (score, dataset) and the pair sums that grouped taus pool.

    The same numbers as the functions of `correlation` and `selection`, computed from one set
    of pairwise signs: every pair sum is sum_{i<j} (w_i + w_j) f_ij = sum_i w_i sum_j f_ij for
    a symmetric f, so three row sums of the [M, M] sign products serve the plain tau and both
    weighted taus, and the rank orders reuse the same signs.
    """
    x, y, m = _as_float(x, y, mask)
    n = x.shape[0]
    sx = jnp.sign(x[:, None] - x[None, :])  # sx[i, j] = sign(x_i - x_j)
    sy = jnp.sign(y[:, None] - y[None, :])
    mj = m[None, :]
    rows = [jnp.sum(f * mj, axis=1) * m for f in (sx * sy, jnp.abs(sx), jnp.abs(sy))]  # [M] each

    def sums(w):  # w [M]: pair weight w_i + w_j
        return PairSums(*(jnp.sum(w * r) for r in rows))

    ks = PairSums(*(0.5 * jnp.sum(r) for r in rows))
    later = jnp.arange(n)[:, None] > jnp.arange(n)[None, :]  # later[i, j]: i after j in the table
    # before[i, j]: model i precedes model j in an order; rank_j = number of valid i before j.
    by_x = (sx > 0) | ((sx == 0) & ((sy > 0) | ((sy == 0) & later)))
    by_y = (sy > 0) | ((sy == 0) & ((sx > 0) | ((sx == 0) & later)))
    pick = (sx > 0) | ((sx == 0) & ((sy < 0) | ((sy == 0) & ~later & (jnp.arange(n)[:, None] != jnp.arange(n)[None, :]))))
    rank = lambda before: jnp.sum(before.astype(x.dtype) * m[:, None], axis=0)  # noqa: E731
    wx = sums(1.0 / (rank(by_x) + 1.0))
    wy = sums(1.0 / (rank(by_y) + 1.0))
    regret, rel, recall = selection_from_ranks(rank(pick), y, m, k=k)
    avg_rank = lambda sv: jnp.sum((sv > 0) * mj, axis=1) + (jnp.sum((sv == 0) * mj, axis=1) + 1.0) / 2.0  # noqa: E731
    stats = {
        "tau": tau_from_sums(ks),
        "wtau": 0.5 * (tau_from_sums(wx) + tau_from_sums(wy)),
        "pearson": pearson(x, y, m),
        "spearman": pearson(avg_rank(sx), avg_rank(sy), m),
        "regret": regret,
        "rel_at_k": rel,
        "recall_at_k": recall,
    }
    return stats, (ks, wx, wy)


def per_dataset(x, y, mask, *, k: int = 3) -> dict:
    """Every statistic of one (score, dataset): x, y, mask `[M]` -> dict of scalars."""
    return _per_dataset_with_sums(x, y, mask, k=k)[0]


def across_datasets(x, y, mask, *, k: int = 3):
    """x, y, mask `[D, M]` -> (per-dataset dict of `[D]`, summary dict of scalars).

    The grouped taus pool the per-dataset pair sums (see `grouped_kendall_tau`). A dataset
    where this score has fewer than two models is left out of the means.
    """
    per, (ks, wx, wy) = jax.vmap(partial(_per_dataset_with_sums, k=k))(x, y, mask)
    pool = lambda s: PairSums(*(jnp.sum(v) for v in s))  # noqa: E731
    has = jnp.sum(mask, axis=-1) >= 2
    nd = jnp.maximum(jnp.sum(has), 1)
    mean = lambda v: jnp.sum(jnp.where(has, v, 0)) / nd  # noqa: E731
    summary = {
        "grouped_tau": tau_from_sums(pool(ks)),
        "grouped_wtau": 0.5 * (tau_from_sums(pool(wx)) + tau_from_sums(pool(wy))),
        "mean_tau": mean(per["tau"]),
        "mean_wtau": mean(per["wtau"]),
        "mean_regret": mean(per["regret"]),
        "mean_rel_at_k": mean(per["rel_at_k"]),
        "mean_recall_at_k": mean(per["recall_at_k"]),
    }
    return per, summary


def all_scores(scores, truth, mask, *, k: int = 3):
    """scores `[S, D, M]`, truth `[D, M]`, mask `[S, D, M]` -> per `{name: [S, D]}`, summary `{name: [S]}`."""
    return jax.vmap(partial(across_datasets, k=k), in_axes=(0, None, 0))(scores, truth, mask)


def bootstrap_indices(seed: int, counts, num_resamples: int, num_models: int) -> np.ndarray:
    """Indices `[B, D, M]` resampling the first counts[d] models of each dataset with replacement.

    Drawn on the host with NumPy's default generator, so a seed gives the same resamples on
    every device. Padded slots (j >= counts[d]) keep index j, so they stay masked after gathering.
    """
    counts = np.asarray(counts, np.int64)
    rng = np.random.default_rng(seed)
    u = rng.random((num_resamples, counts.shape[0], num_models))
    draw = np.minimum((u * counts[None, :, None]).astype(np.int64), np.maximum(counts - 1, 0)[None, :, None])
    slot = np.arange(num_models)
    return np.where(slot[None, None, :] < counts[None, :, None], draw, slot[None, None, :])


class Bootstrapped(NamedTuple):
    """Point estimates and bootstrap replicates.

    per: `{stat: [S, D]}` on the data; summary: `{stat: [S]}`; per_samples `{stat: [B, S, D]}`;
    summary_samples `{stat: [B, S]}`.
    """

    per: dict
    summary: dict
    per_samples: dict
    summary_samples: dict


@partial(jax.jit, static_argnames=("k", "batch_size"))
def _evaluate_resamples(scores, truth, mask, idx, *, k: int, batch_size: int):
    """All statistics on each resample `idx [R, D, M]` -> per `{stat: [R, S, D]}`, summary `{stat: [R, S]}`."""
    r = idx.shape[0]
    # Gather every resample at once (one gather op; gathering inside the loop body compiles
    # several times slower), then loop over fixed-size batches, the last padded by repetition.
    nb = -(-r // batch_size)
    idx = jnp.concatenate([idx, jnp.broadcast_to(idx[:1], (nb * batch_size - r,) + idx.shape[1:])], axis=0)
    xb = jnp.take_along_axis(scores[None], idx[:, None], axis=-1)
    yb = jnp.take_along_axis(truth[None], idx, axis=-1)
    mb = jnp.take_along_axis(mask[None], idx[:, None], axis=-1)
    batched = lambda v: v.reshape((nb, batch_size) + v.shape[1:])  # noqa: E731
    body = jax.vmap(partial(all_scores, k=k))
    per, summary = jax.lax.map(lambda a: body(*a), (batched(xb), batched(yb), batched(mb)))
    unbatch = lambda v: v.reshape((nb * batch_size,) + v.shape[2:])[:r]  # noqa: E731
    return jax.tree.map(unbatch, per), jax.tree.map(unbatch, summary)


def bootstrap(scores, truth, mask, counts, *, seed: int = 0, num_resamples: int = 1000, k: int = 3, batch_size: int | None = None) -> Bootstrapped:
    """Point estimates and B bootstrap replicates of every statistic (see module docstring).

    Args:
      scores: `[S, D, M]`. truth: `[D, M]`. mask: `[S, D, M]` bool (model has this score on this
        dataset). counts: `[D]` int, the number of models of each dataset (stored first).
      seed: resampling seed. num_resamples: B. k: the k of rel@k and recall@k.
      batch_size: resamples per vectorised step; a step holds batch x S x D x M x M pairwise
        signs. Default: about 2**21 of them (measured fastest on CPU: larger steps are
        memory-bound). Results do not depend on it.
    Returns:
      `Bootstrapped`. The point estimates are computed by the same compiled program, as
      resample 0 with the identity indices.

    >>> out = bootstrap(scores, truth, mask, counts, seed=0)        # doctest: +SKIP
    >>> mean, lo, hi = interval(out.per_samples["tau"])             # doctest: +SKIP
    """
    scores = jnp.asarray(scores)
    if scores.ndim != 3:
        raise ValueError(f"scores must be [S, D, M], got shape {scores.shape}")
    s, d, m = scores.shape
    truth = jnp.asarray(truth)
    if truth.shape != (d, m):
        raise ValueError(f"truth must be [D, M] = {(d, m)}, got {truth.shape}")
    mask = jnp.broadcast_to(jnp.asarray(mask, bool), (s, d, m))
    counts = np.asarray(counts)
    if counts.shape != (d,) or counts.min(initial=2) < 1 or counts.max(initial=0) > m:
        raise ValueError(f"counts must be [D] = ({d},) with values in [1, {m}], got {counts}")
    identity = np.broadcast_to(np.arange(m), (1, d, m))
    idx = np.concatenate([identity, bootstrap_indices(seed, counts, num_resamples, m)], axis=0)
    if batch_size is None:
        batch_size = max(1, min(256, 2**21 // (s * d * m * m)))
    bs = max(1, min(batch_size, idx.shape[0]))
    per, summary = _evaluate_resamples(scores, truth, mask, jnp.asarray(idx), k=k, batch_size=bs)
    first = lambda v: v[0]  # noqa: E731
    rest = lambda v: v[1:]  # noqa: E731
    return Bootstrapped(
        jax.tree.map(first, per), jax.tree.map(first, summary), jax.tree.map(rest, per), jax.tree.map(rest, summary)
    )


def interval(samples, *, level: float = 0.95):
    """(mean, low, high) over the leading (resample) axis: percentile interval at `level`."""
    alpha = (1.0 - level) / 2.0
    q = jnp.quantile(samples, jnp.array([alpha, 1.0 - alpha]), axis=0)
    return jnp.mean(samples, axis=0), q[0], q[1]
