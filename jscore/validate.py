"""Host-side input checks for the public entry points: every problem becomes a `ValueError` that
names it, before anything is traced (the jitted scorers themselves never look at values)."""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np


class Validated(NamedTuple):
    """features [N, D] float or None; labels [N] int32 in [0, num_classes); source_probs [N, Cs]
    float or None; num_classes; class_values [num_classes] the original label of each index."""

    features: Optional[np.ndarray]
    labels: np.ndarray
    source_probs: Optional[np.ndarray]
    num_classes: int
    class_values: np.ndarray


def _float_matrix(name: str, x) -> tuple[np.ndarray, np.ndarray]:
    """(x as float32/float64, its row sums [N]) after the dtype, rank, emptiness and finiteness checks."""
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{name} must be a numeric array, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, {'D' if name == 'features' else 'Cs'}], got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    elif x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)  # bf16 / f16 are upcast
    # One pass: NaN and Inf propagate into the row sums; only a non-finite sum needs a closer look
    # (it may also be an overflow of large finite values).
    sums = x.sum(axis=1)
    if not np.isfinite(sums).all():
        bad = ~np.isfinite(x)
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0])
            kind = "NaN" if np.isnan(x).any() else "Inf"
            raise ValueError(f"{name} contains {kind} values ({int(bad.sum())} entries, first in row {rows[0]})")
    return x, sums


def _labels(labels, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # MedMNIST stores labels as [N, 1]
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D [N], got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"labels have {y.shape[0]} entries but the inputs have N = {n} rows")
    if y.dtype == bool:
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise ValueError("labels contain NaN or Inf")
        if not np.all(y == np.round(y)):
            raise ValueError("labels must be integers, got non-integer values "
                             f"(e.g. {float(y[y != np.round(y)][0])}); for continuous targets use logme_regression")
        return y.astype(np.int64)
    raise ValueError(f"labels must be integers, got dtype {y.dtype}")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, returned in the logits' float dtype."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(logits.dtype)


def validate_inputs(features=None, labels=None, source_probs=None, *, source_logits=None,
                    num_classes: Optional[int] = None, min_per_class: int = 1) -> Validated:
    """Check and normalise the inputs of a scoring call.

    Labels: integers (or integral floats). With `num_classes` given they must lie in
    [0, num_classes); without it they are remapped to the index of their sorted unique values
    (labels {0, 1, 3} become {0, 1, 2}) and num_classes is the number of distinct labels.
    At least two classes must be present and each present class needs `min_per_class` samples.

    Raises:
      ValueError naming the problem: NaN/Inf, wrong rank, empty input, N mismatch, non-integer or
      out-of-range labels, fewer than two classes, too few samples in a class, source
      probabilities that are not distributions (pass `source_logits=` instead).
    """
    feats, y, probs = _checked_arrays(features, labels, source_probs, source_logits, no_labels="labels are required",
                                      nothing="nothing to score: pass features and/or source_probs (or source_logits)")
    if num_classes is None:
        class_values, y = np.unique(y, return_inverse=True)
        num_classes = len(class_values)
    else:
        num_classes = _check_range(y, num_classes)
        class_values = np.arange(num_classes)
    check_class_counts(np.bincount(y, minlength=num_classes), min_per_class, class_values)
    return Validated(feats, y.astype(np.int32), probs, num_classes, class_values)


def _source_probs(source_probs, source_logits) -> Optional[np.ndarray]:
    """Source probabilities [N, Cs] (softmaxed logits), checked to be distributions; None if neither."""
    if source_logits is not None:
        return softmax(_float_matrix("source_logits", source_logits)[0])
    if source_probs is None:
        return None
    probs, sums = _float_matrix("source_probs", source_probs)
    if probs.min() < -1e-6:
        raise ValueError("source_probs has negative entries: they must be probabilities "
                         "(pass source_logits= for unnormalised scores)")
    off = np.abs(sums - 1) > 1e-3
    if off.any():
        raise ValueError(f"source_probs rows must sum to 1 ({int(off.sum())} rows do not, e.g. row "
                         f"{int(np.argmax(off))} sums to {sums[np.argmax(off)]:.4g}); "
                         "pass source_logits= for logits or unnormalised scores")
    return probs


def _check_range(y: np.ndarray, num_classes) -> int:
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if (y < 0).any() or (y >= num_classes).any():
        bad = y[(y < 0) | (y >= num_classes)][0]
        raise ValueError(f"labels must lie in [0, num_classes={num_classes}), found {bad}")
    return num_classes


