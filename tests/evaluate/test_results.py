"""Readers: the tidy table, the DART pair and the TMLR sequel's file; packing; bad input."""

import numpy as np
import pandas as pd
import pytest

from jscore.evaluate.results import load_results, normalise_score_name, pick_truth, to_arrays


def _write(tmp_path, name, rows, columns):
    p = tmp_path / name
    pd.DataFrame(rows, columns=columns).to_csv(p, index=False)
    return str(p)


def test_score_names():
    assert normalise_score_name("reg_hscore_score") == "reg_hscore"
    assert normalise_score_name("LogME") == "logme"
    assert normalise_score_name("imagenet") == "imagenet"


def test_dart_pair_any_order(tmp_path):
    scores = _write(tmp_path, "transf_metrics_values.csv", [
        ("ds", "m1", "hscore_score", 0.5), ("ds", "m2", "hscore_score", 0.7),
        ("ds", "m1", "logme_score", -0.2), ("ds", "m2", "logme_score", -0.3),
    ], ["task", "model", "metric", "value"])
    truth = _write(tmp_path, "task_performances.csv", [("ds", "m1", 0.9, 0.8), ("ds", "m2", 0.95, 0.85)],
                   ["task", "model", "val_acc_score", "test_acc_score"])
    for order in ([scores, truth], [truth, scores]):
        df = load_results(order)
        assert pick_truth(df) == "test_acc"
        r = to_arrays(df)
        assert r.score_names == ["hscore", "logme"]
        assert r.datasets == ["ds"] and r.models == [["m1", "m2"]]
        np.testing.assert_allclose(r.truth[0], [0.8, 0.85])
        np.testing.assert_allclose(r.scores[:, 0, :], [[0.5, 0.7], [-0.2, -0.3]])
    r = to_arrays(load_results([scores, truth]), truth="val_acc")
    np.testing.assert_allclose(r.truth[0], [0.9, 0.95])
    with pytest.raises(ValueError, match="needs both"):
        load_results([scores])


def test_sequel_format(tmp_path):
    p = _write(tmp_path, "transf_scores.csv", [
        ("a", "m1", 0.5, 10, "imagenet", 70.0), ("a", "m2", 0.6, 10, "imagenet", 75.0),
        ("a", "m1", 0.5, 10, "nce_score", -2.0), ("a", "m2", 0.6, 10, "nce_score", -1.0),
        ("b", "m1", 0.3, 4, "nce_score", -1.0), ("b", "m2", 0.2, 4, "nce_score", -1.5), ("b", "m3", 0.4, 4, "nce_score", -0.5),
    ], ["dataset", "model", "test_score", "classes", "transf_metric", "transf_score"])
    r = to_arrays(load_results([p]))
    assert r.truth_name == "test_score"
    assert r.score_names == ["nce", "imagenet"]  # registry order first
    assert list(r.counts) == [2, 3]
    np.testing.assert_array_equal(r.classes, [10, 4])
    # imagenet has no row on dataset b: masked there, reported missing.
    assert not r.mask[1, 1].any() and r.mask[0, 1].all()
    assert ("imagenet", "b", "m1") in r.missing
    np.testing.assert_allclose(r.truth[1], [0.3, 0.2, 0.4])


def test_tidy_seeds_are_averaged_with_standard_error(tmp_path):
    rows = []
    for seed, (a1, a2) in enumerate([(0.70, 0.80), (0.72, 0.86), (0.74, 0.83)]):
        rows += [("d", "m1", "leep", -1.0, a1, seed), ("d", "m2", "leep", -0.5, a2, seed)]
    p = _write(tmp_path, "r.csv", rows, ["dataset", "model", "score", "value", "test_acc", "seed"])
    r = to_arrays(load_results(p))
    np.testing.assert_allclose(r.truth[0], [0.72, 0.83])
    np.testing.assert_allclose(r.truth_se[0], [np.std([0.70, 0.72, 0.74], ddof=1) / np.sqrt(3), np.std([0.80, 0.86, 0.83], ddof=1) / np.sqrt(3)])


def test_binomial_noise_from_n_test(tmp_path):
    p = _write(tmp_path, "r.csv", [("d", "m1", "leep", -1.0, 0.8), ("d", "m2", "leep", -0.5, 0.9)],
               ["dataset", "model", "score", "value", "test_acc"])
    r = to_arrays(load_results(p), n_test={"d": 400})
    np.testing.assert_allclose(r.truth_se[0], [np.sqrt(0.8 * 0.2 / 400), np.sqrt(0.9 * 0.1 / 400)])


def test_bad_tables(tmp_path):
    cols = ["dataset", "model", "score", "value", "test_acc"]
    with pytest.raises(ValueError, match="unrecognised columns"):
        load_results(_write(tmp_path, "x.csv", [(1, 2)], ["a", "b"]))
    with pytest.raises(FileNotFoundError):
        load_results(str(tmp_path / "missing.csv"))
    dup = _write(tmp_path, "dup.csv", [("d", "m1", "leep", -1, 0.5), ("d", "m1", "leep", -2, 0.5), ("d", "m2", "leep", -2, 0.6)], cols)
    with pytest.raises(ValueError, match="seed"):
        to_arrays(load_results(dup))
    nan_truth = _write(tmp_path, "nan.csv", [("d", "m1", "leep", -1, None), ("d", "m2", "leep", -2, 0.6)], cols)
    with pytest.raises(ValueError, match="not a number"):
        to_arrays(load_results(nan_truth))
    one = _write(tmp_path, "one.csv", [("d", "m1", "leep", -1, 0.5), ("e", "m1", "leep", -1, 0.5), ("e", "m2", "leep", -1, 0.6)], cols)
    with pytest.raises(ValueError, match="fewer than two models"):
        to_arrays(load_results(one))
    ok = _write(tmp_path, "ok.csv", [("d", "m1", "leep", -1, 0.5), ("d", "m2", "leep", -2, 0.6)], cols)
    with pytest.raises(ValueError, match="not in the table"):
        to_arrays(load_results(ok), truth="balanced")
    with pytest.raises(ValueError, match="datasets not in the table"):
        to_arrays(load_results(ok), classes={"typo": 3})
    with pytest.raises(ValueError, match="scores not in the table"):
        to_arrays(load_results(ok), scores=["logme"])
    disagree = _write(tmp_path, "dis.csv", [("d", "m1", "leep", -1, 0.5), ("d", "m1", "nce", -1, 0.6), ("d", "m2", "leep", -1, 0.6), ("d", "m2", "nce", -1, 0.6)], cols)
    with pytest.raises(ValueError, match="differs between score rows"):
        to_arrays(load_results(disagree))


def test_parquet_needs_pyarrow(tmp_path):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        p = tmp_path / "r.parquet"
        p.write_bytes(b"PAR1")
        with pytest.raises(ValueError, match="pyarrow"):
            load_results(str(p))
    else:
        p = tmp_path / "r.parquet"
        pd.DataFrame({"dataset": ["d", "d"], "model": ["a", "b"], "score": ["leep"] * 2, "value": [1.0, 2.0], "test_acc": [0.5, 0.6]}).to_parquet(p)
        assert to_arrays(load_results(str(p))).counts[0] == 2
