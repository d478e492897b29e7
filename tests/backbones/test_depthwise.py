"""Depthwise convolution (jscore.backbones.depthwise) against a direct float64 NumPy loop."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from jscore.backbones.depthwise import DepthwiseConv, depthwise_conv  # noqa: E402


def oracle(x, kernel, strides, pads, dilation):
    """Direct definition: out[b, i, j, k] = sum_{u, v} xpad[b, i*s + u*d, j*s + v*d, k // M] w[u, v, 0, k]."""
    x = np.asarray(x, np.float64)
    w = np.asarray(kernel, np.float64)
    (pt, pb), (pl, pr) = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    kh, kw, _, outputs = w.shape
    mult = outputs // x.shape[-1]
    (sh, sw), (dh, dw) = strides, dilation
    oh = (xp.shape[1] - (kh - 1) * dh - 1) // sh + 1
    ow = (xp.shape[2] - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((x.shape[0], oh, ow, outputs))
    for k in range(outputs):
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, i * sh:i * sh + (kh - 1) * dh + 1:dh, j * sw:j * sw + (kw - 1) * dw + 1:dw, k // mult]
                out[:, i, j, k] = (patch * w[:, :, 0, k]).sum(axis=(1, 2))
    return out


def same_pads(size, k, s, d):
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def padding_and_pads(kind, shape, k, strides, dilation):
    """The `padding` argument for a test case ("SAME", "VALID" or "explicit": an uneven explicit
    one) and the explicit ((top, bottom), (left, right)) padding it means."""
    if kind == "SAME":
        return kind, (same_pads(shape[1], k, strides[0], dilation[0]), same_pads(shape[2], k, strides[1], dilation[1]))
    if kind == "VALID":
        return kind, ((0, 0), (0, 0))
    explicit = ((k // 2, k // 2 + 1), (1, 0))
    return explicit, explicit


@pytest.mark.parametrize("shape,k,strides,dilation,mult", [
    ((2, 9, 9, 3), 3, (1, 1), (1, 1), 1),
    ((2, 10, 7, 4), 3, (2, 2), (1, 1), 1),   # even height, odd width: SAME pads (0, 1) and (1, 1)
    ((1, 11, 11, 2), 5, (2, 1), (1, 1), 2),  # 5x5 (EfficientNet), channel multiplier 2
    ((1, 8, 8, 3), 3, (1, 1), (2, 2), 1),    # dilated
])
@pytest.mark.parametrize("padding", ["SAME", "VALID", "explicit"])
def test_matches_direct_definition(shape, k, strides, dilation, mult, padding):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=(k, k, 1, shape[-1] * mult)).astype(np.float32)
    padding, pads = padding_and_pads(padding, shape, k, strides, dilation)
    want = oracle(x, w, strides, pads, dilation)
    for method in ("shifted", "lax"):
        got = np.asarray(depthwise_conv(x, w, strides=strides, padding=padding, dilation=dilation, method=method))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=method)


def test_hand_checkable_case():
    # One channel, 3x3 input 1..9, 2x2 kernel of ones, VALID: each output is a 2x2 window sum.
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    w = np.ones((2, 2, 1, 1), np.float32)
    got = np.asarray(depthwise_conv(x, w, padding="VALID", method="shifted"))[0, :, :, 0]
    np.testing.assert_array_equal(got, [[12, 16], [24, 28]])


def oracle_gradients(x, w, dy, strides, pads, dilation):
    """dL/dx and dL/dw of L = sum(depthwise(x, w) * dy) by the definition above, in float64:
    every output element adds dy * w to the input it read and dy * input to the tap it used."""
    x, w, dy = (np.asarray(a, np.float64) for a in (x, w, dy))
    (pt, pb), (pl, pr) = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    kh, kw, _, outputs = w.shape
    mult = outputs // x.shape[-1]
    (sh, sw), (dh, dw_) = strides, dilation
    _, oh, ow, _ = dy.shape
    for k in range(outputs):
        for u in range(kh):
            for v in range(kw):
                for i in range(oh):
                    for j in range(ow):
                        r, c = i * sh + u * dh, j * sw + v * dw_
                        dxp[:, r, c, k // mult] += dy[:, i, j, k] * w[u, v, 0, k]
                        dw[u, v, 0, k] += np.dot(dy[:, i, j, k], xp[:, r, c, k // mult])
    return dxp[:, pt:pt + x.shape[1], pl:pl + x.shape[2]], dw


@pytest.mark.parametrize("shape,k,strides,dilation,mult", [
    ((2, 9, 9, 3), 3, (1, 1), (1, 1), 1),
    ((2, 10, 7, 4), 3, (2, 2), (1, 1), 1),
    ((1, 11, 11, 2), 5, (2, 1), (1, 1), 2),
    ((1, 8, 8, 3), 3, (1, 1), (2, 2), 1),
    ((2, 7, 8, 2), 3, (3, 2), (1, 2), 3),    # a stride that leaves the last rows unread
])
@pytest.mark.parametrize("padding", ["SAME", "VALID", "explicit"])
def test_gradients_equal_the_definition_in_float64(x64, shape, k, strides, dilation, mult, padding):
    """The shifted method's own backward (input gradient as one placed-and-shifted sum, kernel
    gradient per tap) against the definition, channels scaled 1e-3..1e3."""
    rng = np.random.default_rng(shape[1] * 10 + k)
    x = rng.normal(size=shape) * np.geomspace(1e-3, 1e3, shape[-1])
    w = rng.normal(size=(k, k, 1, shape[-1] * mult))
    padding, pads = padding_and_pads(padding, shape, k, strides, dilation)
    y, vjp = jax.vjp(lambda a, b: depthwise_conv(a, b, strides=strides, padding=padding, dilation=dilation,
                                                 method="shifted"), jnp.asarray(x), jnp.asarray(w))
    assert y.dtype == jnp.float64
    dy = rng.normal(size=y.shape)
    dx, dw = vjp(jnp.asarray(dy))
    odx, odw = oracle_gradients(x, w, dy, strides, pads, dilation)
    np.testing.assert_allclose(np.asarray(dx), odx, rtol=1e-11, atol=1e-11 * np.abs(odx).max())
    np.testing.assert_allclose(np.asarray(dw), odw, rtol=1e-11, atol=1e-11 * np.abs(odw).max())


def test_gradients_agree_with_library_convolution():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
    w = rng.normal(size=(3, 3, 1, 4)).astype(np.float32)

    def loss(method):
        return lambda x, w: (depthwise_conv(x, w, strides=(2, 2), method=method) ** 2).sum()

    gs = jax.grad(loss("shifted"), argnums=(0, 1))(x, w)
    gl = jax.grad(loss("lax"), argnums=(0, 1))(x, w)
    for a, b in zip(gs, gl):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_flax_layer_has_conv_layout():
    import flax.linen as nn

    x = np.random.default_rng(2).normal(size=(1, 6, 6, 5)).astype(np.float32)
    ours = DepthwiseConv((3, 3), (2, 2))
    ref = nn.Conv(5, (3, 3), (2, 2), feature_group_count=5, use_bias=False)
    params = ours.init(jax.random.PRNGKey(0), x)
    assert jax.tree_util.tree_map(np.shape, params) == jax.tree_util.tree_map(np.shape, ref.init(jax.random.PRNGKey(0), x))
    np.testing.assert_allclose(np.asarray(ours.apply(params, x)), np.asarray(ref.apply(params, x)), rtol=1e-5, atol=1e-5)


def test_bad_kernel_and_padding_raise():
    x = np.zeros((1, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="does not fit 3 input channels"):
        depthwise_conv(x, np.zeros((3, 3, 1, 4), np.float32))
    with pytest.raises(ValueError, match="padding must be"):
        depthwise_conv(x, np.zeros((3, 3, 1, 3), np.float32), padding="FULL", method="shifted")
    with pytest.raises(ValueError, match="method must be"):
        depthwise_conv(x, np.zeros((3, 3, 1, 3), np.float32), method="fast")


def test_bfloat16_kernel_gradient_sums_in_float32():
    """bfloat16 activations (`--bf16`): the kernel gradient of a 3x3 layer over 8 x 24 x 24
    positions per channel stays within bfloat16's own rounding of the float64 sum, which a
    bfloat16 running sum over the rows would not (its error grows with the number of rows)."""
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(8, 24, 24, 4)) + 1.0).astype(np.float32)
    w = rng.normal(size=(3, 3, 1, 4)).astype(np.float32)
    dy = (rng.normal(size=(8, 24, 24, 4)) + 1.0).astype(np.float32)
    xb, wb, dyb = (jnp.asarray(a, jnp.bfloat16) for a in (x, w, dy))
    _, vjp = jax.vjp(lambda a, b: depthwise_conv(a, b, method="shifted"), xb, wb)
    _, dw = vjp(dyb)
    assert dw.dtype == jnp.bfloat16
    pads = (same_pads(24, 3, 1, 1), same_pads(24, 3, 1, 1))
    _, want = oracle_gradients(np.asarray(xb.astype(jnp.float32)), w, np.asarray(dyb.astype(jnp.float32)),
                               (1, 1), pads, (1, 1))
    np.testing.assert_allclose(np.asarray(dw.astype(jnp.float32)), want, rtol=2 ** -7)
