"""PARC (Bolya et al., "Scalable Diverse Model Selection for Accessible Transfer Learning",
NeurIPS 2021): Spearman correlation of the feature and label dissimilarity matrices."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jscore._numerics import mm, mm_tn, safe_div
from jscore._pairwise import block_rows, over_block_pairs, pad_rows
from jscore.stats import FeatureStats, LabelStats, centred_features, feature_stats

PCA_MODES = ("randomized", "exact")
METHODS = ("auto", "sort", "histogram")
SORT_MAX_N = 4096  # "auto" sorts the N x N dissimilarities up to here, bins them above
RANDOM_STATE = 1919  # the published code's PCA(svd_solver="randomized", random_state=1919,
OVERSAMPLES = 10  # iterated_power=1) with scikit-learn's default 10 oversamples


def _gaussian(rows: int, cols: int, dtype):
    """The test matrix scikit-learn's randomized range finder draws: RandomState(1919).normal
    of shape (rows, cols), a compile-time constant (rows is the static size of the range
    finder's input columns; padded rows at the end leave the first rows unchanged)."""
    return jnp.asarray(np.random.RandomState(RANDOM_STATE).normal(size=(rows, cols)), dtype)


def _orth(y):
    return jnp.linalg.qr(y)[0]


def _thin_svd(b):
    """SVD of a short, wide b [s, m] through a QR of b^T: only an s x s SVD (LAPACK's SVD of the
    wide matrix costs far more). Returns (u [s, s], sv [s], vt [s, m])."""
    q, r = jnp.linalg.qr(b.T)
    u, sv, wt = jnp.linalg.svd(r.T, full_matrices=False)
    return u, sv, mm(q, wt.T).T


def _flip_by_components(comp, z):
    """scikit-learn's svd_flip(u_based_decision=False): the largest |entry| of each component
    (row of comp [k, D]) is made positive; scores z [N, k] follow."""
    pick = jnp.take_along_axis(comp, jnp.argmax(jnp.abs(comp), axis=1)[:, None], axis=1)[:, 0]
    sign = jnp.where(pick < 0, -1, 1).astype(comp.dtype)
    return comp * sign[:, None], z * sign[None, :]


def randomized_pca_scores(xc, k: int, n, d_eff):
    """[N, k] PCA scores as scikit-learn's PCA(k, svd_solver="randomized", random_state=1919,
    iterated_power=1).fit_transform computes them on the centred, masked xc [N, D].

    One power iteration on a (k + 10)-column Gaussian test matrix, on X when n >= d_eff and on
    X^T otherwise (scikit-learn's transpose="auto"); only that branch runs (a `lax.cond`; under
    vmap, where the condition may differ between models, both do).
    Between products the basis is re-orthonormalised (same span as scikit-learn's unnormalised
    iteration, better conditioned in float32). Returns U * S as `fit_transform` does (in the
    untransposed case the projection of X on the range found, not X V).
    """
    n_rows, n_cols = xc.shape
    s = k + OVERSAMPLES

    def untransposed():  # range of X (in R^N)
        q = _orth(mm(xc, _gaussian(n_cols, s, xc.dtype)))
        q = _orth(mm_tn(xc, q))
        q = _orth(mm(xc, q))
        uhat, sv, vt = _thin_svd(mm(q.T, xc))
        return _flip_by_components(vt[:k], mm(q, uhat[:, :k]) * sv[:k])[1]

    def transposed():  # range of X^T (in R^D)
        q = _orth(mm_tn(xc, _gaussian(n_rows, s, xc.dtype)))
        q = _orth(mm(xc, q))
        q = _orth(mm_tn(xc, q))
        uhat = _thin_svd(mm(xc, q).T)[0]
        comp_t = mm(q, uhat[:, :k]).T
        return _flip_by_components(comp_t, mm(xc, comp_t.T))[1]

    # Only the valid branch runs (under vmap, where the condition may differ between models,
    # both do).
    return jax.lax.cond(n < d_eff, transposed, untransposed)


def exact_pca_scores(fs: FeatureStats, k: int):
    """[N, k] exact PCA scores from the shared eigendecomposition, signs as scikit-learn's."""
    evecs = fs.evecs[:, :k]
    if fs.is_gram:  # V = Xc^T U / sqrt(s)
        comp = safe_div(mm_tn(fs.xc, evecs), jnp.sqrt(fs.evals[:k])[None, :]).T
    else:
        comp = evecs.T
    return _flip_by_components(comp, mm(fs.xc, comp.T))[1]


def _row_directions(z, ls: LabelStats, k_valid):
    """Standardise the columns of z [N, k] (StandardScaler: ddof 0, zero scale -> 1), then centre
    and normalise each row over its k_valid dimensions: u_i . u_j = Pearson r(z_i, z_j)."""
    dim_ok = (jnp.arange(z.shape[1]) < k_valid).astype(z.dtype)
    w = ls.weights[:, None]
    mean = safe_div(jnp.sum(z * w, axis=0), ls.n)
    var = safe_div(jnp.sum((z - mean) ** 2 * w, axis=0), ls.n)
    zs = (z - mean) / jnp.where(var > 0, jnp.sqrt(var), 1) * dim_ok
    u = (zs - safe_div(jnp.sum(zs, axis=1, keepdims=True), k_valid)) * dim_ok
    return safe_div(u, jnp.linalg.norm(u, axis=1, keepdims=True)) * w


def _rank_correlation(num, n_w, n_b, var_ranks):
    """Spearman r between the dissimilarities and the two-valued label dissimilarity (0 within,
    C/(C-1) between classes) from num = sum over between-class pairs of (#within-class pairs below
    it - #above it, ties counting half): r = num / (2 sigma_R sqrt(n_w n_b))."""
    return num / (2 * jnp.sqrt(var_ranks) * jnp.sqrt(n_w * n_b))


def _upper_pairs(n: int):
    """(i, j) [M] int32 of the M = n (n - 1) / 2 pairs i < j in row-major order, from the pair
    index by the row-start formula s(i) = i (2n - i - 1) / 2 (a float estimate of the row, then
    exact integer fix-ups)."""
    m = n * (n - 1) // 2
    k = jnp.arange(m, dtype=jnp.int32)
    b = 2 * n - 1
    est = jnp.floor((b - jnp.sqrt(jnp.maximum(b * b - 8 * k.astype(jnp.float32), 0))) / 2)
    i = jnp.clip(est.astype(jnp.int32), 0, n - 2)

    def row_start(r):
        return r * (2 * n - r - 1) // 2

    for _ in range(2):
        i = jnp.where(k < row_start(i), i - 1, i)
        i = jnp.where(k >= row_start(i + 1), i + 1, i)
    return i, k - row_start(i) + i + 1


def _sortable_key(x):
    """Integers with the order of the floats x (no NaN): the bit pattern, magnitude bits flipped
    for negative values; -0.0 is made +0.0 first so equal floats get equal keys. XLA's CPU sort
    orders integers about 5x faster than floats."""
    x = jnp.where(x == 0, jnp.zeros_like(x), x)
    itype = jnp.int64 if x.dtype == jnp.float64 else jnp.int32
    bits = jax.lax.bitcast_convert_type(x, itype)
    return jnp.where(bits < 0, bits ^ jnp.asarray(jnp.iinfo(itype).max, itype), bits)


def _spearman_sort(u, cls, weights):
    """Exact (tie-aware) Spearman from the sorted N (N - 1) / 2 dissimilarities of the pairs i < j
    (pairs of two valid samples; weights are 0/1 masks, as in the histogram path).

    One single-operand integer sort (XLA's CPU sort is several times slower on floats or with a
    payload): each pair's key is 2 k + [between-class], k an order-preserving integer of
    (1 - r_ij) - 1: the dissimilarity less 1, exact by Sterbenz's lemma wherever it is at least
    1/2 and equal to -r_ij (exactly) below, so the same order and the same ties as the
    dissimilarity, while |value| <= 1 leaves an integer bit free.
    The runs of tied values are then found with cumulative sums and a running max/min of the
    run bounds, and each between-class pair counts the within-class pairs below its run minus
    those above it."""
    n = u.shape[0]
    i, j = _upper_pairs(n)
    rdm = (1 - mm(u, u.T)).ravel()[i * n + j]
    key = _sortable_key(rdm - 1)  # |key| < 2^30 (2^62 in float64)
    top = jnp.asarray(jnp.iinfo(key.dtype).max, key.dtype)  # placeholder: above every real key
    valid = (weights[i] > 0) & (weights[j] > 0)
    between = cls[i] != cls[j]
    packed = jnp.sort(jnp.where(valid, 2 * key + between.astype(key.dtype), top))
    ok = packed != top
    is_b = ok & ((packed & 1) == 1)
    is_w = (ok & ~is_b).astype(jnp.int32)
    value = packed >> 1
    m = packed.shape[0]
    pos = jnp.arange(m, dtype=jnp.int32)
    new_run = jnp.concatenate([jnp.ones((1,), bool), value[1:] != value[:-1]])
    run_end = jnp.concatenate([new_run[1:], jnp.ones((1,), bool)])
    first = jax.lax.cummax(jnp.where(new_run, pos, 0))  # first index of each element's run
    last = jax.lax.cummin(jnp.where(run_end, pos, m - 1), reverse=True)  # its last index
    w_incl = jnp.cumsum(is_w)
    dtype = u.dtype
    n_w = w_incl[-1].astype(dtype)
    n_b = jnp.sum(is_b).astype(dtype)
    before = (w_incl - is_w)[first].astype(dtype)  # within-class pairs in lower runs
    after = n_w - w_incl[last].astype(dtype)  # ... in higher runs
    num = jnp.sum(jnp.where(is_b, before - after, 0))
    t_run = jnp.where(run_end & ok, pos - first + 1, 0).astype(dtype)  # run sizes, at each run's end
    total = n_w + n_b
    var_ranks = (total**2 - 1) / 12 - jnp.sum(t_run**3 - t_run) / (12 * total)
    return _rank_correlation(num, n_w, n_b, var_ranks)


HISTOGRAM_BLOCK = 1024


def _spearman_histogram(u, cls, weights, bins: int, block: int = HISTOGRAM_BLOCK):
    """Spearman from a histogram of the dissimilarities in [0, 2] (`bins` equal bins), built from
    [block, block] tiles of the pairs of row blocks I <= J only (the pairs i < j lie there; memory
    O(block^2)); pairs in one bin count as tied for the rank sums."""
    n = u.shape[0]
    block = block_rows(block, n)
    num_blocks = -(-n // block)
    up, cp, wp = pad_rows(u, block), pad_rows(cls, block), pad_rows(weights, block)  # padded rows: weight 0
    local = jnp.arange(block)

    def add_tile(i, j, hist):
        r0, c0 = i * block, j * block
        ub, uc = jax.lax.dynamic_slice_in_dim(up, r0, block), jax.lax.dynamic_slice_in_dim(up, c0, block)
        rdm = 1 - mm(ub, uc.T)
        ok = ((r0 + local)[:, None] < (c0 + local)[None, :])
        ok &= (jax.lax.dynamic_slice_in_dim(wp, r0, block) > 0)[:, None]
        ok &= (jax.lax.dynamic_slice_in_dim(wp, c0, block) > 0)[None, :]
        between = jax.lax.dynamic_slice_in_dim(cp, r0, block)[:, None] != jax.lax.dynamic_slice_in_dim(cp, c0, block)[None, :]
        idx = jnp.clip(jnp.floor(rdm * (bins / 2)), 0, bins - 1).astype(jnp.int32)
        idx = idx + bins * between.astype(jnp.int32)
        return hist.at[idx.ravel()].add(ok.ravel().astype(jnp.int32))

    hist = over_block_pairs(add_tile, num_blocks, jnp.zeros((2 * bins,), jnp.int32)).astype(u.dtype)
    hw, hb = hist[:bins], hist[bins:]
    n_w, n_b = jnp.sum(hw), jnp.sum(hb)
    before = jnp.cumsum(hw) - hw
    num = jnp.sum(hb * (before - (n_w - before - hw)))
    total = n_w + n_b
    return _rank_correlation(num, n_w, n_b, (total**2 - 1) / 12)


def parc_from_scores(z, ls: LabelStats, k_valid, *, method: str = "auto", bins: int = 1 << 20):
    """PARC from PCA scores z [N, k] with k_valid valid columns (see `parc`)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    u = _row_directions(z, ls, k_valid)
    cls = jnp.argmax(ls.onehot, axis=1)
    if method == "sort" or (method == "auto" and z.shape[0] <= SORT_MAX_N):
        rho = _spearman_sort(u, cls, ls.weights)
    else:
        rho = _spearman_histogram(u, cls, ls.weights, bins)
    return 100 * rho


def _dims(dims: int, n_rows: int, n_cols: int, n, d_eff):
    k = min(dims, n_rows, n_cols)
    return k, jnp.minimum(jnp.minimum(dims, n), d_eff)


def parc_from_stats(fs: FeatureStats, *, dims: int = 32, pca: str = "randomized", method: str = "auto",
                    bins: int = 1 << 20):
    """PARC from the shared statistics (see `parc`)."""
    if pca not in PCA_MODES:
        raise ValueError(f"pca must be one of {PCA_MODES}, got {pca!r}")
    k, k_valid = _dims(dims, *fs.xc.shape, fs.labels.n, fs.d_eff)
    if pca == "exact":
        z = exact_pca_scores(fs, k)
    else:
        z = randomized_pca_scores(fs.xc, k, fs.labels.n, fs.d_eff)
    return parc_from_scores(z, fs.labels, k_valid, method=method, bins=bins)


@partial(jax.jit, static_argnames=("num_classes", "dims", "pca", "method", "bins"))
def parc(features, labels, *, num_classes: int, sample_mask=None, feature_mask=None, dims: int = 32,
         pca: str = "randomized", method: str = "auto", bins: int = 1 << 20):
    """PARC: Spearman correlation of the pairwise feature and label dissimilarities, x 100.

    Bolya et al., NeurIPS 2021. Reduce the features to min(dims, n, d) principal components,
    standardise each component (mean 0, variance 1), take the dissimilarity of samples i, j as
    1 - Pearson r of their rows, the labels' as 1 - Pearson r of their one-hot rows (0 within a
    class, C/(C-1) between classes), and return 100 x Spearman rho of the two over all pairs
    i < j (in [-100, 100]).

    Only the ranks of the feature dissimilarities against a two-valued label dissimilarity
    matter, so rho is computed from rank sums: `method="sort"` sorts the N(N-1)/2 values of the
    pairs i < j (exact, ties as mid-ranks; memory O(N^2)); `method="histogram"` bins them into `bins` equal bins of
    [0, 2], built from GEMM tiles of pairs of row blocks (memory O(block^2) - the large-N path; pairs in
    one bin count as tied, a relative error below ~1e-6 at the default 2^20 bins); "auto" sorts
    up to N = 4096 and bins above.

    Args:
      features: [N, D] float features.
      labels: [N] int labels in [0, num_classes).
      num_classes: C (static).
      sample_mask: optional [N] 0/1 weights.
      feature_mask: optional [D] 0/1 weights (padding columns must come last for the randomized
        PCA, as `jscore.batch` pads).
      dims: PCA dimensions (static; default 32 as in the paper).
      pca: "randomized" (default; the published code's scikit-learn PCA(svd_solver="randomized",
        random_state=1919, iterated_power=1), reproduced with the same Gaussian test matrix) or
        "exact" (the paper's PCA, from the shared eigendecomposition).
      method, bins: see above (static).

    Returns:
      scalar PARC (higher is better).

    Example:
      >>> parc(features, labels, num_classes=4)

    Differences from the published code: the label dissimilarities are the exact two values
    (np.corrcoef's round-off makes some within-class values 2.2e-16 instead of 0, splitting
    their ties by class); component signs follow scikit-learn >= 1.5 (largest loading positive;
    older scikit-learn chose them from the scores, and PARC depends on these signs through the
    row centring); when n < d the randomized PCA's test matrix is indexed by sample, so the
    value then depends on the sample order, as the published code's does (pca="exact" does not).
    """
    if pca == "exact":
        fs = feature_stats(features, labels, num_classes=num_classes, sample_mask=sample_mask,
                           feature_mask=feature_mask, equilibrate=False)
        return parc_from_stats(fs, dims=dims, pca=pca, method=method, bins=bins)
    xc, ls, d_eff = centred_features(features, labels, num_classes=num_classes, sample_mask=sample_mask,
                                     feature_mask=feature_mask)
    k, k_valid = _dims(dims, *xc.shape, ls.n, d_eff)
    z = randomized_pca_scores(xc, k, ls.n, d_eff)
    return parc_from_scores(z, ls, k_valid, method=method, bins=bins)
