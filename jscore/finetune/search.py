"""Hyper-parameter searches: which (learning rate, weight decay) points a sweep trains.

The paper (Chaves et al., DART 2023) samples 75 points of an *unscrambled* Halton sequence over
log10 learning rate in [1e-4, 1e-1] and log10 weight decay in [1e-6, 1e-4]. Our sequence equals
`scipy.stats.qmc.Halton(d=2, scramble=False).random(n)`: bases 2 and 3, indices 0..n-1, so the
first point is (0, 0) -- the lower corner, lr = 1e-4 and wd = 1e-6 -- exactly as scipy gives it.

NumPy only: no JAX, no flax.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Sequence, Tuple

import numpy as np

_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47)

LR_RANGE = (1e-4, 1e-1)
WD_RANGE = (1e-6, 1e-4)


@dataclasses.dataclass(frozen=True)
class HParams:
    """One point of a search."""

    learning_rate: float
    weight_decay: float


def radical_inverse(indices: np.ndarray, base: int) -> np.ndarray:
    """Van der Corput radical inverse: the base-`base` digits of each index mirrored after the
    point. `indices` int `[N]` >= 0 -> float64 `[N]` in [0, 1).

    Digits are accumulated least significant first as `digit * base**-k` with `base**-k` built
    by repeated division; this order of float operations makes the result bitwise equal to
    scipy's (an exact fraction divided once differs from it in the last bit for some indices).

    Example:
        >>> radical_inverse(np.arange(4), 2)
        array([0.  , 0.5 , 0.25, 0.75])
    """
    indices = np.asarray(indices, dtype=np.int64)
    if np.any(indices < 0):
        raise ValueError("radical_inverse needs non-negative indices")
    out = np.empty(indices.shape, dtype=np.float64)
    for pos, i in enumerate(indices.ravel().tolist()):
        total, weight = 0.0, 1.0 / base
        while i > 0:
            i, digit = divmod(i, base)
            total += digit * weight
            weight /= base
        out.flat[pos] = total
    return out


def halton(n: int, d: int = 2, *, start: int = 0) -> np.ndarray:
    """The first `n` points (from index `start`) of the unscrambled Halton sequence in `[0, 1)^d`,
    `[n, d]` float64, equal to `scipy.stats.qmc.Halton(d, scramble=False)` (point 0 is the origin).
    """
    if not 1 <= d <= len(_PRIMES):
        raise ValueError(f"halton supports 1..{len(_PRIMES)} dimensions, got {d}")
    if n < 0:
        raise ValueError(f"halton needs n >= 0, got {n}")
    idx = np.arange(start, start + n)
    return np.stack([radical_inverse(idx, b) for b in _PRIMES[:d]], axis=1).reshape(n, d)


def _log_map(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    # u in [0, 1] -> 10 ** (log10 lo + u (log10 hi - log10 lo)): uniform in log space.
    return 10.0 ** (math.log10(lo) + u * (math.log10(hi) - math.log10(lo)))


def to_hparams(unit: np.ndarray, lr_range=LR_RANGE, wd_range=WD_RANGE) -> List[HParams]:
    """Unit-square points `[n, 2]` -> hyper-parameters, log-uniform over both ranges."""
    unit = np.asarray(unit, np.float64)
    lrs = _log_map(unit[:, 0], *lr_range)
    wds = _log_map(unit[:, 1], *wd_range)
    return [HParams(float(a), float(b)) for a, b in zip(lrs, wds)]


def grid_unit(n_lr: int, n_wd: int) -> np.ndarray:
    """A full `n_lr x n_wd` grid on the unit square, corners included, `[n_lr * n_wd, 2]`."""
    a = np.linspace(0.0, 1.0, n_lr) if n_lr > 1 else np.array([0.5])
    b = np.linspace(0.0, 1.0, n_wd) if n_wd > 1 else np.array([0.5])
    return np.array([(x, y) for x in a for y in b], np.float64)


def random_unit(n: int, seed: int = 0) -> np.ndarray:
    """`n` i.i.d. uniform points of the unit square, `[n, 2]`, from NumPy's PCG64 with `seed`."""
    return np.random.default_rng(seed).random((n, 2))


def parse_search(spec: str, *, lr_range=LR_RANGE, wd_range=WD_RANGE, seed: int = 0) -> List[HParams]:
    """A search spec -> the list of points a sweep trains, in order.

    Specs: `halton:N` (paper: `halton:75`), `grid:AxB` (A learning rates x B weight decays),
    `random:N` (seeded by `seed`), `point:LR,WD` (one run).

    Example:
        >>> parse_search("halton:2")
        [HParams(learning_rate=0.0001, weight_decay=1e-06), HParams(learning_rate=0.00316..., ...)]
    """
    kind, _, arg = spec.partition(":")
    try:
        if kind == "halton":
            n = int(arg)
            if n < 1:
                raise ValueError
            unit = halton(n, 2)
        elif kind == "grid":
            a, _, b = arg.partition("x")
            n_lr, n_wd = int(a), int(b or a)
            if n_lr < 1 or n_wd < 1:
                raise ValueError
            unit = grid_unit(n_lr, n_wd)
        elif kind == "random":
            n = int(arg)
            if n < 1:
                raise ValueError
            unit = random_unit(n, seed)
        elif kind == "point":
            lr, _, wd = arg.partition(",")
            lr_f, wd_f = float(lr), float(wd)
            if not (lr_f > 0 and wd_f >= 0):
                raise ValueError
            return [HParams(lr_f, wd_f)]
        else:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"bad search spec {spec!r}: use halton:N, grid:AxB, random:N or point:LR,WD"
        ) from None
    return to_hparams(unit, lr_range, wd_range)


def parse_range(text: str) -> Tuple[float, float]:
    """`"1e-4,1e-1"` -> (1e-4, 1e-1), both positive and increasing."""
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"bad range {text!r}: use LOW,HIGH") from None
    if not 0 < lo <= hi:
        raise ValueError(f"bad range {text!r}: need 0 < LOW <= HIGH")
    return lo, hi


def describe_points(points: Sequence[HParams]) -> str:
    return ", ".join(f"lr={p.learning_rate:.3g} wd={p.weight_decay:.3g}" for p in points)
