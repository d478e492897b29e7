"""Sufficient statistics of features that arrive in chunks: one accumulator that every streamed
score consumes.

A `Moments` state holds, for the samples seen so far, the class counts, the class means, the
pooled within-class scatter W = sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T and, on request,
the per-class within scatters W_c (GBC, TransRate; summed class by class over the rows sorted by
class, so about one D x D product per row) and the row-norm moments that Ledoit-Wolf
shrinkage needs (regularised H-score). Memory: O(D^2 + C D), plus C D^2 with the per-class
scatters; independent of N.

Numerics: each chunk is centred on its own class means (two passes over the chunk, in memory)
and merged into the state with Chan, Golub & LeVeque's parallel update ("Updating formulae and
a pairwise algorithm for computing sample variances", 1979):
  mu_c = mu_c^a + (n_c^b / n_c) delta_c,  W += W^b + (n_c^a n_c^b / n_c) delta_c delta_c^T,
with delta_c = mu_c^b - mu_c^a: no raw sums of squares, so float32 keeps the precision of the
chunk-wise centred products. Everything is stored in units of x / scale, scale a power of two
fixed by the first chunk (about its largest column's standard deviation), so feature scales far
from 1 neither overflow float32 nor lose digits, and rescaling to merge states of different
scales (other processes) is exact.

`update(state, features, labels, sample_mask)` is pure and jit-compiled per chunk shape; a short
last chunk is padded and masked (0/1 weights are exactly neutral), so one program serves a pass.
`merge` is associative (up to round-off), so chunks, devices and processes combine in any order;
`finalize` turns a state into the `jscore.stats.FeatureStats` the scorers read (scatter path,
`xc` None).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jscore._numerics import eigh_descending, mm, safe_div
from jscore.stats import FeatureStats, LabelStats, default_rcond, power_of_two, rank_mask


class Moments(NamedTuple):
    """Streamed statistics of features [*, D] with labels in [0, C), in units of x / scale.

    Attributes:
      n: scalar, number of samples (sum of the sample weights).
      counts: [C] samples per class.
      scale: scalar power of two (0 before the first sample); the features' unit.
      shift: [D] a reference point in units of x / scale (the first chunk's mean): the class means
        are stored relative to it, so a large common offset costs float32 no digits.
      class_mean: [C, D] class means of x / scale - shift (0 for classes not seen yet).
      within: [D, D] pooled within-class scatter of x / scale (no 1/n).
      class_within: [C, D, D] per-class within scatters, or None (not accumulated).
      row_norm4: scalar sum_i |x_i - mu|^4 / scale^4 (mu the mean of all samples), or None.
      row_norm2_dev: [D] sum_i |x_i - mu|^2 (x_i - mu) / scale^3 (needed to merge row_norm4), or None.
    """

    n: jax.Array
    counts: jax.Array
    scale: jax.Array
    shift: jax.Array
    class_mean: jax.Array
    within: jax.Array
    class_within: Optional[jax.Array] = None
    row_norm4: Optional[jax.Array] = None
    row_norm2_dev: Optional[jax.Array] = None


def init_moments(num_features: int, num_classes: int, dtype=jnp.float32, *, class_scatter: bool = False,
                 quartic: bool = False) -> Moments:
    """The empty state (no samples). `class_scatter` adds the per-class scatters [C, D, D] (GBC,
    TransRate); `quartic` the row-norm moments (Ledoit-Wolf shrinkage of `reg_hscore`)."""
    d, c = num_features, num_classes

    def z(*shape):  # distinct buffers: `update` donates the state
        return jnp.zeros(shape, dtype)

    return Moments(z(), z(c), z(), z(d), z(c, d), z(d, d), z(c, d, d) if class_scatter else None,
                   z() if quartic else None, z(d) if quartic else None)


def _global_mean(m: Moments):
    return safe_div(mm(m.counts, m.class_mean), m.n)


def _rescale(m: Moments, ratio) -> Moments:
    """The same statistics in units of (x / scale) * ratio (ratio a power of two: exact)."""
    sq = ratio * ratio
    return m._replace(
        shift=m.shift * ratio, class_mean=m.class_mean * ratio, within=m.within * sq,
        class_within=None if m.class_within is None else m.class_within * sq,
        row_norm4=None if m.row_norm4 is None else m.row_norm4 * sq * sq,
        row_norm2_dev=None if m.row_norm2_dev is None else m.row_norm2_dev * sq * ratio)


def _shift_quartic(m: Moments, mean, to):
    """(row_norm4, row_norm2_dev) of `m` about the point `to` instead of its own mean `mean`.

    With y_i = x_i - mean (sum_i y_i = 0), d = to - mean, S = sum_i y_i y_i^T:
      sum |y_i - d|^4 = Q - 4 d.T + 4 d^T S d + 2 |d|^2 tr S + n |d|^4,
      sum |y_i - d|^2 (y_i - d) = T - tr(S) d - 2 S d - n |d|^2 d.
    """
    d = to - mean
    dev = m.class_mean - mean[None, :]
    s_d = mm(m.within, d) + mm(dev.T, m.counts * mm(dev, d))  # S d, S = W + between
    tr_s = jnp.trace(m.within) + jnp.sum(m.counts * jnp.sum(dev**2, axis=1))
    dd = jnp.sum(d * d)
    q = m.row_norm4 - 4 * jnp.sum(d * m.row_norm2_dev) + 4 * jnp.sum(d * s_d) + 2 * dd * tr_s + m.n * dd**2
    t = m.row_norm2_dev - tr_s * d - 2 * s_d - m.n * dd * d
    return q, t


def _reshift(m: Moments, shift) -> Moments:
    """The class means relative to `shift` instead of `m.shift` (absent classes stay 0)."""
    moved = m.class_mean + (m.shift - shift)[None, :]
    return m._replace(shift=shift, class_mean=jnp.where(m.counts[:, None] > 0, moved, 0))


def merge(a: Moments, b: Moments) -> Moments:
    """The statistics of the union of two disjoint sample sets (Chan et al.'s parallel update).
    States of different scales are first brought to a common one (exact: powers of two)."""
    scale = jnp.where(a.n > 0, a.scale, b.scale)
    a = _rescale(a, safe_div(a.scale, scale))
    b = _rescale(b, safe_div(b.scale, scale))
    shift = jnp.where(a.n > 0, a.shift, b.shift)
    a, b = _reshift(a, shift), _reshift(b, shift)
    n = a.n + b.n
    counts = a.counts + b.counts
    delta = b.class_mean - a.class_mean
    class_mean = a.class_mean + delta * safe_div(b.counts, counts)[:, None]
    w = safe_div(a.counts * b.counts, counts)  # n_a n_b / n per class: 0 when either is empty
    within = a.within + b.within + mm((delta * w[:, None]).T, delta)
    class_within = None
    if a.class_within is not None:
        class_within = a.class_within + b.class_within + w[:, None, None] * delta[:, :, None] * delta[:, None, :]
    row_norm4 = row_norm2_dev = None
    if a.row_norm4 is not None:
        mean_a, mean_b = _global_mean(a), _global_mean(b)
        mean = safe_div(a.n * mean_a + b.n * mean_b, n)
        qa, ta = _shift_quartic(a, mean_a, mean)
        qb, tb = _shift_quartic(b, mean_b, mean)
        row_norm4, row_norm2_dev = qa + qb, ta + tb
    return Moments(n, counts, scale, shift, class_mean, within, class_within, row_norm4, row_norm2_dev)


def chunk_scale(features, sample_mask):
    """A power of two near the largest column standard deviation of the valid rows of a chunk."""
    w = sample_mask.astype(features.dtype)
    n = jnp.sum(w)
    mean = safe_div(mm(w, features), n)
    rms = jnp.sqrt(safe_div(jnp.sum(((features - mean[None, :]) * w[:, None]) ** 2, axis=0), n))
    return power_of_two(jnp.max(rms))


def class_block_scatters(x, cls, num_classes: int, block: int = 256):
    """[C, D, D] sum_{i: cls_i = c} x_i x_i^T for x [B, D], cls [B] ints (values >= num_classes
    belong to no class).

    The rows are sorted by class and each class's product is summed over its own rows in blocks
    of `block` rows (a loop with the class's trip count): about (B + C block) D^2 flops, not the
    C B D^2 of one masked product per class.
    """
    rows, d = x.shape
    block = max(1, min(block, rows))
    order = jnp.argsort(cls, stable=True)
    xs = jnp.concatenate([x[order], jnp.zeros((block, d), x.dtype)])
    counts = jnp.sum(cls[None, :] == jnp.arange(num_classes)[:, None], axis=1)
    starts = jnp.cumsum(counts) - counts

    def one_class(c):
        start, count = starts[c], counts[c]

        def body(t, acc):
            part = jax.lax.dynamic_slice_in_dim(xs, start + t * block, block)
            part = part * (t * block + jnp.arange(block) < count)[:, None].astype(x.dtype)
            return acc + mm(part.T, part)

        return jax.lax.fori_loop(0, (count + block - 1) // block, body, jnp.zeros((d, d), x.dtype))

    return jax.lax.map(one_class, jnp.arange(num_classes))


def chunk_moments(features, labels, sample_mask, *, num_classes: int, scale, shift=None,
                  class_scatter: bool = False, quartic: bool = False) -> Moments:
    """The statistics of one chunk, centred on its own class means (in memory: two passes).

    Args:
      features: [B, D] float; labels: [B] int in [0, num_classes); sample_mask: [B] 0/1 weights
        (padding rows 0: exactly neutral, whatever they hold if finite).
      scale: scalar power of two, the unit of the result.
      shift: [D] reference point in units of x / scale (default 0).
    """
    w = sample_mask.astype(features.dtype)
    shift = jnp.zeros(features.shape[1], features.dtype) if shift is None else shift
    u = (features / scale - shift[None, :]) * w[:, None]
    onehot = jax.nn.one_hot(labels, num_classes, dtype=features.dtype) * w[:, None]
    counts = onehot.sum(0)
    n = w.sum()
    class_mean = safe_div(mm(onehot.T, u), counts[:, None])
    dev = u - mm(onehot, class_mean)  # rows of masked samples are 0: u and onehot are 0 there
    class_within = None
    if class_scatter:
        cls = jnp.where(w > 0, labels, num_classes)  # masked rows sort last and belong to no class
        class_within = class_block_scatters(dev, cls, num_classes)
        within = class_within.sum(0)
    else:
        within = mm(dev.T, dev)
    row_norm4 = row_norm2_dev = None
    if quartic:
        y = (u - safe_div(mm(w, u), n)[None, :]) * w[:, None]
        r2 = jnp.sum(y * y, axis=1)
        row_norm4, row_norm2_dev = jnp.sum(r2 * r2), mm(r2, y)
    return Moments(n, counts, jnp.asarray(scale, features.dtype), shift, class_mean, within, class_within, row_norm4,
                   row_norm2_dev)


@partial(jax.jit, static_argnames=("num_classes",), donate_argnums=(0,))
def update(state: Moments, features, labels, sample_mask, *, num_classes: int) -> Moments:
    """`state` merged with one chunk: features [B, D], labels [B], sample_mask [B] (0/1).

    The first chunk with samples fixes the unit (`chunk_scale`). Pure; the state is donated, so
    a pass holds one copy of it. Compiled once per (B, D, dtype, options)."""
    features = features.astype(state.within.dtype)
    scale = jnp.where(state.n > 0, state.scale, chunk_scale(features, sample_mask))
    w = sample_mask.astype(features.dtype)
    shift = jnp.where(state.n > 0, state.shift, safe_div(mm(w, features), jnp.sum(w)) / scale)
    chunk = chunk_moments(features, labels, sample_mask, num_classes=num_classes, scale=scale, shift=shift,
                          class_scatter=state.class_within is not None, quartic=state.row_norm4 is not None)
    return merge(state, chunk)


def class_means(m: Moments):
    """[C, D] the class means in the features' units (0 for classes not seen)."""
    return jnp.where(m.counts[:, None] > 0, m.class_mean + m.shift[None, :], 0) * m.scale


def total_scatter(m: Moments):
    """(mean [D], S [D, D]): the mean of all samples relative to `m.shift` and their scatter
    sum_i (x_i - mu)(x_i - mu)^T, in units of x / scale. S = W + sum_c n_c (mu_c - mu)(mu_c - mu)^T."""
    mean = _global_mean(m)
    dev = jnp.where(m.counts[:, None] > 0, m.class_mean - mean[None, :], 0)
    return mean, m.within + mm((dev * m.counts[:, None]).T, dev)


def finalize(m: Moments, *, num_samples: int, spectrum: bool = True, equilibrate: bool = True) -> FeatureStats:
    """The `FeatureStats` of all samples seen, in the scatter form (eigendecomposition of the
    D x D scatter; `xc` is None: no sample is kept). `num_samples` (the total N, a Python int)
    sets the rank cut-off; one compiled program serves every N.

    Differences from `jscore.stats.feature_stats` on the whole array: the eigenvalues are those
    of the accumulated scatter (their float32 error is about eps times the largest), so the
    numerical rank uses the cut-off rcond = `default_rcond(N, D)` itself rather than its square;
    H-score is the pseudo-inverse form without the refinement against the data. On
    well-conditioned features both agree to float32 round-off.

    Extra fields read by the streamed scorers: `class_dev` [C, D] (mu_c - mu), `class_scatter`
    [C, D, D] (W_c) and `row_norm4` (sum_i |x_i - mu|^4 / scale^4), None where not accumulated.
    """
    rcond = default_rcond(num_samples, m.within.shape[0], m.within.dtype)
    return _finalize(m, jnp.asarray(rcond, m.within.dtype), spectrum=spectrum, equilibrate=equilibrate)


@partial(jax.jit, static_argnames=("spectrum", "equilibrate"))
def _finalize(m: Moments, rcond, *, spectrum: bool, equilibrate: bool) -> FeatureStats:
    dtype = m.within.dtype
    d = m.within.shape[0]
    scale = m.scale
    mean_u, s_u = total_scatter(m)
    dev_u = jnp.where(m.counts[:, None] > 0, m.class_mean - mean_u[None, :], 0)
    col_rms = jnp.sqrt(safe_div(jnp.diagonal(s_u), m.n))
    col_scale = power_of_two(col_rms * scale)
    ls = LabelStats(None, None, m.counts, m.n)
    evals = evecs = kept = class_proj = mean_proj = mean_null_sq = None
    eq_evals = eq_evecs = eq_kept = None
    if spectrum:
        lam, v = eigh_descending(s_u)
        lam = jnp.maximum(lam, 0)
        kept = rank_mask(lam, rcond)
        evals = lam * scale**2
        evecs = v
        class_proj = jnp.where(kept, mm(dev_u, v), 0) * scale
        mean_proj = mm(mean_u + m.shift, v) * scale
        mean_null_sq = jnp.zeros((), dtype)
    if equilibrate:
        ratio = scale / col_scale  # powers of two: exact
        eq_evals, eq_evecs = eigh_descending(s_u * ratio[:, None] * ratio[None, :])
        eq_evals = jnp.maximum(eq_evals, 0)
        eq_kept = rank_mask(eq_evals, rcond)
    return FeatureStats(
        ls, None, (mean_u + m.shift) * scale, jnp.asarray(d, dtype), evals, evecs, kept, class_proj, mean_proj, mean_null_sq,
        scale, col_scale, eq_evals, eq_evecs, eq_kept, class_dev=dev_u * scale,
        class_scatter=None if m.class_within is None else m.class_within * scale**2,
        row_norm4=m.row_norm4)
