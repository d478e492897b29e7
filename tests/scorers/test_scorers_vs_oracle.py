"""Engine vs. float64 NumPy oracle on random inputs with class structure, over a shape grid.

float64 engine (x64) vs. oracle: ~1e-9 relative; float32 engine vs. oracle on the same
(float32-rounded) inputs: tolerances from tests/tolerances.py.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from tests.oracles import gbc as gbc_oracle
from tests.oracles import hscore as hscore_oracle
from tests.oracles import leep as leep_oracle
from tests.oracles import logme as logme_oracle
from tests.oracles import nce as nce_oracle
from tests.oracles import reg_hscore as reg_hscore_oracle
from tests.oracles.data import class_features, class_labels, source_case
from tests.tolerances import SCORE_KIND, assert_close

# (name, N, D, C, imbalance, rank_deficient). Separation is set per case so that classes overlap
# (GBC and LEEP stay away from their saturated values) but are clearly structured.
FEATURE_CASES = [
    ("n>d", 120, 20, 3, 1.0, False),
    ("n<d", 40, 100, 4, 1.0, False),
    ("c=2_imbalance9", 200, 30, 2, 9.0, False),
    ("c=50_small_d", 300, 12, 50, 1.0, False),
    ("rank_deficient_n>d", 150, 40, 5, 1.0, True),
    ("rank_deficient_n<d", 30, 60, 3, 1.0, True),
    ("largest", 256, 200, 10, 1.0, False),
]
FEATURE_SCORES = ["hscore", "reg_hscore", "logme", "gbc"]
# float32 runs on a subset (each case is one more compilation per score): both sides of N = D,
# rank deficiency, and the largest shape.
FLOAT32_CASES = [c for c in FEATURE_CASES
                 if c[0] in ("n>d", "n<d", "rank_deficient_n>d", "largest")]


def _feature_case(case, seed=0):
    _, n, d, c, imb, rd = case
    rng = np.random.default_rng(seed)
    y = class_labels(rng, n, c, imb)
    f = class_features(rng, y, d, c, separation=3.0 / np.sqrt(d), rank_deficient=rd)
    return f, y, c


def _oracle(name, x, y, c, dtype):
    if name == "hscore":
        return hscore_oracle.hscore(x, y, c, dtype=dtype)
    if name == "reg_hscore":
        return reg_hscore_oracle.reg_hscore(x, y, c)
    if name == "logme":
        return logme_oracle.logme(x, y, c)
    if name == "gbc":
        return gbc_oracle.gbc(x, y, c)
    if name == "leep":
        return leep_oracle.leep(x, y, c)
    if name == "nce":
        return nce_oracle.nce(x, y, c)
    raise KeyError(name)


def _engine(name, x, y, c):
    import jscore

    return jscore.REGISTRY[name].fn(x, y, num_classes=c)


# The per-function float64 test below covers these two cases; the rest go through jscore.score.
SINGLE_FUNCTION_CASES = [c for c in FEATURE_CASES if c[0] in ("n>d", "rank_deficient_n<d")]
THROUGH_SCORE_CASES = [c for c in FEATURE_CASES if c not in SINGLE_FUNCTION_CASES]


@pytest.mark.parametrize("case", THROUGH_SCORE_CASES, ids=[c[0] for c in THROUGH_SCORE_CASES])
def test_feature_scores_float64_through_score(case, x64):
    # The whole grid through the public entry point: one compiled program per shape for the four
    # scores (the per-score functions share the same *_from_stats code; they are compared below).
    import jscore

    f, y, c = _feature_case(case)
    got = jscore.score(f, y, scores=FEATURE_SCORES, num_classes=c)
    for name in FEATURE_SCORES:
        assert_close(got[name], _oracle(name, f, y, c, np.float64), np.float64, SCORE_KIND[name],
                     err_msg=f"{name} {case}")


@pytest.mark.parametrize("case", SINGLE_FUNCTION_CASES, ids=[c[0] for c in SINGLE_FUNCTION_CASES])
@pytest.mark.parametrize("name", FEATURE_SCORES)
def test_feature_scores_float64(name, case, x64):
    f, y, c = _feature_case(case)
    got = _engine(name, jnp.asarray(f, jnp.float64), jnp.asarray(y), c)
    assert got.dtype == jnp.float64
    assert_close(got, _oracle(name, f, y, c, np.float64), np.float64, SCORE_KIND[name],
                 err_msg=f"{name} {case}")


@pytest.mark.parametrize("case", FLOAT32_CASES, ids=[c[0] for c in FLOAT32_CASES])
def test_feature_scores_float32_through_score(case):
    # float32 through the public entry point (one compiled program for the four scores, from
    # the shared decomposition), compared with the oracle on the same float32-rounded inputs and,
    # for the H-score, the float32 pseudo-inverse cut-off (the score depends on which
    # eigenvalues are dropped).
    import jscore

    f, y, c = _feature_case(case)
    f32 = f.astype(np.float32)
    got = jscore.score(f32, y, scores=FEATURE_SCORES, num_classes=c)
    for name in FEATURE_SCORES:
        want = _oracle(name, f32.astype(np.float64), y, c, np.float32)
        assert_close(got[name], want, np.float32, SCORE_KIND[name], err_msg=f"{name} {case}")


def test_feature_scores_float32_single_function():
    # The per-score functions in float32 (the grid above goes through jscore.score).
    f, y, c = _feature_case(FEATURE_CASES[0])
    f32 = f.astype(np.float32)
    for name in FEATURE_SCORES:
        got = _engine(name, jnp.asarray(f32), jnp.asarray(y), c)
        assert got.dtype == jnp.float32
        want = _oracle(name, f32.astype(np.float64), y, c, np.float32)
        assert_close(got, want, np.float32, SCORE_KIND[name], err_msg=name)


SOURCE_CASES = [
    ("c=2", 50, 2, 5, 1.0),
    ("c=5_imbalance9", 200, 5, 10, 9.0),
    ("c=50", 300, 50, 100, 1.0),
    ("cs<c", 120, 10, 4, 1.0),
]


@pytest.mark.parametrize("case", SOURCE_CASES, ids=[c[0] for c in SOURCE_CASES])
@pytest.mark.parametrize("name", ["leep", "nce"])
def test_source_scores_float64(name, case, x64):
    p, y, c = source_case(case)
    got = _engine(name, jnp.asarray(p, jnp.float64), jnp.asarray(y), c)
    assert got.dtype == jnp.float64
    assert_close(got, _oracle(name, p, y, c, np.float64), np.float64, SCORE_KIND[name])


@pytest.mark.parametrize("case", SOURCE_CASES[1:3], ids=[c[0] for c in SOURCE_CASES[1:3]])
@pytest.mark.parametrize("name", ["leep", "nce"])
def test_source_scores_float32(name, case):
    p, y, c = source_case(case)
    p32 = p.astype(np.float32)
    got = _engine(name, jnp.asarray(p32), jnp.asarray(y), c)
    assert got.dtype == jnp.float32
    assert_close(got, _oracle(name, p32.astype(np.float64), y, c, np.float32), np.float32,
                 SCORE_KIND[name])


@pytest.mark.parametrize("gaussian,dims", [("spherical", 4), ("diagonal", 4), ("diagonal", 64),
                                           ("textbook_spherical", 4)])
def test_gbc_variants_float64(gaussian, dims, x64):
    f, y, c = _feature_case(("n>d", 90, 10, 3, 1.0, False), seed=1)
    import jscore

    got = jscore.REGISTRY["gbc"].fn(jnp.asarray(f), jnp.asarray(y), num_classes=c, dims=dims,
                                    gaussian=gaussian)
    assert_close(got, gbc_oracle.gbc(f, y, c, dims=dims, gaussian=gaussian), np.float64, "eig")


def test_hscore_explicit_rcond_float64(x64):
    f, y, c = _feature_case(("n>d", 80, 10, 3, 1.0, False), seed=2)
    import jscore

    # A cut-off that drops some real eigenvalues: the engine must drop the same ones.
    ev = np.linalg.eigvalsh(np.cov(f, rowvar=False, ddof=0))
    rcond = float(np.sqrt(ev[2] * ev[3])) / ev[-1]  # between the 3rd and 4th smallest
    got = jscore.REGISTRY["hscore"].fn(jnp.asarray(f), jnp.asarray(y), num_classes=c, rcond=rcond)
    assert_close(got, hscore_oracle.hscore(f, y, c, rcond=rcond), np.float64, "eig")


@pytest.mark.parametrize("k", [1, 3])
def test_logme_regression_float64(k, x64):
    rng = np.random.default_rng(3)
    f = rng.normal(size=(70, 12)) + 0.3
    w = rng.normal(size=(12, k))
    t = f @ w + 0.5 * rng.normal(size=(70, k))
    from jscore.scorers import logme_regression

    got = logme_regression(jnp.asarray(f), jnp.asarray(t))
    assert_close(got, logme_oracle.logme_regression(f, t), np.float64, "iterative")


def test_logme_absent_class_is_skipped(x64):
    # num_classes = 4 but class 2 has no sample: the mean runs over the 3 present classes.
    f, y, _ = _feature_case(("n>d", 60, 8, 3, 1.0, False), seed=4)
    y4 = np.where(y == 2, 3, y)
    import jscore

    for name in FEATURE_SCORES:
        got = jscore.REGISTRY[name].fn(jnp.asarray(f), jnp.asarray(y4), num_classes=4)
        assert_close(got, _oracle(name, f, y4, 4, np.float64), np.float64, SCORE_KIND[name],
                     err_msg=name)


@pytest.mark.parametrize("name", FEATURE_SCORES)
def test_padded_rows_and_columns_float64(name, x64):
    # Padding is exactly neutral: junk rows with sample_mask 0 (interleaved) and zero columns
    # with feature_mask 0 give the oracle's value on the unpadded input to ~1e-9 (a padded column
    # counted in D, e.g. in LogME's D/2 log alpha or the Ledoit-Wolf target tr/D, would show).
    f, y, c = _feature_case(("n>d", 50, 9, 3, 1.0, False), seed=6)
    rng = np.random.default_rng(6)
    fp = np.concatenate([f, 10 * rng.normal(size=(6, 9))])
    fp = np.concatenate([fp, np.zeros((len(fp), 4))], axis=1)
    yp = np.concatenate([y, rng.integers(0, c, 6)])
    order = rng.permutation(len(yp))
    smask = np.r_[np.ones(len(y)), np.zeros(6)][order]
    fmask = np.r_[np.ones(9), np.zeros(4)]
    import jscore

    got = jscore.REGISTRY[name].fn(jnp.asarray(fp[order]), jnp.asarray(yp[order]), num_classes=c,
                                   sample_mask=jnp.asarray(smask), feature_mask=jnp.asarray(fmask))
    assert_close(got, _oracle(name, f, y, c, np.float64), np.float64, SCORE_KIND[name])
