"""Pairwise distances over pairs of row blocks: memory O(block^2 + N), never an N x N matrix.

k-NN accuracy, TMI and PARC compare every sample with every other. Here the rows are cut into
blocks and each pair of blocks I <= J is visited once (`over_block_pairs`): one [block, block]
tile of distances is formed - squared Euclidean distances as a GEMM, |a|^2 + |b|^2 - 2 a.b;
Chebyshev (max-norm) distances, which no GEMM gives, as a loop over the D columns
max-accumulating |a_d - b_d| into the tile - reduced (running top-k of both blocks' rows, a
histogram of the pairs i < j) and dropped before the next pair. Each distance is formed once,
and N = 50,000 needs a few hundred MiB whatever D is.

`nearest_neighbors` is the shared k-NN search: it excludes the row itself by index (not by
distance, so exact duplicates stay candidates), masked rows, and optionally rows of another
group (class), and recomputes the Euclidean distances of the chosen candidates directly from
the features, so they are exact (a GEMM-expanded distance loses ~eps |x|^2 to cancellation, and
an exact duplicate would not come out as exactly 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jscore._numerics import mm

METRICS = ("euclidean", "chebyshev")


def block_rows(block: int, num_rows: int) -> int:
    """Rows per block: `block`, at most num_rows rounded up to a multiple of 8."""
    return int(min(block, -(-num_rows // 8) * 8))


def over_block_pairs(fn, num_blocks: int, init, last=None):
    """carry = fn(i, j, carry) for every pair of row blocks i <= j, in the order (0, 0), (0, 1),
    ..., (1, 1), ...: every row block meets its partners in increasing order. `last` [num_blocks]
    (optional) stops block i's partners at last[i] (a loop with that trip count)."""
    def row(i, carry):
        stop = num_blocks if last is None else last[i] + 1
        return jax.lax.fori_loop(i, stop, lambda j, c: fn(i, j, c), carry)

    return jax.lax.fori_loop(0, num_blocks, row, init)


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
                      margin: int = 2, block: int | None = None):
    """The k nearest other valid rows of every row, each pairwise distance formed once.

    The rows (sorted by group first, when there are groups) are cut into blocks of `block`; for
    every pair of blocks I <= J that can hold rows of one group, one [block, block] tile of
    distances updates the running top-m candidates of block I's rows and, transposed, those of
    block J's rows: half the work of a search row by row (for k-NN the N^2 D multiply-adds of the
    GEMM, for TMI the max-norm loop over D). Blocks are visited in the order (0, 0), (0, 1), ...,
    (1, 1), ..., so every row meets its candidate columns in increasing order and ties keep the
    smaller index. With groups, block I's partners run from I to the last block holding a row of
    I's last group (a loop with that trip count): the work is about sum_g n_g^2 D / 2.

    Args:
      x: [N, D] features (masked columns already zero).
      k: neighbours per row (static).
      weights: [N] sample mask; rows with weight 0 are never neighbours (their own results are
        computed but meaningless).
      groups: optional [N] ints; neighbours are restricted to rows of the same group.
      metric: "euclidean" (GEMM tiles) or "chebyshev" (max-norm).
      margin: extra candidates taken from the GEMM tile before the exact Euclidean recomputation
        re-sorts them (guards against cancellation reordering near-ties).
      block: rows per block (static; default `EUCLIDEAN_BLOCK` = 1024 for the Euclidean metric
        without groups, else `GROUPED_BLOCK` = 256: tiles within a group, and for the max norm
        a tile that stays in cache through the loop over D).

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
    if block is None:
        block = EUCLIDEAN_BLOCK if metric == "euclidean" and groups is None else GROUPED_BLOCK
    block = block_rows(block, n)
    valid = weights > 0
    if groups is None:
        order = None
        xs, gs, vs = x, jnp.zeros((n,), jnp.int32), valid
    else:  # rows sorted by group, invalid rows last
        key = jnp.where(valid, groups, jnp.iinfo(jnp.int32).max).astype(jnp.int32)
        order = jnp.argsort(key, stable=True).astype(jnp.int32)
        xs, gs, vs = x[order], key[order], valid[order]
    num_blocks = -(-n // block)
    xp, gp = pad_rows(xs, block), pad_rows(gs, block)
    vp = pad_rows(vs, block)
    last_block = None
    if groups is not None:  # the last block holding a row of the group of block I's last row
        hi = jnp.searchsorted(gs, gs, side="right").astype(jnp.int32)  # [N] end of each row's group
        last_row = jnp.minimum(jnp.arange(num_blocks, dtype=jnp.int32) * block + block, n) - 1
        last_block = (hi[last_row] - 1) // block
    sq = jnp.sum(xp * xp, axis=1) if metric == "euclidean" else None
    inf = jnp.asarray(jnp.inf, x.dtype)
    local = jnp.arange(block, dtype=jnp.int32)

    def tile_of(r0, c0):
        a, b = jax.lax.dynamic_slice_in_dim(xp, r0, block), jax.lax.dynamic_slice_in_dim(xp, c0, block)
        if metric == "euclidean":
            return sq_euclidean_tile(a, b, jax.lax.dynamic_slice_in_dim(sq, r0, block),
                                     jax.lax.dynamic_slice_in_dim(sq, c0, block))
        return chebyshev_tile(a, b)

    def update(carry, start, tile, cols):
        best_d, best_i = carry
        all_d = jnp.concatenate([jax.lax.dynamic_slice_in_dim(best_d, start, block), tile], axis=1)
        all_i = jnp.concatenate([jax.lax.dynamic_slice_in_dim(best_i, start, block),
                                 jnp.broadcast_to(cols, tile.shape)], axis=1)
        neg, pos = jax.lax.top_k(-all_d, m)
        return (jax.lax.dynamic_update_slice_in_dim(best_d, -neg, start, 0),
                jax.lax.dynamic_update_slice_in_dim(best_i, jnp.take_along_axis(all_i, pos, axis=1), start, 0))

    def pair(i, j, carry):
        r0, c0 = i * block, j * block
        rows, cols = r0 + local, c0 + local
        tile = tile_of(r0, c0)
        same = jax.lax.dynamic_slice_in_dim(gp, r0, block)[:, None] == jax.lax.dynamic_slice_in_dim(gp, c0, block)[None, :]
        v_rows = jax.lax.dynamic_slice_in_dim(vp, r0, block)
        v_cols = jax.lax.dynamic_slice_in_dim(vp, c0, block)
        carry = update(carry, r0, jnp.where(same & v_cols[None, :] & (cols[None, :] != rows[:, None]), tile, inf), cols)
        # The transposed tile serves block J's rows; on the diagonal (I = J) the update above did.
        ok_t = (same & v_rows[:, None]).T & (i != j)
        return update(carry, c0, jnp.where(ok_t, tile.T, inf), rows)

    init = (jnp.full((num_blocks * block, m), inf, x.dtype), jnp.full((num_blocks * block, m), n, jnp.int32))
    best_d, best_i = over_block_pairs(pair, num_blocks, init, last_block)
    found = jnp.isfinite(best_d) & (best_i < n)
    orig = best_i if order is None else jnp.where(found, order[jnp.minimum(best_i, n - 1)], n)
    if metric == "euclidean":  # exact distances of the candidates, a row block at a time
        def exact(args):
            xb, ib = args  # [block, D], [block, m]
            diff = x[jnp.minimum(ib, n - 1)] - xb[:, None, :]
            return jnp.sum(diff * diff, axis=-1)

        shape = (num_blocks, block)
        sq_dist = jax.lax.map(exact, (xp.reshape(shape + xp.shape[1:]), orig.reshape(shape + (m,))))
        best_d = jnp.where(found, sq_dist.reshape(-1, m), inf)
    best_d, found = best_d[:n], found[:n]
    orig = jnp.where(found, orig[:n], n)  # missing candidates sort last
    dist, orig = jax.lax.sort((best_d, orig), dimension=1, num_keys=2)
    dist, orig = dist[:, :k], jnp.where(orig[:, :k] < n, orig[:, :k], -1)
    if order is None:
        return dist, orig
    inverse = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    return dist[inverse], orig[inverse]


EUCLIDEAN_BLOCK = 1024
GROUPED_BLOCK = 256
