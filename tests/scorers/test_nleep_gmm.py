"""N-LEEP's mixture: the JAX EM (`fit_gmm`) vs. scikit-learn's GaussianMixture and the NumPy
oracle from the same initial means; the whole N-LEEP vs. the oracle from the same seeding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from tests.oracles import nleep as nleep_oracle
from tests.oracles.data import class_features, class_labels
from tests.tolerances import assert_close, tolerance
from tests.scorers._engine import jitted_kmeans_plus_plus as _kmeans_pp


def _posteriors(gmm, x, dim_mask=None):
    from jscore.scorers.nleep import gmm_log_posteriors

    return _jit_posteriors(gmm_log_posteriors)(gmm, x, dim_mask=dim_mask)


_JIT = {}


def _jit_posteriors(fn):
    # One jitted wrapper (eager calls would compile every primitive separately).
    if "post" not in _JIT:
        _JIT["post"] = jax.jit(fn)
    return _JIT["post"]


def _projected(seed, n=90, d=10, c=3, separation=2.0):
    rng = np.random.default_rng(seed)
    y = class_labels(rng, n, c)
    f = class_features(rng, y, d, c, separation=separation)
    z, _ = nleep_oracle.pca_reduce(f, 0.8)
    return f, y, z, rng


def _sklearn_fit(z, w0, m0, c0, tol=1e-3, max_iter=100, reg_covar=1e-6):
    return GaussianMixture(
        n_components=len(m0), covariance_type="full", tol=tol, reg_covar=reg_covar,
        max_iter=max_iter, weights_init=w0, means_init=m0, precisions_init=np.linalg.inv(c0),
        init_params="random_from_data", random_state=0).fit(z)


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_fit_gmm_matches_sklearn_float64(seed, x64):
    from jscore.scorers.nleep import fit_gmm

    _, _, z, rng = _projected(seed)
    assert z.shape[1] == 4  # one shape for all seeds: one compilation
    m0 = z[rng.choice(len(z), size=6, replace=False)]
    w0, _, c0 = nleep_oracle.hard_assignment_init(z, m0)
    gm = _sklearn_fit(z, w0, m0, c0)
    got = fit_gmm(jnp.asarray(z), jnp.asarray(m0))
    assert int(got.num_iters) == gm.n_iter_
    assert_close(got.mean_log_likelihood, gm.lower_bound_, np.float64, "iterative")
    np.testing.assert_allclose(got.weights, gm.weights_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(got.means, gm.means_, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(got.covariances, gm.covariances_, rtol=1e-7, atol=1e-9)
    post = np.exp(np.asarray(_posteriors(got, jnp.asarray(z))))
    np.testing.assert_allclose(post, gm.predict_proba(z), atol=1e-8)


def _check_float32_fit_against_sklearn(z, m0, post_atol):
    """fit_gmm in float32 on z (float32 values held in float64) from means m0 against
    scikit-learn's float64 fit from the same start: iterations within one, the mean
    log-likelihood, and the posteriors to `post_atol`."""
    from jscore.scorers.nleep import fit_gmm

    # In float32 fit_gmm floors reg_covar at 10 d eps32 times the largest data variance (so that
    # Cholesky factorisations of thin components succeed; its docstring): give sklearn that.
    reg = max(1e-6, 10 * z.shape[1] * np.finfo(np.float32).eps * z.var(axis=0).max())
    w0, _, c0 = nleep_oracle.hard_assignment_init(z, m0, reg)
    gm = _sklearn_fit(z, w0, m0, c0, reg_covar=reg)
    got = fit_gmm(jnp.asarray(z, jnp.float32), jnp.asarray(m0, jnp.float32))
    assert abs(int(got.num_iters) - gm.n_iter_) <= 1
    assert_close(got.mean_log_likelihood, gm.lower_bound_, np.float32, "iterative")
    post = np.exp(np.asarray(_posteriors(got, jnp.asarray(z, jnp.float32))))
    np.testing.assert_allclose(post, gm.predict_proba(z), atol=post_atol)


def test_fit_gmm_matches_sklearn_float32():
    _, _, z, rng = _projected(3)
    z = z.astype(np.float32).astype(np.float64)
    m0 = z[rng.choice(len(z), size=6, replace=False)]
    _check_float32_fit_against_sklearn(z, m0, tolerance(np.float32, "iterative")[0])


def test_fit_gmm_masks_equal_slicing(x64):
    # Padded rows (sample_mask 0) and padded dimensions (dim_mask 0) are exactly neutral.
    from jscore.scorers.nleep import fit_gmm

    _, _, z, rng = _projected(4, n=60)
    m0 = z[rng.choice(len(z), size=6, replace=False)]
    ref = fit_gmm(jnp.asarray(z), jnp.asarray(m0))
    zp = np.concatenate([np.concatenate([z, np.zeros((len(z), 2))], 1), 5 + rng.normal(
        size=(7, z.shape[1] + 2))], 0)
    mp = np.concatenate([m0, np.zeros((len(m0), 2))], 1)
    sm = np.r_[np.ones(len(z)), np.zeros(7)]
    dm = np.r_[np.ones(z.shape[1]), np.zeros(2)]
    got = fit_gmm(jnp.asarray(zp), jnp.asarray(mp), sample_mask=jnp.asarray(sm),
                  dim_mask=jnp.asarray(dm))
    assert int(got.num_iters) == int(ref.num_iters)
    np.testing.assert_allclose(got.mean_log_likelihood, ref.mean_log_likelihood, rtol=1e-9)
    post = np.exp(np.asarray(_posteriors(got, jnp.asarray(zp), dim_mask=jnp.asarray(dm))))
    ref_post = np.exp(np.asarray(_posteriors(ref, jnp.asarray(z))))
    np.testing.assert_allclose(post[: len(z)], ref_post, atol=1e-9)


def test_kmeans_plus_plus_picks_distinct_samples():
    _, _, z, _ = _projected(5, n=40)
    means = np.asarray(_kmeans_pp(jnp.asarray(z, jnp.float32), 12, jax.random.PRNGKey(3)))
    idx = [int(np.argmin(np.sum((z - m) ** 2, axis=1))) for m in means]
    np.testing.assert_allclose(means, z[idx].astype(np.float32), rtol=1e-6)
    assert len(set(idx)) == 12  # a chosen sample has distance 0, so it is never drawn again


def _engine_seeding_indices(z, num_components, key):
    """Row indices k-means++ picks from the key. Distances are rotation/sign invariant, so
    seeding on the oracle's projection picks the rows the engine picks on its own projection."""
    means = np.asarray(_kmeans_pp(jnp.asarray(z), num_components, key))
    return [int(np.argmin(np.sum((z - m) ** 2, axis=1))) for m in means]


