"""Scoring inputs that do not fit in memory: features (and source probabilities) read chunk by
chunk, reduced to the sufficient statistics of `jscore.moments` and `jscore.stats.SourceStats`,
optionally summed across the processes of a `jax.distributed` job.

Chunk sources (`as_chunk_source`):
  - an iterable of `(features [n_i, D], labels [n_i])` or `(features, labels, source_probs [n_i, Cs])`
    tuples, or of dicts with keys features / labels / source_probs or source_logits (features may
    be None for source-only scores); a list or tuple of them, or a callable returning a fresh
    iterator, can be read twice (LEEP's second pass), a generator once;
  - a memory-mapped `.npy` array (`np.load(path, mmap_mode="r")` or `np.memmap`), or its path,
    with `labels` beside it (an array or a `.npy` path), read `chunk_size` rows at a time.

Which scores stream (`STREAMABLE`): those whose statistics are sums over samples. H-score, LogME
and regularised H-score need O(D^2 + C D) memory; GBC and TransRate add the per-class scatters,
C D^2; NCE the [Cs, C] argmax table; LEEP the [Cs, C] joint table and a second pass over the
chunks (the log of each sample's expected prediction needs the finished table). The others need
all samples at once (N-LEEP's mixture, k-NN, PARC, TMI, SFDA's and ETran's per-sample LDA
predictions, NCTI's per-sample probabilities, PACTran's fitted head) and raise a `ValueError`.
"""

from __future__ import annotations

import os
from functools import partial, reduce
from typing import Callable, Iterable, Iterator, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jscore.moments import Moments, class_means, init_moments, merge, update
from jscore.scorers.etran import nearest_mean_logits
from jscore.scorers.leep import leep_conditional, leep_log_sum
from jscore._numerics import mm, safe_div
from jscore.stats import SourceStats, label_stats, source_stats
from jscore.validate import validate_chunk

STREAMABLE = ("hscore", "reg_hscore", "logme", "gbc", "transrate", "etran_lda", "nce", "leep")
# Need the finished first-pass statistics, then one more pass over the chunks: LEEP (the joint
# table), ETran's LDA term (the class means; its published form only).
SECOND_PASS = ("leep", "etran_lda")
CLASS_SCATTER = ("gbc", "transrate")  # need the per-class scatters [C, D, D]
QUARTIC = ("reg_hscore",)  # need sum_i |x_i - mu|^4 (Ledoit-Wolf)
DEFAULT_CHUNK = 4096


class Chunk(NamedTuple):
    """One raw (unchecked) chunk: features [n, D] or None, labels [n], source_probs / source_logits [n, Cs] or None."""

    features: Optional[np.ndarray]
    labels: np.ndarray
    source_probs: Optional[np.ndarray] = None
    source_logits: Optional[np.ndarray] = None


class ChunkSource(NamedTuple):
    """chunks(): a fresh iterator of `Chunk`s; reiterable: whether chunks() may be called again;
    num_classes: the number of classes when the source could tell (whole labels remapped), else None."""

    chunks: Callable[[], Iterator[Chunk]]
    reiterable: bool
    num_classes: Optional[int] = None


def is_chunk_source(x) -> bool:
    """Whether `x` is a streamed input rather than one in-memory array: a path, a memory map, an
    iterator, a callable, or a list/tuple of chunk tuples or dicts."""
    if x is None or isinstance(x, (jax.Array,)):
        return False
    if isinstance(x, (str, os.PathLike, np.memmap)):
        return True
    if isinstance(x, np.ndarray):
        return False
    if callable(x) or isinstance(x, Iterator):
        return True
    if isinstance(x, (list, tuple)) and x:
        return isinstance(x[0], (tuple, dict))
    return False


def _load(x, name: str):
    if isinstance(x, (str, os.PathLike)):
        path = os.fspath(x)
        if not os.path.exists(path):
            raise ValueError(f"{name}: no such file {path!r}")
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as err:
            raise ValueError(f"{name}: {path!r} is not a readable .npy file ({err})") from None
    return x


