"""float32 on badly scaled features: the closed-form scores against the float64 oracles.

Issue 10's battery: column scales spread over 1e0..1e4, global scales 1e-8..1e12, covariance
condition numbers up to 1e8 (a rotated spectrum), low rank, N < D, and the real features of the
zoo when a backbone loads. The features are float32; each oracle runs in float64 on exactly those
float32 values, with its float64 rank cut-off (the definition, not a float32 imitation).

Where float32 cannot reach 1e-3, the test states the measured error and why (see
docs/scorers.md, "float32"), and checks the bound we do reach, so a regression still fails.
"""

import os
import warnings

import numpy as np
import pytest

import jscore
from tests.oracles import gbc as gbc_oracle
from tests.oracles import hscore as hscore_oracle
from tests.oracles import logme as logme_oracle
from tests.oracles import reg_hscore as reg_hscore_oracle
from tests.oracles.data import class_labels

CLOSED_FORM = ("hscore", "reg_hscore", "logme", "gbc")
RTOL = 1e-3


def oracle(name, f, y, c):
    f = np.asarray(f, np.float64)
    if name == "hscore":
        return hscore_oracle.hscore(f, y, c)  # float64 cut-off: 10 sqrt(max(N, D)) eps(float64)
    if name == "reg_hscore":
        return reg_hscore_oracle.reg_hscore(f, y, c)
    if name == "logme":
        return logme_oracle.logme(f, y, c)
    return gbc_oracle.gbc(f, y, c)


def column_scaled(seed, n, d, c, spread):
    """Class-structured features, each column multiplied by a scale in [1, spread] (log-spaced,
    shuffled): a few "massive activation" channels at the top."""
    rng = np.random.default_rng(seed)
    y = class_labels(rng, n, c)
    f = rng.normal(size=(n, d)) + rng.normal(size=(c, d))[y] * 0.7 + 1.0
    return (f * rng.permutation(np.logspace(0, np.log10(spread), d))).astype(np.float32), y


def rotated(seed, n, d, c, cond):
    """Latent class structure seen through a random rotation with covariance condition number
    about `cond`: the weak directions carry class signal too."""
    rng = np.random.default_rng(seed)
    y = class_labels(rng, n, c)
    q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    std = np.logspace(0, -0.5 * np.log10(cond), d)
    z = rng.normal(size=(n, d)) + 0.5 * rng.normal(size=(c, d))[y]
    return ((z * std) @ q.T + 3.0).astype(np.float32), y


def low_rank(seed, n, d, c, r):
    """Rank-r features plus a constant offset, with one column duplicated."""
    rng = np.random.default_rng(seed)
    y = class_labels(rng, n, c)
    f = (rng.normal(size=(n, r)) + rng.normal(size=(c, r))[y]) @ rng.normal(size=(r, d)) + 0.5
    f[:, -1] = f[:, 0]
    return f.astype(np.float32), y


def engine(f, y, c, names=CLOSED_FORM):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the N <= D saturation warning
        return jscore.score(f, y, scores=list(names), num_classes=c)


def rel_err(got, want):
    return abs(got - want) / max(abs(want), 1e-3)


CASES = {
    "column scales 1e0..1e2, N > D": lambda: column_scaled(0, 400, 16, 3, 1e2),
    "column scales 1e0..1e4, N > D": lambda: column_scaled(1, 400, 16, 3, 1e4),
    "column scales 1e0..1e4, N < D": lambda: column_scaled(2, 40, 64, 3, 1e4),
    "condition 1e4": lambda: rotated(3, 400, 16, 3, 1e4),
    "condition 1e6": lambda: rotated(4, 400, 16, 3, 1e6),
    "condition 1e8": lambda: rotated(5, 400, 16, 3, 1e8),
    "low rank 5 of 20, duplicated column": lambda: low_rank(6, 300, 20, 3, 5),
    "N < D": lambda: column_scaled(7, 30, 100, 3, 1.0),
}

# (case, score) -> the relative error we reach instead of 1e-3, and why. Measured on this machine
# (float32, CPU); the bound below is about 3x the measurement, so a regression still fails.
LIMITS = {}  # (case, score) -> (bound, why) for a case float32 cannot reach; none at present


@pytest.mark.parametrize("case", list(CASES))
def test_closed_form_scores_float32_match_float64_oracles(case):
    f, y = CASES[case]()
    c = int(y.max()) + 1
    got = engine(f, y, c)
    for name in CLOSED_FORM:
        want = oracle(name, f, y, c)
        bound, why = LIMITS.get((case, name), (RTOL, ""))
        err = rel_err(got[name], want)
        assert err <= bound, f"{case}: {name} float32 {got[name]:.6g} vs float64 {want:.6g} (rel {err:.2e}) {why}"


