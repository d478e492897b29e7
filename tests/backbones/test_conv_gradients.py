"""KxK convolutions with their gradients as matrix products (jscore.backbones.conv_gradients)
against a float64 NumPy oracle of the convolution's gradients and against the library's."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from jscore.backbones import conv_gradients, pointwise  # noqa: E402
from tests.backbones.test_pointwise import conv_ops  # noqa: E402

DN = ("NHWC", "HWIO", "NHWC")


def oracle_gradients(x, w, dy, strides, pads, dilation):
    """dL/dx and dL/dw of L = sum(conv(x, w) * dy) by the definition
    y[b, p, q, o] = sum_{i, j, c} xpad[b, p*sh + i*dh, q*sw + j*dw, c] w[i, j, c, o], in float64."""
    x, w, dy = (np.asarray(a, np.float64) for a in (x, w, dy))
    (pt, pb), (pl, pr) = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    (sh, sw), (dh, dw_) = strides, dilation
    _, ho, wo, _ = dy.shape
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            for p in range(ho):
                for q in range(wo):
                    r, c = p * sh + i * dh, q * sw + j * dw_
                    dw[i, j] += np.einsum("bc,bo->co", xp[:, r, c, :], dy[:, p, q, :])
                    dxp[:, r, c, :] += dy[:, p, q, :] @ w[i, j].T
    return dxp[:, pt:pt + x.shape[1], pl:pl + x.shape[2]], dw


CASES = [  # (input shape, kernel shape, strides, padding, dilation)
    ((2, 7, 9, 3), (3, 3, 3, 4), (1, 1), "SAME", (1, 1)),
    ((2, 7, 9, 3), (3, 3, 3, 4), (2, 2), "SAME", (1, 1)),
    ((1, 8, 8, 5), (3, 3, 5, 2), (2, 1), "VALID", (1, 1)),
    ((2, 6, 7, 2), (1, 3, 2, 3), (1, 2), ((2, 0), (1, 1)), (1, 1)),
    ((1, 9, 9, 2), (3, 3, 2, 2), (1, 1), "SAME", (2, 2)),
    ((1, 11, 10, 4), (5, 5, 4, 3), (2, 2), ((2, 2), (1, 3)), (1, 1)),
    ((3, 5, 5, 1), (2, 2, 1, 6), (1, 1), "SAME", (1, 1)),
]


@pytest.mark.parametrize("shape,kshape,strides,padding,dilation", CASES)
def test_gradients_equal_the_definition_in_float64(x64, shape, kshape, strides, padding, dilation):
    rng = np.random.default_rng(len(shape) + kshape[0])
    # badly scaled channels: the gradient sums mix magnitudes 1e-3..1e3
    x = rng.normal(size=shape) * np.geomspace(1e-3, 1e3, shape[-1])
    w = rng.normal(size=kshape)
    y = conv_gradients.conv_with_product_gradients(jnp.asarray(x), jnp.asarray(w), strides, padding, dilation)
    ref = lax.conv_general_dilated(jnp.asarray(x), jnp.asarray(w), strides, padding, rhs_dilation=dilation,
                                   dimension_numbers=DN)
    assert y.shape == ref.shape and np.array_equal(np.asarray(y), np.asarray(ref))  # the library's forward
    dy = rng.normal(size=y.shape)
    _, vjp = jax.vjp(lambda a, b: conv_gradients.conv_with_product_gradients(a, b, strides, padding, dilation),
                     jnp.asarray(x), jnp.asarray(w))
    dx, dw = vjp(jnp.asarray(dy))
    pads = conv_gradients.explicit_padding(shape, kshape, strides, padding, dilation)
    odx, odw = oracle_gradients(x, w, dy, strides, pads, dilation)
    np.testing.assert_allclose(np.asarray(dx), odx, rtol=1e-11, atol=1e-11 * np.abs(odx).max())
    np.testing.assert_allclose(np.asarray(dw), odw, rtol=1e-11, atol=1e-11 * np.abs(odw).max())


def test_float32_gradients_inside_a_scan_agree_with_the_library_outside():
    """The case it exists for: a scan over micro-batches, the gradients summed; float32 round-off
    of the library's whole-batch gradients."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(8, 12, 12, 6)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(3, 3, 6, 5)).astype(np.float32) * 0.2)

    def loss(conv, w, xb):
        return jnp.sum(jnp.tanh(conv(xb, w, (2, 2), "SAME", rhs_dilation=(1, 1), dimension_numbers=DN)))

    whole = jax.grad(lambda w: loss(lax.conv_general_dilated, w, x))(w)

    def micro(w):
        def body(total, xb):
            return total + jax.grad(lambda w: loss(pointwise.conv_general_dilated, w, xb))(w), None
        with conv_gradients.product_gradients():
            return lax.scan(body, jnp.zeros_like(w), x.reshape(4, 2, 12, 12, 6))[0]

    parts = jax.jit(micro)(w)
    np.testing.assert_allclose(np.asarray(parts), np.asarray(whole), rtol=1e-4, atol=1e-5 * float(jnp.abs(whole).max()))


def test_pointwise_routes_regular_convolutions_only_inside_the_context():
    x, w = jnp.ones((1, 6, 6, 2)), jnp.ones((3, 3, 2, 4))

    def f():  # a new function each time: traces are cached by function, not by the context
        return lambda x, w: pointwise.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)

    assert "custom_vjp_call" not in " ".join(conv_ops(f(), x, w))
    with conv_gradients.product_gradients():
        inside = " ".join(conv_ops(f(), x, w))
        grouped = " ".join(conv_ops(lambda x, w: pointwise.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=DN, feature_group_count=2), x, jnp.ones((3, 3, 1, 4))))
    assert "custom_vjp_call" in inside
    assert "custom_vjp_call" not in grouped  # grouped (depthwise) convolutions keep the library's
    assert not conv_gradients.is_active()


def test_bad_kernel_is_a_clear_error():
    with pytest.raises(ValueError, match="does not fit input channels 3"):
        conv_gradients.conv_with_product_gradients(jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 2, 4)))
