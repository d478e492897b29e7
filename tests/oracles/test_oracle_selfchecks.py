"""Checks of the float64 oracles themselves against outside references (no engine needed).

If an engine-vs-oracle comparison fails, these say whether the oracle can be trusted.
"""

import numpy as np
import pytest
from scipy import integrate, optimize, stats
from sklearn.covariance import ledoit_wolf_shrinkage as sk_ledoit_wolf_shrinkage
from sklearn.decomposition import PCA
from sklearn.metrics import mutual_info_score
from sklearn.mixture import GaussianMixture

from tests.oracles import gbc as gbc_oracle
from tests.oracles import hscore as hscore_oracle
from tests.oracles import leep as leep_oracle
from tests.oracles import logme as logme_oracle
from tests.oracles import nce as nce_oracle
from tests.oracles import nleep as nleep_oracle
from tests.oracles import reg_hscore as reg_hscore_oracle
from tests.oracles.data import class_features, class_labels, source_probs

SHAPES = [(40, 10, 3, False), (20, 50, 2, False), (60, 12, 4, True), (15, 30, 3, True)]


def _data(seed, n, d, c, rank_deficient=False):
    rng = np.random.default_rng(seed)
    y = class_labels(rng, n, c)
    return class_features(rng, y, d, c, rank_deficient=rank_deficient), y


@pytest.mark.parametrize("n,d,c,rd", SHAPES)
def test_ledoit_wolf_matches_sklearn(n, d, c, rd):
    f, _ = _data(0, n, d, c, rd)
    ours = reg_hscore_oracle.ledoit_wolf_shrinkage(f)
    assert 0 < ours <= 1
    np.testing.assert_allclose(ours, sk_ledoit_wolf_shrinkage(f), rtol=1e-10)


def test_ledoit_wolf_isotropic_gives_zero_delta():
    # X^T X / n = I exactly: the target mu I equals S, delta = 0, shrinkage defined as 0.
    x = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert reg_hscore_oracle.ledoit_wolf_shrinkage(x) == 0.0


@pytest.mark.parametrize("n,d,c,rd", SHAPES)
def test_hscore_matches_published_formula(n, d, c, rd):
    # The published code: np.cov (ddof 1) for both covariances, pinv(rcond=1e-15). ddof cancels;
    # on these well-conditioned inputs the two cut-offs drop the same (numerically zero) values.
    f, y = _data(1, n, d, c, rd)
    cov_f = np.cov(f, rowvar=False)
    g = np.zeros_like(f)
    for k in np.unique(y):
        g[y == k] = f[y == k].mean(axis=0)
    cov_g = np.cov(g, rowvar=False)
    ref = np.trace(np.linalg.pinv(cov_f, rcond=1e-12) @ cov_g)
    ours = hscore_oracle.hscore(f, y, c)
    np.testing.assert_allclose(ours, ref, rtol=1e-8)
    assert 0 <= ours <= c - 1 + 1e-9


@pytest.mark.parametrize("n,d,c", [(40, 10, 3), (80, 20, 5)])
def test_reg_hscore_is_below_hscore(n, d, c):
    # On full-rank data shrinking towards mu I blurs the class structure: 0 < H_a <= H.
    f, y = _data(2, n, d, c)
    a = reg_hscore_oracle.ledoit_wolf_shrinkage(f)
    assert 0 < a < 1
    ha = reg_hscore_oracle.reg_hscore(f, y, c)
    assert 0 < ha <= hscore_oracle.hscore(f, y, c) + 1e-12


def test_nce_matches_mutual_information():
    # NCE = -H(Y|Z) = I(Y; Z) - H(Y).
    rng = np.random.default_rng(3)
    y = class_labels(rng, 80, 4)
    p = source_probs(rng, y, 7)
    z = p.argmax(axis=1)
    h_y = stats.entropy(np.bincount(y) / len(y))
    np.testing.assert_allclose(nce_oracle.nce(p, y, 4), mutual_info_score(y, z) - h_y, rtol=1e-12)