def check_class_counts(counts, min_per_class: int = 1, class_values=None) -> None:
    """At least two classes present, each with `min_per_class` samples; counts [C] (ints or floats)."""
    counts = np.rint(np.asarray(counts)).astype(np.int64)
    class_values = np.arange(counts.shape[0]) if class_values is None else class_values
    present = np.flatnonzero(counts)
    if len(present) < 2:
        raise ValueError(f"fewer than two classes: the labels hold only {len(present)} distinct class(es)")
    small = present[counts[present] < min_per_class]
    if len(small):
        c = small[0]
        raise ValueError(f"class {class_values[c]} has {counts[c]} sample(s); at least {min_per_class} "
                         "per class are needed")


def _checked_arrays(features, labels, source_probs, source_logits, *, no_labels: str, nothing: str):
    """The checks shared by a whole input and a streamed chunk -> (features [N, D] or None,
    labels [N], source probabilities [N, Cs] or None); `no_labels`/`nothing` word the errors."""
    if labels is None:
        raise ValueError(no_labels)
    if source_probs is not None and source_logits is not None:
        raise ValueError("pass either source_probs or source_logits, not both")
    feats = None if features is None else _float_matrix("features", features)[0]
    probs = _source_probs(source_probs, source_logits)
    if feats is None and probs is None:
        raise ValueError(nothing)
    n = (feats if feats is not None else probs).shape[0]
    if feats is not None and probs is not None and probs.shape[0] != n:
        raise ValueError(f"features have N = {n} rows but source probabilities have {probs.shape[0]}")
    return feats, _labels(labels, n), probs


def validate_chunk(features=None, labels=None, source_probs=None, *, source_logits=None, num_classes: int):
    """One chunk of a streamed input: (features [n, D] float or None, labels [n] int32, source
    probabilities [n, Cs] or None), with the checks of `validate_inputs` that apply to a part of
    the data (dtype, rank, NaN/Inf, N agreement, integer labels in [0, num_classes), distributions);
    the class counts are checked on the totals (`check_class_counts`)."""
    feats, y, probs = _checked_arrays(features, labels, source_probs, source_logits,
                                      no_labels="each chunk needs its labels",
                                      nothing="a chunk holds neither features nor source probabilities")
    _check_range(y, num_classes)
    return feats, y.astype(np.int32), probs


def validate_targets(features, targets) -> tuple[np.ndarray, np.ndarray]:
    """Check the inputs of a regression or multi-label scoring call (LogME's regression form).

    features [N, D] as for `validate_inputs`; targets [N] or [N, K] numbers (regression values,
    multi-hot labels). A target column that is constant over all samples carries no information
    and its evidence is unbounded (it is fitted exactly): it is left out with a warning.

    Returns:
      (features [N, D] float32/float64, targets [N, K'] of the features' dtype, constant columns dropped).

    Raises:
      ValueError: bad features (see `validate_inputs`), targets that are not numeric, not [N] or
        [N, K] with the features' N, contain NaN/Inf, or are all constant.
    """
    import warnings

    feats = _float_matrix("features", features)[0]
    t = np.asarray(targets)
    if t.dtype == object or not (np.issubdtype(t.dtype, np.number) or t.dtype == bool):
        raise ValueError(f"targets must be a numeric array, got dtype {t.dtype}")
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2 or t.shape[1] == 0:
        raise ValueError(f"targets must be [N] or [N, K], got shape {np.shape(targets)}")
    if t.shape[0] != feats.shape[0]:
        raise ValueError(f"targets have {t.shape[0]} rows but the features have N = {feats.shape[0]}")
    t = t.astype(feats.dtype)
    bad = ~np.isfinite(t)
    if bad.any():
        kind = "NaN" if np.isnan(t).any() else "Inf"
        raise ValueError(f"targets contain {kind} values ({int(bad.sum())} entries, first in row "
                         f"{int(np.nonzero(bad)[0][0])})")
    constant = np.all(t == t[:1], axis=0)
    if constant.all():
        raise ValueError(f"every target column is constant ({t.shape[1]} column(s)): nothing to score")
    if constant.any():
        warnings.warn(f"targets: column(s) {np.flatnonzero(constant).tolist()} are constant over all samples "
                      "and are left out (their evidence is unbounded)", UserWarning, stacklevel=3)
        t = t[:, ~constant]
    return feats, t
