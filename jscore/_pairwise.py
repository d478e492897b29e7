"""Pairwise distances in row blocks: memory O(N * block), never an N x N matrix.

k-NN accuracy, TMI and PARC compare every sample with every other. Here the rows are taken a
block at a time (`row_blocks`): one [block, N] tile of distances is formed - squared Euclidean
distances as a GEMM, |a|^2 + |b|^2 - 2 a.b; Chebyshev (max-norm) distances, which no GEMM
gives, as a loop over the D columns max-accumulating |a_d - b_d| into the tile - reduced (top-k, histogram) and
dropped before the next block. The block size keeps one tile near `TILE_ELEMENTS` elements
(64 MiB in float32), so N = 50,000 needs a few hundred MiB whatever D is.

`nearest_neighbors` is the shared k-NN search: it excludes the row itself by index (not by
distance, so exact duplicates stay candidates), masked rows, and optionally rows of another
group (class), and recomputes the Euclidean distances of the chosen candidates directly from
the features, so they are exact (a GEMM-expanded distance loses ~eps |x|^2 to cancellation, and
an exact duplicate would not come out as exactly 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jscore._numerics import mm

TILE_ELEMENTS = 1 << 24
METRICS = ("euclidean", "chebyshev")


def block_size(num_rows: int, num_cols: int, tile_elements: int = TILE_ELEMENTS) -> int:
    """Rows per block so that a [block, num_cols] tile holds about `tile_elements` elements
    (a multiple of 8, at least 8, at most num_rows rounded up to 8)."""
    b = max(8, (tile_elements // max(num_cols, 1)) // 8 * 8)
    return int(min(b, -(-num_rows // 8) * 8))


def row_blocks(fn, num_rows: int, block: int, init=None):
    """Run `fn` over the row blocks [s, s + block) of `num_rows` rows (the last block padded).

    Without `init`: fn(start) -> pytree of [block, ...] arrays; returns them concatenated and cut
    to [num_rows, ...]. With `init`: fn(carry, start) -> carry, a reduction over blocks (e.g. a
    histogram); returns the final carry. One compiled loop body (lax.map / lax.scan).
    """
    num_blocks = -(-num_rows // block)
    starts = jnp.arange(num_blocks, dtype=jnp.int32) * block
    if init is not None:
        carry, _ = jax.lax.scan(lambda c, s: (fn(c, s), None), init, starts)
        return carry
    out = jax.lax.map(fn, starts)
    return jax.tree_util.tree_map(lambda a: a.reshape((num_blocks * block,) + a.shape[2:])[:num_rows], out)


def pad_rows(x, multiple: int):
    """x [N, ...] padded with zero rows to a multiple of `multiple`."""
    extra = -x.shape[0] % multiple
    return jnp.pad(x, [(0, extra)] + [(0, 0)] * (x.ndim - 1)) if extra else x


def sq_euclidean_tile(xb, x, xb_sq, x_sq):
    """[b, N] squared Euclidean distances as one GEMM (clamped at 0)."""
    return jnp.maximum(xb_sq[:, None] + x_sq[None, :] - 2 * mm(xb, x.T), 0)


def chebyshev_tile(xb, x, unroll: int = 8):
    """[b, N] max-norm distances max_d |xb_d - x_d|: a loop over the D columns, each step one
    elementwise |a_i - b_j| max-accumulated into the [b, N] tile (vectorised along N; a reduction
    over a short minor axis, the earlier form, ran about 4x slower on the CPU)."""
    xt, xbt = x.T, xb.T  # [D, N], [D, b]

    def body(k, acc):
        return jnp.maximum(acc, jnp.abs(xbt[k][:, None] - xt[k][None, :]))

    return jax.lax.fori_loop(0, x.shape[1], body, jnp.zeros((xb.shape[0], x.shape[0]), x.dtype),
                             unroll=max(1, min(unroll, x.shape[1])))


def nearest_neighbors(x, k: int, *, weights, groups=None, metric: str = "euclidean",
                      margin: int = 2, block: int | None = None, chunk: int | None = None):
    """The k nearest other valid rows of every row, searched in row blocks.

    Args:
      x: [N, D] features (masked columns already zero).
      k: neighbours per row (static).
      weights: [N] sample mask; rows with weight 0 are never neighbours (their own results are
        computed but meaningless).
      groups: optional [N] ints; neighbours are restricted to rows of the same group.
      metric: "euclidean" (GEMM tiles) or "chebyshev" (max-norm).
      margin: extra candidates taken from the GEMM tile before the exact Euclidean recomputation
        re-sorts them (guards against cancellation reordering near-ties).
      block: rows per block (default: `block_size`; 128 with groups: a block of rows sorted by
        group then spans few groups, so few columns are visited in vain).
      chunk: with groups, columns per step of the same-group column range (default: 256 for the
        max norm - a [block, 256] tile stays in cache through the loop over D - 1024 for Euclidean).

    Returns:
      (dist [N, k], idx [N, k]): distances (squared for "euclidean", plain for "chebyshev") in
      ascending order, ties broken by the smaller index; rows with fewer than k candidates get
      dist = inf and idx = -1 in the missing slots.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    n = x.shape[0]
    if k < 1 or k > n - 1:
        raise ValueError(f"k = {k} neighbours need N > k rows, got N = {n}")
    m = min(k + (margin if metric == "euclidean" else 0), n - 1)
    if groups is not None:
        return _grouped_neighbors(x, k, m, weights=weights, groups=groups, metric=metric, block=block,
                                  chunk=chunk)
    block = block or block_size(n, n)
    valid = weights > 0
    cols = jnp.arange(n, dtype=jnp.int32)
    xp = pad_rows(x, block)
    gp = None if groups is None else pad_rows(groups, block)
    x_sq = jnp.sum(x * x, axis=1) if metric == "euclidean" else None
    inf = jnp.asarray(jnp.inf, x.dtype)

    def one_block(start):
        xb = jax.lax.dynamic_slice_in_dim(xp, start, block)
        rows = start + jnp.arange(block, dtype=jnp.int32)
        if metric == "euclidean":
            dist = sq_euclidean_tile(xb, x, jnp.sum(xb * xb, axis=1), x_sq)
        else:
            dist = chebyshev_tile(xb, x)
        ok = valid[None, :] & (cols[None, :] != rows[:, None])
        if gp is not None:
            ok &= jax.lax.dynamic_slice_in_dim(gp, start, block)[:, None] == groups[None, :]
        dist = jnp.where(ok, dist, inf)
        neg, idx = jax.lax.top_k(-dist, m)
        found = jnp.isfinite(neg)
        if metric == "euclidean":  # exact distances of the candidates, then re-sort
            diff = x[idx] - xb[:, None, :]
            d = jnp.where(found, jnp.sum(diff * diff, axis=-1), inf)
        else:
            d = -neg
        idx = jnp.where(found, idx, n)  # missing candidates sort last
        d, idx = jax.lax.sort((d, idx), dimension=1, num_keys=2)
        d, idx = d[:, :k], idx[:, :k]
        return d, jnp.where(idx < n, idx, -1)

    return row_blocks(one_block, n, block)



