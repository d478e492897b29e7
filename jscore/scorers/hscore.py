"""H-score (Bao et al., "An Information-theoretic Approach to Transferability in Task Transfer
Learning", ICIP 2019)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jscore._numerics import eigh_descending, mm, safe_div
from jscore.stats import FeatureStats, default_rcond, feature_stats, rank_mask


def _pcg_quadratic(xs, d, evecs, evals, kept, floor, ridge, steps: int, col=None):
    """[C] the quadratic forms d_c^T S^+ d_c for the rows d_c of d [C, D], S = xs^T xs.

    Start from the pseudo-inverse over the kept eigenpairs of the Gram, then run up to `steps`
    conjugate-gradient steps on S x = d with S applied through the data (O(N D C) each; fewer
    once no class's value gains more than 4 eps of itself), preconditioned by the Gram's
    eigendecomposition with its eigenvalues floored at `floor` (so directions the float32 Gram
    cannot resolve are still searched). Each iterate is scored in
    the variational form 2 d^T x - |xs x|^2, which never exceeds d^T S^+ d and rises towards it
    (error quadratic in that of x); the best iterate is kept, so a breakdown of the float32
    recursion on exactly singular directions cannot spoil the result.

    `col` [D] (optional): the eigenpairs are those of the unscaled scatter S0 with
    S = diag(col)^-1 S0 diag(col)^-1, so the preconditioner is diag(col) V w V^T diag(col)."""
    inv = 1 / jnp.maximum(evals, floor)
    inv_kept = jnp.where(kept, 1 / jnp.where(kept, evals, 1), 0)
    col = jnp.ones(xs.shape[1], xs.dtype) if col is None else col

    def prec(r, w):
        return mm(mm(r * col[None, :], evecs) * w[None, :], evecs.T) * col[None, :]

    def op(p):
        return mm(mm(xs, p.T).T, xs) + ridge * p

    def rowdot(a, b):
        return jnp.sum(a * b, axis=1)

    def value(x):
        return 2 * rowdot(d, x) - jnp.sum(mm(xs, x.T) ** 2, axis=0) - ridge * rowdot(x, x)

    x = prec(d, inv_kept)
    r = d - op(x)
    z = prec(r, inv)
    rz = rowdot(r, z)

    tiny = 4 * jnp.finfo(xs.dtype).eps

    def body(state):
        x, r, p, rz, best, _, step = state
        q = op(p)
        a = safe_div(rz, rowdot(p, q))
        x = x + a[:, None] * p
        r = r - a[:, None] * q
        z = prec(r, inv)
        rz_new = rowdot(r, z)
        val = value(x)
        new_best = jnp.where(val > best, val, best)  # NaN (non-finite input) stays in `best` below
        # Gains below a few eps of |H_c| are the value's own round-off: no class moves any more.
        moving = jnp.any(new_best - best > tiny * jnp.abs(new_best))
        return x, r, z + safe_div(rz_new, rz)[:, None] * p, rz_new, new_best, moving, step + 1

    def running(state):
        return state[5] & (state[6] < steps)

    best0 = value(x)
    best = lax.while_loop(running, body, (x, r, z, rz, best0, jnp.asarray(True), 0))[4]
    return best + 0 * best0  # NaN in, NaN out


def hscore_from_stats(fs: FeatureStats, *, rcond: float | None = None, refine_steps: int = 32):
    """H-score from the shared decomposition (see `hscore`).

    Default (rcond None): H-score does not change when a column of the features is scaled, so it
    is computed from the column-equilibrated decomposition (`fs.eq_*`). In the scatter path
    (N > D) the solves x_c = S^+ d_c (d_c = mu_c - mu, equilibrated) are refined by
    `refine_steps` conjugate-gradient steps against the data, preconditioned by the Gram's
    eigendecomposition, and H is taken in the variational form
    sum_c n_c (2 d_c^T x_c - |Xs x_c|^2), whose error is quadratic in that of x_c: the float32
    Gram's round-off (about eps * its largest eigenvalue) then no longer limits the result.
    With an explicit `rcond`, eigenvalues of the covariance below rcond * the largest are dropped
    exactly (no refinement), from `fs.evals` when present. Streamed statistics (`fs.streamed`)
    take the pseudo-inverse of the accumulated equilibrated scatter, without refinement.

    Without the equilibrated decomposition (`jscore.score` computes only the plain one when
    other scores need it), the same refinement runs on the equilibrated data, preconditioned by
    the plain decomposition mapped through the column scales (`_hscore_plain_refined`): one
    D x D eigendecomposition fewer.
    """
    counts = fs.labels.counts
    if rcond is None and fs.eq_evals is None and fs.evals is not None and not fs.streamed:
        return _hscore_plain_refined(fs, refine_steps)
    if rcond is not None or fs.eq_evals is None:
        if fs.evals is not None:
            kept = fs.kept if rcond is None else rank_mask(fs.evals, rcond)
            inv = jnp.where(kept, 1 / jnp.where(kept, fs.evals, 1), 0)
            return jnp.sum(counts[:, None] * fs.class_proj**2 * inv[None, :])
    kept = fs.eq_kept if rcond is None else rank_mask(fs.eq_evals, rcond)
    onehot = fs.labels.onehot
    if fs.is_gram or fs.streamed or rcond is not None:
        if fs.is_gram:
            return _span_hscore(onehot, fs.eq_evecs, kept, counts)
        if fs.streamed:  # no samples to refine against: the pseudo-inverse of the accumulated scatter
            d = fs.class_dev / fs.col_scale[None, :]
        else:
            xs = fs.xc / fs.col_scale[None, :]
            d = safe_div(mm(onehot.T, xs), counts[:, None])
        proj = mm(d, fs.eq_evecs)
        inv = jnp.where(kept, 1 / jnp.where(kept, fs.eq_evals, 1), 0)
        return jnp.sum(counts[:, None] * proj**2 * inv[None, :])
    xs = fs.xc / fs.col_scale[None, :]
    return _refined_hscore(fs, xs, fs.eq_evecs, fs.eq_evals, kept, jnp.max(fs.eq_evals), refine_steps)


def _span_hscore(onehot, u, kept, counts):
    """Gram path: H = sum_c |U_kept^T e_c|^2 / n_c (only the span of the kept directions
    matters). onehot [N, C], u [N, N] eigenvectors of the Gram, kept [N], counts [C]."""
    proj = mm(onehot.T, u) * kept[None, :]
    return jnp.sum(safe_div(jnp.sum(proj**2, axis=1), counts))


def _refined_hscore(fs: FeatureStats, xs, evecs, evals, kept, top, refine_steps: int, col=None):
    """Scatter path: sum_c n_c d_c^T S^+ d_c, S = xs^T xs (xs [N, D] the equilibrated centred
    features, d_c their class-mean deviations), by `_pcg_quadratic` from the eigenpairs
    (evecs, evals, kept; mapped through `col` when they are those of the unscaled scatter).
    `top` is S's largest eigenvalue (for the ridge)."""
    counts = fs.labels.counts
    d = safe_div(mm(fs.labels.onehot.T, xs), counts[:, None])  # [C, D]
    floor = jnp.min(jnp.where(kept, evals, jnp.max(evals)))
    # What float32 data can resolve: singular values above 3 sqrt(max(N, D)) eps of the largest;
    # below, the directions are the features' own rounding, and a ridge there keeps them out.
    rc = default_rcond(*xs.shape, xs.dtype)
    ridge = (rc / 3) ** 2 * top
    return jnp.sum(counts * _pcg_quadratic(xs, d, evecs, evals, kept, floor, ridge, refine_steps, col=col))


def _hscore_plain_refined(fs: FeatureStats, refine_steps: int):
    """H-score from the plain decomposition (`fs.evals`, `fs.evecs`), refined against the
    column-equilibrated data: S_eq = Dc^-1 S Dc^-1 with Dc = diag(col_scale), so
    Dc V Lambda^+ V^T Dc is its pseudo-inverse up to the plain Gram's round-off, and conjugate
    gradients against the data remove that round-off as in the equilibrated path."""
    col = fs.col_scale
    xs = fs.xc / col[None, :]
    if fs.is_gram:
        # N <= D: the rank cut-off decides, and it must see equilibrated columns (a plain Gram
        # drops the directions of small columns); its N x N decomposition is the cheap one.
        lam, u = eigh_descending(mm(xs, xs.T))
        kept = rank_mask(lam, default_rcond(*xs.shape, xs.dtype))
        return _span_hscore(fs.labels.onehot, u, kept, fs.labels.counts)
    # The ridge needs S_eq's largest eigenvalue: a few power steps through the data (from the
    # mapped leading direction) estimate it well within the factor the ridge can afford.
    u = fs.evecs[:, 0] / col
    u = u / jnp.linalg.norm(u)
    for _ in range(6):
        u = mm(mm(xs, u), xs)
        top = jnp.linalg.norm(u)
        u = u / jnp.where(top > 0, top, 1)
    return _refined_hscore(fs, xs, fs.evecs, fs.evals, fs.kept, top, refine_steps, col=col)


@partial(jax.jit, static_argnames=("num_classes", "rcond"))
def hscore(features, labels, *, num_classes: int, sample_mask=None, feature_mask=None,
           rcond: float | None = None):
    """H-score: how much of the feature covariance the class means explain.

    Bao et al., ICIP 2019. H(f) = tr(cov(f)^+ cov(E[f | y])), with cov(f) the feature covariance
    and cov(E[f|y]) = sum_c (n_c / n)(mu_c - mu)(mu_c - mu)^T the between-class covariance
    (ddof 0 for both; the published code's ddof 1 cancels). 0 <= H <= C - 1.

    Args:
      features: [N, D] float features.
      labels: [N] int labels in [0, num_classes).
      num_classes: C (static). Absent classes contribute 0.
      sample_mask: optional [N] 0/1 weights; masked rows are exactly neutral.
      feature_mask: optional [D] 0/1 weights; masked columns are exactly neutral.
      rcond: None (default): the column-equilibrated decomposition refined against the data
        (accurate in float32 on badly scaled features, see `hscore_from_stats`); a float:
        eigenvalues of the covariance below rcond * the largest are treated as zero, exactly.

    Returns:
      scalar H-score (higher is better).

    Example:
      >>> hscore(jnp.array([[0.], [1.], [10.], [11.]]), jnp.array([0, 0, 1, 1]), num_classes=2)
      # = 25 / 25.25 ~= 0.990

    Non-finite features give NaN. With N <= D + 1 the value is C - 1 for any features in general
    position (`jscore.score` warns).

    Differences from the reference code: the pseudo-inverse is taken through the eigendecomposition
    of the smaller, column-equilibrated Gram and refined against the data, instead of
    `pinv(rcond=1e-15)` of the float64 covariance, so float32 agrees with the float64 definition on
    badly scaled features and the bound C - 1 holds on ill-conditioned (e.g. ViT) features; C is
    `num_classes`, not max(label) + 1.
    """
    fs = feature_stats(features, labels, num_classes=num_classes, sample_mask=sample_mask,
                       feature_mask=feature_mask, spectrum=rcond is not None, equilibrate=rcond is None)
    return hscore_from_stats(fs, rcond=rcond)
