"""The five inputs of issue 10, each giving the right value or a clear ValueError in float32."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

import jscore
from tests.oracles import hscore as hscore_oracle
from tests.oracles import logme as logme_oracle


def _one_large_channel():
    """Issue input 1: a channel 1000x larger than the other and without class signal."""
    rng = np.random.default_rng(0)
    y = np.arange(100) % 2
    f = rng.normal(size=(100, 2))
    f[:, 1] += y
    f[:, 0] *= 1000
    return f.astype(np.float32), y


def test_one_large_channel_hscore_and_logme_match_float64():
    f, y = _one_large_channel()
    out = jscore.score(f, y, scores=["hscore", "logme"])
    # Hand check: the large channel carries no class signal, so H-score is close to that of the
    # signal channel alone, (1/4) / (1 + 1/4) ~= 0.2 for a unit shift between two equal classes.
    h64 = hscore_oracle.hscore(f, y, 2, rcond=1e-15)
    assert 0.15 < h64 < 0.3
    np.testing.assert_allclose(out["hscore"], h64, rtol=1e-4)
    np.testing.assert_allclose(out["logme"], logme_oracle.logme(f, y, 2), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("scale", [1e6, 1e7, 1e9, 1e12])
def test_global_scale_leaves_logme_and_hscore_unchanged(scale):
    """Issue input 2: H-score and LogME are invariant to a global scale of the features."""
    rng = np.random.default_rng(0)
    y = np.arange(100) % 2
    base = (rng.normal(size=(10, 2)) + y[:10, None]).astype(np.float32)
    ref = jscore.score(base, y[:10], scores=["hscore", "logme"])
    out = jscore.score(base * np.float32(scale), y[:10], scores=["hscore", "logme"])
    np.testing.assert_allclose(out["hscore"], ref["hscore"], rtol=1e-5)
    np.testing.assert_allclose(out["logme"], ref["logme"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ref["logme"], logme_oracle.logme(base, y[:10], 2), rtol=1e-3, atol=1e-4)


def test_nan_into_jitted_hscore_and_nce_gives_nan():
    """Issue input 3: a NaN feature or probability never yields a finite score."""
    h = jscore.scorers.hscore(np.array([[0.], [1.], [10.], [np.nan]], np.float32),
                              np.array([0, 0, 1, 1]), num_classes=2)
    assert np.isnan(h)
    h = jscore.scorers.hscore(np.array([[0.], [1.], [10.], [np.inf]], np.float32),
                              np.array([0, 0, 1, 1]), num_classes=2)
    assert np.isnan(h)
    p = np.full((4, 3), 1 / 3, np.float32)
    p[2, 1] = np.nan
    assert np.isnan(jscore.scorers.nce(p, np.array([0, 0, 1, 1]), num_classes=2))


def test_logme_regression_constant_and_nan_targets():
    """Issue input 4: a constant target column is dropped with a warning; a NaN target raises."""
    rng = np.random.default_rng(1)
    f = rng.normal(size=(10, 3)).astype(np.float32)
    t = (f @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=10)).astype(np.float32)
    targets = np.stack([t, np.zeros(10, np.float32)], axis=1)
    with pytest.warns(UserWarning, match="constant"):
        out = jscore.score(f, targets=targets)
    np.testing.assert_allclose(out["logme"], logme_oracle.logme_regression(f, t[:, None]), rtol=1e-3)
    with pytest.raises(ValueError, match="(?i)targets.*nan|nan.*targets"):
        jscore.score(f, targets=np.where(np.arange(10) == 3, np.nan, t)[:, None])
    with pytest.raises(ValueError, match="(?i)constant"):
        jscore.score(f, targets=np.zeros((10, 1), np.float32))
    # The jitted function itself never returns a silent NaN for an all-zero target (its evidence
    # is unbounded: it returns NaN only for non-finite input) -- it is the entry point that drops it.
    assert np.isnan(jscore.scorers.logme_regression(f, np.where(np.arange(10) == 3, np.nan, t)[:, None]))


def test_import_jscore_exposes_scorers():
    """Issue input 5: `import jscore; jscore.scorers.logme(...)` in a fresh interpreter."""
    code = ("import jscore, numpy as np; f = np.random.default_rng(0).normal(size=(20, 3)); "
            "y = np.arange(20) % 2; print(float(jscore.scorers.logme(f, y, num_classes=2))); "
            "print(jscore.stats.feature_stats.__name__)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert np.isfinite(float(res.stdout.split()[0]))


def test_import_jscore_stays_cheap():
    code = "import sys, jscore; print('jax' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "False", res.stdout + res.stderr


def test_saturated_hscore_warns_and_suggests_pca():
    rng = np.random.default_rng(0)
    y = np.arange(20) % 4
    f = rng.normal(size=(20, 50)).astype(np.float32)
    with pytest.warns(UserWarning, match="(?i)PCA"):
        out = jscore.score(f, y, scores=["hscore"])
    np.testing.assert_allclose(out["hscore"], 3.0, rtol=1e-4)  # C - 1 whatever the features
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jscore.score(f[:, :5], y, scores=["hscore"])


def test_saturated_hscore_warns_in_score_zoo_naming_the_models():
    rng = np.random.default_rng(1)
    y = np.arange(20) % 4
    zoo = {"wide": {"features": rng.normal(size=(20, 50)).astype(np.float32)},
           "narrow": {"features": rng.normal(size=(20, 5)).astype(np.float32)}}
    with pytest.warns(UserWarning, match=r"hscore \(model\(s\) wide\).*D = 50.*PCA") as caught:
        out = jscore.score_zoo(zoo, y, scores=["hscore"])
    assert not any("narrow" in str(w.message) for w in caught)
    np.testing.assert_allclose(out["wide"]["hscore"], 3.0, rtol=1e-4)  # saturated at C - 1
    assert out["narrow"]["hscore"] < 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jscore.score_zoo({"narrow": zoo["narrow"]}, y, scores=["hscore"])
