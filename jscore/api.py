"""The one-model entry point `score` (one feature matrix, every score from one shared
decomposition) and the planning it shares with `jscore.batch.score_zoo` (many backbones on one
dataset, vmapped per shape bucket). Layering: this module sits below `jscore.batch` and never
imports it."""

from __future__ import annotations

from functools import partial
from typing import Iterable, Mapping, NamedTuple, Optional, Union

import jax
import numpy as np

from jscore._numerics import float64_scope
from jscore.scorers import REGISTRY
from jscore.scorers.etran import etran_energy_from_stats, etran_lda_from_stats
from jscore.scorers.gbc import gbc_from_stats
from jscore.scorers.hscore import hscore_from_stats
from jscore.scorers.knn import knn_from_stats
from jscore.scorers.leep import leep_from_onehot
from jscore.scorers.logme import logme_from_stats
from jscore.scorers.nce import nce_from_stats
from jscore.scorers.ncti import ncti_terms_from_stats
from jscore.scorers.nleep import nleep_dims, nleep_from_stats
from jscore.scorers.pactran import pactran_from_stats
from jscore.scorers.parc import parc_from_stats
from jscore.scorers.reg_hscore import reg_hscore_from_stats
from jscore.scorers.sfda import sfda_from_stats
from jscore.scorers.tmi import tmi_from_stats
from jscore.scorers.transrate import transrate_from_stats
from jscore.stats import SourceStats, argmax_table, feature_stats, label_stats
from jscore.streaming import (CLASS_SCATTER, QUARTIC, SECOND_PASS, STREAMABLE, accumulate, as_chunk_source,
                              is_chunk_source)
from jscore.validate import validate_inputs

_FROM_STATS = {
    "hscore": hscore_from_stats,
    "reg_hscore": reg_hscore_from_stats,
    "logme": logme_from_stats,
    "gbc": gbc_from_stats,
    "parc": parc_from_stats,
    "tmi": tmi_from_stats,
    "transrate": transrate_from_stats,
    "knn": knn_from_stats,
}


def resolve_scores(scores: Union[str, Iterable[str]], *, have_features: bool, have_source: bool,
                   zoo: bool = False):
    """The requested score names in registry order; "all" means every score whose inputs exist.

    Scores defined relative to a set of models (`REGISTRY[name].relative`: ETran's and NCTI's
    min-max combinations) are kept only for `score_zoo` (zoo=True); for `score` they resolve to
    their per-model components (and "all" leaves them out).
    """
    def usable(spec):
        return (spec.needs == "features" and have_features) or (spec.needs == "source" and have_source)

    if isinstance(scores, str):
        if scores == "all":
            return tuple(n for n, s in REGISTRY.items() if usable(s) and (zoo or not s.relative))
        scores = [s.strip() for s in scores.split(",") if s.strip()]
    names = list(scores)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown score(s) {unknown}; known: {sorted(REGISTRY)}")
    if not zoo:
        names = [c for n in names for c in (REGISTRY[n].components if REGISTRY[n].relative else (n,))]
    for n in names:
        need = REGISTRY[n].needs
        if need == "features" and not have_features:
            raise ValueError(f"{n} needs features")
        if need == "source" and not have_source:
            raise ValueError(f"{n} needs source_probs or source_logits (the source model's predictions)")
    return tuple(n for n in REGISTRY if n in names)


def hyperparams(name: str, options: Mapping) -> dict:
    """Defaults of `name` updated with options[name] (a dict), checked against the registry."""
    hp = dict(REGISTRY[name].hyperparams)
    given = dict(options.get(name, {}) or {})
    unknown = set(given) - set(hp)
    if unknown:
        raise ValueError(f"{name} has no hyper-parameter(s) {sorted(unknown)}; it takes {sorted(hp)}")
    hp.update(given)
    return hp


class Plan(NamedTuple):
    """What a scoring call will compute: names (per-model scores, registry order), hp {name:
    hyper-parameters}, min_per_class (the most any requested score needs), combos (scores relative
    to the set of models, computed by `score_zoo` from their components in `names`)."""

    names: tuple
    hp: dict
    min_per_class: int
    combos: tuple = ()


