"""Checks of the PARC, TMI, TransRate and k-NN oracles against outside references."""

import numpy as np
import pytest
import scipy.stats
from scipy.spatial.distance import cdist
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier

from tests.oracles import knn as knn_oracle
from tests.oracles import parc as parc_oracle
from tests.oracles import tmi as tmi_oracle
from tests.oracles import transrate as transrate_oracle
from tests.oracles.data import class_features, class_labels


def _data(seed, n, d, c):
    rng = np.random.default_rng(seed)
    y = class_labels(rng, n, c)
    return class_features(rng, y, d, c, separation=1.0), y


@pytest.mark.parametrize("n,d", [(80, 50), (40, 60), (100, 20)])
def test_randomized_pca_matches_scikit_learn(n, d):
    f, _ = _data(0, n, d, 3)
    k = min(32, n, d)
    sk = PCA(k, svd_solver="randomized", random_state=1919, iterated_power=1).fit_transform(f)
    np.testing.assert_allclose(parc_oracle.randomized_pca(f, k), sk, rtol=1e-8, atol=1e-9)


def test_exact_pca_matches_scikit_learn_full_svd():
    f, _ = _data(1, 60, 12, 3)
    sk = PCA(8, svd_solver="full").fit_transform(f)
    np.testing.assert_allclose(parc_oracle.exact_pca(f, 8), sk, rtol=1e-8, atol=1e-9)


def test_parc_label_dissimilarity_against_the_literal_corrcoef():
    # The published code ranks 1 - np.corrcoef(one-hot rows); its round-off leaves some
    # within-class values at 2.2e-16 instead of 0 (per class), which splits their ties. The
    # oracle uses the exact two values; the difference stays small.
    f, y = _data(2, 150, 40, 4)
    z = parc_oracle.randomized_pca(f, 32)
    z = (z - z.mean(0)) / z.std(0)
    iu = np.triu_indices(len(y), 1)
    literal = scipy.stats.spearmanr((1 - np.corrcoef(z))[iu], (1 - np.corrcoef(np.eye(4)[y]))[iu])[0] * 100
    ours = parc_oracle.parc(f, y, 4)
    assert abs(literal - ours) < 0.05 * abs(ours), (literal, ours)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_oracle_matches_scikit_learn_leave_one_out(k):
    # Two classes and odd k: no vote ties; continuous data: no duplicates. Both LOO rules agree
    # with refitting scikit-learn's KNeighborsClassifier without each sample.
    f, y = _data(3, 50, 6, 2)
    hits = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        clf = KNeighborsClassifier(n_neighbors=k).fit(f[keep], y[keep])
        hits.append(clf.predict(f[i:i + 1])[0] == y[i])
    for loo in ("published", "exact"):
        assert knn_oracle.knn(f, y, 2, k=k, loo=loo) == pytest.approx(np.mean(hits), abs=1e-12)


@pytest.mark.parametrize("norm", ["max", "euclidean"])
def test_tmi_kdtree_matches_brute_force(norm):
    from scipy.special import digamma, gammaln

    f, y = _data(4, 60, 5, 3)
    x = f[y == 1] - f.mean(0)
    n, d = x.shape
    dist = cdist(x, x, "chebyshev" if norm == "max" else "euclidean")
    np.fill_diagonal(dist, np.inf)
    eps = np.maximum(np.sort(dist, axis=1)[:, 2], 1.0)
    log_c_d = 0.0 if norm == "max" else d / 2 * np.log(np.pi) - gammaln(d / 2 + 1)
    brute = -digamma(3) + digamma(n) + log_c_d + d / n * np.sum(np.log(2 * eps))
    np.testing.assert_allclose(tmi_oracle.class_entropy(x, 3, norm, 1.0), brute, rtol=1e-12)


def test_transrate_coding_rate_equals_gram_side():
    # log det(I_d + Z^T Z / (n eps)) = log det(I_n + Z Z^T / (n eps)) = sum log(1 + s^2 / (n eps)).
    f, _ = _data(5, 20, 50, 2)
    z = f - f.mean(0)
    s = np.linalg.svd(z, compute_uv=False)
    want = 0.5 * np.sum(np.log1p(s**2 / (20 * 1e-4)))
    np.testing.assert_allclose(transrate_oracle.coding_rate(z, 1e-4), want, rtol=1e-10)
