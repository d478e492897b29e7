"""Scores defined relative to a set of models (ETran's and NCTI's min-max combinations): only
`score_zoo` computes them, `score` returns their components; plus hand-checkable cases and the
new scores' input errors."""

import numpy as np
import pytest

import jscore
from tests.oracles import etran as etran_oracle
from tests.oracles import ncti as ncti_oracle
from tests.oracles.data import class_features, class_labels, source_probs
from tests.tolerances import assert_close


def _zoo(n=160, c=3, seed=0):
    """Four models of one dataset, of different widths (two shape buckets) and quality."""
    rng = np.random.default_rng(seed)
    y = class_labels(rng, n, c)
    models = {}
    for i, (d, sep) in enumerate([(20, 2.0), (40, 1.0), (150, 0.5), (24, 0.0)]):
        models[f"m{i}"] = {"features": class_features(rng, y, d, c, separation=sep / np.sqrt(d) * 3)}
    return models, y, c


def test_registry_marks_the_relative_scores():
    relative = {n for n, s in jscore.REGISTRY.items() if s.relative}
    assert relative == {"etran", "ncti"}
    assert jscore.REGISTRY["etran"].components == ("etran_energy", "etran_lda")
    assert jscore.REGISTRY["ncti"].components == ("ncti_seli", "ncti_ncc", "ncti_vc")


def test_score_returns_the_components_of_a_relative_score():
    models, y, c = _zoo()
    f = models["m0"]["features"]
    got = jscore.score(f, y, scores=["etran", "ncti"], num_classes=c)
    assert list(got) == ["etran_energy", "etran_lda", "ncti_seli", "ncti_ncc", "ncti_vc"]
    assert "etran" not in jscore.score(f, y, num_classes=c)  # "all" leaves them out


def test_score_zoo_combinations_match_the_published_formulas(x64):
    models, y, c = _zoo()
    got = jscore.score_zoo(models, y, scores=["etran", "ncti"], num_classes=c)
    names = list(models)
    energy = [etran_oracle.etran_energy(models[m]["features"]) for m in names]
    lda = [etran_oracle.etran_lda(models[m]["features"], y) for m in names]
    terms = [ncti_oracle.ncti_terms(models[m]["features"], y)[:3] for m in names]
    want_etran = etran_oracle.etran(energy, lda)
    want_ncti = ncti_oracle.ncti(terms)  # the authors' mc + ma - cp
    for i, m in enumerate(names):
        assert_close(got[m]["etran"], want_etran[i], np.float64, "eig", err_msg=m)
        assert_close(got[m]["ncti"], want_ncti[i], np.float64, "eig", err_msg=m)
        assert_close(got[m]["etran_energy"], energy[i], np.float64, "direct", err_msg=m)
    values = [got[m]["etran"] for m in names]
    assert all(0.0 <= v <= 2.0 for v in values)
    assert max(values) >= 1.0  # the best model on either term gets its 1


def test_score_zoo_all_includes_the_combinations_and_matches_score():
    models, y, c = _zoo(seed=1)
    zoo = jscore.score_zoo(models, y, num_classes=c)
    for m, inputs in models.items():
        assert "etran" in zoo[m] and "ncti" in zoo[m]
        one = jscore.score(inputs["features"], y, num_classes=c)
        for name, value in one.items():  # padded into a 128-wide bucket, vmapped: same values
            assert_close(zoo[m][name], value, np.float32, "iterative", err_msg=f"{m} {name}")


def test_single_model_and_equal_models_give_zero_not_nan():
    models, y, c = _zoo()
    one = {"m0": models["m0"]}
    got = jscore.score_zoo(one, y, scores="etran,ncti", num_classes=c)
    assert got["m0"]["etran"] == 0.0 and got["m0"]["ncti"] == 0.0
    twins = {"a": models["m0"], "b": models["m0"]}
    got = jscore.score_zoo(twins, y, scores="etran", num_classes=c)
    assert got["a"]["etran"] == got["b"]["etran"] == 0.0


def test_relative_scores_take_no_options():
    models, y, c = _zoo()
    with pytest.raises(ValueError, match="(?i)etran.*components|components.*etran"):
        jscore.score_zoo(models, y, scores="etran", num_classes=c, etran={"percent": 1.0})
    got = jscore.score_zoo(models, y, scores="etran", num_classes=c, etran_energy={"percent": 10.0})
    want = etran_oracle.etran_energy(models["m1"]["features"], percent=10.0)
    assert_close(got["m1"]["etran_energy"], want, np.float32, "direct")


