"""Reference NumPy / scikit-learn scorers, written to cost what the published code costs.

These are the baselines of `bench_scorers.py`. Each follows the algorithm of the code released
with its paper (or the implementation most papers cite) step by step, including the choices
that make it slow or fast: float64 where that code upcasts, the same scikit-learn estimators
with their default settings, Python loops over classes (and, for NCE and LEEP, over samples)
where that code loops. They are re-written from the published algorithms, not copied, and are
not part of the jscore package.

    H-score       Bao et al., ICIP 2019: np.cov (float64, ddof 1) of the features and of the
                  class-mean rows, pinv with rcond=1e-15, trace of their product.
    Reg. H-score  Ibrahim et al., NeurIPS 2021: float64, centred, sklearn LedoitWolf, then as
                  H-score with (1 - shrinkage) times the class-mean covariance (ddof 1).
    LogME         You et al., 2021 (thuml/LogME, the fixed-point variant): float64, SVD through
                  the Gram matrix, per-class MacKay fixed point in the SVD basis (at most 11
                  steps, relative tolerance 1e-3 on alpha/beta, 1e-5 added to denominators).
    N-LEEP        Li et al., CVPR 2021: sklearn PCA(n_components=0.8), sklearn GaussianMixture
                  with 5 components per class (defaults: full covariances, k-means init,
                  100 EM iterations, tol 1e-3), LEEP on the posteriors (cast to float32).
    GBC           Pandy et al., CVPR 2022: sklearn PCA to 64 dimensions, per-class means and
                  variances floored at 1e-4, spherical Bhattacharyya distances, minus the sum
                  of exp(-distance) over ordered pairs of classes.
    LEEP          Nguyen et al., ICML 2020: the empirical joint of target labels and source
                  probabilities, a per-sample Python pass to pick the expected prediction.
    NCE           Tran et al., ICCV 2019: argmax source labels, joint counted sample by sample
                  in Python, minus the conditional entropy H(Y | Z).

Like the published code, every function infers the number of classes as `labels.max() + 1`.
"""

from __future__ import annotations

import numpy as np


