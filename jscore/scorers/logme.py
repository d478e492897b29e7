"""LogME, the logarithm of the maximum evidence (You et al., "LogME: Practical Assessment of
Pre-trained Models for Transfer Learning", ICML 2021; "Ranking and Tuning Pre-trained Models",
JMLR 2022)."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jscore._numerics import mm
from jscore.stats import FeatureStats, feature_stats, nan_if_nonfinite


class _Spectrum(NamedTuple):
    """What every target's evidence needs, from the eigendecomposition of the CENTRED scatter.

    LogME's model has no bias, so it needs the uncentred F = Xc + 1 mu^T. Its column space lies
    in span(U, 1) (U: left singular vectors of Xc, and 1 is orthogonal to them because Xc is
    centred), where F F^T is an arrowhead matrix: diagonal on U plus one row and column for 1.
    Arrowhead systems solve exactly in O(r) through a Schur complement that has no cancellation,
    so no second eigendecomposition is needed.
    lam [r]: eigenvalues of S (0 where dropped); z [r]: V^T mu; z_null_sq: |mu outside V|^2;
    n: number of samples; d: number of feature dimensions.
    """

    lam: jax.Array
    z: jax.Array
    z_null_sq: jax.Array
    n: jax.Array
    d: jax.Array


class _Target(NamedTuple):
    """One target column y: h = U^T y [r], t = 1^T y, and perp_sq = |y outside span(U, 1)|^2."""

    h: jax.Array
    t: jax.Array
    perp_sq: jax.Array


def _scale(fs: FeatureStats):
    return jnp.ones((), fs.xc.dtype) if fs.scale is None else fs.scale


def _starts(fs: FeatureStats):
    """[2] initial alphas in units of Xc / scale: 1 (scale-free) and 1 / scale^2, which is the
    published start alpha = beta = 1 in the features' own units. LogME keeps the larger evidence,
    so it is the published value wherever that start finds the maximum, and it does not depend on
    a global scale of the features."""
    s = _scale(fs)
    return jnp.stack([jnp.ones_like(s), 1 / s**2])


def _spectrum(fs: FeatureStats) -> _Spectrum:
    """In units of Xc / scale (a power of two): the maximised evidence does not change when F is
    multiplied by a constant (alpha absorbs it), and the fixed point then starts from alpha = beta
    = 1 on data of unit size, whatever the features' scale."""
    s = _scale(fs)
    lam = jnp.where(fs.kept, fs.evals, 0) / s**2
    return _Spectrum(lam, fs.mean_proj / s, fs.mean_null_sq / s**2, fs.labels.n, fs.d_eff)


def _targets(sp: _Spectrum, g, t, yy, perp_sq=None) -> _Target:
    """K targets from g = V^T Xc^T y [K, r] (= sqrt(lam) U^T y), t = sum(y) [K], yy = y^T y [K],
    and perp_sq [K] when it was computed directly (else from yy, which cancels when y lies
    almost in the span)."""
    ok = sp.lam > 0
    h = jnp.where(ok, g / jnp.where(ok, jnp.sqrt(sp.lam), 1), 0)
    if perp_sq is None:
        perp_sq = yy - jnp.sum(h**2, axis=1) - t**2 / sp.n
    return _Target(h, t, jnp.maximum(perp_sq, 0))


def _perp_sq_gram(fs: FeatureStats, y):
    """[K] |y outside span(U_kept, 1)|^2 for targets y [N, K], computed as a vector (Gram path:
    U is at hand), exact even when N < D makes the span everything."""
    u = jnp.where(fs.kept[None, :], fs.evecs, 0)
    w = fs.labels.weights
    resid = y - mm(u, mm(u.T, y)) - w[:, None] * (mm(w, y) / fs.labels.n)[None, :]
    return jnp.sum(resid**2, axis=0)


