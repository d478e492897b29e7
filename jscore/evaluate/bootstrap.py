"""All statistics for many scores and datasets at once, with bootstrap intervals, in one jit.

Layout: `scores [S, D, M]` (score names x datasets x padded models), `truth [D, M]`,
`mask [S, D, M]` (a model has this score on this dataset), `counts [D]` (models of each dataset,
stored first along M). The bootstrap resamples the models of each dataset with replacement
(B resamples; the sequel of the DART paper uses B = 1000) and recomputes every statistic:
per dataset, and pooled over datasets (grouped taus, mean regret, ...). The same gathered
indices serve every score, so the scores are compared on the same resamples.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jscore.evaluate.correlation import (
    grouped_kendall_tau,
    grouped_weighted_tau,
    kendall_tau,
    pearson,
    spearman,
    weighted_tau,
)
from jscore.evaluate.selection import rel_at_k, recall_at_k, top1_regret

# Per-dataset statistics, in table order.
STATISTICS = ("tau", "wtau", "pearson", "spearman", "regret", "rel_at_k", "recall_at_k")
# Across-dataset statistics: pooled taus and means of the per-dataset selection measures.
SUMMARY_STATISTICS = ("grouped_tau", "grouped_wtau", "mean_tau", "mean_wtau", "mean_regret", "mean_rel_at_k", "mean_recall_at_k")


def per_dataset(x, y, mask, *, k: int = 3) -> dict:
    """Every statistic of one (score, dataset): x, y, mask `[M]` -> dict of scalars."""
    return {
        "tau": kendall_tau(x, y, mask),
        "wtau": weighted_tau(x, y, mask),
        "pearson": pearson(x, y, mask),
        "spearman": spearman(x, y, mask),
        "regret": top1_regret(x, y, mask),
        "rel_at_k": rel_at_k(x, y, mask, k=k),
        "recall_at_k": recall_at_k(x, y, mask, k=k),
    }


def across_datasets(x, y, mask, *, k: int = 3):
    """x, y, mask `[D, M]` -> (per-dataset dict of `[D]`, summary dict of scalars).

    A dataset where this score has fewer than two models is left out of the means.
    """
    per = jax.vmap(partial(per_dataset, k=k))(x, y, mask)
    has = (jnp.sum(mask, axis=-1) >= 2).astype(per["tau"].dtype)
    nd = jnp.maximum(jnp.sum(has), 1)
    mean = lambda v: jnp.sum(v * has) / nd  # noqa: E731
    summary = {
        "grouped_tau": grouped_kendall_tau(x, y, mask),
        "grouped_wtau": grouped_weighted_tau(x, y, mask),
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


def bootstrap_indices(key, counts, num_resamples: int, num_models: int) -> jax.Array:
    """Indices `[B, D, M]` resampling the first counts[d] models of each dataset with replacement.

    Padded slots (j >= counts[d]) keep index j, so they stay masked after gathering.
    """
    counts = jnp.asarray(counts)
    d = counts.shape[0]
    draw = jax.random.randint(key, (num_resamples, d, num_models), 0, jnp.maximum(counts, 1)[None, :, None])
    slot = jnp.arange(num_models)
    return jnp.where(slot[None, None, :] < counts[None, :, None], draw, slot[None, None, :])


class Bootstrapped(NamedTuple):
    """Point estimates and bootstrap replicates.

    per: `{stat: [S, D]}` on the data; summary: `{stat: [S]}`; per_samples `{stat: [B, S, D]}`;
    summary_samples `{stat: [B, S]}`.
    """

    per: dict
    summary: dict
    per_samples: dict
    summary_samples: dict


@partial(jax.jit, static_argnames=("num_resamples", "k", "batch_size"))
def bootstrap(scores, truth, mask, counts, key, *, num_resamples: int = 1000, k: int = 3, batch_size: int = 100) -> Bootstrapped:
    """Point estimates and B bootstrap replicates of every statistic (see module docstring).

    Args:
      scores: `[S, D, M]`. truth: `[D, M]`. mask: `[S, D, M]` bool. counts: `[D]` int, the
        number of models of each dataset (stored first). key: a `jax.random` key.
      num_resamples: B. k: the k of rel@k and recall@k. batch_size: resamples per vectorised
        step (bounds memory: one step holds batch x S x D x M x M pairs).
    Returns:
      `Bootstrapped`.
    """
    mask = jnp.asarray(mask, bool)
    per, summary = all_scores(scores, truth, mask, k=k)
    idx = bootstrap_indices(key, counts, num_resamples, scores.shape[-1])

    def one(ix):  # ix [D, M]
        xb = jnp.take_along_axis(scores, ix[None], axis=-1)
        yb = jnp.take_along_axis(truth, ix, axis=-1)
        mb = jnp.take_along_axis(mask, ix[None], axis=-1)
        return all_scores(xb, yb, mb, k=k)

    per_s, summary_s = jax.lax.map(one, idx, batch_size=batch_size)
    return Bootstrapped(per, summary, per_s, summary_s)


def interval(samples, *, level: float = 0.95):
    """(mean, low, high) over the leading (resample) axis: percentile interval at `level`."""
    alpha = (1.0 - level) / 2.0
    q = jnp.quantile(samples, jnp.array([alpha, 1.0 - alpha]), axis=0)
    return jnp.mean(samples, axis=0), q[0], q[1]
