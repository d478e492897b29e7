"""Statistics shared by the scores, computed once per feature matrix.

`feature_stats` centres the features, forms the Gram matrix of the smaller side (N x N when
N <= D, the D x D scatter otherwise), eigendecomposes it and projects the class means and the
global mean onto the eigenbasis. H-score, regularised H-score, LogME, GBC and N-LEEP all derive
from this one decomposition, so scoring all of them costs little more than the dearest one.

`SourceStats` holds the joint table of source probabilities and target labels that LEEP and NCE
need; it is a sum over samples, so chunks and devices combine with `merge`.

Notation: n valid samples (sample-mask weight), C classes, D feature columns of which D_eff
valid, Xc the centred masked features, S = Xc^T Xc the scatter (no 1/n), r the number of
eigenpairs computed (N in the Gram path, D in the scatter path).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jscore._numerics import as_mask, eigh_descending, eps, mm, safe_div


class LabelStats(NamedTuple):
    """weights [N] (sample mask), onehot [N, C] (weighted), counts [C], n (scalar)."""

    weights: jax.Array
    onehot: jax.Array
    counts: jax.Array
    n: jax.Array


def label_stats(labels, num_classes: int, sample_mask, dtype) -> LabelStats:
    labels = jnp.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D [N], got shape {labels.shape}")
    w = as_mask(sample_mask, labels.shape[0], dtype)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype) * w[:, None]
    counts = onehot.sum(0)
    return LabelStats(w, onehot, counts, w.sum())


class FeatureStats(NamedTuple):
    """The shared decomposition of one feature matrix (see the module docstring).

    Attributes (all in the features' own units):
      labels: LabelStats.
      xc: [N, D] centred features, zero on masked rows and columns.
      mean: [D] mean of the valid rows (zero on masked columns).
      d_eff: scalar, number of valid feature columns.
      evals: [r] eigenvalues of S, descending, >= 0.
      evecs: [r, r] eigenvectors: U of Xc Xc^T (Gram path, r = N) or V of S (scatter path, r = D).
      kept: [r] bool, eigenvalues above the numerical-rank cut-off.
      class_proj: [C, r] V^T (mu_c - mu), zero for absent classes and dropped directions.
      mean_proj: [r] V^T mu on the kept directions.
      mean_null_sq: scalar, squared norm of the part of mu outside the kept directions.
      scale: scalar power of two, about the largest column's standard deviation; the
        decompositions are computed on Xc / scale (exact), so the results do not depend on a
        global scale of the features.
      col_scale: [D] powers of two, about each column's standard deviation (1 on masked and
        constant columns).
      eq_evals, eq_evecs, eq_kept: the same decomposition of the column-equilibrated features
        Xc / col_scale (for the scores that are invariant to column scales: H-score), None when
        not requested.

    The first ten fields are as before; `spectrum=False` leaves evals .. mean_null_sq None and
    `equilibrate=False` leaves the eq_* fields None.

    Streamed statistics (`jscore.moments.finalize`) keep no samples: `xc` is None and
    `labels.weights` / `labels.onehot` are None; they carry instead
      class_dev: [C, D] mu_c - mu (zero for absent classes),
      class_scatter: [C, D, D] within-class scatters sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T, or None,
      row_norm4: scalar sum_i |x_i - mu|^4 / scale^4 (Ledoit-Wolf), or None.

    pc: [N, D] the principal-component scores Xc V (features' units, columns in the order of
    `evals`) on the scatter path when the eigenvalues were re-measured from them (that product
    is formed anyway), else None; `kept_pc_scores` and `pc_scores` read it instead of forming it
    again.
    """

    labels: LabelStats
    xc: jax.Array
    mean: jax.Array
    d_eff: jax.Array
    evals: jax.Array
    evecs: jax.Array
    kept: jax.Array
    class_proj: jax.Array
    mean_proj: jax.Array
    mean_null_sq: jax.Array
    scale: jax.Array = None
    col_scale: jax.Array = None
    eq_evals: jax.Array = None
    eq_evecs: jax.Array = None
    eq_kept: jax.Array = None
    class_dev: jax.Array = None
    class_scatter: jax.Array = None
    row_norm4: jax.Array = None
    pc: jax.Array = None

    @property
    def is_gram(self) -> bool:
        return self.xc is not None and self.xc.shape[0] <= self.xc.shape[1]

    @property
    def streamed(self) -> bool:
        """True for statistics accumulated from chunks (no samples kept: see `jscore.moments`)."""
        return self.xc is None


def default_rcond(num_samples: int, num_features: int, dtype) -> float:
    """Relative eigenvalue cut-off of the numerical rank: 10 sqrt(max(N, D)) eps(dtype), about the
    round-off floor of the eigenvalues of a Gram matrix summed over max(N, D) terms (1.2e-4 in
    float32 at N = 10000; 2e-13 in float64). Used for eigenvalues taken from an eigendecomposition
    of a Gram matrix (the column-equilibrated one of `hscore`)."""
    return 10 * max(num_samples, num_features) ** 0.5 * eps(dtype)


def rank_mask(evals, rcond: float):
    """[r] bool: eigenvalues above rcond * the largest (and above zero)."""
    return evals > jnp.maximum(rcond * jnp.max(evals), jnp.finfo(evals.dtype).tiny)


def _matrix_for_labels(name: str, array, labels):
    """`array` [N, K] upcast to float32 (float64 stays), after checking its rank and that labels
    are [N]: shape errors surface at trace time, named."""
    array = jnp.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, {'D' if name == 'features' else 'Cs'}], got shape {array.shape}")
    if jnp.shape(labels) != array.shape[:1]:
        raise ValueError(f"labels have shape {jnp.shape(labels)}, expected ({array.shape[0]},) to match {name}")
    dtype = jnp.float64 if array.dtype == jnp.float64 else jnp.float32
    return array.astype(dtype), dtype


def power_of_two(x):
    """The power of two nearest to x > 0 (1 where x is 0): dividing by it is exact in floating point."""
    ok = x > 0
    return jnp.where(ok, jnp.exp2(jnp.round(jnp.log2(jnp.where(ok, x, 1)))), 1).astype(x.dtype)


def nan_if_nonfinite(x, valid):
    """(x with non-finite entries zeroed, a scalar that is NaN when any valid entry of x was
    non-finite and 0 otherwise). Adding that scalar to a result makes NaN in give NaN out."""
    finite = jnp.isfinite(x)
    poison = jnp.where(jnp.all(finite | ~valid), 0, jnp.nan).astype(x.dtype)
    return jnp.where(finite & valid, x, 0), poison


def feature_stats(features, labels, *, num_classes: int, sample_mask=None, feature_mask=None,
                  rcond: float | None = None, spectrum: bool = True,
                  equilibrate: bool = True, remeasure: bool = True) -> FeatureStats:
    """Centre, decompose and project once. features [N, D] float, labels [N] int.

    Global scale: the features are divided by a power of two near their largest column's standard
    deviation before anything is squared (exact), so scales from 1e-8 to 1e12 cost no accuracy and
    never overflow float32; results are mapped back to the features' units.
    Column scales: `equilibrate` also decomposes Xc / col_scale (powers of two per column, exact),
    for the scores that do not depend on column scales (H-score).
    Non-finite features: every array result is NaN (NaN in, NaN out).

    Args:
      rcond: relative eigenvalue cut-off of the numerical rank (default `default_rcond`).
      spectrum: compute the decomposition of Xc (static; LogME, GBC, N-LEEP, regularised H-score).
      equilibrate: compute the decomposition of the column-equilibrated Xc (static; H-score).
      remeasure: on the scatter path (N > D), re-measure every eigenvalue from the data (one more
        N x D x D product; static). Off, the eigenvalues are the float32 Gram's, whose errors are
        ~eps times the largest: right for scores that read only the leading directions (NCTI's
        top-64 PCA), wrong for the weak directions the others need.
    """
    x, dtype = _matrix_for_labels("features", features, labels)
    n_rows, n_cols = x.shape
    ls = label_stats(labels, num_classes, sample_mask, dtype)
    fmask = as_mask(feature_mask, n_cols, dtype)
    # Masks are weights, never slicing: padded rows and columns become exact zeros, NaN included.
    valid = (ls.weights[:, None] > 0) & (fmask[None, :] > 0)
    x, poison = nan_if_nonfinite(x, valid)
    x = x * fmask[None, :]
    mean = safe_div(mm(ls.weights, x), ls.n)
    xc = (x - mean[None, :]) * ls.weights[:, None]
    col_rms = jnp.sqrt(safe_div(jnp.sum(xc**2, axis=0), ls.n))
    col_scale = power_of_two(col_rms)
    scale = power_of_two(jnp.max(col_rms))
    xg = xc / scale  # exact: a power of two
    gram_path = n_rows <= n_cols
    if rcond is None:
        rcond = default_rcond(n_rows, n_cols, dtype)

    evals = evecs = kept = class_proj = mean_proj = mean_null_sq = pc = None
    eq_evals = eq_evecs = eq_kept = None
    scatter_s = None
    if equilibrate:
        xs = xc / col_scale[None, :]  # exact: powers of two
        if gram_path:
            eq_evals, eq_evecs = eigh_descending(mm(xs, xs.T))
        else:
            scatter_s = mm(xs.T, xs)
            eq_evals, eq_evecs = eigh_descending(scatter_s)
        eq_kept = rank_mask(eq_evals, rcond)
        eq_evals, eq_evecs = eq_evals + poison, eq_evecs + poison
    if spectrum:
        mean_g = mean / scale
        class_dev = safe_div(mm(ls.onehot.T, xg), ls.counts[:, None])  # [C, D] (mu_c - mu) / scale
        if gram_path:
            lam, u = eigh_descending(mm(xg, xg.T))
            kept = rank_mask(lam, rcond)
            root = jnp.where(kept, jnp.sqrt(lam), 1)
            # V = Xc^T U / sqrt(s): project through the data instead of forming V (D x N).
            class_proj = jnp.where(kept, safe_div(mm(ls.onehot.T, u) * root, ls.counts[:, None]), 0)
            mean_proj = jnp.where(kept, mm(mm(xg, mean_g), u) / root, 0)
            in_span = mm(xg.T, mm(u, jnp.where(kept, mean_proj / root, 0)))
            mean_null_sq = jnp.sum((mean_g - in_span) ** 2)
            evecs = u
        else:
            if scatter_s is not None:  # the same products, rescaled by powers of two: exact
                ratio = col_scale / scale
                gram = scatter_s * ratio[:, None] * ratio[None, :]
            else:
                gram = mm(xg.T, xg)
            lam, v = eigh_descending(gram)
            # Re-measure each eigenvalue from the data, |Xg v|^2 (one GEMM): a float32 Gram's
            # eigenvalue errs by ~eps * the largest, the data-side measure by ~eps^2 * the largest
            # plus eps times its own size, so weak directions (a few massive activations beside
            # them) keep their eigenvalue. The rank decision uses the same relative cut-off.
            if remeasure:
                pc = mm(xg, v)
                lam = jnp.sum(pc**2, axis=0)
                order = jnp.argsort(-lam)
                lam, v, pc = lam[order], v[:, order], pc[:, order]
                kept = rank_mask(lam, rcond**2)
            else:
                kept = rank_mask(lam, rcond)
            class_proj = jnp.where(kept, mm(class_dev, v), 0)
            mean_proj = mm(mean_g, v)  # the basis is complete: nothing of mu is left outside
            mean_null_sq = jnp.zeros((), dtype)
            evecs = v
        # Back to the features' units (powers of two: exact), NaN in -> NaN out.
        evals = lam * scale**2 + poison
        evecs = evecs + poison
        class_proj = class_proj * scale + poison
        mean_proj = mean_proj * scale + poison
        mean_null_sq = mean_null_sq * scale**2 + poison
        if pc is not None:
            pc = pc * scale + poison
    return FeatureStats(ls, xc + poison, mean + poison, fmask.sum(), evals, evecs, kept, class_proj,
                        mean_proj, mean_null_sq, scale + poison, col_scale, eq_evals, eq_evecs, eq_kept, pc=pc)


def pc_scores(fs: FeatureStats, k: int):
    """[N, k] principal-component scores (centred projection, no whitening) on the top k directions."""
    if fs.streamed:
        raise ValueError("principal-component scores need the samples; streamed statistics keep none")
    k = min(k, fs.evals.shape[0])
    if fs.is_gram:
        return fs.evecs[:, :k] * jnp.sqrt(fs.evals[:k])[None, :]
    if fs.pc is not None:
        return fs.pc[:, :k]
    return mm(fs.xc, fs.evecs[:, :k])


class SourceStats(NamedTuple):
    """joint [Cs, C] = sum_i w_i theta_i(z) [y_i = y]; argmax_joint [Cs, C] = counts of
    (argmax source class, target class); n = sum of weights. Sums, so `merge` is addition."""

    joint: jax.Array
    argmax_joint: jax.Array
    n: jax.Array

    def merge(self, other: "SourceStats") -> "SourceStats":
        return SourceStats(self.joint + other.joint, self.argmax_joint + other.argmax_joint,
                           self.n + other.n)


def argmax_table(top, onehot, num_source_classes: int):
    """[Cs, C] counts of (predicted source class, target class): top [N] ints, onehot [N, C]
    weighted one-hot labels. A scatter-add, O(N): no [N, Cs] one-hot."""
    return jnp.zeros((num_source_classes, onehot.shape[1]), onehot.dtype).at[top].add(onehot)


def source_stats(source_probs, labels, *, num_classes: int, sample_mask=None, source_mask=None) -> SourceStats:
    """Joint tables of source predictions and target labels. source_probs [N, Cs], labels [N]."""
    probs, dtype = _matrix_for_labels("source_probs", source_probs, labels)
    n_src = probs.shape[1]
    ls = label_stats(labels, num_classes, sample_mask, dtype)
    smask = as_mask(source_mask, n_src, dtype)
    valid = (ls.weights[:, None] > 0) & (smask[None, :] > 0)
    probs, poison = nan_if_nonfinite(probs, valid)  # NaN in -> NaN out, not a hidden argmax
    probs = probs * smask[None, :]
    # Masked source classes can never be the argmax.
    top = jnp.argmax(jnp.where(smask[None, :] > 0, probs, -jnp.inf), axis=1)
    return SourceStats(mm(probs.T, ls.onehot) + poison, argmax_table(top, ls.onehot, n_src) + poison,
                       ls.n + poison)


def centred_features(features, labels, *, num_classes: int, sample_mask=None, feature_mask=None):
    """(xc [N, D], LabelStats, d_eff): the masked, centred features of `feature_stats` without its
    eigendecomposition, for scores that need only the centred features (k-NN, TMI, PARC).
    Masked rows and columns are exact zeros; d_eff is the number of valid columns."""
    x, dtype = _matrix_for_labels("features", features, labels)
    ls = label_stats(labels, num_classes, sample_mask, dtype)
    fmask = as_mask(feature_mask, x.shape[1], dtype)
    x = x * fmask[None, :]
    mean = safe_div(mm(ls.weights, x), ls.n)
    return (x - mean[None, :]) * ls.weights[:, None], ls, fmask.sum()
