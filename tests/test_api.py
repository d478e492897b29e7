"""jscore.score as an entry point: option handling and the float64 switch."""

import numpy as np
import pytest

import jscore


def _ill_conditioned(n=400, d=60, c=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % c
    scales = np.logspace(0, -4, d)  # covariance condition number ~1e8: beyond float32
    x = (rng.normal(size=(n, d)) + 0.3 * rng.normal(size=(c, d))[labels]) * scales + 20.0
    return x, labels


def test_float64_switch_recovers_what_float32_cannot():
    x, labels = _ill_conditioned()
    import jax

    from jscore._numerics import float64_scope

    with float64_scope():
        reference = jscore.score(x.astype(np.float32).astype(np.float64), labels, scores=["hscore", "logme"])
    assert not jax.config.jax_enable_x64
    switched = jscore.score(x.astype(np.float32), labels, scores=["hscore", "logme"], float64=True)
    for name in reference:
        assert switched[name] == pytest.approx(reference[name], rel=1e-9)
    zoo = jscore.score_zoo({"m": {"features": x.astype(np.float32)}}, labels, scores=["hscore"], float64=True)
    assert zoo["m"]["hscore"] == pytest.approx(reference["hscore"], rel=1e-9)


def test_options_are_checked():
    x, labels = _ill_conditioned(n=40, d=5)
    with pytest.raises(ValueError, match="no hyper-parameter"):
        jscore.score(x, labels, scores=["gbc"], gbc={"dimz": 3})
    with pytest.raises(ValueError, match="unknown option"):
        jscore.score(x, labels, scores=["gbc"], dims=3)
    with pytest.raises(ValueError, match="needs source_probs"):
        jscore.score(x, labels, scores=["leep"])
    assert jscore.score(x, labels, scores="gbc", gbc={"gaussian": "diagonal"}).keys() == {"gbc"}
    # score_zoo plans its scores the same way: the same checks, the same errors.
    zoo = {"m": {"features": x}}
    with pytest.raises(ValueError, match="unknown option"):
        jscore.score_zoo(zoo, labels, scores=["gbc"], dims=3)
    with pytest.raises(ValueError, match="no hyper-parameter"):
        jscore.score_zoo(zoo, labels, scores=["gbc"], gbc={"dimz": 3})


def test_nleep_needs_a_sample_per_component():
    x, labels = _ill_conditioned(n=24, d=5)  # 4 classes x 5 components = 20 <= 24, x 7 = 28 > 24
    for call in (lambda **o: jscore.score(x, labels, scores=["nleep"], **o),
                 lambda **o: jscore.score_zoo({"m": {"features": x}}, labels, scores=["nleep"], **o)):
        with pytest.raises(ValueError, match="28 mixture components"):
            call(nleep={"components_per_class": 7})


def test_all_means_every_score_whose_inputs_exist():
    x, labels = _ill_conditioned(n=60, d=5)
    ncti = {n: {"dims": 4} for n in ("ncti_seli", "ncti_ncc", "ncti_vc")}  # 60 samples < 64 PCA dims
    assert set(jscore.score(x, labels, scores="all", nleep={"max_dims": 4}, **ncti)) == {
        "hscore", "reg_hscore", "nleep", "logme", "gbc", "parc", "tmi", "transrate", "knn", "sfda", "pactran",
        "etran_energy", "etran_lda", "ncti_seli", "ncti_ncc", "ncti_vc"}
    probs = np.full((60, 3), 1 / 3)
    assert set(jscore.score(None, labels, source_probs=probs)) == {"nce", "leep", "pac_dirichlet", "pac_gamma"}


def test_all_leaves_out_what_a_small_sample_cannot_serve():
    """N = 40 <= NCTI's 64 PCA dims, classes of 2: "all" drops ncti_* and tmi (k + 1 = 4 per class)
    with a warning; asked for by name they still raise."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(20), 2)
    x = rng.normal(size=(20, 8))[labels] + 0.1 * rng.normal(size=(40, 8))
    with pytest.warns(UserWarning, match="ncti_seli.*tmi|tmi.*ncti_seli"):
        got = jscore.score(x, labels, scores="all", nleep={"max_dims": 4})
    assert {"ncti_seli", "ncti_ncc", "ncti_vc", "tmi"}.isdisjoint(got)
    assert {"hscore", "logme", "knn", "parc"} <= set(got)
    with pytest.raises(ValueError, match="ncti_seli"):
        jscore.score(x, labels, scores=["ncti_seli"])
