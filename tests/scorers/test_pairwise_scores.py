"""PARC, TMI, TransRate and k-NN against their float64 oracles (tests/oracles), the blocked
pairwise search against brute force, hand-checked cases, and the memory bound at N = 50,000.

The registry-wide properties (order/relabelling invariance, masks, padding, vmap, no
recompilation) run over these scores in test_scorer_properties.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist

import jscore
from jscore._pairwise import block_rows, nearest_neighbors
from tests.oracles import knn as knn_oracle
from tests.oracles import parc as parc_oracle
from tests.oracles import tmi as tmi_oracle
from tests.oracles import transrate as transrate_oracle
from tests.oracles.data import class_features, class_labels
from tests.tolerances import SCORE_KIND, assert_close

NAMES = ["parc", "tmi", "transrate", "knn"]
ORACLES = {"parc": parc_oracle.parc, "tmi": tmi_oracle.tmi, "transrate": transrate_oracle.transrate,
           "knn": knn_oracle.knn}

# (name, N, D, C, imbalance, rank_deficient). "largest" has n, d > 32: PARC's randomized PCA is
# then a real approximation (below that it spans the whole range and equals the exact PCA).
CASES = [
    ("n>d", 120, 20, 3, 1.0, False),
    ("n<d", 40, 100, 4, 1.0, False),
    ("c=2_imbalance9", 200, 30, 2, 9.0, False),
    ("c=50_small_d", 300, 12, 50, 1.0, False),
    ("rank_deficient", 150, 40, 5, 1.0, True),
    ("largest", 256, 200, 10, 1.0, False),
]
FLOAT32_CASES = [c for c in CASES if c[0] in ("n>d", "n<d", "rank_deficient", "largest")]


def _case(case, seed=0):
    _, n, d, c, imb, rd = case
    rng = np.random.default_rng(seed)
    y = class_labels(rng, n, c, imb)
    return class_features(rng, y, d, c, separation=3.0 / np.sqrt(d), rank_deficient=rd), y, c


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_float64_through_score(case, x64):
    f, y, c = _case(case)
    got = jscore.score(f, y, scores=NAMES, num_classes=c)
    for name in NAMES:
        assert_close(got[name], ORACLES[name](f, y, c), np.float64, SCORE_KIND[name], err_msg=f"{name} {case}")


@pytest.mark.parametrize("case", FLOAT32_CASES, ids=[c[0] for c in FLOAT32_CASES])
def test_float32_through_score(case):
    f, y, c = _case(case)
    f32 = f.astype(np.float32)
    got = jscore.score(f32, y, scores=NAMES, num_classes=c)
    for name in NAMES:
        want = ORACLES[name](f32.astype(np.float64), y, c)
        assert_close(got[name], want, np.float32, SCORE_KIND[name], err_msg=f"{name} {case}")


@pytest.mark.parametrize("name", NAMES)
def test_single_functions_float64_and_dtype(name, x64):
    f, y, c = _case(CASES[0], seed=1)
    got = jscore.REGISTRY[name].fn(jnp.asarray(f), jnp.asarray(y), num_classes=c)
    assert got.dtype == jnp.float64
    assert_close(got, ORACLES[name](f, y, c), np.float64, SCORE_KIND[name])
    got32 = jscore.REGISTRY[name].fn(jnp.asarray(f, jnp.float32), jnp.asarray(y), num_classes=c)
    assert got32.dtype == jnp.float32


VARIANTS = [
    ("knn", {"k": 3}), ("knn", {"k": 4}), ("knn", {"k": 3, "loo": "exact"}), ("knn", {"k": 4, "loo": "exact"}),
    ("tmi", {"norm": "euclidean"}), ("tmi", {"k": 2, "min_dist": 0.05}), ("tmi", {"k": 5, "norm": "euclidean", "min_dist": 0.0}),
    ("transrate", {"class_weights": "proportional"}), ("transrate", {"eps": 1e-2}),
    ("parc", {"pca": "exact"}), ("parc", {"dims": 8}), ("parc", {"dims": 8, "pca": "exact"}),
]


@pytest.mark.parametrize("name,hp", VARIANTS, ids=[f"{n}-{h}" for n, h in VARIANTS])
def test_hyperparameter_variants_float64(name, hp, x64):
    f, y, c = _case(("v", 90, 40, 3, 1.0, False), seed=2)
    got = jscore.REGISTRY[name].fn(jnp.asarray(f), jnp.asarray(y), num_classes=c, **hp)
    assert_close(got, ORACLES[name](f, y, c, **hp), np.float64, SCORE_KIND[name])


@pytest.mark.parametrize("method", ["sort", "histogram"])
def test_parc_rank_methods_agree_with_oracle(method, x64):
    # The histogram counts a within/between pair that shares one of the 2^20 bins as tied; at
    # N = 256 (32,640 pairs) that moves rho by ~1e-7, so 1e-5 relative for the binned path.
    f, y, c = _case(CASES[-1], seed=3)
    got = jscore.REGISTRY["parc"].fn(jnp.asarray(f), jnp.asarray(y), num_classes=c, method=method)
    rtol = 1e-9 if method == "sort" else 1e-5
    np.testing.assert_allclose(float(got), parc_oracle.parc(f, y, c), rtol=rtol)


def test_parc_large_n_uses_the_binned_path_float32():
    # N = 4500 > 4096: "auto" bins (the large-N path, never an N x N matrix); float32 against the
    # exact float64 oracle (12.5M pairs sorted by scipy).
    rng = np.random.default_rng(4)
    y = class_labels(rng, 4500, 4)
    f = class_features(rng, y, 48, 4, separation=0.5).astype(np.float32)
    got = float(jscore.REGISTRY["parc"].fn(f, y, num_classes=4))
    np.testing.assert_allclose(got, parc_oracle.parc(f.astype(np.float64), y, 4), rtol=1e-3)


def test_parc_histogram_over_block_pairs_equals_the_oracle_with_masked_rows(x64):
    """The binned path visits only the pairs of row blocks I <= J: with blocks of 64 rows (five
    blocks and a padded last one) and masked rows, it equals the float64 oracle on the valid rows
    (to the binning's ~1e-6)."""
    import importlib

    parc_mod = importlib.import_module("jscore.scorers.parc")
    rng = np.random.default_rng(9)
    y = class_labels(rng, 300, 3)
    f = class_features(rng, y, 40, 3, separation=0.6)
    w = np.ones(300)
    w[rng.choice(300, 25, replace=False)] = 0
    z = f[:, :12] - f[w > 0, :12].mean(0)
    ls = jscore.stats.label_stats(jnp.asarray(y), 3, jnp.asarray(w), jnp.float64)
    u = parc_mod._row_directions(jnp.asarray(z * w[:, None]), ls, 12)
    got = 100 * float(parc_mod._spearman_histogram(u, jnp.asarray(y), jnp.asarray(w), 1 << 20, block=64))
    sort = 100 * float(parc_mod._spearman_sort(u, jnp.asarray(y), jnp.asarray(w)))
    from scipy.stats import spearmanr

    keep = w > 0
    uv, yv = np.asarray(u)[keep], y[keep]
    iu = np.triu_indices(len(yv), 1)
    want = 100 * spearmanr((1 - uv @ uv.T)[iu], (yv[:, None] != yv[None, :])[iu]).statistic
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got, sort, rtol=1e-5)


