"""Many models at once: pad-and-stack backbones into shape buckets with masks and vmap the
scorers over them, so one compiled program serves every model of a bucket.

Feature sizes are padded to a multiple of `multiple` (128) with a feature mask; source-class
counts likewise with a source mask. Masks are weights inside the statistics, so padding is
exactly neutral. With a mesh (see `jscore.sharding`) the stacks are sharded over models and
samples.
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jscore.scorers import REGISTRY
from jscore.scorers.nleep import nleep_dims
from jscore.stats import feature_stats
from jscore.validate import validate_inputs


def bucket_size(size: int, multiple: int = 128) -> int:
    """Smallest multiple of `multiple` >= size."""
    return -(-size // multiple) * multiple


def pad_stack(arrays, size: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Stack [N, d_m] arrays into [M, N, size] with zero padding, and their [M, size] masks."""
    n = arrays[0].shape[0]
    out = np.zeros((len(arrays), n, size), dtype)
    mask = np.zeros((len(arrays), size), dtype)
    for i, a in enumerate(arrays):
        out[i, :, : a.shape[1]] = a
        mask[i, : a.shape[1]] = 1
    return out, mask


@partial(jax.jit, static_argnames=("num_classes",))
def stacked_feature_stats(features, feature_masks, labels, sample_mask, *, num_classes: int):
    """vmap of `feature_stats` over models: features [M, N, D], feature_masks [M, D]."""
    return jax.vmap(lambda x, m: feature_stats(x, labels, num_classes=num_classes, sample_mask=sample_mask,
                                               feature_mask=m))(features, feature_masks)


@partial(jax.jit, static_argnames=("names", "num_classes", "frozen"))
def stacked_feature_scores(fs, key, feature_masks=None, *, names: tuple, num_classes: int, frozen: tuple):
    """vmap of the per-model feature scores over a stacked FeatureStats (and its [M, D] feature
    masks, which the scores reading raw features need)."""
    from jscore.api import _feature_scores

    if feature_masks is None:
        return jax.vmap(lambda f: _feature_scores(f, key, names=names, num_classes=num_classes, frozen=frozen))(fs)
    return jax.vmap(lambda f, m: _feature_scores(f, key, m, names=names, num_classes=num_classes,
                                                 frozen=frozen))(fs, feature_masks)


@partial(jax.jit, static_argnames=("names", "num_classes", "frozen"))
def stacked_source_scores(probs, source_masks, labels, sample_mask, *, names: tuple, num_classes: int,
                          frozen: tuple = ()):
    """vmap of the source-probability scores over models: probs [M, N, Cs], source_masks [M, Cs];
    `frozen` holds each score's hyper-parameters as (name, sorted items) pairs."""
    hp = {name: dict(h) for name, h in frozen}
    out = {}
    for name in names:
        fn = REGISTRY[name].fn
        kw = hp.get(name, {})
        out[name] = jax.vmap(lambda p, m: fn(p, labels, num_classes=num_classes, sample_mask=sample_mask,
                                             source_mask=m, **kw))(probs, source_masks)
    return out