def test_leep_vectorised_reference():
    rng = np.random.default_rng(4)
    y = class_labels(rng, 50, 3, imbalance=3.0)
    p = source_probs(rng, y, 6)
    onehot = np.eye(3)[y]
    joint = onehot.T @ p / len(y)
    cond = joint / joint.sum(axis=0)
    ref = np.mean(np.log(np.sum((p @ cond.T) * onehot, axis=1)))
    np.testing.assert_allclose(leep_oracle.leep(p, y, 3), ref, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# LogME


def _brute_force_evidence(f, y, alpha, beta):
    """log N(y; 0, I / beta + F F^T / alpha), an n x n Gaussian density (no identity used)."""
    n = len(y)
    cov = np.eye(n) / beta + f @ f.T / alpha
    return stats.multivariate_normal(np.zeros(n), cov).logpdf(y)


@pytest.mark.parametrize("n,d,c,rd", SHAPES)
def test_logme_evidence_equals_gaussian_density(n, d, c, rd):
    f, y = _data(5, n, d, c, rd)
    t = (y == 0).astype(float)
    alpha, beta = logme_oracle.fit_alpha_beta(f, t)
    # moderate (alpha, beta): also check the SVD-form posterior moments against a direct solve
    m = logme_oracle.posterior_mean(f, t, 0.5, 2.0)
    mm, resid = logme_oracle._Svd(f, t).moments(0.5, 2.0)
    np.testing.assert_allclose([m @ m, np.sum((t - f @ m) ** 2)], [mm, resid], rtol=1e-9)
    np.testing.assert_allclose(
        logme_oracle.evidence(f, t, alpha, beta), _brute_force_evidence(f, t, alpha, beta),
        rtol=1e-10)
    # And away from the optimum (the identity holds for every alpha, beta).
    for a, b in [(0.3, 2.0), (5.0, 0.7)]:
        np.testing.assert_allclose(
            logme_oracle.evidence(f, t, a, b), _brute_force_evidence(f, t, a, b), rtol=1e-10)


@pytest.mark.parametrize("n,d,rd", [(30, 5, False), (12, 20, False), (25, 6, True)])
def test_logme_fixed_point_is_the_maximum(n, d, rd):
    f, y = _data(6, n, d, 2, rd)
    t = (y == 1).astype(float)
    alpha, beta = logme_oracle.fit_alpha_beta(f, t, max_iters=1000, tol=1e-12)

    def neg(v):
        return -logme_oracle.evidence(f, t, np.exp(v[0]), np.exp(v[1]))

    res = optimize.minimize(neg, x0=[0.0, 0.0], method="Nelder-Mead",
                            options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 5000})
    np.testing.assert_allclose(-res.fun, logme_oracle.evidence(f, t, alpha, beta), rtol=1e-9)
    np.testing.assert_allclose(np.exp(res.x), [alpha, beta], rtol=1e-3)