# --- the shared blocked search -------------------------------------------------------------


@pytest.mark.parametrize("metric", ["euclidean", "chebyshev"])
@pytest.mark.parametrize("grouped", [False, True])
def test_nearest_neighbors_blocked_equals_brute_force(metric, grouped, x64):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(53, 7)) * np.linspace(0.5, 3, 7)
    x[10] = x[3]  # an exact duplicate: distance exactly 0, still a neighbour (self excluded by index)
    w = np.ones(53)
    w[[5, 20, 41]] = 0
    groups = rng.integers(0, 3, 53)
    groups[10] = groups[3]
    k = 3
    # block 8: several pairs of row blocks, with groups several partners per block and groups
    # spanning blocks.
    d, idx = nearest_neighbors(jnp.asarray(x), k, weights=jnp.asarray(w), metric=metric, block=8,
                               groups=jnp.asarray(groups) if grouped else None)
    full = cdist(x, x, "sqeuclidean" if metric == "euclidean" else "chebyshev")
    for i in np.flatnonzero(w > 0):  # masked rows' own results are unspecified
        ok = (w > 0) & (np.arange(53) != i)
        if grouped:
            ok &= groups == groups[i]
        cand = np.flatnonzero(ok)
        order = cand[np.lexsort((cand, full[i, cand]))][:k]
        np.testing.assert_array_equal(np.asarray(idx[i]), order, err_msg=f"row {i}")
        np.testing.assert_allclose(np.asarray(d[i]), full[i, order], rtol=1e-12, atol=1e-12)
    assert float(d[3, 0]) == 0.0 and int(idx[3, 0]) == 10