@pytest.mark.parametrize("n,d,c,per_class,seed", [(90, 20, 3, 2, 1), (40, 60, 2, 2, 2)])
def test_nleep_matches_oracle_float64(n, d, c, per_class, seed, x64):
    from jscore.scorers import nleep

    rng = np.random.default_rng(seed)
    y = class_labels(rng, n, c)
    f = class_features(rng, y, d, c, separation=3.0 / np.sqrt(d))
    key = jax.random.PRNGKey(seed)
    z, _ = nleep_oracle.pca_reduce(f, 0.8)
    idx = _engine_seeding_indices(z, per_class * c, key)
    want = nleep_oracle.nleep(f, y, c, z[idx])
    got = nleep(jnp.asarray(f), jnp.asarray(y), num_classes=c, key=key,
                components_per_class=per_class)
    assert_close(got, want, np.float64, "iterative", err_msg=f"n={n} d={d} c={c}")


def test_nleep_matches_oracle_float32():
    from jscore.scorers import nleep

    rng = np.random.default_rng(7)
    y = class_labels(rng, 80, 2)
    f = class_features(rng, y, 12, 2, separation=1.0).astype(np.float32)
    key = jax.random.PRNGKey(1)
    z, _ = nleep_oracle.pca_reduce(f, 0.8)
    idx = _engine_seeding_indices(z.astype(np.float32), 6, key)
    reg = max(1e-6, 10 * z.shape[1] * np.finfo(np.float32).eps * z.var(axis=0).max())  # as above
    want = nleep_oracle.nleep(f, y, 2, z[idx], reg_covar=reg)
    got = nleep(jnp.asarray(f), jnp.asarray(y), num_classes=2, key=key, components_per_class=3)
    assert_close(got, want, np.float32, "iterative")