def _as_chunk(item) -> Chunk:
    if isinstance(item, dict):
        unknown = set(item) - set(Chunk._fields)
        if unknown:
            raise ValueError(f"a chunk dict has unknown key(s) {sorted(unknown)}; keys are {Chunk._fields}")
        return Chunk(item.get("features"), item.get("labels"), item.get("source_probs"), item.get("source_logits"))
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        return Chunk(*item)
    raise ValueError("each chunk must be a tuple (features, labels) or (features, labels, source_probs), "
                     f"or a dict; got {type(item).__name__}")


def as_chunk_source(features, labels=None, *, source_probs=None, source_logits=None,
                    chunk_size: Optional[int] = None, num_classes: Optional[int] = None) -> ChunkSource:
    """Normalise a streamed input (see the module docstring) to a `ChunkSource`.

    Args:
      features: a chunk iterable / callable / list (labels inside the chunks), or an array-like
        [N, D] (memory map, `.npy` path, or any array when `chunk_size` is given) or None.
      labels: [N] (array or `.npy` path) for array inputs; None for chunk iterables.
      source_probs, source_logits: [N, Cs] (array or `.npy` path) for array inputs.
      chunk_size: rows per chunk for array inputs (default 4096).
      num_classes: C; without it the whole labels of an array input are remapped to their sorted
        unique values (as `jscore.score` does); chunk iterables need it.

    Raises:
      ValueError: labels missing or given twice, unreadable files, N disagreements, a chunk
        iterable without `num_classes`.
    """
    arrays = {"features": _load(features, "features") if not is_chunk_iterable(features) else None,
              "source_probs": _load(source_probs, "source_probs"),
              "source_logits": _load(source_logits, "source_logits")}
    if is_chunk_iterable(features):
        if labels is not None or source_probs is not None or source_logits is not None:
            raise ValueError("with features given as chunks, pass labels (and source probabilities) inside "
                             "each chunk, not beside them")
        if num_classes is None:
            raise ValueError("streamed chunks need num_classes (labels arrive in parts, so they cannot be "
                             "remapped to their sorted unique values)")
        if callable(features):
            return ChunkSource(lambda: (_as_chunk(c) for c in features()), True)
        if isinstance(features, (list, tuple)):
            return ChunkSource(lambda: (_as_chunk(c) for c in features), True)
        it = iter(features)
        used = []

        def once():
            if used:
                raise ValueError("this chunk iterator was already read: pass a list of chunks or a callable "
                                 "returning a fresh iterator to read it twice (LEEP needs a second pass)")
            used.append(True)
            return (_as_chunk(c) for c in it)

        return ChunkSource(once, False)
    if labels is None:
        raise ValueError("labels are required beside array inputs (an [N] array or a .npy path)")
    y = np.asarray(_load(labels, "labels"))
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if num_classes is None and y.ndim == 1 and np.issubdtype(y.dtype, np.number):
        values, y = np.unique(y, return_inverse=True)
        num_classes = len(values)
    present = {k: v for k, v in arrays.items() if v is not None}
    if not present:
        raise ValueError("nothing to score: pass features and/or source_probs (or source_logits)")
    for name, a in present.items():
        if np.ndim(a) != 2:
            raise ValueError(f"{name} must be 2-D [N, {'D' if name == 'features' else 'Cs'}], got shape {np.shape(a)}")
        if a.shape[0] != y.shape[0]:
            raise ValueError(f"{name} has N = {a.shape[0]} rows but labels have {y.shape[0]} entries")
    size = DEFAULT_CHUNK if chunk_size is None else int(chunk_size)
    if size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    n = y.shape[0]

    def chunks():
        for start in range(0, n, size):
            part = {k: np.asarray(v[start:start + size]) for k, v in present.items()}
            yield Chunk(part.get("features"), y[start:start + size], part.get("source_probs"),
                        part.get("source_logits"))

    return ChunkSource(chunks, True, num_classes)


def is_chunk_iterable(x) -> bool:
    """A streamed input whose chunks carry their labels (an iterable or callable, not an array or path)."""
    return is_chunk_source(x) and not isinstance(x, (str, os.PathLike, np.memmap))