@pytest.mark.parametrize("metric", ["euclidean", "chebyshev"])
@pytest.mark.parametrize("grouped", [False, True])
def test_nearest_neighbors_ties_go_to_the_smaller_index(metric, grouped):
    """Points on a small integer grid: most distances tie exactly (in float32 too). Each pair of
    blocks is visited once, and a row meets its candidates through its own row updates and through
    transposed tiles of earlier blocks; the k kept must still be the smallest indices among ties."""
    rng = np.random.default_rng(8)
    x = rng.integers(0, 3, size=(45, 2)).astype(np.float32)
    groups = rng.integers(0, 2, 45)
    w = np.ones(45)
    k = 4
    d, idx = nearest_neighbors(jnp.asarray(x), k, weights=jnp.asarray(w), metric=metric, block=8,
                               groups=jnp.asarray(groups) if grouped else None)
    full = cdist(x.astype(np.float64), x.astype(np.float64), "sqeuclidean" if metric == "euclidean" else "chebyshev")
    for i in range(45):
        ok = np.arange(45) != i
        if grouped:
            ok &= groups == groups[i]
        cand = np.flatnonzero(ok)
        order = cand[np.lexsort((cand, full[i, cand]))][:k]
        np.testing.assert_array_equal(np.asarray(idx[i]), order, err_msg=f"row {i}")


def test_nearest_neighbors_marks_missing_candidates():
    x = jnp.arange(10.0)[:, None]
    groups = jnp.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    d, idx = nearest_neighbors(x, 2, weights=jnp.ones(10), groups=groups)
    assert int(idx[0, 0]) == 1 and int(idx[0, 1]) == -1 and np.isinf(float(d[0, 1]))


def test_block_rows_bounds():
    assert block_rows(1024, 50_000) == 1024 and block_rows(256, 10) == 16 and block_rows(1024, 1000) == 1000


def test_memory_at_fifty_thousand_samples_is_blockwise():
    # Compile only (no run): the temporaries of each score at N = 50,000, D = 2,048 stay far below
    # one N x N float32 matrix (9.3 GiB) and fit the 24 GiB machine with room to spare.
    n, d = 50_000, 2048
    x = jax.ShapeDtypeStruct((n, d), jnp.float32)
    y = jax.ShapeDtypeStruct((n,), jnp.int32)
    for name in NAMES:
        mem = jscore.REGISTRY[name].fn.lower(x, y, num_classes=8).compile().memory_analysis()
        if mem is None:
            pytest.skip("this backend reports no memory analysis")
        assert mem.temp_size_in_bytes < 3 * 2**30, (name, mem.temp_size_in_bytes / 2**30)