def _class_mean_rows(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[N, D] array whose row i is the mean of the rows of i's class (the published `g`)."""
    rows = np.zeros_like(features)
    for c in range(int(labels.max()) + 1):
        members = labels == c
        rows[members] = features[members].mean(axis=0)
    return rows


def hscore(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score: tr(pinv(cov f) cov(E[f | y])), both covariances by np.cov (float64, ddof 1).

    Args:
      features: [N, D] float.
      labels: [N] ints in [0, C).
    Returns:
      The score (float).
    """
    cov_f = np.cov(features, rowvar=False)
    cov_g = np.cov(_class_mean_rows(features, labels), rowvar=False)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ cov_g))


def reg_hscore(features: np.ndarray, labels: np.ndarray) -> float:
    """Regularised H-score: tr(pinv(Sigma_LW) (1 - a) cov(E[f | y])), sklearn's Ledoit-Wolf.

    The class-mean covariance is np.cov (ddof 1) while Ledoit-Wolf uses ddof 0, as published:
    the result is n/(n-1) times jscore's all-ddof-0 definition.

    Args:
      features: [N, D] float (upcast to float64 as the published code does).
      labels: [N] ints in [0, C).
    Returns:
      The score (float).
    """
    from sklearn.covariance import LedoitWolf

    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(axis=0, keepdims=True)
    estimator = LedoitWolf(assume_centered=False).fit(f)
    shrinkage = estimator.shrinkage_
    cov_g = np.cov(_class_mean_rows(f, labels), rowvar=False)
    inverse = np.linalg.pinv(estimator.covariance_, rcond=1e-15)
    return float(np.trace(inverse @ ((1.0 - shrinkage) * cov_g)))


def _svd_through_gram(f: np.ndarray):
    """Thin SVD of a tall [N, D] matrix from the SVD of its D x D Gram (rank-truncated at 1e-10).

    Returns u [N, k], singular values [k], vh [k, D].
    """
    _, eig, vh = np.linalg.svd(f.T @ f)
    singular = np.sqrt(eig)
    rank = int(np.sum(singular > 1e-10))
    u = (f @ vh.T)[:, :rank] / singular[:rank]
    return u, singular[:rank], vh[:rank]


def logme(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    max_iters: int = 11,
    tol: float = 1e-3,
    eps: float = 1e-5,
) -> float:
    """LogME by the fixed-point iteration in the SVD basis (thuml/LogME's default algorithm).

    For each class c, y = [label == c] and the Bayesian linear model y = F w + e with prior
    precision alpha and noise precision beta; t = alpha/beta is iterated to its fixed point.
    The evidence is then D/2 log a + N/2 log b - 1/2 sum log(a + b s_i) - b/2 |y - F m|^2
    - a/2 |m|^2 - N/2 log 2 pi over the non-zero squared singular values s_i, divided by N
    and averaged over classes.

    Args:
      features: [N, D] float (upcast to float64).
      labels: [N] ints in [0, C).
      max_iters, tol, eps: the published 11 steps, 1e-3 on t, 1e-5 in denominators.
    Returns:
      The score (float).
    """
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    if n > d:
        u, singular, _ = _svd_through_gram(f)
    else:
        u, singular, _ = np.linalg.svd(f, full_matrices=False)
    sigma = singular**2
    evidences = []
    for c in range(int(labels.max()) + 1):
        y = (labels == c).astype(np.float64)
        proj = u.T @ y                       # coordinates of y in the column space of F
        proj2 = proj**2
        outside = float(y @ y - proj2.sum())  # part of |y|^2 that F cannot explain
        alpha = beta = 1.0
        for _ in range(max_iters):
            t = alpha / beta
            gamma = float(np.sum(sigma / (sigma + t)))
            m_norm2 = float(np.sum(sigma * proj2 / (sigma + t) ** 2))
            resid2 = float(np.sum(proj2 * (t / (sigma + t)) ** 2)) + outside
            alpha = gamma / (m_norm2 + eps)
            beta = (n - gamma) / (resid2 + eps)
            if abs(alpha / beta - t) / t <= tol:
                break
        evidence = (
            d / 2.0 * np.log(alpha)
            + n / 2.0 * np.log(beta)
            - 0.5 * np.sum(np.log(alpha + beta * sigma))
            - beta / 2.0 * resid2
            - alpha / 2.0 * m_norm2
            - n / 2.0 * np.log(2.0 * np.pi)
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP: mean log of the expected empirical prediction P(y_i | theta_i).

    Args:
      source_probs: [N, Cs] rows summing to 1.
      labels: [N] ints in [0, C).
    Returns:
      The score (float). Source classes with zero mass give NaN, as published.
    """
    n, num_source = source_probs.shape
    num_target = int(labels.max()) + 1
    scaled = source_probs / float(n)
    joint = np.zeros((num_target, num_source), dtype=np.float64)
    for c in range(num_target):
        joint[c] = scaled[labels == c].sum(axis=0)
    target_given_source = (joint / joint.sum(axis=0, keepdims=True)).T  # [Cs, C]
    expected = source_probs @ target_given_source                       # [N, C]
    picked = np.array([row[y] for row, y in zip(expected, labels)])
    return float(np.mean(np.log(picked)))


def nce(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """NCE: -H(Y | Z) with Z the argmax source class, the joint counted sample by sample.

    Args:
      source_probs: [N, Cs].
      labels: [N] ints in [0, C).
    Returns:
      The score (float, <= 0).
    """
    source_labels = np.argmax(source_probs, axis=1)
    n = len(labels)
    num_target = int(labels.max()) + 1
    num_source = int(source_labels.max()) + 1
    joint = np.zeros((num_target, num_source), dtype=np.float64)
    for z, y in zip(source_labels, labels):
        joint[int(y), int(z)] += 1.0 / n
    p_z = joint.sum(axis=0)
    seen = p_z != 0
    cond = (joint[:, seen] / p_z[seen]).T + 1e-20  # [Cs_seen, C] P(y | z)
    entropy_given_z = np.sum(-cond * np.log(cond), axis=1)
    return float(-np.sum(entropy_given_z * p_z[seen]))


def nleep(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    variance: float = 0.8,
    components_per_class: int = 5,
    seed: int = 123,
    max_iters: int = 100,
    tol: float = 1e-3,
) -> float:
    """N-LEEP: LEEP with the posteriors of a GMM fitted on the PCA-reduced features.

    Args:
      features: [N, D] float.
      labels: [N] ints in [0, C).
      variance: PCA keeps the fewest components explaining more than this fraction.
      components_per_class: GMM components = this times C (5 in the paper).
      seed: random_state of the PCA and of the GMM's k-means initialisation.
      max_iters, tol: EM controls (scikit-learn's defaults, which the published code keeps).
    Returns:
      The score (float).
    """
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    reduced = PCA(n_components=variance, random_state=seed).fit_transform(features)
    num_components = components_per_class * (int(labels.max()) + 1)
    gmm = GaussianMixture(
        n_components=num_components, random_state=seed, max_iter=max_iters, tol=tol
    ).fit(reduced)
    posteriors = gmm.predict_proba(reduced)
    return leep(posteriors.astype(np.float32), labels)


def gbc(features: np.ndarray, labels: np.ndarray, *, dims: int = 64, seed: int = 0) -> float:
    """GBC with spherical Gaussians on the top `dims` PCA components.

    Args:
      features: [N, D] float.
      labels: [N] ints in [0, C).
      dims: PCA dimensions (64 in the paper's experiments).
      seed: random_state of the PCA (sklearn picks a randomized solver for 64 of 2048).
    Returns:
      The score (float, <= 0).
    """
    from sklearn.decomposition import PCA

    n, d = features.shape
    reduced = PCA(n_components=min(dims, n, d), random_state=seed).fit_transform(features)
    classes = np.unique(labels)
    means, variances = {}, {}
    for c in classes:
        members = reduced[labels == c]
        means[c] = members.mean(axis=0)
        variances[c] = np.maximum(members.var(axis=0), 1e-4).mean()  # spherical
    total = 0.0
    for c1 in classes:
        for c2 in classes:
            if c1 == c2:
                continue
            s1, s2 = variances[c1], variances[c2]
            s = (s1 + s2) / 2.0
            distance = np.sum((means[c1] - means[c2]) ** 2 / s) / 8.0 + 0.5 * (
                np.log(s) - 0.5 * np.log(s1) - 0.5 * np.log(s2)
            )
            total += np.exp(-distance)
    return float(-total)


#: name -> (what the first argument is, function). Names match jscore's registry.
REFERENCES = {
    "hscore": ("features", hscore),
    "reg_hscore": ("features", reg_hscore),
    "logme": ("features", logme),
    "nleep": ("features", nleep),
    "gbc": ("features", gbc),
    "leep": ("source", leep),
    "nce": ("source", nce),
}


# --- issue 9: the pairwise scores (written from the published algorithms) ------------------------
#
#     PARC          Bolya et al., NeurIPS 2021 (dbolya/parc): sklearn PCA(32, randomized,
#                   random_state=1919, iterated_power=1), StandardScaler, 1 - np.corrcoef of the
#                   feature rows and of the one-hot label rows (N x N, float64), the upper
#                   triangles, scipy.stats.spearmanr x 100.
#     TMI           Xu & Kang, ICCV 2023 (snudatalab/TMI): centred features, per class a cKDTree
#                   queried for k + 1 = 4 neighbours in the max norm, distances floored at 1,
#                   the Kozachenko-Leonenko entropy, mean over classes of p_c h_c.
#     TransRate     Huang et al., ICML 2022: centred float64 features, slogdet of the D x D
#                   I + Z^T Z / (n eps) for all rows and per class, eps = 1e-4, mean over classes.
#     k-NN          the hold-one-out k-NN of the PARC code (Sorkhei et al., TMLR 2025):
#                   sklearn pairwise_distances (N x N), argsort of every row, drop the first
#                   column, scipy.stats.mode of the next k labels.


def parc(features: np.ndarray, labels: np.ndarray, *, dims: int = 32) -> float:
    """PARC x 100 with the published randomized PCA and dense N x N dissimilarities."""
    import scipy.stats
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    n = features.shape[0]
    reduced = PCA(n_components=min(dims, n), svd_solver="randomized", random_state=1919,
                  iterated_power=1).fit_transform(features)
    reduced = StandardScaler().fit_transform(reduced)
    onehot = np.eye(int(labels.max()) + 1)[labels]
    upper = np.triu_indices(n, 1)
    rdm_features = (1 - np.corrcoef(reduced))[upper]
    rdm_labels = (1 - np.corrcoef(onehot))[upper]
    return float(scipy.stats.spearmanr(rdm_features, rdm_labels)[0] * 100)


def tmi(features: np.ndarray, labels: np.ndarray, *, k: int = 3, min_dist: float = 1.0) -> float:
    """TMI with a k-d tree per class in the max norm."""
    from scipy.spatial import cKDTree
    from scipy.special import digamma

    x = features - features.mean(axis=0, keepdims=True)
    num_classes = int(labels.max()) + 1
    terms = []
    for c in range(num_classes):
        xc = x[labels == c]
        n_c, d = xc.shape
        dist = cKDTree(xc).query(xc, k + 1, p=np.inf)[0][:, -1]
        dist = np.maximum(dist, min_dist)
        h = -digamma(k) + digamma(n_c) + d / n_c * np.sum(np.log(2 * dist))
        terms.append(h * n_c / len(labels))
    return float(np.mean(terms))


def transrate(features: np.ndarray, labels: np.ndarray, *, eps: float = 1e-4) -> float:
    """TransRate with D x D log-determinants (float64)."""
    def rate(z):
        n, d = z.shape
        return 0.5 * np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))[1]

    z = features.astype(np.float64)
    z = z - z.mean(axis=0, keepdims=True)
    num_classes = int(labels.max()) + 1
    return float(rate(z) - sum(rate(z[labels == c]) for c in range(num_classes)) / num_classes)


def knn(features: np.ndarray, labels: np.ndarray, *, k: int = 1) -> float:
    """Hold-one-out k-NN accuracy (fraction) from the full distance matrix."""
    import scipy.stats
    from sklearn.metrics import pairwise_distances

    dist = pairwise_distances(features, metric="l2")
    idx = np.argsort(dist, axis=-1)[:, 1:k + 1]
    votes = labels[idx]
    preds = scipy.stats.mode(votes, axis=1, keepdims=True)[0]
    return float((preds[:, 0] == labels).mean())


REFERENCES.update({
    "parc": ("features", parc),
    "tmi": ("features", tmi),
    "transrate": ("features", transrate),
    "knn": ("features", knn),
})


# ---------------------------------------------------------------------------------------------
# Issue 9 (second half): SFDA, PACTran, ETran, NCTI, each as its authors' code computes it.
#
#   SFDA          Shao et al., ECCV 2022 (TencentARC/SFDA): float64, per-class np.cov, the
#                 3-step power method for the shrinkage, scipy.linalg.eigh(Sb, Sw) generalised
#                 D x D eigenproblem, twice (before and after ConfMix).
#   PACTran       Ding et al., ECCV 2022 (google-research/pactran_metrics): Gaussian: softmax
#                 regression by scipy L-BFGS-B (at most 100 steps, tol 1e-6) from N(0, 0.03^2);
#                 Dirichlet / Gamma: 10 mean-field steps with the [N, C, Cs] einsum as published.
#   ETran         Gholami et al., ICCV 2023 (mgholamikn/ETran): energy = logsumexp + argsort;
#                 LDA = per-class np.cov, power method, inv(Sw) @ Sb, numpy eigh (D x D).
#   NCTI          Wang et al., ICCV 2023 (BUserName/NCTI): sklearn PCA(64), sklearn
#                 LinearDiscriminantAnalysis (svd or eigen solver as the code picks), nuclear norms.

from scipy import linalg as _linalg  # noqa: E402
from scipy import optimize as _optimize  # noqa: E402
from scipy import special as _special  # noqa: E402


def _shrunk_cov(x, shrinkage=-1.0):
    emp = np.cov(np.asarray(x).T, bias=1)
    if shrinkage < 0:
        return emp
    d = emp.shape[0]
    out = (1.0 - shrinkage) * emp
    out.flat[:: d + 1] += shrinkage * np.trace(emp) / d
    return out


def _power_top(a, iters=3):
    x = a.sum(axis=1)
    for _ in range(iters):
        t = a @ x
        y = t / np.linalg.norm(t)
        t = a @ y
        x = t / np.linalg.norm(t)
    return x @ a @ y


def _softmax_rows(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sfda_stage(x, y, shrinkage, generalised=True):
    classes, yi = np.unique(y, return_inverse=True)
    priors = np.bincount(yi) / len(y)
    means = np.zeros((len(classes), x.shape[1]))
    np.add.at(means, yi, x)
    means /= np.bincount(yi)[:, None]
    sw = np.zeros((x.shape[1], x.shape[1]))
    for k in range(len(classes)):
        sw += priors[k] * np.atleast_2d(_shrunk_cov(x[yi == k]))
    if shrinkage is None:
        shrinkage = max(np.exp(-5 * _power_top(sw, 3)), 1e-10)
    st = _shrunk_cov(x, shrinkage)
    d = sw.shape[0]
    sw_s = (1 - shrinkage) * sw
    sw_s.flat[:: d + 1] += shrinkage * np.trace(sw) / d
    sb = st - sw_s
    if generalised:
        evals, evecs = _linalg.eigh(sb, sw_s)
    else:  # ETran's LDA
        evals, evecs = np.linalg.eigh(np.linalg.inv(sw_s) @ sb)
    evecs = evecs[:, np.argsort(evals)[::-1]]
    coef = means @ evecs @ evecs.T
    intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
    return _softmax_rows(x @ coef.T + intercept), shrinkage, means


def sfda(features: np.ndarray, labels: np.ndarray) -> float:
    x = np.array(features, np.float64)
    y = labels
    n, c = len(y), int(y.max() + 1)
    prob, s, means = _sfda_stage(x, y, None)
    prob = np.exp(prob) / np.exp(prob).sum(axis=1, keepdims=True)
    outer = (means.sum(axis=0)[None, :] - means) / (c - 1)
    for k in range(c):
        idx = np.where(y == k)[0]
        p = prob[idx, k][:, None]
        x[idx] = p * x[idx] + (1 - p) * outer[k]
    prob, _, _ = _sfda_stage(x, y, s)
    return float(np.sum(prob[np.arange(n), y]) / n)


def etran_lda(features: np.ndarray, labels: np.ndarray) -> float:
    prob, _, _ = _sfda_stage(np.asarray(features, np.float64), labels, None, generalised=False)
    return float(np.mean(prob[np.arange(len(labels)), labels]))


def etran_energy(features: np.ndarray, labels: np.ndarray, percent: float = 0.5) -> float:
    e = _special.logsumexp(features, axis=-1)
    chosen = np.argsort(e)[0 : int(percent * 10) * len(e) // 1000]
    return float(e[chosen].mean())


def ncti(features: np.ndarray, labels: np.ndarray):
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    y = labels
    c = np.unique(y).shape[0]
    pca = PCA(n_components=64)
    x = pca.fit_transform(features, y)
    temp = max(np.exp(-pca.explained_variance_[:32].sum()), 1e-10)
    if temp == 1e-10:
        clf = LinearDiscriminantAnalysis(solver="svd")
    else:
        clf = LinearDiscriminantAnalysis(solver="eigen", shrinkage=float(temp))
    low = clf.fit_transform(x, y)
    low = low - low.mean(axis=0, keepdims=True)
    seli = np.linalg.norm(low, ord="nuc")
    pred = clf.predict_proba(x)
    ncc = np.sum(pred[np.arange(x.shape[0]), y]) / x.shape[0]
    vc = np.log(sum(np.linalg.norm(pred[y == k], ord="nuc") for k in range(c)))
    return float(seli), float(ncc), float(vc)


def _one_hot(y):
    out = np.zeros((y.size, y.max() + 1))
    out[np.arange(y.size), y] = 1.0
    return out


def pactran(features: np.ndarray, labels: np.ndarray, lda: float = 1.0, seed: int = 0) -> float:
    f = np.asarray(features, np.float64)
    lab = _one_hot(labels)
    n, d = f.shape
    c = lab.shape[1]
    reg = lda * n

    def loss(theta):
        t = theta.reshape(d + 1, c)
        logits = f @ t[:d] + t[d:]
        log_q = logits - _special.logsumexp(logits, axis=-1, keepdims=True)
        return np.sum(lab * (np.log(lab + 1e-10) - log_q)) / n + 0.5 * np.sum(t[:d] ** 2) / reg

    def grad(theta):
        t = theta.reshape(d + 1, c)
        g = (_special.softmax(f @ t[:d] + t[d:], axis=-1) - lab) / n
        return np.concatenate([f.T @ g + t[:d] / reg, g.sum(0, keepdims=True)]).ravel()

    rng = np.random.default_rng(seed)
    theta = np.concatenate([rng.normal(size=(d, c)) * 0.03, np.zeros((1, c))]).ravel()
    theta = _optimize.minimize(loss, theta, method="L-BFGS-B", jac=grad, options=dict(maxiter=100), tol=1e-6).x
    t = theta.reshape(d + 1, c)
    p = _special.softmax(f @ t[:d] + t[d:], axis=-1)
    h = np.sum((f**2).T @ (p - p**2) + 1.0 / reg) + np.sum(p - p**2)
    sigma2_inv = h * reg / (d * c) + 1e-10
    return float(-(loss(theta) + 0.5 * d * c / reg * (10.0 / d) * np.log(sigma2_inv)))


def pac_dirichlet(source_probs: np.ndarray, labels: np.ndarray, alpha: float = 1.0) -> float:
    lab = _one_hot(labels)
    a0 = alpha * lab.sum(0)[:, None] / lab.sum() + 1e-10
    qz = source_probs
    log_s = np.log(source_probs + 1e-10)
    for _ in range(10):
        aw = a0 + np.sum(np.einsum("BY,BZ->BYZ", lab, qz), axis=0)
        logits = log_s + lab @ _special.digamma(aw) - _special.digamma(aw.sum(0))[None, :]
        log_qz = logits - _special.logsumexp(logits, axis=-1, keepdims=True)
        qz = np.exp(log_qz)
    log_c0 = _special.loggamma(a0.sum()) - np.sum(_special.loggamma(a0))
    log_c = _special.loggamma(aw.sum(0)) - np.sum(_special.loggamma(aw), axis=0)
    return float(np.sum(log_c0 - log_c - np.sum(qz * (log_qz - log_s), axis=0)) / lab.size)


def pac_gamma(source_probs: np.ndarray, labels: np.ndarray, alpha: float = 1.0) -> float:
    lab = _one_hot(labels)
    a0 = alpha * lab.sum(0)[:, None] / lab.sum() + 1e-10
    qz = source_probs
    s = source_probs
    log_s = np.log(source_probs + 1e-10)
    for _ in range(10):
        aw = a0 + np.sum(np.einsum("BY,BZ->BYZ", lab, qz), axis=0)
        lw = s @ aw.sum(0)[:, None]
        logits = log_s + lab @ _special.digamma(aw)
        log_qz = logits - _special.logsumexp(logits, axis=-1, keepdims=True)
        qz = np.exp(log_qz)
    bound = (np.sum(_special.loggamma(a0) - _special.loggamma(aw))
             + np.sum(np.sum(qz * (log_qz - log_s), axis=-1) + np.log(lw[:, 0]) - 1.0))
    return float(-(bound / lab.size + 1.0))


REFERENCES.update({
    "sfda": ("features", sfda),
    "pactran": ("features", pactran),
    "pac_dirichlet": ("source", pac_dirichlet),
    "pac_gamma": ("source", pac_gamma),
    "etran_energy": ("features", etran_energy),
    "etran_lda": ("features", etran_lda),
    "ncti": ("features", lambda f, y: ncti(f, y)[1]),  # all three terms; the value shown is ncc
})