def test_ncti_needs_more_samples_than_pca_dimensions():
    rng = np.random.default_rng(0)
    y = class_labels(rng, 50, 3)
    f = class_features(rng, y, 80, 3).astype(np.float32)
    with pytest.raises(ValueError, match="(?i)ncti.*64.*dims"):
        jscore.score(f, y, scores=["ncti"])
    out = jscore.score(f, y, scores=["ncti"], ncti_seli={"dims": 16}, ncti_ncc={"dims": 16},
                       ncti_vc={"dims": 16})
    assert all(np.isfinite(v) for v in out.values())


@pytest.mark.parametrize("name", ["sfda", "pactran", "etran_lda", "ncti_ncc"])
def test_nan_features_are_rejected(name):
    rng = np.random.default_rng(0)
    y = class_labels(rng, 90, 3)
    f = class_features(rng, y, 6, 3).astype(np.float32)
    f[4, 1] = np.nan
    with pytest.raises(ValueError, match="(?i)nan"):
        jscore.score(f, y, scores=[name])


@pytest.mark.parametrize("name", ["sfda", "etran_lda", "ncti_ncc", "pac_dirichlet"])
def test_single_class_is_rejected(name):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(90, 6)).astype(np.float32)
    p = source_probs(rng, np.zeros(90, int), 5)
    with pytest.raises(ValueError, match="(?i)two classes"):
        jscore.score(f, np.zeros(90, int), source_probs=p, scores=[name])


# Hand-checkable cases -------------------------------------------------------------------------


def test_etran_lda_by_hand():
    # 1-D, classes {0, 0} and {2, 2}... x in {0, 0, 2, 2}: means 0 and 2, equal priors; logits
    # x m_c - m_c^2 / 2: class 0 -> 0, class 1 -> 2x - 2. At x = 0: softmax(0, -2) -> 1/(1+e^-2);
    # at x = 2: softmax(0, 2) -> same. ETran_lda = 1 / (1 + e^-2) = 0.8808.
    x = np.array([[0.0], [0.0], [2.0], [2.0]], np.float32)
    y = np.array([0, 0, 1, 1])
    got = float(jscore.REGISTRY["etran_lda"].fn(x, y, num_classes=2))
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-2)), rtol=1e-6)


def test_etran_energy_by_hand():
    # Two features [a, a]: logsumexp = a + log 2. 1000 samples, percent 0.5 -> the 5 smallest.
    a = np.arange(1000, dtype=np.float32) / 100
    x = np.stack([a, a], axis=1)
    y = np.arange(1000) % 2
    got = float(jscore.REGISTRY["etran_energy"].fn(x, y, num_classes=2))
    np.testing.assert_allclose(got, np.mean(a[:5]) + np.log(2), rtol=1e-6)


def test_pac_dirichlet_uninformative_source_by_hand():
    # One source class (s = 1 for every sample): q = 1, A_y = a0_y + n_y, and the bound is the
    # Dirichlet-multinomial evidence: (log C(a0) - log C(A)) / (n C) with C(a) = Gamma(sum a) /
    # prod Gamma(a). n = 4, C = 2, balanced: a0 = (1/2, 1/2), A = (5/2, 5/2).
    from scipy.special import gammaln

    p = np.ones((4, 1))
    y = np.array([0, 1, 0, 1])

    def log_c(a):
        return gammaln(np.sum(a)) - np.sum(gammaln(a))

    want = (log_c(np.array([0.5, 0.5])) - log_c(np.array([2.5, 2.5]))) / 8
    got = float(jscore.REGISTRY["pac_dirichlet"].fn(p.astype(np.float32), y, num_classes=2))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_sfda_perfect_separation_scores_near_one_and_noise_near_chance():
    rng = np.random.default_rng(0)
    y = class_labels(rng, 300, 3)
    far = class_features(rng, y, 10, 3, separation=30.0).astype(np.float32)
    noise = rng.normal(size=(300, 10)).astype(np.float32)
    assert float(jscore.REGISTRY["sfda"].fn(far, y, num_classes=3)) > 0.99
    assert float(jscore.REGISTRY["sfda"].fn(noise, y, num_classes=3)) < 0.5


def test_tmlr_sequel_names_map_onto_the_registry():
    # The sequel's transf_scores.csv names (transf_metric column) lose their "_score" suffix.
    from jscore.evaluate.results import normalise_score_name

    for published, ours in [("ncti_score", "ncti"), ("etran_energy_score", "etran_energy"),
                            ("pactran_score", "pactran"), ("sfda_score", "sfda")]:
        assert normalise_score_name(published) == ours
        assert ours in jscore.REGISTRY