# --- hand-checked cases ----------------------------------------------------------------------


def test_knn_hand_case_and_duplicates():
    # 1-D points 0, 0.1, 0.25 (class 0) and 0.2, 5, 5.1 (class 1).
    # 1-NN: 0 -> 0.1 (0 ok); 0.1 -> 0 (ok); 0.25 -> 0.2 (class 1: wrong); 0.2 -> 0.25 (class 0:
    # wrong); 5 -> 5.1 ok; 5.1 -> 5 ok. Accuracy 4/6.
    x = np.array([[0.0], [0.1], [0.25], [0.2], [5.0], [5.1]], np.float32)
    y = np.array([0, 0, 0, 1, 1, 1])
    for loo in ("published", "exact"):
        assert float(jscore.REGISTRY["knn"].fn(x, y, num_classes=2, loo=loo)) == pytest.approx(4 / 6)
        assert knn_oracle.knn(x, y, 2, loo=loo) == pytest.approx(4 / 6)
    # Exact duplicates with different labels: rows 0 and 1 identical (labels 0, 1), row 2 far.
    # exact LOO: each of rows 0, 1 has the other as 1-NN -> both wrong; rows 2, 3 (a pair at 0.5
    # distance, labels 1, 1) right: 2/4. Published (sort by distance then index, drop first):
    # row 0 drops itself -> neighbour row 1 (wrong); row 1 drops row 0 (the smaller index) and
    # keeps itself -> right: 3/4.
    x = np.array([[1.0, 2.0], [1.0, 2.0], [9.0, 9.0], [9.5, 9.0]], np.float32)
    y = np.array([0, 1, 1, 1])
    assert float(jscore.REGISTRY["knn"].fn(x, y, num_classes=2, loo="exact")) == pytest.approx(0.5)
    assert float(jscore.REGISTRY["knn"].fn(x, y, num_classes=2)) == pytest.approx(0.75)
    assert knn_oracle.knn(x, y, 2, loo="exact") == pytest.approx(0.5)
    assert knn_oracle.knn(x, y, 2) == pytest.approx(0.75)


def test_knn_vote_rules():
    # k = 3, three classes, rows whose 3 votes all differ (row 0: neighbours labelled 2, 1, 0),
    # split 2-1 and unanimous: published and exact tie rules against the oracle's explicit loops.
    x = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [10.5], [11.0], [11.5]])
    y = np.array([0, 2, 1, 0, 1, 1, 2, 2])
    for loo in ("published", "exact"):
        got = float(jscore.REGISTRY["knn"].fn(x.astype(np.float32), y, num_classes=3, k=3, loo=loo))
        assert got == pytest.approx(knn_oracle.knn(x, y, 3, k=3, loo=loo), abs=1e-6)


def test_tmi_hand_case():
    # One class of 4 points on a line at 0, 3, 7, 12 (and a copy shifted by 100 as class 1), k = 1,
    # max norm, min_dist 1: nearest-neighbour distances 3, 3, 4, 5. h = -psi(1) + psi(4) + 1/4 *
    # (log 6 + log 6 + log 8 + log 10); both classes equal, p = 1/2: TMI = h / 2.
    from scipy.special import digamma

    pts = np.array([0.0, 3.0, 7.0, 12.0])
    x = np.concatenate([pts, pts + 100])[:, None].astype(np.float32)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    h = -digamma(1) + digamma(4) + (np.log(6) + np.log(6) + np.log(8) + np.log(10)) / 4
    got = float(jscore.REGISTRY["tmi"].fn(x, y, num_classes=2, k=1))
    np.testing.assert_allclose(got, h / 2, rtol=1e-6)
    np.testing.assert_allclose(tmi_oracle.tmi(x, y, 2, k=1), h / 2, rtol=1e-12)