def _tile(metric, xb, xc, xb_sq, xc_sq):
    return sq_euclidean_tile(xb, xc, xb_sq, xc_sq) if metric == "euclidean" else chebyshev_tile(xb, xc)


def _grouped_neighbors(x, k: int, m: int, *, weights, groups, metric: str, block: int | None,
                       chunk: int | None):
    """`nearest_neighbors` restricted to the row's group, visiting only same-group columns.

    Rows are sorted by group once (invalid rows last); a block of consecutive sorted rows spans a
    range of groups whose columns are contiguous, and only that column range is visited, in chunks
    of `chunk` columns with a running top-m (a loop whose trip count is the range's length). The
    work is about sum_g n_g^2 D instead of N^2 D.
    """
    n, d = x.shape
    valid = weights > 0
    key = jnp.where(valid, groups, jnp.iinfo(jnp.int32).max).astype(jnp.int32)
    order = jnp.argsort(key, stable=True).astype(jnp.int32)
    xs, gs, vs = x[order], key[order], valid[order]
    lo = jnp.searchsorted(gs, gs, side="left").astype(jnp.int32)
    hi = jnp.searchsorted(gs, gs, side="right").astype(jnp.int32)
    block = block or min(128, -(-n // 8) * 8)
    if chunk is None:
        chunk = 256 if metric == "chebyshev" else 1024
    chunk = int(min(chunk, -(-n // 8) * 8))
    xs_rows, gs_rows = pad_rows(xs, block), pad_rows(gs, block)
    lo_rows, hi_rows = pad_rows(lo, block), pad_rows(hi, block)
    xs_cols = pad_rows(jnp.concatenate([xs, jnp.zeros((chunk, d), x.dtype)]), 1)
    gs_cols = jnp.concatenate([gs, jnp.full((chunk,), -1, gs.dtype)])
    vs_cols = jnp.concatenate([vs, jnp.zeros((chunk,), bool)])
    sq = jnp.sum(xs_cols * xs_cols, axis=1) if metric == "euclidean" else None
    inf = jnp.asarray(jnp.inf, x.dtype)

    def one_block(start):
        xb = jax.lax.dynamic_slice_in_dim(xs_rows, start, block)
        gb = jax.lax.dynamic_slice_in_dim(gs_rows, start, block)
        rows = start + jnp.arange(block, dtype=jnp.int32)
        last = jnp.minimum(start + block, n) - 1
        col_lo = lo_rows[start]
        col_hi = jnp.maximum(hi_rows[last], col_lo)
        xb_sq = jnp.sum(xb * xb, axis=1) if metric == "euclidean" else None

        def body(t, best):
            c0 = col_lo + t * chunk
            xc = jax.lax.dynamic_slice_in_dim(xs_cols, c0, chunk)
            cols = c0 + jnp.arange(chunk, dtype=jnp.int32)
            dist = _tile(metric, xb, xc, xb_sq,
                         None if sq is None else jax.lax.dynamic_slice_in_dim(sq, c0, chunk))
            ok = (jax.lax.dynamic_slice_in_dim(gs_cols, c0, chunk)[None, :] == gb[:, None])
            ok &= jax.lax.dynamic_slice_in_dim(vs_cols, c0, chunk)[None, :] & (cols[None, :] != rows[:, None])
            ok &= (cols < col_hi)[None, :]
            dist = jnp.where(ok, dist, inf)
            all_d = jnp.concatenate([best[0], dist], axis=1)
            all_i = jnp.concatenate([best[1], jnp.broadcast_to(cols, dist.shape)], axis=1)
            neg, pos = jax.lax.top_k(-all_d, m)
            return -neg, jnp.take_along_axis(all_i, pos, axis=1)

        init = (jnp.full((block, m), inf), jnp.full((block, m), n, jnp.int32))
        trips = (col_hi - col_lo + chunk - 1) // chunk
        dist, idx = jax.lax.fori_loop(0, trips, body, init)
        found = jnp.isfinite(dist)
        orig = jnp.where(found, order[jnp.minimum(idx, n - 1)], n)
        if metric == "euclidean":  # exact distances of the candidates
            diff = x[jnp.minimum(orig, n - 1)] - xb[:, None, :]
            dist = jnp.where(found, jnp.sum(diff * diff, axis=-1), inf)
        dist, orig = jax.lax.sort((dist, orig), dimension=1, num_keys=2)
        return dist[:, :k], jnp.where(orig[:, :k] < n, orig[:, :k], -1)

    dist_s, idx_s = row_blocks(one_block, n, block)
    # Back from sorted to the original row order.
    inverse = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    return dist_s[inverse], idx_s[inverse]
