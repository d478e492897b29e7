"""The study scores each model alone; its report still has ETran and NCTI, combined over the
dataset's models exactly as `score_zoo` combines them."""

import numpy as np

import jscore
from jscore.study.report import with_relative_scores


def _zoo(n=160, c=4, dims=(24, 40, 70), seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    models = {}
    for i, d in enumerate(dims):  # class separation grows with i: the models are distinguishable
        means = (0.3 + 0.6 * i) * rng.normal(size=(c, d))
        models[f"m{i}"] = {"features": (means[y] + rng.normal(size=(n, d))).astype(np.float32)}
    return models, y


def test_study_relative_scores_equal_score_zoo():
    models, y = _zoo()
    names = ["etran_energy", "etran_lda", "ncti_seli", "ncti_ncc", "ncti_vc"]
    hp = {"ncti_seli": {"dims": 16}, "ncti_ncc": {"dims": 16}, "ncti_vc": {"dims": 16}}
    alone = {("toy", m): jscore.score(v["features"], y, scores=names, **hp) for m, v in models.items()}
    other = {("other", m): dict(r) for (_, m), r in alone.items() if m != "m2"}  # a second dataset, 2 models
    got = with_relative_scores({**alone, **other})
    zoo = jscore.score_zoo(models, y, scores=names + ["etran", "ncti"], **hp)
    for m in models:
        for name in ("etran", "ncti"):
            np.testing.assert_allclose(got[("toy", m)][name], zoo[m][name], rtol=1e-4, atol=1e-5, err_msg=f"{m} {name}")
    # Combined per dataset: on "other" the min-max of each component runs over its two models
    # only, so each component is 0 for one model and 1 for the other, and ETran is in {0, 1, 2}
    # with the two summing to 2 (not the values of those models on "toy").
    pair = [got[("other", m)]["etran"] for m in ("m0", "m1")]
    np.testing.assert_allclose(sum(pair), 2.0, atol=1e-6)
    assert all(min(abs(v - k) for k in (0.0, 1.0, 2.0)) < 1e-6 for v in pair), pair
    assert "etran" not in alone[("toy", "m0")]