def test_transrate_hand_case():
    # 1-D: class 0 = {-1, -1}, class 1 = {1, 1}: centred Z = (-1, -1, 1, 1), Z^T Z = 4, n = 4:
    # R(Z) = 1/2 log(1 + 4 / (4 eps)); each class Z_c^T Z_c = 2, n_c = 2: R = 1/2 log(1 + 1/eps).
    # TransRate = 1/2 log(1 + 1/eps) - 1/2 log(1 + 1/eps) = 0. With eps = 1 and one point moved:
    # class 1 = {1, 3}: mean 1/2, Z = (-1.5, -1.5, .5, 2.5), Z^T Z = 2.25 + 2.25 + .25 + 6.25 = 11;
    # R(Z) = 1/2 log(1 + 11/4); R(Z_0) = 1/2 log(1 + 4.5/2); R(Z_1) = 1/2 log(1 + 6.5/2).
    x = np.array([[-1.0], [-1.0], [1.0], [3.0]], np.float32)
    y = np.array([0, 0, 1, 1])
    want = 0.5 * np.log(1 + 11 / 4) - 0.5 * (0.5 * np.log(1 + 4.5 / 2) + 0.5 * np.log(1 + 6.5 / 2))
    got = float(jscore.REGISTRY["transrate"].fn(x, y, num_classes=2, eps=1.0))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-7)  # 0.0045: a float32 difference of logs
    np.testing.assert_allclose(transrate_oracle.transrate(x, y, 2, eps=1.0), want, rtol=1e-12)


def test_transrate_feature_side_takes_the_whole_rate_from_its_class_scatters(x64):
    """N > D (the feature side, where R(Z) comes from the sum of the class scatters): with masked
    rows, masked columns and an absent class, the per-score function equals the float64 oracle
    on the valid rows and columns, and `jscore.score`'s path (R(Z) from the shared eigenvalues)."""
    from jscore.scorers.transrate import sample_side_is_cheaper

    rng = np.random.default_rng(7)
    n, d, c = 90, 12, 4
    y = rng.permutation(np.arange(n) % 3)  # class 3 absent
    x = class_features(rng, y, d, 3) * np.logspace(-2, 2, d)  # badly scaled columns
    rows = np.ones(n)
    rows[[3, 17, 40, 41]] = 0
    cols = np.ones(d)
    cols[[2, 9]] = 0
    assert not sample_side_is_cheaper(n, d, c)
    want = transrate_oracle.transrate(x[rows > 0][:, cols > 0], y[rows > 0], c)
    got = float(jscore.REGISTRY["transrate"].fn(jnp.asarray(x), jnp.asarray(y), num_classes=c,
                                                 sample_mask=jnp.asarray(rows), feature_mask=jnp.asarray(cols)))
    np.testing.assert_allclose(got, want, rtol=1e-9)
    shared = jscore.score(x[rows > 0][:, cols > 0], y[rows > 0], scores=["transrate"], num_classes=c,
                          float64=True)["transrate"]
    np.testing.assert_allclose(shared, want, rtol=1e-9)