def _blocks(source: ChunkSource, num_classes: int, block: Optional[int]):
    """Checked chunks cut and padded to `block` rows: (features, labels, probs, mask, rows), the
    last block zero-padded with mask 0, so one compiled update serves the pass. `block` defaults
    to the first chunk's size."""
    dims = {}
    for raw in source.chunks():
        feats, y, probs = validate_chunk(raw.features, raw.labels, raw.source_probs,
                                         source_logits=raw.source_logits, num_classes=num_classes)
        for name, a in (("features", feats), ("source probabilities", probs)):
            width = None if a is None else a.shape[1]
            if dims.setdefault(name, width) != width:
                raise ValueError(f"chunks disagree on the width of {name}: {dims[name]} then {width}")
        block = block or y.shape[0]
        for start in range(0, y.shape[0], block):
            rows = min(block, y.shape[0] - start)
            pad = block - rows

            def cut(a):
                if a is None:
                    return None
                a = a[start:start + rows]
                return np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a

            mask = np.concatenate([np.ones(rows, np.float32), np.zeros(pad, np.float32)])
            yield cut(feats), cut(y), cut(probs), mask, rows


@partial(jax.jit, static_argnames=("num_classes",), donate_argnums=(0,))
def _source_update(st: SourceStats, probs, labels, mask, *, num_classes: int) -> SourceStats:
    return st.merge(source_stats(probs, labels, num_classes=num_classes, sample_mask=mask.astype(probs.dtype)))


@partial(jax.jit, static_argnames=("num_classes",))
def _lda_update(total, features, labels, mask, mean, means, counts, n, *, num_classes: int):
    """ETran's LDA term, second pass: total + sum_i w_i softmax(logits_i)[y_i]."""
    w = mask.astype(features.dtype)
    onehot = label_stats(labels, num_classes, w, features.dtype).onehot
    xc = (features - mean[None, :]) * w[:, None]
    probs = jax.nn.softmax(nearest_mean_logits(xc, means, counts, n), axis=1)
    return total + jnp.sum(probs * onehot)


@partial(jax.jit, static_argnames=("num_classes",))
def _leep_update(total, probs, labels, mask, cond, *, num_classes: int):
    onehot = label_stats(labels, num_classes, mask.astype(probs.dtype), probs.dtype).onehot
    return total + leep_log_sum(probs, onehot, cond)


class Accumulated(NamedTuple):
    """The result of a pass: moments (features; None without), source (SourceStats; None without),
    leep_sum / lda_sum (LEEP's and ETran-LDA's second-pass sums; None unless asked), num_samples
    (all processes)."""

    moments: Optional[Moments]
    source: Optional[SourceStats]
    leep_sum: Optional[jax.Array]
    num_samples: int
    lda_sum: Optional[jax.Array] = None


