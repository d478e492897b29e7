"""The oriented products of `jscore._numerics`: the same numbers as the plain product (float64,
against NumPy), and for `mm_nt` the same gradient as autodiff of the plain product."""

import jax
import jax.numpy as jnp
import numpy as np

from jscore._numerics import float64_scope, mm_nt, mm_tn


def _data(n=37, d=11, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * np.logspace(-3, 3, d), rng.standard_normal((n, k)), rng.standard_normal((k, d))


def test_mm_tn_is_a_transposed_product():
    a, b, _ = _data()
    with float64_scope():
        got = np.asarray(jax.jit(mm_tn)(jnp.asarray(a), jnp.asarray(b)))
    np.testing.assert_allclose(got, a.T @ b, rtol=1e-12, atol=1e-12 * np.abs(a).max() * np.abs(b).max())
    assert got.shape == (11, 3)


def test_mm_nt_value_and_gradient():
    a, g, w = _data(seed=1)
    with float64_scope():
        aj, gj, wj = jnp.asarray(a), jnp.asarray(g), jnp.asarray(w)
        np.testing.assert_allclose(np.asarray(mm_nt(aj, wj)), a @ w.T, rtol=1e-12)
        # d/dw sum(g * (a w^T)) = g^T a, the orientation mm_nt exists for.
        grad = jax.jit(jax.grad(lambda w_: jnp.sum(gj * mm_nt(aj, w_))))(wj)
        np.testing.assert_allclose(np.asarray(grad), g.T @ a, rtol=1e-12, atol=1e-9)