@pytest.mark.parametrize("method", ["sort", "histogram"])
def test_parc_rank_correlation_hand_case(method):
    # Four unit rows at angles 0, 0.1, 1.0, 1.3 rad, labels 0, 0, 1, 1: dissimilarities 1 - cos of
    # the angle differences, ascending .1 (within), .3 (within), .9, 1.0, 1.2, 1.3 (between): a
    # perfect split. Ranks 1..6 against the between-class indicator: cov = (1/6)[(1/3)(-.5 + .5 +
    # 1.5 + 2.5) + (-2/3)(-2.5 - 1.5)] = 2/3, sd(ranks) = sqrt(35/12), sd(indicator) = sqrt(2)/3,
    # rho = (2/3) / (sqrt(35/12) sqrt(2)/3) = 0.828078...
    from jscore.scorers.parc import _spearman_histogram, _spearman_sort

    theta = np.array([0.0, 0.1, 1.0, 1.3])
    u = jnp.asarray(np.stack([np.cos(theta), np.sin(theta)], axis=1), jnp.float32)
    cls, w = jnp.array([0, 0, 1, 1]), jnp.ones(4)
    want = (2 / 3) / (np.sqrt(35 / 12) * np.sqrt(2) / 3)
    got = _spearman_sort(u, cls, w) if method == "sort" else _spearman_histogram(u, cls, w, 1 << 20)
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    # Move row 1 to 0.95 rad: within pair (0, 1) at 1 - cos .95 now ranks above the between pairs
    # (1, 2) at .05 and (1, 3) at .35 - the order w(.05 between), ... checked against scipy.
    import scipy.stats

    theta2 = np.array([0.0, 0.95, 1.0, 1.3])
    u2 = jnp.asarray(np.stack([np.cos(theta2), np.sin(theta2)], axis=1), jnp.float32)
    d = 1 - np.cos(np.abs(theta2[:, None] - theta2[None, :]))
    iu = np.triu_indices(4, 1)
    ref = scipy.stats.spearmanr(d[iu], (np.array([0, 0, 1, 1])[:, None] != np.array([0, 0, 1, 1]))[iu])[0]
    got2 = _spearman_sort(u2, cls, w) if method == "sort" else _spearman_histogram(u2, cls, w, 1 << 20)
    np.testing.assert_allclose(float(got2), ref, rtol=1e-5)


# --- bad input ---------------------------------------------------------------------------------


def _good(n=40, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = class_labels(rng, n, c)
    return class_features(rng, y, d, c).astype(np.float32), y


def test_tmi_class_with_too_few_samples():
    f, y = _good(n=60)
    y = np.where(y == 2, 1, y)
    y[:3] = 2  # class 2 has 3 samples; TMI's 3rd within-class neighbour needs 4
    with pytest.raises(ValueError, match="(?i)class 2.*3 sample.*4 per class"):
        jscore.score(f, y, scores=["tmi"])
    y2 = np.where(np.arange(60) < 5, 0, 1 + np.arange(60) % 2)  # class 0: 5 samples; k = 5 needs 6
    with pytest.raises(ValueError, match="(?i)class 0.*5 sample.*6 per class"):
        jscore.score(f, y2, scores=["tmi"], tmi={"k": 5})


def test_knn_needs_more_samples_than_k():
    f, y = _good(n=6, c=2)
    with pytest.raises(ValueError, match="(?i)knn.*k = 6.*7"):
        jscore.score(f, y, scores=["knn"], knn={"k": 6})


def test_parc_needs_two_samples_in_each_class():
    f, y = _good(n=30)
    y = np.where(y == 2, 1, y)
    y[4] = 2
    with pytest.raises(ValueError, match="(?i)class 2.*1 sample"):
        jscore.score(f, y, scores=["parc"])


@pytest.mark.parametrize("name,hp", [("knn", {"loo": "nope"}), ("tmi", {"norm": "l1"}),
                                     ("transrate", {"class_weights": "x"}), ("parc", {"pca": "svd"}),
                                     ("parc", {"method": "fast"})])
def test_bad_options_are_named(name, hp):
    f, y = _good()
    with pytest.raises(ValueError, match=f"(?i){list(hp)[0]}"):
        jscore.score(f, y, scores=[name], **{name: hp})


def test_nan_features_rejected_for_the_new_scores():
    f, y = _good()
    f[2, 1] = np.nan
    with pytest.raises(ValueError, match="(?i)nan"):
        jscore.score(f, y, scores=NAMES)


def test_sequel_result_names_map_onto_the_registry():
    # The TMLR sequel's transf_scores.csv writes parc_score and tmi_score.
    from jscore.evaluate.results import KNOWN_SCORES, normalise_score_name

    for published, ours in [("parc_score", "parc"), ("tmi_score", "tmi"), ("PARC", "parc")]:
        assert normalise_score_name(published) == ours and ours in jscore.REGISTRY and ours in KNOWN_SCORES