def allreduce(tree, combine):
    """`tree` combined over the processes of a `jax.distributed` job with the binary `combine`
    (each process gets the same result; the identity with one process)."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(tree)  # leaves [P, ...]
    parts = [jax.tree.map(lambda a, i=i: jnp.asarray(a[i]), gathered) for i in range(jax.process_count())]
    return reduce(combine, parts)


def accumulate(source: ChunkSource, *, num_classes: int, features: bool, source_scores: bool,
               class_scatter: bool = False, quartic: bool = False, leep: bool = False, lda: bool = False,
               chunk_size: Optional[int] = None, across_processes: bool = False, dtype=None) -> Accumulated:
    """One pass over `source` (two with `leep`): the feature moments and/or the source joint tables.

    Args:
      source: a `ChunkSource`.
      num_classes: C.
      features, source_scores: which statistics to accumulate.
      class_scatter, quartic: the optional parts of `Moments` (see `jscore.moments.init_moments`).
      leep: also run LEEP's second pass (needs `source.reiterable`).
      lda: also run ETran-LDA's second pass (needs `source.reiterable` and `features`).
      chunk_size: rows per compiled update (default: the first chunk's size).
      across_processes: sum the statistics over all processes of a `jax.distributed` job, each
        holding its own samples (every process must call this with the same arguments).
      dtype: float32 (default) or float64 (needs jax x64).

    Raises:
      ValueError: bad chunk (see `jscore.validate.validate_chunk`), missing features or source
        probabilities in a chunk, a single-use iterator where a second pass is needed.
    """
    if (leep or lda) and not source.reiterable:
        raise ValueError(f"{'leep' if leep else 'etran_lda'} needs a second pass over the chunks: pass a list of chunks, a callable returning "
                         "a fresh iterator, or a memory-mapped array (or leave leep out)")
    dtype = jnp.dtype(dtype or jnp.float32)
    moments = src = None
    rows_seen = 0
    for feats, y, probs, mask, rows in _blocks(source, num_classes, chunk_size):
        rows_seen += rows
        if features:
            if feats is None:
                raise ValueError("a chunk lacks features, which the requested scores need")
            if moments is None:
                moments = init_moments(feats.shape[1], num_classes, dtype, class_scatter=class_scatter,
                                       quartic=quartic)
            # At most one update in flight: reading the next chunk overlaps with it, and chunks do
            # not pile up in the dispatch queue (memory would then grow with N).
            moments = jax.block_until_ready(moments)
            moments = update(moments, jnp.asarray(feats, dtype), y, mask, num_classes=num_classes)
        if source_scores:
            if probs is None:
                raise ValueError("a chunk lacks source probabilities, which the requested scores need")
            if src is None:
                shape = (probs.shape[1], num_classes)  # distinct buffers: the update donates them
                src = SourceStats(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((), dtype))
            src = _source_update(jax.block_until_ready(src), jnp.asarray(probs, dtype), y, mask, num_classes=num_classes)
    if rows_seen == 0:
        raise ValueError("the streamed input holds no samples")
    if across_processes:
        moments = allreduce(moments, merge) if moments is not None else None
        src = allreduce(src, SourceStats.merge) if src is not None else None
        rows_seen = int(allreduce(np.asarray(rows_seen, np.int64), lambda a, b: a + b))
    leep_sum = lda_sum = None
    if leep or lda:
        if leep:
            cond = leep_conditional(src.joint)
            leep_sum = jnp.zeros((), dtype)
        if lda:
            means = class_means(moments)  # features' units; zero for absent classes
            mean = safe_div(mm(moments.counts, means), moments.n)
            centred = jnp.where(moments.counts[:, None] > 0, means - mean[None, :], 0)
            lda_sum = jnp.zeros((), dtype)
        for feats, y, probs, mask, _ in _blocks(source, num_classes, chunk_size):
            if leep:
                leep_sum = _leep_update(jax.block_until_ready(leep_sum), jnp.asarray(probs, dtype), y, mask, cond,
                                        num_classes=num_classes)
            if lda:
                lda_sum = _lda_update(jax.block_until_ready(lda_sum), jnp.asarray(feats, dtype), y, mask, mean,
                                      centred, moments.counts, moments.n, num_classes=num_classes)
        if across_processes:
            leep_sum = None if leep_sum is None else allreduce(leep_sum, lambda a, b: a + b)
            lda_sum = None if lda_sum is None else allreduce(lda_sum, lambda a, b: a + b)
    return Accumulated(moments, src, leep_sum, rows_seen, lda_sum)


def chunked(features: np.ndarray, labels, *, chunk_size: int = DEFAULT_CHUNK,
            source_probs=None) -> Iterable[tuple]:
    """A list of (features, labels[, source_probs]) chunk tuples cut from in-memory arrays (for tests
    and examples); `jscore.score(chunked(x, y), num_classes=C)` equals `jscore.score(x, y, num_classes=C)`
    for the streamable scores."""
    out = []
    for s in range(0, len(labels), chunk_size):
        part = (features[s:s + chunk_size], labels[s:s + chunk_size])
        out.append(part if source_probs is None else part + (source_probs[s:s + chunk_size],))
    return out