def plan_scores(scores, options: Mapping, *, have_features: bool, have_source: bool, zoo: bool = False) -> Plan:
    """Resolve the requested scores and check their options (shared by `score` and `score_zoo`)."""
    requested = resolve_scores(scores, have_features=have_features, have_source=have_source, zoo=zoo)
    combos = tuple(n for n in requested if REGISTRY[n].relative)
    wanted = set(requested) | {c for n in combos for c in REGISTRY[n].components}
    names = tuple(n for n in REGISTRY if n in wanted and not REGISTRY[n].relative)
    unknown = set(options) - set(REGISTRY)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}: options are per score, e.g. gbc={{'dims': 32}}")
    relative_options = [n for n in options if REGISTRY[n].relative and options[n]]
    if relative_options:
        raise ValueError(f"{relative_options} take no options: pass them to their components "
                         f"{[REGISTRY[n].components for n in relative_options]}")
    hp = {n: hyperparams(n, options) for n in names}
    return Plan(names, hp, max([min_per_class(n, hp[n]) for n in names] or [1]), combos)


def min_per_class(name: str, hp: Mapping) -> int:
    """Samples each present class needs for `name` with hyper-parameters `hp` (TMI's k-th
    within-class neighbour needs k + 1)."""
    if name == "tmi":
        return max(REGISTRY[name].min_per_class, int(hp["k"]) + 1)
    return REGISTRY[name].min_per_class


def check_samples(plan: Plan, num_samples: int, num_classes: int) -> None:
    """N-LEEP's mixture needs at least as many samples as components; k-NN needs N > k; NCTI's
    PCA more samples than dimensions."""
    if "knn" in plan.names and num_samples < plan.hp["knn"]["k"] + 1:
        raise ValueError(f"knn with k = {plan.hp['knn']['k']} needs at least {plan.hp['knn']['k'] + 1} "
                         f"samples, got {num_samples}")
    for name in ("ncti_seli", "ncti_ncc", "ncti_vc"):
        if name in plan.names and num_samples <= plan.hp[name]["dims"]:
            raise ValueError(f"{name} projects on {plan.hp[name]['dims']} principal components and needs more "
                             f"samples than that (N = {num_samples}); pass e.g. {name}={{'dims': "
                             f"{max(num_samples // 2, 1)}}}")
    if "nleep" in plan.names:
        components = plan.hp["nleep"]["components_per_class"] * num_classes
        if num_samples < components:
            raise ValueError(f"nleep fits {components} mixture components (components_per_class x C) and needs "
                             f"at least that many samples, got {num_samples}")


def fit_all_to_samples(plan: Plan, scores, labels, num_classes: Optional[int]) -> Plan:
    """With `scores="all"`, leave out (with one warning) the scores this sample cannot serve
    (k-NN's N > k, TMI's k + 1 per class, NCTI's N > PCA dimensions, N-LEEP's one sample per
    component), so "all" means every score the inputs allow. A score asked for by name still
    raises its `ValueError`."""
    if not (isinstance(scores, str) and scores == "all"):
        return plan
    try:
        y = np.asarray(labels).reshape(-1).astype(np.int64)
        counts = np.bincount(y[y >= 0])
    except (TypeError, ValueError):
        return plan  # validation names the problem
    present = counts[counts > 0]
    n, c = y.shape[0], int(num_classes or counts.shape[0])
    keep, dropped = [], []
    for name in plan.names:
        need = min_per_class(name, plan.hp[name])
        try:
            if present.size and present.min() < need:
                raise ValueError(f"needs {need} samples per class, the smallest class has {present.min()}")
            check_samples(Plan((name,), {name: plan.hp[name]}, need), n, c)
            keep.append(name)
        except ValueError as err:
            dropped.append(f"{name} ({err})")
    if not dropped:
        return plan
    import warnings

    warnings.warn("scores='all' leaves out what this sample cannot serve: " + "; ".join(dropped), UserWarning,
                  stacklevel=3)
    combos = tuple(m for m in plan.combos if all(part in keep for part in REGISTRY[m].components))
    hp = {name: plan.hp[name] for name in keep}
    return Plan(tuple(keep), hp, max([min_per_class(name, hp[name]) for name in keep] or [1]), combos)


def as_float64(array):
    """None stays None; anything else becomes a float64 NumPy array (the `float64=True` path)."""
    return None if array is None else np.asarray(array, np.float64)


def _freeze(hp: dict) -> tuple:
    return tuple(sorted(hp.items()))


@partial(jax.jit, static_argnames=("num_classes", "spectrum", "equilibrate"))
def _shared(features, labels, *, num_classes: int, spectrum: bool = True, equilibrate: bool = True):
    return feature_stats(features, labels, num_classes=num_classes, spectrum=spectrum,
                         equilibrate=equilibrate)


