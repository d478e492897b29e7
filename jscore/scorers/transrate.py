"""TransRate (Huang et al., "Frustratingly Easy Transferability Estimation", ICML 2022): the
coding rate of the features minus their class-conditional coding rate."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jscore._numerics import mm, safe_div
from jscore._pairwise import pad_rows
from jscore.stats import FeatureStats, LabelStats, centred_features

CLASS_WEIGHTS = ("uniform", "proportional")


def cholesky_logdet(a):
    """log det of a symmetric positive definite a [k, k]: twice the sum of the log diagonal of its
    Cholesky factor."""
    return 2 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(a))))


def class_scatters_logdet(xc, ls: LabelStats, coef, *, block: int = 256, total_coef=None):
    """[C] log det(I + coef_c Z_c^T Z_c), Z_c the rows of class c in xc [N, D] (coef [C]).

    The rows are sorted by class once; each class's scatter is summed over its own rows in
    blocks of `block` (a loop with the class's trip count), so the total cost is about
    (N + C * block) D^2 plus C Cholesky factorisations; two D x D matrices are held (the class's
    scatter and the running sum of them).

    With `total_coef` (a scalar) it returns ([C] log-dets, log det(I + total_coef Z^T Z)): every
    valid row (0/1 sample weights, a label in [0, C)) belongs to one class, so the class scatters
    sum to the whole scatter Z^T Z, which then costs one more Cholesky factor and no product of
    its own.
    """
    n, d = xc.shape
    n_classes = ls.onehot.shape[1]
    # A row with no class (masked, or a label outside [0, C) in an unvalidated call) sorts last.
    cls = jnp.where(jnp.sum(ls.onehot, axis=1) > 0, jnp.argmax(ls.onehot, axis=1), n_classes)
    order = jnp.argsort(cls, stable=True)
    xs = pad_rows(jnp.concatenate([xc[order], jnp.zeros((block, d), xc.dtype)]), block)
    counts = jnp.round(ls.counts).astype(jnp.int32)
    starts = jnp.cumsum(counts) - counts
    eye = jnp.eye(d, dtype=xc.dtype)

    def one_class(total, c):
        start, count = starts[c], counts[c]

        def body(t, scatter):
            rows = jax.lax.dynamic_slice_in_dim(xs, start + t * block, block)
            rows = rows * (t * block + jnp.arange(block) < count)[:, None]
            return scatter + mm(rows.T, rows)

        scatter = jax.lax.fori_loop(0, (count + block - 1) // block, body, jnp.zeros((d, d), xc.dtype))
        return total + scatter, cholesky_logdet(eye + coef[c] * scatter)

    total, logdets = jax.lax.scan(one_class, jnp.zeros((d, d), xc.dtype), jnp.arange(n_classes))
    return logdets if total_coef is None else (logdets, cholesky_logdet(eye + total_coef * total))


def class_gram_logdet(xc, ls: LabelStats, coef, gram=None):
    """[C] log det(I + coef_c Z_c^T Z_c) from the sample side: the same as
    log det(I_{n_c} + coef_c Z_c Z_c^T), an n_c x n_c matrix (Sylvester's determinant identity).

    One Cholesky factor of the N x N matrix A = I + [c_i = c_j] coef_{c_i} (Z Z^T)_{ij} gives all
    of them: A is block diagonal up to a permutation of the rows, its factor keeps that pattern
    (an entry L_ij, i > j, of rows of different classes is a sum of products that each pair rows of
    different classes, hence 0), so each diagonal entry of L is that of its class's own block
    factor and log det of class c is the sum of 2 log L_ii over the rows of c. Costs N^3 / 3 plus
    the N x N Gram (pass `gram` = Z Z^T when already formed), against C D^3 / 3 plus N D^2 on the
    feature side: the cheaper one when N is below about D.
    """
    n_classes = ls.onehot.shape[1]
    valid = ls.weights > 0
    cls = jnp.where(valid, jnp.argmax(ls.onehot, axis=1), n_classes)
    if gram is None:
        gram = mm(xc, xc.T)
    row_coef = jnp.concatenate([coef, jnp.zeros((1,), coef.dtype)])[cls]
    same = (cls[:, None] == cls[None, :]) & valid[:, None] & valid[None, :]
    a = jnp.eye(xc.shape[0], dtype=xc.dtype) + jnp.where(same, row_coef[:, None] * gram, 0)
    log_diag = 2 * jnp.log(jnp.diagonal(jnp.linalg.cholesky(a)))
    member = (cls[:, None] == jnp.arange(n_classes)[None, :]).astype(xc.dtype)  # [N, C]
    return mm(jnp.where(valid, log_diag, 0), member)


def sample_side_is_cheaper(n: int, d: int, num_classes: int, block: int = 256) -> bool:
    """Static choice of `class_gram_logdet` (N x N) over `class_scatters_logdet` (C times D x D)
    by their flop counts."""
    sample_side = 2 * n * n * d + n**3 / 3
    feature_side = 2 * (n + num_classes * block) * d * d + num_classes * d**3 / 3
    return sample_side < feature_side


def _class_logdet(xc, ls: LabelStats, coef, gram=None, d_eff=None):
    """The sample side when it is cheaper and every class has at most d_eff rows (its n_c x n_c
    matrix then has full rank; beyond that its unit eigenvalues drown in float32 round-off of
    the large ones, and the feature side is the accurate one), else the feature side. The
    runtime test is a `lax.cond` (under vmap both sides are computed)."""
    n, d = xc.shape
    if not sample_side_is_cheaper(n, d, ls.onehot.shape[1]):
        return class_scatters_logdet(xc, ls, coef)
    if d_eff is None:
        return class_gram_logdet(xc, ls, coef, gram=gram)
    return jax.lax.cond(jnp.max(ls.counts) <= d_eff,
                        lambda: class_gram_logdet(xc, ls, coef, gram=gram),
                        lambda: class_scatters_logdet(xc, ls, coef))


def _total_rate(xc, n, eps, gram=None):
    """R(Z) = 1/2 log det(I + Z^T Z / (n eps)) by a Cholesky factor of the smaller side (`gram`:
    that side's Gram when already formed)."""
    if gram is None:
        gram = mm(xc, xc.T) if xc.shape[0] <= xc.shape[1] else mm(xc.T, xc)
    return 0.5 * cholesky_logdet(jnp.eye(gram.shape[0], dtype=xc.dtype) + gram / (n * eps))


def transrate_from_stats(fs: FeatureStats, *, eps: float = 1e-4, class_weights: str = "uniform"):
    """TransRate from the shared decomposition (see `transrate`): R(Z) from its eigenvalues."""
    # R(Z) = 1/2 log det(I + Z^T Z / (n eps)) = 1/2 sum_k log(1 + s_k / (n eps)).
    rate = 0.5 * jnp.sum(jnp.log1p(fs.evals / (fs.labels.n * eps)))
    if fs.streamed:
        if fs.class_scatter is None:
            raise ValueError("streamed transrate needs the per-class scatters (jscore.moments with class_scatter=True)")
        return _transrate(None, fs.labels, rate, eps=eps, class_weights=class_weights,
                          logdet=lambda coef: streamed_class_logdet(fs, coef))
    return _transrate(fs.xc, fs.labels, rate, eps=eps, class_weights=class_weights, d_eff=fs.d_eff)


def streamed_class_logdet(fs: FeatureStats, coef):
    """[C] log det(I + coef_c Z_c^T Z_c) from streamed statistics: the rows of class c centred on
    the global mean have the scatter Z_c^T Z_c = W_c + n_c (mu_c - mu)(mu_c - mu)^T."""
    eye = jnp.eye(fs.class_dev.shape[1], dtype=fs.class_dev.dtype)

    def one_class(args):
        w_c, d_c, n_c, k_c = args
        return cholesky_logdet(eye + k_c * (w_c + n_c * d_c[:, None] * d_c[None, :]))

    return jax.lax.map(one_class, (fs.class_scatter, fs.class_dev, fs.labels.counts, coef))


def class_coef(ls: LabelStats, eps):
    """[C] 1 / (n_c eps) for the present classes, 0 for absent ones."""
    present = ls.counts > 0
    return jnp.where(present, 1 / (jnp.where(present, ls.counts, 1) * eps), 0)


def _transrate(xc, ls: LabelStats, rate, *, eps, class_weights, logdet=None, gram=None, d_eff=None):
    if class_weights not in CLASS_WEIGHTS:
        raise ValueError(f"class_weights must be one of {CLASS_WEIGHTS}, got {class_weights!r}")
    present = ls.counts > 0
    coef = class_coef(ls, eps)
    class_rates = 0.5 * (_class_logdet(xc, ls, coef, gram, d_eff) if logdet is None else logdet(coef))
    if class_weights == "uniform":
        weights = present.astype(rate.dtype) / jnp.sum(present).astype(rate.dtype)
    else:
        weights = safe_div(ls.counts, ls.n)
    return rate - jnp.sum(jnp.where(present, weights * class_rates, 0))


@partial(jax.jit, static_argnames=("num_classes", "eps", "class_weights"))
def transrate(features, labels, *, num_classes: int, sample_mask=None, feature_mask=None,
              eps: float = 1e-4, class_weights: str = "uniform"):
    """TransRate: coding rate of the features minus its average over the classes.

    Huang et al., ICML 2022. With Z the centred features (n rows) and Z_c the rows of class c,
    R(Z) = 1/2 log det(I + Z^T Z / (n eps)) and
    TransRate = R(Z) - sum_c w_c R(Z_c)  with R(Z_c) = 1/2 log det(I + Z_c^T Z_c / (n_c eps)).

    Args:
      features: [N, D] float features.
      labels: [N] int labels in [0, num_classes).
      num_classes: C (static). Absent classes are left out.
      sample_mask: optional [N] 0/1 weights.
      feature_mask: optional [D] 0/1 weights.
      eps: distortion (default 1e-4, the published code's; it enters as 1/(n eps)).
      class_weights: "uniform" (default, the published code: w_c = 1/K over the K present
        classes) or "proportional" (the paper's expected rate, w_c = n_c / n).

    Returns:
      scalar TransRate (nats; higher is better).

    Example:
      >>> transrate(features, labels, num_classes=4)

    Differences from the published code: it divides by K = y.max() + 1 (absent classes count as
    rate 0); here K is the number of present classes. Log-determinants come from Cholesky factors
    instead of `slogdet` (LU). The class rates come either from C per-class D x D scatters, whose
    sum is the whole scatter Z^T Z, so R(Z) costs one more Cholesky factor and no product, or,
    when cheaper (N below about D), all at once from one N x N Cholesky of the class-masked sample
    Gram (`class_gram_logdet`; same values by Sylvester's identity), R(Z) then from a Cholesky
    factor of the smaller side's Gram (`jscore.score` takes R(Z) from the eigenvalues of the
    shared decomposition instead).
    """
    xc, ls, d_eff = centred_features(features, labels, num_classes=num_classes, sample_mask=sample_mask,
                                     feature_mask=feature_mask)
    n, d = xc.shape
    if not sample_side_is_cheaper(n, d, num_classes):  # the class scatters also give R(Z)
        class_ld, total_ld = class_scatters_logdet(xc, ls, class_coef(ls, eps), total_coef=1 / (ls.n * eps))
        return _transrate(xc, ls, 0.5 * total_ld, eps=eps, class_weights=class_weights, logdet=lambda _: class_ld)
    gram = mm(xc, xc.T) if n <= d else None
    return _transrate(xc, ls, _total_rate(xc, ls.n, eps, gram), eps=eps, class_weights=class_weights,
                      gram=gram, d_eff=d_eff)

