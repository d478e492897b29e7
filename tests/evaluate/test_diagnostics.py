"""Diagnostics on hand-made tables: bounds, saturation, noise, missing values."""

import pandas as pd

from jscore.evaluate.diagnostics import run_all
from jscore.evaluate.results import to_arrays


def _table(rows, extra=None):
    df = pd.DataFrame(rows, columns=["dataset", "model", "score", "value", "test_acc"])
    for k, v in (extra or {}).items():
        df[k] = v
    return df


def _kinds(flags, kind):
    return [f for f in flags if f.kind == kind]


def test_hscore_bound_uses_classes():
    rows = [("d", "m1", "hscore", 2.5, 0.7), ("d", "m2", "hscore", 3.5, 0.8), ("d", "m3", "hscore", 1.0, 0.9)]
    flags = run_all(to_arrays(_table(rows, {"classes": 4})))  # bound C - 1 = 3
    bound = _kinds(flags, "bound")
    assert len(bound) == 1 and "m2" in bound[0].message and "[0, 3]" in bound[0].message
    assert not _kinds(run_all(to_arrays(_table(rows, {"classes": 5}))), "bound")  # bound 4: fine
    assert not _kinds(run_all(to_arrays(_table(rows))), "bound")  # classes unknown: no check


def test_log_likelihood_scores_above_zero_flagged():
    rows = [("d", "m1", "leep", 0.2, 0.7), ("d", "m2", "leep", -0.3, 0.8)]
    bound = _kinds(run_all(to_arrays(_table(rows))), "bound")
    assert len(bound) == 1 and "m1" in bound[0].message


def test_saturation():
    rows = [("d", f"m{i}", "nce", -1.0 if i < 3 else -1.0 - i, 0.5 + i / 10) for i in range(6)]
    sat = _kinds(run_all(to_arrays(_table(rows))), "saturated")
    assert len(sat) == 1 and "3 of 6" in sat[0].message
    const = [("d", f"m{i}", "nce", -1.0, 0.5 + i / 10) for i in range(4)]
    assert "same value" in _kinds(run_all(to_arrays(_table(const))), "saturated")[0].message
    distinct = [("d", f"m{i}", "nce", -1.0 - i, 0.5 + i / 10) for i in range(4)]
    assert not _kinds(run_all(to_arrays(_table(distinct))), "saturated")


def test_noise_against_binomial_error():
    rows = [("d", "m1", "leep", -1, 0.80), ("d", "m2", "leep", -2, 0.81), ("d", "m3", "leep", -3, 0.60)]
    # n = 100: se ~ 0.04, the 0.01 gap at the top is noise; 0.8 vs 0.6 is not.
    noisy = _kinds(run_all(to_arrays(_table(rows), n_test={"d": 100})), "noise")
    assert any("runner-up" in f.message for f in noisy)
    assert not any("pairs" in f.message for f in noisy)  # 1 of 3 pairs within noise
    # n = 1e6: se ~ 4e-4, everything is resolved.
    assert not _kinds(run_all(to_arrays(_table(rows), n_test={"d": 1_000_000})), "noise")
    # No noise information: one note.
    notes = _kinds(run_all(to_arrays(_table(rows))), "noise")
    assert len(notes) == 1 and "no noise estimate" in notes[0].message
    flat = [("d", "m1", "leep", -1, 0.8), ("d", "m2", "leep", -2, 0.8)]
    assert any("same for every model" in f.message for f in run_all(to_arrays(_table(flat))))


def test_missing_values():
    rows = [("d", "m1", "leep", -1, 0.8), ("d", "m2", "leep", float("nan"), 0.7), ("d", "m3", "leep", -2, 0.6)]
    miss = _kinds(run_all(to_arrays(_table(rows))), "missing")
    assert len(miss) == 1 and "m2" in miss[0].message


def test_every_bounded_registry_score_is_checked():
    from jscore.scorers import REGISTRY

    for name, spec in REGISTRY.items():
        lower, upper = spec.range
        if upper is None and lower is None:
            continue
        bad = (4.0 if upper == "C-1" else upper + 1.0) if upper is not None else lower - 1.0
        rows = [("d", "m1", name, bad, 0.7), ("d", "m2", name, 0.0, 0.8)]
        flags = _kinds(run_all(to_arrays(_table(rows, {"classes": 3}))), "bound")
        assert [f.model for f in flags] == ["m1"], name