@pytest.mark.parametrize("scale", [1e-8, 1e-4, 1e4, 1e8, 1e12])
def test_global_scale_changes_nothing_where_scores_are_invariant(scale):
    """H-score, regularised H-score and LogME do not depend on a global scale of the features:
    float32 gives the unscaled value to float32 precision. GBC keeps its published variance
    floor (1e-4 on PCA variances, absolute), so it does depend on the scale: it is compared with
    its oracle at that scale instead."""
    f, y = column_scaled(8, 300, 12, 3, 1.0)
    c = 3
    base = engine(f, y, c)
    scaled = f * np.float32(scale)
    got = engine(scaled, y, c)
    for name in ("hscore", "reg_hscore", "logme"):
        np.testing.assert_allclose(got[name], base[name], rtol=1e-4, atol=1e-6, err_msg=name)
        assert rel_err(got[name], oracle(name, f, y, c)) <= RTOL, name
    assert rel_err(got["gbc"], oracle("gbc", scaled, y, c)) <= RTOL


@pytest.mark.parametrize("names", [["hscore"], ["hscore", "logme"]])
def test_hscore_condition_1e8_larger_sample(names):
    """The hardest H-score case: condition 1e8 with 64 dimensions and N = 2000. Measured 1.8e-3
    (the conjugate-gradient refinement's 32 steps and its rounding-level ridge); 1e-3 is met up to
    condition 1e6 at this size. Alone, H-score refines from the column-equilibrated
    decomposition; beside a score that needs the plain one, from the plain one (one
    eigendecomposition fewer): both paths are held to the same bounds."""
    f, y = rotated(9, 2000, 64, 4, 1e8)
    got = engine(f, y, 4, names)["hscore"]
    assert rel_err(got, oracle("hscore", f, y, 4)) <= 6e-3
    f, y = rotated(10, 2000, 64, 4, 1e6)
    got = engine(f, y, 4, names)["hscore"]
    assert rel_err(got, oracle("hscore", f, y, 4)) <= RTOL


@pytest.mark.parametrize("case", ["column scales 1e0..1e4, N > D", "condition 1e8", "column scales 1e0..1e4, N < D"])
def test_hscore_alone_equals_hscore_beside_other_scores(case):
    """The equilibrated path (H-score alone) and the plain-decomposition path (beside LogME) give
    the float64 H-score to the battery's tolerance."""
    f, y = CASES[case]()
    c = int(y.max()) + 1
    want = oracle("hscore", f, y, c)
    alone = engine(f, y, c, ["hscore"])["hscore"]
    beside = engine(f, y, c, ["hscore", "logme"])["hscore"]
    assert rel_err(alone, want) <= RTOL and rel_err(beside, want) <= RTOL, (alone, beside, want)


def test_hscore_jitted_equals_score_on_massive_activations():
    """The per-score function takes the same equilibrated path as `jscore.score`."""
    f, y = column_scaled(11, 400, 16, 3, 1e4)
    got = float(jscore.scorers.hscore(f, y, num_classes=3))
    np.testing.assert_allclose(got, oracle("hscore", f, y, 3), rtol=RTOL)


def test_real_zoo_features():
    """Real backbone features with real class structure: the shipped 8-bit MobileNet V1 0.25 (128
    px, bit-exact integer forward) on the shipped BreastMNIST training images (two classes), reduced
    to their first 32 principal directions in float64 so that N > D and no score saturates."""
    from jscore.backbones import get_backbone
    from jscore.commands.study import DEMO_CONFIG
    from jscore.data import open_dataset, preprocess

    train = open_dataset("npz:" + os.path.join(os.path.dirname(DEMO_CONFIG), "breastmnist.npz"), "train")
    images, labels = zip(*(train[i] for i in range(128)))
    labels = np.asarray(labels, np.int32)
    bb = get_backbone("mobilenet_v1_0.25_128_quant")
    feats, _ = bb.embed(bb.variables, preprocess(list(images), bb.preprocess))
    f = np.asarray(feats, np.float64).reshape(len(feats), -1)
    assert f.shape == (128, bb.feature_dim) and np.ptp(f, axis=0).max() > 0
    assert set(np.unique(labels)) == {0, 1}
    fc = f - f.mean(0)
    v = np.linalg.svd(fc, full_matrices=False)[2][:32]
    f = (f @ v.T).astype(np.float32)
    got = engine(f, labels, 2)
    for name in CLOSED_FORM:
        assert rel_err(got[name], oracle(name, f, labels, 2)) <= RTOL, (name, got[name])