def score_zoo(models: Mapping[str, Mapping], labels, **kwargs) -> dict:
    """Score several backbones on one dataset: {model: {"features": [N, D], "source_probs":
    [N, Cs] (optional)}} -> {model: {score: float}}. Keyword arguments as for `jscore.score`
    (plus `multiple`, `mesh`, see `score_buckets`).

    Scores defined relative to the set of models (`REGISTRY[name].relative`: "etran", "ncti",
    min-max combinations over the models) are computed here, from their per-model components
    (which are returned too); "all" includes them.

    Models whose feature sizes share a bucket (D padded to a multiple of 128) run as one vmapped
    program; see `score_buckets`.

    Streaming: a model's "features" (or "source_probs"/"source_logits") may be a streamed input
    as for `jscore.score` (chunk iterables carry their labels: pass labels=None; memory maps and
    `.npy` paths use the shared `labels`), or `chunk_size=` streams every model. Streamed models
    are scored one after another with `jscore.api.score_streamed` (memory independent of N);
    only the streamable scores apply, so the relative combinations (ETran, NCTI) are not formed.
    """
    from jscore.api import score_streamed
    from jscore.streaming import is_chunk_iterable, is_chunk_source

    streamed = kwargs.get("chunk_size") is not None or kwargs.get("across_processes") or any(
        is_chunk_source(inputs.get(k)) for inputs in models.values()
        for k in ("features", "source_probs", "source_logits"))
    if streamed:
        if not models:
            raise ValueError("no models to score")
        unknown = {"multiple", "mesh"} & set(kwargs)
        if unknown:
            raise ValueError(f"{sorted(unknown)} apply to in-memory zoos only, not to streamed inputs")
        out = {}
        for model, inputs in models.items():
            unknown = set(inputs) - {"features", "source_probs", "source_logits"}
            if unknown:
                raise ValueError(f"model {model!r}: unknown input(s) {sorted(unknown)}")
            try:
                # chunk iterables carry their own labels; arrays and memory maps use the shared ones
                own = any(is_chunk_iterable(inputs.get(k)) for k in ("features", "source_probs", "source_logits"))
                out[model] = score_streamed(inputs.get("features"), None if own else labels, source_probs=inputs.get("source_probs"),
                                            source_logits=inputs.get("source_logits"), lenient=True, **kwargs)
            except ValueError as err:
                raise ValueError(f"model {model!r}: {err}") from None
        return out
    return score_buckets(models, labels, **kwargs)


def _pad_rows(n: int, multiple: int) -> int:
    return bucket_size(n, multiple) - n