def _terms(sp: _Spectrum, tg: _Target, alpha, beta):
    """One fixed-point step's quantities for A = alpha I + beta F^T F, m = beta A^{-1} F^T y.

    In the orthonormal basis [U, 1/sqrt(n)], F = [U, e] B with B = [sqrt(lam) V^T; sqrt(n) mu^T],
    and (I + c F F^T)^{-1}, c = beta / alpha, gives the residual y - F m = (I + c F F^T)^{-1} y.
    Returns (gamma, m^T m, ||y - F m||^2, log det A).
    """
    c = beta / alpha
    root_n = jnp.sqrt(sp.n)
    diag = 1 + c * sp.lam  # the arrowhead's diagonal
    arm = c * root_n * jnp.sqrt(sp.lam) * sp.z  # its last row / column
    # Schur complement of the corner: 1 + c n |mu|^2 - arm^T diag^{-1} arm, rearranged (no cancellation).
    schur = 1 + c * sp.n * (sp.z_null_sq + jnp.sum(sp.z**2 / diag))
    x_last = (tg.t / root_n - jnp.sum(arm * tg.h / diag)) / schur
    x_head = (tg.h - arm * x_last) / diag
    residual = tg.perp_sq + jnp.sum(x_head**2) + x_last**2
    # m = c B^T x: its squared norm, summed per direction.
    m_sq = c**2 * (jnp.sum((jnp.sqrt(sp.lam) * x_head + root_n * sp.z * x_last) ** 2)
                   + sp.n * sp.z_null_sq * x_last**2)
    gamma = (jnp.sum(c * sp.lam / diag)
             + c * sp.n * (sp.z_null_sq + jnp.sum(sp.z**2 / diag**2)) / schur)
    log_det = sp.d * jnp.log(alpha) + jnp.sum(jnp.log(diag)) + jnp.log(schur)
    return gamma, m_sq, residual, log_det


def _evidence(sp: _Spectrum, tg: _Target, *, max_iters: int, tol: float, alpha0=None):
    """Maximised log evidence / n of one target, by MacKay's fixed point in lax.while_loop.

    The evidence can have two stationary points (a fit, and w = 0 as alpha -> infinity); the
    fixed point is run from `alpha0` (each, a [S] array of starts; beta = 1) and the largest
    evidence is kept (default start alpha = beta = 1)."""
    if alpha0 is not None and alpha0.ndim:
        ev = jax.vmap(lambda a: _evidence_from(sp, tg, max_iters=max_iters, tol=tol, alpha0=a))(alpha0)
        # A start that overflowed (far from the data's scale) gives way to the others; NaN only
        # when every start did (non-finite input).
        ok = jnp.isfinite(ev)
        return jnp.where(ok.any(), jnp.max(jnp.where(ok, ev, -jnp.inf)), jnp.nan)
    if alpha0 is not None:
        return _evidence_from(sp, tg, max_iters=max_iters, tol=tol, alpha0=alpha0)
    return _evidence_from(sp, tg, max_iters=max_iters, tol=tol, alpha0=jnp.ones((), sp.lam.dtype))


def _evidence_from(sp: _Spectrum, tg: _Target, *, max_iters: int, tol: float, alpha0):
    dtype = sp.lam.dtype
    tiny = jnp.finfo(dtype).tiny

    def step(state):
        alpha, beta, _, it = state
        gamma, m_sq, residual, _ = _terms(sp, tg, alpha, beta)
        new_alpha = gamma / jnp.maximum(m_sq, tiny)
        new_beta = (sp.n - gamma) / jnp.maximum(residual, tiny)
        change = jnp.abs(new_alpha / new_beta - alpha / beta) / (alpha / beta)
        return new_alpha, new_beta, change, it + 1

    def running(state):
        _, _, change, it = state
        return (it < max_iters) & (change >= tol)

    one = jnp.ones((), dtype)
    alpha, beta, _, _ = lax.while_loop(running, step, (alpha0.astype(dtype), one, jnp.asarray(jnp.inf, dtype), 0))
    _, m_sq, residual, log_det = _terms(sp, tg, alpha, beta)
    evidence = (sp.d / 2 * jnp.log(alpha) + sp.n / 2 * jnp.log(beta) - log_det / 2
                - beta / 2 * residual - alpha / 2 * m_sq - sp.n / 2 * jnp.log(2 * jnp.pi))
    return evidence / sp.n


def logme_from_stats(fs: FeatureStats, *, max_iters: int = 100, tol: float = 1e-5):
    """LogME from the shared decomposition: mean over present classes of the per-class evidence."""
    sp = _spectrum(fs)
    counts = fs.labels.counts
    # One-hot target of class c: Xc^T y = n_c (mu_c - mu), sum(y) = y^T y = n_c.
    perp = _perp_sq_gram(fs, fs.labels.onehot) if fs.is_gram else None
    targets = _targets(sp, counts[:, None] * fs.class_proj / _scale(fs), counts, counts, perp)
    starts = _starts(fs)
    per_class = jax.vmap(lambda tg: _evidence(sp, tg, max_iters=max_iters, tol=tol, alpha0=starts))(targets)
    present = counts > 0
    return jnp.sum(jnp.where(present, per_class, 0)) / jnp.sum(present)


