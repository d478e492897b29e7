"""Tiny cases with answers derived by hand (in the comments), run on the oracle and the engine."""

import jax.numpy as jnp
import numpy as np
import pytest

from tests.oracles import gbc as gbc_oracle
from tests.oracles import hscore as hscore_oracle
from tests.oracles import leep as leep_oracle
from tests.oracles import logme as logme_oracle
from tests.oracles import nce as nce_oracle
from tests.oracles import reg_hscore as reg_hscore_oracle

IMPLS = ["oracle", "engine"]

# Four samples, two target classes, two source classes.
#   i   y   theta
#   1   0   (1.0, 0.0)
#   2   0   (0.5, 0.5)
#   3   1   (0.0, 1.0)
#   4   1   (0.5, 0.5)
P4 = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.5, 0.5]])
Y4 = np.array([0, 0, 1, 1])


def _run(impl, name, x, y, c, oracle_fn, **kw):
    if impl == "oracle":
        return oracle_fn(x, y, c, **kw)
    import jscore

    return float(jscore.REGISTRY[name].fn(jnp.asarray(x, jnp.float32), jnp.asarray(y),
                                          num_classes=c, **kw))


@pytest.mark.parametrize("impl", IMPLS)
def test_leep_four_samples(impl):
    # P(y, z) = (1/4) sum_i theta_i(z) [y_i = y]:
    #   P(0,0) = (1 + .5)/4 = .375, P(0,1) = .5/4 = .125, P(1,0) = .125, P(1,1) = .375
    # P(z) = .5 each, so P(y|z) = .75 on the diagonal and .25 off it.
    # sum_z P(y_i|z) theta_i(z): sample 1: .75; 2: .5*.75 + .5*.25 = .5; 3: .75; 4: .5.
    # LEEP = (2 log .75 + 2 log .5)/4 = log(3/8)/2 = -0.490414...
    want = np.log(3 / 8) / 2
    np.testing.assert_allclose(_run(impl, "leep", P4, Y4, 2, leep_oracle.leep), want, rtol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_nce_four_samples_ties_go_to_first_source_class(impl):
    # argmax: sample 1 -> 0, 2 -> 0 (tie, first index), 3 -> 1, 4 -> 0 (tie).
    # (y, z) pairs: (0,0) x2, (1,1) x1, (1,0) x1; P(z=0) = 3/4, P(z=1) = 1/4.
    # NCE = sum P(y,z) log P(y|z) = 2/4 log(2/3) + 1/4 log(1/3) + 1/4 log(1) = -0.477386...
    want = 0.5 * np.log(2 / 3) + 0.25 * np.log(1 / 3)
    np.testing.assert_allclose(_run(impl, "nce", P4, Y4, 2, nce_oracle.nce), want, rtol=1e-6)


# Two well-separated 1-D classes: {-1.1, -0.9} and {0.9, 1.1}.
F1 = np.array([[-1.1], [-0.9], [0.9], [1.1]])
Y1 = np.array([0, 0, 1, 1])


@pytest.mark.parametrize("impl", IMPLS)
def test_hscore_two_separated_1d_classes(impl):
    # mean 0; var f = (1.21 + .81 + .81 + 1.21)/4 = 1.01; class means -1, +1, so
    # Sigma_b = .5 * 1 + .5 * 1 = 1; H = 1/1.01 = 0.990099..., just under C - 1 = 1.
    h = _run(impl, "hscore", F1, Y1, 2, hscore_oracle.hscore)
    np.testing.assert_allclose(h, 1 / 1.01, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_reg_hscore_1d_has_no_shrinkage(impl):
    # D = 1: S = mu I already, so delta = ||S - mu I||^2 = 0, the shrinkage is 0 and the
    # regularised H-score equals the H-score, 1/1.01.
    h = _run(impl, "reg_hscore", F1, Y1, 2, reg_hscore_oracle.reg_hscore)
    np.testing.assert_allclose(h, 1 / 1.01, rtol=1e-5)


@pytest.mark.parametrize("gaussian", ["spherical", "diagonal", "textbook_spherical"])
@pytest.mark.parametrize("impl", IMPLS)
def test_gbc_two_1d_gaussians(impl, gaussian):
    # Class 0 = {-1, 1}: mean 0, var 1. Class 1 = {-1, 3}: mean 1, var 4. In 1-D the PCA is the
    # identity up to sign and the three variants coincide. s = (1 + 4)/2 = 2.5;
    # DB = 1/8 * 1^2/2.5 + 1/2 [log 2.5 - 1/2 log 1 - 1/2 log 4] = 0.05 + 0.5 log(1.25)
    #    = 0.161572...; GBC = -2 exp(-DB) (two ordered pairs) = -1.701676...
    f = np.array([[-1.0], [1.0], [-1.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    want = -2 * np.exp(-(0.05 + 0.5 * np.log(1.25)))
    got = _run(impl, "gbc", f, y, 2, gbc_oracle.gbc, gaussian=gaussian)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_gbc_variance_floor(impl):
    # Both classes constant: variances 0 are floored to 1e-4, DB = 1/8 * 1^2 / 1e-4 = 1250, so
    # the coefficients vanish: GBC = -2 exp(-1250) = -0.0 (and no NaN from log 0).
    f = np.array([[0.0], [0.0], [1.0], [1.0]])
    y = np.array([0, 0, 1, 1])
    got = _run(impl, "gbc", f, y, 2, gbc_oracle.gbc)
    assert got == 0.0 or abs(got) < 1e-30


@pytest.mark.parametrize("impl", IMPLS)
def test_logme_single_constant_feature(impl):
    # F = 1_4 (one constant feature), labels [0, 0, 1, 1]; class 0's target t = [1, 1, 0, 0].
    # y ~ N(0, I/beta + 1 1^T/alpha): along u = 1/2 * 1_4 the variance is 1/beta + 4/alpha, in the
    # 3 directions orthogonal to it 1/beta. t's coordinate on u is z = 1, the rest has squared
    # norm ||t||^2 - z^2 = 1. log p = -1/2 [4 log 2pi + log(1/beta + 4/alpha) + 3 log(1/beta)
    #                                       + z^2/(1/beta + 4/alpha) + beta * 1].
    # Maximising: d/dbeta [3 log(1/beta) + beta] = 0 gives beta = 3 (that term is then
    # -3 log 3 + 3); log v + 1/v with v = 1/beta + 4/alpha is smallest at v = z^2 = 1 (alpha = 6,
    # term 0 + 1). max = -1/2 [4 log 2pi - 3 log 3 + 4]. Class 1 (t -> 1 - t) has z = 1 and the
    # same rest, so LogME = (1.5 log 3 - 2 log 2pi - 2) / 4 = -1.006959...
    f = np.ones((4, 1))
    y = np.array([0, 0, 1, 1])
    want = (1.5 * np.log(3) - 2 * np.log(2 * np.pi) - 2) / 4
    if impl == "oracle":
        np.testing.assert_allclose(logme_oracle.fit_alpha_beta(f, (y == 0).astype(float)),
                                   [6.0, 3.0], rtol=1e-4)
    got = _run(impl, "logme", f, y, 2, logme_oracle.logme)
    np.testing.assert_allclose(got, want, rtol=1e-6)