def shared_parts(names, num_samples: int | None = None, num_features: int | None = None) -> dict:
    """Which halves of the shared decomposition the scores `names` need: H-score uses the
    column-equilibrated one (it does not depend on column scales), the others the plain one.
    With samples at hand (`num_samples`, `num_features` given), N > D and the plain one computed
    anyway, H-score refines against the data from the plain one (`hscore_from_stats`) and the
    equilibrated D x D decomposition is skipped; streamed statistics keep no samples."""
    spectrum = any(n != "hscore" and REGISTRY[n].needs == "features" for n in names)
    scatter = num_samples is not None and num_samples > num_features
    return {"spectrum": spectrum, "equilibrate": "hscore" in names and not (spectrum and scatter)}


def warn_saturation(names, num_samples: int, num_features: int, num_classes: int, models=None) -> None:
    """H-score is C - 1 for every model whose centred features span all N - 1 sample directions,
    which is bound to happen when N <= D + 1: warn, and suggest a PCA dimension. `models`: the
    names of the zoo's models concerned (`score_zoo`), with `num_features` their smallest D."""
    if "hscore" in names and num_samples - 1 <= num_features:
        import warnings

        dims = max(1, min(num_features, (num_samples - 1) // 4))
        which = f" (model(s) {', '.join(models)})" if models else ""
        warnings.warn(f"hscore{which}: N = {num_samples} samples for D = {num_features} feature dimensions: with "
                      f"N <= D + 1 H-score saturates at its bound C - 1 = {num_classes - 1} for every model "
                      f"and cannot rank them. Reduce the features with PCA first, to at most about "
                      f"{dims} dimensions (N / 4), or score more samples.", UserWarning, stacklevel=3)


@partial(jax.jit, static_argnames=("max_iters", "tol"))
def _logme_targets(features, targets, *, max_iters: int, tol: float):
    from jscore.scorers.logme import logme_regression

    return logme_regression(features, targets, max_iters=max_iters, tol=tol)


def score_targets(features, targets, *, scores="all", float64: bool = False, **options) -> dict:
    """Regression or multi-label targets [N, K]: LogME's regression form (the one score defined
    for them). See `score`."""
    if isinstance(scores, str):
        scores = ["logme"] if scores == "all" else [s.strip() for s in scores.split(",") if s.strip()]
    other = [s for s in scores if s != "logme"]
    if other:
        raise ValueError(f"score(s) {other} need integer class labels; with float `targets` (regression or "
                         "multi-label) only logme is defined")
    unknown = set(options) - {"logme"}
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for targets: only logme={{...}}")
    hp = hyperparams("logme", options)
    if float64:
        with float64_scope():
            return score_targets(as_float64(features), as_float64(targets), scores=scores, **options)
    from jscore.validate import validate_targets

    feats, t = validate_targets(features, targets)
    out = {"logme": float(_logme_targets(feats, t, **hp))}
    check_finite(out)
    return out


_NCTI_TERMS = {"ncti_seli": 0, "ncti_ncc": 1, "ncti_vc": 2}
# Scores that also need the feature mask (they read the raw, uncentred features).
_FROM_STATS_MASKED = {
    "pactran": pactran_from_stats,
    "etran_energy": etran_energy_from_stats,
}
_FROM_STATS.update({
    "sfda": sfda_from_stats,
    "etran_lda": etran_lda_from_stats,
})


@partial(jax.jit, static_argnames=("names", "num_classes", "frozen"))
def _feature_scores(fs, key, feature_mask=None, *, names: tuple, num_classes: int, frozen: tuple):
    hp = {name: dict(h) for name, h in frozen}
    out = {}
    ncti = {}  # NCTI's three terms come from one computation per distinct hyper-parameters
    for name in names:
        if name == "nleep":
            out[name] = nleep_from_stats(fs, key, num_classes=num_classes, **hp[name])
        elif name in _NCTI_TERMS:
            key_hp = _freeze(hp[name])
            if key_hp not in ncti:
                ncti[key_hp] = ncti_terms_from_stats(fs, **hp[name])
            out[name] = ncti[key_hp][_NCTI_TERMS[name]]
        elif name in _FROM_STATS_MASKED:
            out[name] = _FROM_STATS_MASKED[name](fs, feature_mask, **hp[name])
        else:
            out[name] = _FROM_STATS[name](fs, **hp[name])
    return out


@partial(jax.jit, static_argnames=("names", "num_classes"))
def _source_scores(probs, top, labels, *, names: tuple, num_classes: int):
    """LEEP and NCE from one pass; `top` [N] is the argmax of `probs`, taken on the host where the
    inputs already are (XLA:CPU's argmax over [N, Cs] is several times slower than NumPy's)."""
    onehot = label_stats(labels, num_classes, None, probs.dtype).onehot
    out = {}
    if "leep" in names:
        out["leep"] = leep_from_onehot(probs, onehot)
    if "nce" in names:
        out["nce"] = nce_from_stats(SourceStats(None, argmax_table(top, onehot, probs.shape[1]), onehot.sum()))
    return out


def score(features=None, labels=None, *, source_probs=None, source_logits=None, targets=None,
          scores: Union[str, Iterable[str]] = "all", num_classes: Optional[int] = None, seed: int = 0,
          float64: bool = False, chunk_size: Optional[int] = None, across_processes: bool = False,
          **options) -> dict:
    """Score one backbone's features on one target task with several scores at once.

    The shared work (centring, the Gram of the smaller side, its eigendecomposition, PCA, class
    counts and means) is done once and every requested score derives from it.

    Args:
      features: [N, D] features (needed by hscore, reg_hscore, nleep, logme, gbc, parc, tmi,
        transrate, knn).
      labels: [N] integer labels. Without `num_classes`, labels are remapped to the index of their
        sorted unique values; with it they must lie in [0, num_classes).
      source_probs: [N, Cs] source-model probabilities (needed by leep, nce); or
      source_logits: [N, Cs] source-model logits (softmaxed here).
      targets: instead of labels, [N] or [N, K] float targets (regression values, multi-hot
        labels): LogME's regression form, the mean over the K columns of the evidence / N
        (`jscore.scorers.logme_regression`); returns {"logme": value}. A NaN target raises; a
        column that is constant over all samples is left out with a warning.
      scores: "all" (every score whose inputs were given), a list of registry names, or a
        comma-separated string. Scores defined relative to a set of models ("etran", "ncti")
        give their per-model components here (e.g. "etran" -> etran_energy, etran_lda); use
        `score_zoo` for the combinations.
      num_classes: C, optional (see labels).
      seed: seeds N-LEEP's mixture initialisation.
      float64: compute in float64 (CPU or GPU; not TPU). float32 is accurate on badly scaled
        features (global scales, a few massive activations, covariance condition numbers up to
        ~1e8: see docs/scorers.md, "float32"); float64 is for checking.
      chunk_size: stream array inputs `chunk_size` rows at a time (see "Streaming" below).
      across_processes: with streamed inputs in a `jax.distributed` job, each process passes its
        own samples and the statistics are summed over all processes before the scores are
        finalised (every process gets the same result; all must call with the same arguments).
      **options: per-score hyper-parameters, e.g. `gbc={"gaussian": "diagonal"}`,
        `nleep={"components_per_class": 3}`.

    Streaming (memory independent of N): `features` may instead be an iterable of chunks
    `(features [n_i, D], labels [n_i])` or `(features, labels, source_probs [n_i, Cs])` (or dicts
    with those keys; labels then come inside the chunks and `num_classes` is required), a
    memory-mapped `.npy` array or its path (labels beside it), or any array with `chunk_size`.
    Only the scores whose statistics are sums stream (`jscore.streaming.STREAMABLE`: hscore,
    reg_hscore, logme, gbc, transrate, etran_lda, nce, leep); "all" means those, and naming
    another raises a ValueError. LEEP and ETran-LDA read the chunks twice (a list, a callable
    returning a fresh iterator, or a memory map). See docs/scorers.md, "Streaming and multi-process scoring".

    Returns:
      dict score name -> float, in registry order.

    Raises:
      ValueError for bad input (see `jscore.validate.validate_inputs`).
    """
    if (chunk_size is not None or across_processes or is_chunk_source(features) or is_chunk_source(source_probs)
            or is_chunk_source(source_logits)):
        if targets is not None:
            raise ValueError("targets (regression) are not streamed: pass them as arrays without chunk_size")
        return score_streamed(features, labels, source_probs=source_probs, source_logits=source_logits,
                              scores=scores, num_classes=num_classes, seed=seed, float64=float64,
                              chunk_size=chunk_size, across_processes=across_processes, **options)
    if targets is not None:
        if labels is not None or source_probs is not None or source_logits is not None:
            raise ValueError("pass either labels (classification) or targets (regression / multi-label), "
                             "not both; targets are scored with features only")
        return score_targets(features, targets, scores=scores, float64=float64, **options)
    if float64:
        with float64_scope():
            return score(as_float64(features), labels, source_probs=as_float64(source_probs),
                         source_logits=as_float64(source_logits), scores=scores, num_classes=num_classes,
                         seed=seed, **options)
    plan = plan_scores(scores, options, have_features=features is not None,
                       have_source=source_probs is not None or source_logits is not None)
    plan = fit_all_to_samples(plan, scores, labels, num_classes)
    names, hp = plan.names, plan.hp
    v = validate_inputs(features if any(REGISTRY[n].needs == "features" for n in names) else None,
                        labels, source_probs, source_logits=source_logits, num_classes=num_classes,
                        min_per_class=plan.min_per_class)
    check_samples(plan, v.labels.shape[0], v.num_classes)
    results = {}
    feature_names = tuple(n for n in names if REGISTRY[n].needs == "features")
    if feature_names:
        warn_saturation(feature_names, v.labels.shape[0], v.features.shape[1], v.num_classes)
        fs = _shared(v.features, v.labels, num_classes=v.num_classes,
                     **shared_parts(feature_names, *v.features.shape))
        if "nleep" in feature_names and hp["nleep"]["max_dims"] is None:
            hp["nleep"]["max_dims"] = nleep_dims(fs.evals, hp["nleep"]["variance"])
        frozen = tuple((n, _freeze(hp[n])) for n in feature_names)
        results.update(_feature_scores(fs, jax.random.PRNGKey(seed), names=feature_names,
                                       num_classes=v.num_classes, frozen=frozen))
    source_names = tuple(n for n in names if REGISTRY[n].needs == "source")
    pooled = tuple(n for n in source_names if n in ("leep", "nce"))
    if pooled:
        top = np.argmax(v.source_probs, axis=1).astype(np.int32)
        results.update(_source_scores(v.source_probs, top, v.labels, names=pooled, num_classes=v.num_classes))
    for name in source_names:
        if name not in pooled:
            results[name] = REGISTRY[name].fn(v.source_probs, v.labels, num_classes=v.num_classes, **hp[name])
    out = {n: float(results[n]) for n in names}
    check_finite(out)
    return out


def check_finite(results: Mapping[str, float], model: Optional[str] = None) -> None:
    """A score is never silently NaN: a non-finite value is an error that names the score."""
    bad = [n for n, v in results.items() if not np.isfinite(v)]
    if bad:
        where = f" for model {model!r}" if model else ""
        raise ValueError(f"score(s) {bad} came out non-finite{where}; the features may be degenerate "
                         "(e.g. all identical) - please report this input")


def score_streamed(features=None, labels=None, *, source_probs=None, source_logits=None,
                   scores: Union[str, Iterable[str]] = "all", num_classes: Optional[int] = None, seed: int = 0,
                   float64: bool = False, chunk_size: Optional[int] = None, across_processes: bool = False,
                   lenient: bool = False, **options) -> dict:
    """`score` on a streamed input: one pass over the chunks (two with LEEP or ETran-LDA) into the
    sufficient statistics of `jscore.moments` / `SourceStats`, then the scorers' `*_from_stats`
    forms (ETran-LDA and LEEP: sums of the second pass).

    Memory: O(D^2 + C D) for hscore, reg_hscore, logme and etran_lda; GBC and TransRate add C D^2
    (the per-class scatters); NCE and LEEP [Cs, C]. Time: about one D x D product per sample
    row, plus D x D eigendecompositions at the end. Arguments as for `score`; `lenient` (used by `score_zoo`) skips named
    scores whose inputs this model lacks instead of raising.

    Raises:
      ValueError: a requested score that needs all samples at once (naming the ones that
        stream), a chunk iterable without `num_classes`, bad chunks, too few samples per class.
    """
    if float64:
        with float64_scope():
            return _score_streamed(features, labels, source_probs, source_logits, scores, num_classes, seed,
                                   chunk_size, across_processes, lenient, np.float64, options)
    return _score_streamed(features, labels, source_probs, source_logits, scores, num_classes, seed, chunk_size,
                           across_processes, lenient, np.float32, options)


def _score_streamed(features, labels, source_probs, source_logits, scores, num_classes, seed, chunk_size,
                    across_processes, lenient, dtype, options) -> dict:
    if across_processes and num_classes is None:
        raise ValueError("across_processes needs num_classes: each process sees only its own labels")
    source = as_chunk_source(features, labels, source_probs=source_probs, source_logits=source_logits,
                             chunk_size=chunk_size, num_classes=num_classes)
    num_classes = num_classes if num_classes is not None else source.num_classes
    chunks = source.chunks()
    first = next(chunks, None)
    if first is None:
        raise ValueError("the streamed input holds no chunks")
    if first.features is None and first.source_probs is None and first.source_logits is None:
        raise ValueError("the first chunk holds neither features nor source probabilities")
    have_features = first.features is not None
    have_source = first.source_probs is not None or first.source_logits is not None
    if not source.reiterable:  # the peek consumed the first chunk: put it back
        source = source._replace(chunks=lambda: _chain_first(first, chunks))
    if lenient and not (isinstance(scores, str) and scores == "all"):  # score_zoo: skip what a model lacks
        wanted = [t.strip() for t in scores.split(",") if t.strip()] if isinstance(scores, str) else list(scores)
        have = {"features": have_features, "source": have_source}
        scores = [t for t in wanted if t not in REGISTRY or REGISTRY[t].relative or have[REGISTRY[t].needs]]
    plan = plan_scores(scores, options, have_features=have_features, have_source=have_source)
    streamable = [n for n in plan.names if n in STREAMABLE and (source.reiterable or n not in SECOND_PASS)]
    if isinstance(scores, str) and scores == "all":
        once = [n for n in plan.names if n in SECOND_PASS and not source.reiterable]
        if once:
            import warnings

            warnings.warn(f"scores='all' leaves out {once}: they read the chunks twice, and this iterator can be "
                          "read once (pass a list of chunks or a callable returning a fresh iterator)", UserWarning,
                          stacklevel=3)
        plan = Plan(tuple(streamable), {n: plan.hp[n] for n in streamable},
                    max([min_per_class(n, plan.hp[n]) for n in streamable] or [1]))
    else:
        whole = [n for n in plan.names if n not in STREAMABLE]
        if whole:
            raise ValueError(f"score(s) {whole} need all samples at once and cannot be streamed; the scores "
                             f"that stream are {list(STREAMABLE)}. Pass the features as one [N, D] array "
                             "(without chunk_size) for the others")
    if not plan.names:
        raise ValueError("none of the requested scores can be streamed from these inputs; the scores that "
                         f"stream are {list(STREAMABLE)}")
    names, hp = plan.names, plan.hp
    if "etran_lda" in names and hp["etran_lda"]["form"] != "published":
        raise ValueError("etran_lda streams in its published form only (form='published'); form="
                         f"{hp['etran_lda']['form']!r} needs all samples at once")
    feature_names = tuple(n for n in names if REGISTRY[n].needs == "features")
    source_names = tuple(n for n in names if REGISTRY[n].needs == "source")
    pooled = tuple(n for n in feature_names if n not in SECOND_PASS)  # finalised from the moments
    acc = accumulate(source, num_classes=num_classes, features=bool(feature_names), source_scores=bool(source_names),
                     class_scatter=any(n in CLASS_SCATTER for n in feature_names),
                     quartic=any(n in QUARTIC for n in feature_names), leep="leep" in source_names,
                     lda="etran_lda" in feature_names,
                     chunk_size=chunk_size, across_processes=across_processes,
                     dtype=dtype)
    from jscore.validate import check_class_counts

    counts = acc.moments.counts if acc.moments is not None else acc.source.joint.sum(0)
    check_class_counts(np.asarray(counts), plan.min_per_class)
    results = {}
    if feature_names:
        from jscore.moments import finalize

        d = acc.moments.within.shape[0]
        warn_saturation(feature_names, acc.num_samples, d, num_classes)
        if pooled:
            fs = finalize(acc.moments, num_samples=acc.num_samples, **shared_parts(pooled))
            frozen = tuple((n, _freeze(hp[n])) for n in pooled)
            results.update(_feature_scores(fs, jax.random.PRNGKey(seed), names=pooled, num_classes=num_classes,
                                           frozen=frozen))
        if "etran_lda" in feature_names:
            results["etran_lda"] = acc.lda_sum / acc.moments.n
    if "nce" in source_names:
        from jscore.scorers.nce import nce_from_stats

        results["nce"] = nce_from_stats(acc.source)
    if "leep" in source_names:
        results["leep"] = acc.leep_sum / acc.source.n
    out = {n: float(results[n]) for n in names}
    check_finite(out)
    return out


def _chain_first(first, rest):
    yield first
    yield from rest