@partial(jax.jit, static_argnames=("num_classes", "max_iters", "tol"))
def logme(features, labels, *, num_classes: int, sample_mask=None, feature_mask=None,
          max_iters: int = 100, tol: float = 1e-5):
    """LogME: the maximum log evidence of a Bayesian linear model from features to one-hot labels.

    You et al., ICML 2021 / JMLR 2022. For each class c, y = [labels == c] and the model
    y = F w + e, w ~ N(0, I / alpha), e ~ N(0, I / beta), F the (uncentred) features. The evidence
    L(alpha, beta) = D/2 log alpha + n/2 log beta - 1/2 log det A - beta/2 ||y - F m||^2
    - alpha/2 m^T m - n/2 log 2 pi, A = alpha I + beta F^T F, m = beta A^{-1} F^T y, is maximised
    by MacKay's fixed point alpha = gamma / m^T m, beta = (n - gamma) / ||y - F m||^2,
    gamma = sum_i beta s_i / (alpha + beta s_i). LogME = mean over present classes of L / n.

    Args:
      features: [N, D] float features.
      labels: [N] int labels in [0, num_classes).
      num_classes: C (static). Absent classes are left out of the mean.
      sample_mask: optional [N] 0/1 weights.
      feature_mask: optional [D] 0/1 weights (D counts only the valid columns).
      max_iters: fixed-point iterations at most (static).
      tol: stop when alpha / beta changes by less than this, relatively (static).

    Returns:
      scalar LogME (higher is better).

    Example:
      >>> logme(features, labels, num_classes=10)

    Differences from the reference code (thuml/LogME): log det A sums over all D eigenvalues of
    F^T F, so the zero eigenvalues of rank-deficient features (N < D, constant or duplicated
    columns) contribute log alpha each, which the reference drops; it iterates to `tol` (1e-5)
    rather than 1e-2 / 11 steps and adds no 1e-5 to the denominators; one eigendecomposition of
    the centred features is shared by all classes (and by the other scores): the uncentred
    model is solved exactly in that basis (see `_terms`).
    """
    fs = feature_stats(features, labels, num_classes=num_classes, sample_mask=sample_mask,
                       feature_mask=feature_mask, equilibrate=False)
    return logme_from_stats(fs, max_iters=max_iters, tol=tol)


@partial(jax.jit, static_argnames=("max_iters", "tol"))
def logme_regression(features, targets, *, sample_mask=None, feature_mask=None,
                     max_iters: int = 100, tol: float = 1e-5):
    """LogME for regression or multi-label targets: mean over the K target columns of the
    maximum log evidence / n (same model and fixed point as `logme`).

    Args:
      features: [N, D] float features.
      targets: [N, K] float targets (K >= 1), e.g. multi-hot labels or regression values.
      sample_mask: optional [N] 0/1 weights.
      feature_mask: optional [D] 0/1 weights.

    Returns:
      scalar mean evidence per sample.
    """
    targets = jnp.asarray(targets)
    if targets.ndim == 1:
        targets = targets[:, None]
    if targets.ndim != 2 or targets.shape[0] != jnp.shape(features)[0]:
        raise ValueError(f"targets must be [N, K] with N = {jnp.shape(features)[0]}, got {targets.shape}")
    labels = jnp.zeros((targets.shape[0],), jnp.int32)
    fs = feature_stats(features, labels, num_classes=1, sample_mask=sample_mask, feature_mask=feature_mask,
                       equilibrate=False)
    targets, poison = nan_if_nonfinite(targets.astype(fs.xc.dtype), fs.labels.weights[:, None] > 0)
    sp = _spectrum(fs)
    y = targets.astype(fs.xc.dtype) * fs.labels.weights[:, None]
    g = _project_rows(fs, mm(y.T, fs.xc)) / _scale(fs)  # [K, r]; y^T Xc, not (Xc^T y)^T: no transposed copy of Xc
    perp = _perp_sq_gram(fs, y) if fs.is_gram else None
    tg = _targets(sp, g, y.sum(0), jnp.sum(y**2, axis=0), perp)
    starts = _starts(fs)
    return jnp.mean(jax.vmap(lambda t: _evidence(sp, t, max_iters=max_iters, tol=tol, alpha0=starts))(tg)) + poison


def _project_rows(fs: FeatureStats, vectors):
    """[K, D] vectors in the span of the centred data -> [K, r] coordinates in the eigenbasis V."""
    if fs.is_gram:
        root = jnp.where(fs.kept, jnp.sqrt(fs.evals), 1)
        return jnp.where(fs.kept, mm(mm(vectors, fs.xc.T), fs.evecs) / root, 0)
    return jnp.where(fs.kept, mm(vectors, fs.evecs), 0)