def score_buckets(models: Mapping[str, Mapping], labels, *, scores="all", num_classes: Optional[int] = None,
                  seed: int = 0, multiple: int = 128, mesh=None, float64: bool = False, **options) -> dict:
    """Score many models on one labelled dataset. See `jscore.score_zoo`.

    Args:
      models: {name: {"features": [N, D_m], "source_probs" or "source_logits": [N, Cs_m]}}.
      labels: [N] labels shared by all models.
      scores, num_classes, seed, **options: as for `jscore.score`.
      multiple: bucket granularity of the padded feature / source sizes.
      mesh: optional ("models", "data") mesh from `jscore.sharding.make_mesh`.
      float64: compute in float64 (see `jscore.score`).

    Returns:
      {model: {score: float}}; a model lacking an input simply lacks the scores that need it.
    """
    from jscore.api import _freeze, as_float64, check_samples, fit_all_to_samples, plan_scores

    if float64:
        from jscore._numerics import float64_scope

        with float64_scope():
            return score_buckets({m: {k: as_float64(v) for k, v in inputs.items()} for m, inputs in models.items()},
                                 labels, scores=scores, num_classes=num_classes, seed=seed, multiple=multiple,
                                 mesh=mesh, **options)
    if not models:
        raise ValueError("no models to score")
    have_features = any(m.get("features") is not None for m in models.values())
    have_source = any(m.get("source_probs") is not None or m.get("source_logits") is not None
                      for m in models.values())
    plan = plan_scores(scores, options, have_features=have_features, have_source=have_source, zoo=True)
    plan = fit_all_to_samples(plan, scores, labels, num_classes)
    names, hp = plan.names, plan.hp
    checked = {}
    for model, inputs in models.items():
        try:
            checked[model] = validate_inputs(inputs.get("features"), labels, inputs.get("source_probs"),
                                             source_logits=inputs.get("source_logits"),
                                             num_classes=num_classes, min_per_class=plan.min_per_class)
        except ValueError as err:
            raise ValueError(f"model {model!r}: {err}") from None
    first = next(iter(checked.values()))
    y, num_classes = first.labels, first.num_classes
    n = y.shape[0]
    check_samples(plan, n, num_classes)
    wide = {m: v.features.shape[1] for m, v in checked.items() if v.features is not None and n - 1 <= v.features.shape[1]}
    if wide:
        from jscore.api import warn_saturation

        warn_saturation(names, n, min(wide.values()), num_classes, models=sorted(wide))
    data_shards = 1 if mesh is None else mesh.shape["data"]
    model_shards = 1 if mesh is None else mesh.shape["models"]
    extra = _pad_rows(n, data_shards)
    y_pad = np.concatenate([y, np.zeros(extra, y.dtype)])
    sample_mask = np.concatenate([np.ones(n, np.float32), np.zeros(extra, np.float32)])
    results = {m: {} for m in models}
    key = jax.random.PRNGKey(seed)

    def place(stack, masks):
        stack = np.pad(stack, [(0, 0), (0, extra)] + [(0, 0)] * (stack.ndim - 2))
        m_extra = _pad_rows(stack.shape[0], model_shards)
        if m_extra:  # fill the models axis with copies of the first model; dropped afterwards
            stack = np.concatenate([stack, np.repeat(stack[:1], m_extra, 0)])
            masks = np.concatenate([masks, np.repeat(masks[:1], m_extra, 0)])
        if mesh is None:
            return jnp.asarray(stack), jnp.asarray(masks), jnp.asarray(y_pad), jnp.asarray(sample_mask)
        from jscore.sharding import per_model_sharding, replicated, stacked_sharding

        return (jax.device_put(stack, stacked_sharding(mesh, stack.ndim)),
                jax.device_put(masks, per_model_sharding(mesh, 2)),
                jax.device_put(y_pad, replicated(mesh)), jax.device_put(sample_mask, replicated(mesh)))

    def buckets(field: str):
        """(stack, masks) placed on devices, and the member models, per padded size and dtype."""
        groups = defaultdict(list)
        for model, v in checked.items():
            a = getattr(v, field)
            if a is not None:
                groups[(bucket_size(a.shape[1], multiple), a.dtype)].append(model)
        for (size, dtype), members in groups.items():
            yield place(*pad_stack([getattr(checked[m], field) for m in members], size, dtype)), members

    def collect(out, members):
        for name, values in out.items():
            for i, model in enumerate(members):
                results[model][name] = float(values[i])

    feature_names = tuple(n_ for n_ in names if REGISTRY[n_].needs == "features")
    if feature_names:
        for (x, fm, yy, sm), members in buckets("features"):
            fs = stacked_feature_stats(x, fm, yy, sm, num_classes=num_classes)
            h = {k: dict(v) for k, v in hp.items()}
            if "nleep" in feature_names and h["nleep"]["max_dims"] is None:
                evals = np.asarray(fs.evals)
                h["nleep"]["max_dims"] = max(nleep_dims(e, h["nleep"]["variance"]) for e in evals)
            frozen = tuple((n_, _freeze(h[n_])) for n_ in feature_names)
            collect(stacked_feature_scores(fs, key, fm, names=feature_names, num_classes=num_classes,
                                           frozen=frozen), members)
    source_names = tuple(n_ for n_ in names if REGISTRY[n_].needs == "source")
    if source_names:
        for (p, smask, yy, sm), members in buckets("source_probs"):
            collect(stacked_source_scores(p, smask, yy, sm, names=source_names, num_classes=num_classes,
                                          frozen=tuple((n_, _freeze(hp[n_])) for n_ in source_names)), members)
    from jscore.api import check_finite

    for model, r in results.items():
        check_finite(r, model)
    combine_relative(results, plan.combos)
    order = [n_ for n_ in REGISTRY if n_ in set(names) | set(plan.combos)]
    return {m: {n_: r[n_] for n_ in order if n_ in r} for m, r in results.items()}


def combine_relative(results: dict, combos) -> None:
    """Add each score defined relative to the set of models (ETran, NCTI) to `results` in place,
    from its components, over the models that have all of them."""
    for name in combos:
        spec = REGISTRY[name]
        members = [m for m, r in results.items() if all(c in r for c in spec.components)]
        if not members:
            continue
        values = spec.combine(*[np.array([results[m][c] for m in members]) for c in spec.components])
        for m, v in zip(members, values):
            results[m][name] = float(v)
