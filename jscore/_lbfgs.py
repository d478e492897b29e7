"""A small limited-memory BFGS minimiser in pure JAX (lax.while_loop), vmappable and jittable.

Used where a score needs a smooth convex fit (PACTran's softmax regression). Nocedal & Wright,
Numerical Optimization, Algorithm 7.4 (two-loop recursion) with a backtracking Armijo line
search; curvature pairs with s^T y <= 0 are skipped. Parameters are one array of any shape.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class LBFGSResult(NamedTuple):
    """x: the minimiser; f: its value; grad_norm: the final max-abs gradient; iters: steps taken."""

    x: jax.Array
    f: jax.Array
    grad_norm: jax.Array
    iters: jax.Array


def _dot(a, b):
    return jnp.sum(a * b)


def minimize_lbfgs(fun: Callable, x0, *, max_iters: int = 500, tol: float = 1e-6, history: int = 10,
                   max_line_search: int = 30) -> LBFGSResult:
    """Minimise the smooth function `fun(x) -> scalar` from x0.

    Stops when max |grad| <= tol, when a step no longer decreases f (the dtype's round-off floor),
    or after max_iters steps.
    """
    value_and_grad = jax.value_and_grad(fun)
    f0, g0 = value_and_grad(x0)
    dtype = f0.dtype
    tiny = jnp.finfo(dtype).eps
    zeros = jnp.zeros((history,) + x0.shape, x0.dtype)

    def direction(g, s_hist, y_hist, rho):
        # Two-loop recursion; unused slots hold zeros (rho = 0), so they are no-ops.
        def back(i, carry):
            q, alphas = carry
            j = history - 1 - i  # newest first
            a = rho[j] * _dot(s_hist[j], q)
            return q - a * y_hist[j], alphas.at[j].set(a)

        q, alphas = jax.lax.fori_loop(0, history, back, (g, jnp.zeros((history,), dtype)))
        sy, yy = _dot(s_hist[-1], y_hist[-1]), _dot(y_hist[-1], y_hist[-1])
        gamma = jnp.where((rho[-1] > 0) & (yy > 0), sy / jnp.where(yy > 0, yy, 1), 1.0)
        r = gamma * q

        def forward(j, r):
            b = rho[j] * _dot(y_hist[j], r)
            return r + s_hist[j] * (alphas[j] - b)

        return -jax.lax.fori_loop(0, history, forward, r)

    def cond(state):
        k, _x, _f, g, _s, _y, _rho, stalled = state
        return (k < max_iters) & (jnp.max(jnp.abs(g)) > tol) & ~stalled

    def body(state):
        k, x, f, g, s_hist, y_hist, rho, _ = state
        d = direction(g, s_hist, y_hist, rho)
        slope = _dot(g, d)
        descent = slope < 0
        d = jnp.where(descent, d, -g)
        slope = jnp.where(descent, slope, -_dot(g, g))
        # First step (no curvature yet): a unit-length move along -g.
        t0 = jnp.where(rho[-1] > 0, 1.0, 1.0 / jnp.maximum(jnp.sqrt(_dot(g, g)), tiny)).astype(dtype)

        def ls_cond(c):
            t, f_new, i = c
            return (f_new > f + 1e-4 * t * slope) & (i < max_line_search)

        def ls_body(c):
            t, _, i = c
            t = 0.5 * t
            return t, fun(x + t * d), i + 1

        t, f_new, _ = jax.lax.while_loop(ls_cond, ls_body, (t0, fun(x + t0 * d), 0))
        x_new = x + t * d
        f_new, g_new = value_and_grad(x_new)
        stalled = ~(f_new < f - tiny * jnp.abs(f))
        s, y = x_new - x, g_new - g
        sy = _dot(s, y)
        ok = sy > tiny * jnp.sqrt(_dot(s, s) * _dot(y, y))
        s_hist = jnp.where(ok, jnp.concatenate([s_hist[1:], s[None]]), s_hist)
        y_hist = jnp.where(ok, jnp.concatenate([y_hist[1:], y[None]]), y_hist)
        rho = jnp.where(ok, jnp.concatenate([rho[1:], (1 / jnp.where(ok, sy, 1))[None]]), rho)
        # A step that does not decrease f is not taken.
        x_new = jnp.where(stalled, x, x_new)
        f_new = jnp.where(stalled, f, f_new)
        g_new = jnp.where(stalled, g, g_new)
        return k + 1, x_new, f_new, g_new, s_hist, y_hist, rho, stalled

    state = (jnp.zeros((), jnp.int32), x0, f0, g0, zeros, zeros, jnp.zeros((history,), dtype), jnp.zeros((), bool))
    k, x, f, g, *_ = jax.lax.while_loop(cond, body, state)
    return LBFGSResult(x, f, jnp.max(jnp.abs(g)), k)
