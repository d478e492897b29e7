"""Bad input through `jscore.score` raises a ValueError that names the problem."""

import numpy as np
import pytest

import jscore
from tests.oracles.data import class_features, class_labels, source_probs


def _good(n=40, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = class_labels(rng, n, c)
    return class_features(rng, y, d, c).astype(np.float32), y, source_probs(rng, y, 5)


def test_nan_features():
    f, y, _ = _good()
    f[3, 2] = np.nan
    with pytest.raises(ValueError, match="(?i)nan"):
        jscore.score(f, y, scores=["hscore"])


def test_inf_features():
    f, y, _ = _good()
    f[0, 0] = np.inf
    with pytest.raises(ValueError, match="(?i)inf"):
        jscore.score(f, y, scores=["logme"])


def test_nan_source_probs():
    _, y, p = _good()
    p[1, 1] = np.nan
    with pytest.raises(ValueError, match="(?i)source.*nan|nan.*source"):
        jscore.score(labels=y, source_probs=p, scores=["leep"])


def test_non_integer_labels():
    f, y, _ = _good()
    with pytest.raises(ValueError, match="(?i)integer"):
        jscore.score(f, y + 0.5, scores=["hscore"])


def test_string_labels_are_rejected_or_remapped_not_crashing():
    f, y, _ = _good()
    try:
        out = jscore.score(f, np.array(["abc"[k] for k in y]), scores=["hscore"])
    except ValueError as err:
        assert "label" in str(err).lower()
    else:
        assert out["hscore"] == pytest.approx(jscore.score(f, y, scores=["hscore"])["hscore"])


@pytest.mark.parametrize("bad", [-1, 3])
def test_out_of_range_labels_with_num_classes(bad):
    f, y, _ = _good()
    y = y.copy()
    y[5] = bad
    with pytest.raises(ValueError, match="(?i)num_classes|range"):
        jscore.score(f, y, scores=["hscore"], num_classes=3)


def test_fewer_than_two_classes():
    f, _, _ = _good()
    with pytest.raises(ValueError, match="(?i)two classes"):
        jscore.score(f, np.zeros(len(f), int), scores=["hscore"])


def test_fewer_than_two_present_classes_with_num_classes():
    f, _, _ = _good()
    with pytest.raises(ValueError, match="(?i)two classes"):
        jscore.score(f, np.ones(len(f), int), scores=["hscore"], num_classes=4)


@pytest.mark.parametrize("name", ["gbc", "nleep"])
def test_class_with_too_few_samples(name):
    # GBC and N-LEEP need 2 samples per class (a variance); class 2 has one.
    f, y, _ = _good(n=60)
    y = np.where(y == 2, 1, y)
    y[7] = 2
    with pytest.raises(ValueError, match="(?i)class 2.*1 sample"):
        jscore.score(f, y, scores=[name])


def test_one_sample_classes_are_fine_where_allowed():
    f, y, _ = _good(n=60)
    y = np.where(y == 2, 1, y)
    y[7] = 2
    out = jscore.score(f, y, scores=["hscore", "logme"])
    assert np.isfinite(out["hscore"]) and np.isfinite(out["logme"])


def test_nleep_needs_as_many_samples_as_components():
    f, y, _ = _good(n=12, c=3)  # 5 components per class x 3 classes = 15 > 12
    with pytest.raises(ValueError, match="(?i)nleep.*15"):
        jscore.score(f, y, scores=["nleep"])


def test_n_mismatch_features_labels():
    f, y, _ = _good()
    with pytest.raises(ValueError, match="(?i)labels.*\\b40\\b|\\b39\\b.*40|40.*\\b39\\b"):
        jscore.score(f, y[:-1], scores=["hscore"])


def test_n_mismatch_features_source():
    f, y, p = _good()
    with pytest.raises(ValueError, match="(?i)source"):
        jscore.score(f, y, source_probs=p[:-2])


@pytest.mark.parametrize("shape", [(40,), (40, 6, 1)])
def test_wrong_rank_features(shape):
    _, y, _ = _good()
    with pytest.raises(ValueError, match="(?i)features.*2-D|2-D.*features"):
        jscore.score(np.ones(shape, np.float32), y, scores=["hscore"])


def test_wrong_rank_labels():
    f, y, _ = _good()
    with pytest.raises(ValueError, match="(?i)labels.*1-D"):
        jscore.score(f, np.stack([y, y], axis=1), scores=["hscore"])


def test_wrong_rank_source_probs():
    _, y, p = _good()
    with pytest.raises(ValueError, match="(?i)source_probs.*2-D"):
        jscore.score(labels=y, source_probs=p[:, 0], scores=["leep"])


@pytest.mark.parametrize("shape", [(0, 6), (40, 0)])
def test_empty_features(shape):
    y = np.zeros(shape[0], int)
    with pytest.raises(ValueError, match="(?i)empty"):
        jscore.score(np.ones(shape, np.float32), y, scores=["hscore"])


def test_source_probs_not_summing_to_one_suggests_logits():
    _, y, p = _good()
    with pytest.raises(ValueError, match="source_logits="):
        jscore.score(labels=y, source_probs=p * 3.0, scores=["leep"])


def test_negative_source_probs_suggest_logits():
    _, y, p = _good()
    logits = np.log(p)
    with pytest.raises(ValueError, match="source_logits="):
        jscore.score(labels=y, source_probs=logits, scores=["nce"])


def test_source_logits_are_softmaxed():
    _, y, p = _good()
    logits = np.log(p) + 7.0  # any shift: softmax recovers p
    a = jscore.score(labels=y, source_logits=logits, scores=["leep", "nce"])
    b = jscore.score(labels=y, source_probs=p, scores=["leep", "nce"])
    assert a["leep"] == pytest.approx(b["leep"], rel=1e-5)
    assert a["nce"] == pytest.approx(b["nce"], rel=1e-5)


def test_labels_are_remapped_without_num_classes():
    f, y, p = _good()
    y013 = np.array([0, 1, 3])[y]  # {0, 1, 2} -> {0, 1, 3}
    names = ["hscore", "gbc", "leep", "nce"]
    a = jscore.score(f, y013, source_probs=p, scores=names)
    b = jscore.score(f, y, source_probs=p, scores=names)
    assert set(a) == set(names)
    for name in a:
        assert a[name] == pytest.approx(b[name], rel=1e-6, abs=1e-7), name


def test_unknown_score_name():
    f, y, _ = _good()
    with pytest.raises(ValueError, match="nosuch"):
        jscore.score(f, y, scores=["nosuch"])