def test_fit_gmm_is_invariant_to_replicating_the_data(x64):
    # The stopping rule is on the MEAN log-likelihood: the same data replicated 5 times (N x 5)
    # runs the same EM iterations to the same mixture. A rule on the total (N times the mean)
    # would run longer on the larger copy; this is what keeps the iteration count from growing
    # with N on data of the same distribution.
    from jscore.scorers.nleep import fit_gmm

    _, _, z, rng = _projected(6, n=80)
    m0 = z[rng.choice(len(z), size=6, replace=False)]
    one = fit_gmm(jnp.asarray(z), jnp.asarray(m0), tol=1e-4)
    five = fit_gmm(jnp.asarray(np.tile(z, (5, 1))), jnp.asarray(m0), tol=1e-4)
    assert int(one.num_iters) > 3  # EM did some work
    assert int(five.num_iters) == int(one.num_iters)
    np.testing.assert_allclose(five.mean_log_likelihood, one.mean_log_likelihood, rtol=1e-10)
    np.testing.assert_allclose(five.weights, one.weights, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(five.covariances, one.covariances, rtol=1e-7, atol=1e-10)


def test_nleep_em_budget_is_max_iters():
    # N-LEEP's EM stops at `MAX_ITERS` iterations by default (its cost is then linear in N),
    # and a larger `max_iters` is honoured (the budget, not the data, stopped it).
    import importlib

    from jscore.stats import feature_stats

    nl = importlib.import_module("jscore.scorers.nleep")
    rng = np.random.default_rng(8)
    y = class_labels(rng, 120, 2)
    f = class_features(rng, y, 6, 2, separation=0.5).astype(np.float32)
    fs = jax.jit(feature_stats, static_argnames=("num_classes", "equilibrate"))(
        jnp.asarray(f), jnp.asarray(y), num_classes=2, equilibrate=False)
    fit = jax.jit(nl.nleep_fit_from_stats, static_argnames=("num_classes", "max_iters", "tol", "max_dims"))
    key = jax.random.PRNGKey(0)
    value, gmm = fit(fs, key, num_classes=2, tol=0.0, max_dims=8)  # |change| < 0 never holds
    assert int(gmm.num_iters) == nl.MAX_ITERS
    _, longer = fit(fs, key, num_classes=2, tol=0.0, max_dims=8, max_iters=nl.MAX_ITERS + 7)
    assert int(longer.num_iters) > nl.MAX_ITERS  # the budget, not convergence, stopped the first
    assert nl.nleep_from_stats.__kwdefaults__["max_iters"] == nl.MAX_ITERS
    import jscore

    assert jscore.REGISTRY["nleep"].hyperparams["max_iters"] == nl.MAX_ITERS
    assert np.isfinite(float(value)) and float(value) <= 0


def test_per_score_nleep_equals_nleep_inside_score():
    # The per-score function and jscore.score run the same statistics and the same fit.
    import jscore
    from jscore.scorers import nleep

    rng = np.random.default_rng(9)
    y = class_labels(rng, 150, 3)
    f = class_features(rng, y, 10, 3, separation=1.0).astype(np.float32)
    want = jscore.score(f, y, scores=["nleep"], num_classes=3, seed=4)["nleep"]
    got = float(nleep(jnp.asarray(f), jnp.asarray(y), num_classes=3, key=jax.random.PRNGKey(4)))
    assert_close(got, want, np.float32, "iterative")


def _fresh_fit_gmm():
    # A new jit of the same function: module constants are read when it is traced.
    import importlib

    nl = importlib.import_module("jscore.scorers.nleep")
    return jax.jit(nl.fit_gmm.__wrapped__, static_argnames=("max_iters",))


def test_fit_gmm_blocked_moments_equal_stored(x64, monkeypatch):
    # Above MOMENTS_BYTES the packed second moments are formed block by block in each EM pass
    # (padded last block): the same mixture as with the moments stored.
    import importlib

    nl = importlib.import_module("jscore.scorers.nleep")
    _, _, z, rng = _projected(11, n=97)
    m0 = z[rng.choice(len(z), size=6, replace=False)]
    stored = _fresh_fit_gmm()(jnp.asarray(z), jnp.asarray(m0))
    monkeypatch.setattr(nl, "MOMENTS_BYTES", 0)
    monkeypatch.setattr(nl, "MOMENTS_BLOCK_BYTES", 10 * 8 * 30)  # 30 rows of 10 packed moments
    blocked = _fresh_fit_gmm()(jnp.asarray(z), jnp.asarray(m0))
    assert int(blocked.num_iters) == int(stored.num_iters) > 2
    np.testing.assert_allclose(blocked.mean_log_likelihood, stored.mean_log_likelihood, rtol=1e-12)
    np.testing.assert_allclose(blocked.covariances, stored.covariances, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(blocked.means, stored.means, rtol=1e-10, atol=1e-12)


def test_fit_gmm_float32_on_badly_scaled_columns():
    # EM's moment form (uncentred second moments) in float32 on PCA-like scores whose column
    # scales span 1e-2..1e4, offset from the origin by 3 scales: the mixture scikit-learn fits
    # in float64 (centred form) from the same start (iterations within one, log-likelihood,
    # posteriors).
    rng = np.random.default_rng(12)
    _, _, z, _ = _projected(12, n=150, d=12)
    scales = np.logspace(4, -2, z.shape[1])
    zs = (z * scales + 3 * scales).astype(np.float32).astype(np.float64)
    m0 = zs[rng.choice(len(zs), size=6, replace=False)]
    _check_float32_fit_against_sklearn(zs, m0, tolerance(np.float32, "iterative")[0] * 10)
