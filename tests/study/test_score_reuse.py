"""A score's new implementation version recomputes that score only: the unit's other values are
read back from its earlier record, and a changed feature file, options or seed recomputes all."""

import json

from jscore.study.runner import reusable_scores


def _record(tmp_path, deps, scores, status="done"):
    path = tmp_path / "score__d__m.json"
    path.write_text(json.dumps({"status": status, "key": "old", "deps": deps, "result": {"scores": scores}}))
    return str(path)


BASE = {"features": "f1", "scores": ["hscore", "sfda", "etran_lda", "parc"], "options": {}, "seed": 0}


def test_only_the_changed_version_is_recomputed(tmp_path):
    path = _record(tmp_path, BASE, {"hscore": 1.5, "sfda": 0.7, "etran_lda": 0.3})  # parc left out
    new = {**BASE, "versions": {"sfda": 2}}
    kept, todo = reusable_scores(path, new, BASE["scores"])
    assert kept == {"hscore": 1.5, "etran_lda": 0.3}
    assert todo == ["sfda"]  # parc was left out by `score` before and stays out


def test_a_new_score_name_is_computed(tmp_path):
    path = _record(tmp_path, BASE, {"hscore": 1.5, "sfda": 0.7})
    names = BASE["scores"] + ["knn"]
    kept, todo = reusable_scores(path, {**BASE, "scores": names}, names)
    assert todo == ["knn"] and set(kept) == {"hscore", "sfda"}


def test_combined_score_follows_its_components(tmp_path):
    path = _record(tmp_path, {**BASE, "scores": ["etran", "hscore"]}, {"etran": 1.0, "hscore": 2.0})
    kept, todo = reusable_scores(path, {**BASE, "scores": ["etran", "hscore"], "versions": {"etran_lda": 2}},
                                 ["etran", "hscore"])
    assert todo == ["etran"] and kept == {"hscore": 2.0}


def test_other_inputs_recompute_everything(tmp_path):
    path = _record(tmp_path, BASE, {"hscore": 1.5, "sfda": 0.7})
    for change in ({"features": "f2"}, {"options": {"hscore": {"x": 1}}}, {"seed": 1}):
        assert reusable_scores(path, {**BASE, **change}, BASE["scores"]) == ({}, BASE["scores"])
    failed = _record(tmp_path, BASE, {}, status="failed")
    assert reusable_scores(failed, BASE, BASE["scores"]) == ({}, BASE["scores"])
    assert reusable_scores(str(tmp_path / "missing.json"), BASE, BASE["scores"]) == ({}, BASE["scores"])