def test_logme_log_det_counts_zero_eigenvalues():
    # n < D: F^T F has D - n zero eigenvalues, each contributing log(alpha) to log det A.
    f, y = _data(7, 6, 10, 2)
    sigma = logme_oracle.eigenvalues_ftf(f)
    assert len(sigma) == 10 and np.sum(sigma < 1e-9) == 4
    a, b = 0.5, 3.0
    _, logdet = np.linalg.slogdet(a * np.eye(10) + b * f.T @ f)
    np.testing.assert_allclose(np.sum(np.log(a + b * sigma)), logdet, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# N-LEEP


@pytest.mark.parametrize("n,d,c,rd", SHAPES)
def test_nleep_pca_matches_sklearn(n, d, c, rd):
    f, _ = _data(8, n, d, c, rd)
    z, k = nleep_oracle.pca_reduce(f, 0.8)
    pca = PCA(n_components=0.8, svd_solver="full").fit(f)
    assert k == pca.n_components_
    zs = pca.transform(f)
    signs = np.sign(np.sum(z * zs, axis=0))  # directions are defined up to sign
    np.testing.assert_allclose(z, zs * signs, atol=1e-9)


def _gmm_case(seed, n=60, d=6, c=3, per_class=2):
    f, y = _data(seed, n, d, c)
    z, _ = nleep_oracle.pca_reduce(f, 0.8)
    rng = np.random.default_rng(seed)
    means0 = z[rng.choice(len(z), size=c * per_class, replace=False)]
    return z, means0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gmm_em_matches_sklearn(seed):
    z, means0 = _gmm_case(seed)
    w0, m0, c0 = nleep_oracle.hard_assignment_init(z, means0, 1e-6)
    w, m, cov, lower, iters = nleep_oracle.em(z, w0, m0, c0, max_iters=100, tol=1e-3)
    gm = GaussianMixture(
        n_components=len(means0), covariance_type="full", tol=1e-3, reg_covar=1e-6,
        max_iter=100, weights_init=w0, means_init=m0, precisions_init=np.linalg.inv(c0),
        init_params="random_from_data", random_state=0).fit(z)
    assert gm.n_iter_ == iters
    np.testing.assert_allclose(gm.lower_bound_, lower, rtol=1e-8)
    np.testing.assert_allclose(gm.score(z), nleep_oracle.mean_log_likelihood(z, w, m, cov),
                               rtol=1e-8)
    np.testing.assert_allclose(gm.predict_proba(z), nleep_oracle.posteriors(z, w, m, cov),
                               atol=1e-7)


def test_gmm_hard_assignment_init_ties_go_to_lowest_index():
    x = np.array([[0.0], [1.0], [2.0], [4.0]])
    w, m, c = nleep_oracle.hard_assignment_init(x, np.array([[0.0], [2.0]]), 0.0)
    # x = 1 is equidistant from both means: it joins cluster 0 -> clusters {0, 1} and {2, 4}.
    np.testing.assert_allclose(w, [0.5, 0.5])
    np.testing.assert_allclose(c[:, 0, 0], [0.25, 1.0])
    np.testing.assert_allclose(m, [[0.0], [2.0]])


# ---------------------------------------------------------------------------------------------
# GBC


def test_gbc_bhattacharyya_matches_numerical_integral():
    # 1-D: BC = int sqrt(p q) dx; DB = -log BC. In 1-D all three variants coincide.
    mu1, v1, mu2, v2 = 0.3, 0.5, 1.7, 1.3
    bc, _ = integrate.quad(lambda x: np.sqrt(stats.norm.pdf(x, mu1, np.sqrt(v1))
                                             * stats.norm.pdf(x, mu2, np.sqrt(v2))), -30, 30,
                           epsabs=1e-13)
    for g in ("spherical", "diagonal", "textbook_spherical"):
        db = gbc_oracle.bhattacharyya(np.array([mu1]), np.array([v1]), np.array([mu2]),
                                      np.array([v2]), g)
        np.testing.assert_allclose(np.exp(-db), bc, rtol=1e-10)


def test_gbc_diagonal_and_textbook_match_full_covariance_formula():
    # DB = 1/8 dmu^T S^-1 dmu + 1/2 log(det S / sqrt(det S1 det S2)), S = (S1 + S2)/2.
    rng = np.random.default_rng(9)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    v1, v2 = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)

    def full(s1, s2):
        s = (s1 + s2) / 2
        dmu = mu1 - mu2
        return dmu @ np.linalg.solve(s, dmu) / 8 + 0.5 * np.log(
            np.linalg.det(s) / np.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))

    np.testing.assert_allclose(gbc_oracle.bhattacharyya(mu1, v1, mu2, v2, "diagonal"),
                               full(np.diag(v1), np.diag(v2)), rtol=1e-12)
    s1, s2 = np.mean(v1), np.mean(v2)
    np.testing.assert_allclose(gbc_oracle.bhattacharyya(mu1, v1, mu2, v2, "textbook_spherical"),
                               full(s1 * np.eye(4), s2 * np.eye(4)), rtol=1e-12)


@pytest.mark.parametrize("n,d,c,rd", SHAPES)
def test_gbc_pca_matches_sklearn(n, d, c, rd):
    f, _ = _data(10, n, d, c, rd)
    k = min(5, d)
    z = gbc_oracle.pca_project(f, 5)
    zs = PCA(n_components=k, svd_solver="full").fit_transform(f)
    signs = np.sign(np.sum(z * zs, axis=0))
    np.testing.assert_allclose(z, zs * signs, atol=1e-9)


def test_lloyd_matches_sklearn_kmeans():
    from sklearn.cluster import KMeans

    z, means0 = _gmm_case(3)
    ours = nleep_oracle.lloyd(z, means0, 10)
    km = KMeans(n_clusters=len(means0), init=means0, n_init=1, max_iter=10, tol=0.0,
                algorithm="lloyd").fit(z)
    np.testing.assert_allclose(ours, km.cluster_centers_, atol=1e-10)
