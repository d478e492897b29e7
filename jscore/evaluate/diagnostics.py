"""Checks a user needs before trusting a score's ranking: broken bounds, saturation, noisy truth.

Each check returns `Flag`s (kind, score, dataset, message); `run_all` collects them. They read a
`jscore.evaluate.results.ResultsArrays` on the host (NumPy only).

- bound: a score outside its natural range (the scorer registry's `range`), which means a
  numerical failure (an ill-conditioned covariance, say), not a better model. H-score = tr(cov(f)^-1 cov(E[f|y]))
  lies in [0, C-1] because the between-class covariance has rank <= C-1 and is dominated by the
  total covariance; LEEP, N-LEEP and NCE are mean log-probabilities (<= 0); GBC is minus a sum
  of Bhattacharyya coefficients (<= 0).
- saturated: many models share one score value, so the score cannot order them.
- noise: ground-truth differences between models within their noise (two standard errors of the
  difference), when the table gives a noise estimate (seed replicates, `n_test` or `<truth>_se`);
  a constant ground truth; or no noise estimate at all (said once).
- missing: score values absent or not finite for some models (left out of that score's statistics).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

def _bounds() -> dict:
    """score -> (lower, upper) from the scorer registry; "C-1" means number of classes minus one."""
    from jscore.scorers import REGISTRY

    return {name: tuple(spec.range) for name, spec in REGISTRY.items() if spec.range != (None, None)}
TIE_RTOL = 1e-9  # values this close (relative to the largest magnitude) count as tied
SATURATION_FRACTION = 0.3  # flag when this share of models is tied with another model
NOISE_Z = 1.96  # two-sided 95% for a difference of two independent estimates
NOISE_PAIR_FRACTION = 0.5  # flag when this share of model pairs is within noise


class Flag(NamedTuple):
    kind: str
    score: str | None
    dataset: str | None
    message: str
    model: str | None = None  # the model concerned, when there is one (bound checks)


def _fmt(v):
    return f"{v:.4g}"


def check_bounds(r) -> list:
    flags = []
    bounds = _bounds()
    for s, name in enumerate(r.score_names):
        if name not in bounds:
            continue
        lower, upper = bounds[name]
        for d, dn in enumerate(r.datasets):
            c = r.counts[d]
            vals = r.scores[s, d, :c]
            ok = r.mask[s, d, :c]
            hi = upper
            if upper == "C-1":
                if not np.isfinite(r.classes[d]):
                    continue
                hi = r.classes[d] - 1
            tol = 1e-6 * (1 + abs(hi if hi is not None else 0))
            for j in np.flatnonzero(ok):
                v = vals[j]
                if (hi is not None and v > hi + tol) or (lower is not None and v < lower - tol):
                    rng = f"[{'-inf' if lower is None else _fmt(lower)}, {_fmt(hi) if hi is not None else 'inf'}]"
                    why = f" (C = {int(r.classes[d])})" if upper == "C-1" else ""
                    flags.append(Flag("bound", name, dn, f"{name} = {_fmt(v)} for {r.models[d][j]} on {dn} is outside its range {rng}{why}: a numerical failure, not a better model", r.models[d][j]))
    return flags


def check_saturation(r) -> list:
    flags = []
    for s, name in enumerate(r.score_names):
        for d, dn in enumerate(r.datasets):
            c = r.counts[d]
            v = r.scores[s, d, :c][r.mask[s, d, :c]]
            n = len(v)
            if n < 2:
                continue
            tol = TIE_RTOL * max(np.max(np.abs(v)), 1e-300)
            close = np.abs(v[:, None] - v[None, :]) <= tol
            np.fill_diagonal(close, False)
            tied = int(np.sum(close.any(axis=1)))
            if tied == n:
                flags.append(Flag("saturated", name, dn, f"{name} gives all {n} models on {dn} the same value: it cannot rank them (tau set to 0)"))
            elif tied / n >= SATURATION_FRACTION:
                flags.append(Flag("saturated", name, dn, f"{name} ties {tied} of {n} models on {dn} with another model: it cannot order them"))
    return flags


def check_noise(r) -> list:
    flags = []
    have_any = np.isfinite(r.truth_se).any()
    for d, dn in enumerate(r.datasets):
        c = r.counts[d]
        y = r.truth[d, :c]
        if np.ptp(y) == 0:
            flags.append(Flag("noise", None, dn, f"ground truth {r.truth_name} is the same for every model on {dn}: there is no ranking to predict"))
            continue
        se = r.truth_se[d, :c]
        if not np.isfinite(se).all():
            continue
        diff = np.abs(y[:, None] - y[None, :])
        noise = NOISE_Z * np.sqrt(se[:, None] ** 2 + se[None, :] ** 2)
        iu = np.triu_indices(c, 1)
        within = diff[iu] < noise[iu]
        order = np.argsort(-y, kind="stable")
        a, b = order[0], order[1]
        if diff[a, b] < noise[a, b]:
            flags.append(Flag("noise", None, dn, f"on {dn} the best model ({r.models[d][a]}, {_fmt(y[a])}) is within noise of the runner-up ({r.models[d][b]}, {_fmt(y[b])}, 95% margin {_fmt(noise[a, b])}): top-1 regret is fragile"))
        if within.mean() >= NOISE_PAIR_FRACTION:
            flags.append(Flag("noise", None, dn, f"on {dn} {int(within.sum())} of {within.size} model pairs differ by less than their noise: the true ranking is mostly unknown, read tau with care"))
    if not have_any:
        flags.append(Flag("noise", None, None, f"no noise estimate for {r.truth_name}: add seed replicates, an n_test column (or --n-test) or a {r.truth_name}_se column to check that model differences exceed noise"))
    return flags


def check_missing(r) -> list:
    flags = []
    by = {}
    for s, d, m in r.missing:
        by.setdefault((s, d), []).append(m)
    for (s, d), ms in by.items():
        flags.append(Flag("missing", s, d, f"{s} has no finite value for {len(ms)} model(s) on {d} ({', '.join(ms[:4])}{'...' if len(ms) > 4 else ''}): left out of its statistics"))
    return flags


def run_all(r) -> list:
    """Every check on a `ResultsArrays`, in a stable order."""
    return check_bounds(r) + check_saturation(r) + check_noise(r) + check_missing(r)
