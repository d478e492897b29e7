"""1x1 convolutions as matrix products (jscore.backbones.pointwise) against a float64 NumPy sum,
the library convolution, and the layers that use them."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from jscore.backbones import pointwise  # noqa: E402


def oracle(x, kernel):
    """out[b, h, w, o] = sum_c x[b, h, w, c] kernel[0, 0, c, o], in float64."""
    return np.einsum("bhwc,co->bhwo", np.asarray(x, np.float64), np.asarray(kernel, np.float64)[0, 0])


def conv_ops(fn, *args):
    """The primitive names of fn's jaxpr (nested jaxprs included)."""
    names = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.append(eqn.primitive.name)
            for v in eqn.params.values():
                if hasattr(v, "jaxpr"):
                    walk(v.jaxpr if hasattr(v.jaxpr, "eqns") else v.jaxpr.jaxpr)
    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return names


@pytest.mark.parametrize("shape,outputs", [((2, 5, 7, 3), 4), ((1, 1, 1, 8), 2), ((3, 4, 4, 16), 16)])
@pytest.mark.parametrize("padding", ["SAME", "VALID", ((0, 0), (0, 0))])
def test_matches_direct_sum_and_takes_the_matrix_product(shape, outputs, padding):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32) * np.array([1e3, 1e-3, 1, 5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
                                                             np.float32)[: shape[-1]]  # badly scaled channels
    w = rng.normal(size=(1, 1, shape[-1], outputs)).astype(np.float32)

    def f(x, w):
        return pointwise.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                              precision=lax.Precision.HIGHEST)

    want = oracle(x, w)
    got = np.asarray(f(x, w))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    if jax.default_backend() == "cpu":  # the matrix product is the CPU path only
        ops = conv_ops(f, x, w)
        assert "dot_general" in ops and "conv_general_dilated" not in ops


def test_float64_to_round_off(x64):
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=(2, 3, 5, 6)) * 1e4, rng.normal(size=(1, 1, 6, 5))
    got = np.asarray(pointwise.conv_general_dilated(jnp.asarray(x), jnp.asarray(w), (1, 1), "SAME",
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC")))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, oracle(x, w), rtol=1e-12, atol=1e-12 * np.abs(oracle(x, w)).max())


def test_hand_checkable_case():
    # Two channels (1, 2) at every pixel, kernel [[1, 10], [100, 1000]]: outputs (201, 2010).
    x = np.tile(np.array([1.0, 2.0], np.float32), (1, 2, 2, 1))
    w = np.array([[1.0, 10.0], [100.0, 1000.0]], np.float32).reshape(1, 1, 2, 2)
    got = np.asarray(pointwise.pointwise_conv(x, w))
    np.testing.assert_array_equal(got, np.tile([201.0, 2010.0], (1, 2, 2, 1)))


@pytest.mark.parametrize("kernel,strides,groups,dilation", [
    ((3, 3, 4, 6), (1, 1), 1, None),   # not 1x1
    ((1, 1, 4, 6), (2, 2), 1, None),   # strided
    ((1, 1, 2, 6), (1, 1), 2, None),   # grouped
    ((1, 1, 4, 6), (1, 1), 1, (2, 2)),  # input dilation
])
def test_other_convolutions_go_to_the_library(kernel, strides, groups, dilation):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 6, 4)).astype(np.float32)
    w = rng.normal(size=kernel).astype(np.float32)
    kw = dict(lhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)

    def f(x, w):
        return pointwise.conv_general_dilated(x, w, strides, pads, **kw)

    pads = ((0, 0), (0, 0)) if kernel[0] == 1 else "SAME"  # (input dilation takes explicit padding)
    assert "conv_general_dilated" in conv_ops(f, x, w)
    np.testing.assert_array_equal(np.asarray(f(x, w)), np.asarray(lax.conv_general_dilated(x, w, strides, pads, **kw)))


@pytest.mark.parametrize("case", ["padded", "batch_groups", "preferred_type", "nchw", "mixed_dtypes", "switched_off"])
def test_what_is_not_a_plain_product_goes_to_the_library(case, monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 4, 4, 6)).astype(np.float32)
    w = rng.normal(size=(1, 1, 6, 6)).astype(np.float32)
    kw = dict(dimension_numbers=("NHWC", "HWIO", "NHWC"))
    pads = "SAME"
    if case == "padded":
        pads = ((1, 0), (0, 1))
    elif case == "batch_groups":
        kw["batch_group_count"] = 2
        w = w[..., :6]
    elif case == "preferred_type":
        kw["preferred_element_type"] = jnp.float32
    elif case == "nchw":
        kw["dimension_numbers"] = ("NCHW", "OIHW", "NCHW")
        x, w = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)
    elif case == "mixed_dtypes":
        x = x.astype(jnp.bfloat16)
    elif case == "switched_off":
        monkeypatch.setattr(pointwise, "USE_MATMUL", False)

    def f(x, w):
        return pointwise.conv_general_dilated(x, w, (1, 1), pads, **kw)

    if case == "mixed_dtypes":  # the library refuses them (a dot would quietly promote): so do we
        with pytest.raises(TypeError, match="same dtypes"):
            f(x, w)
        return
    ops = conv_ops(f, x, w)
    assert "conv_general_dilated" in ops and "dot_general" not in ops
    want = lax.conv_general_dilated(x, w, (1, 1), pads, **kw)
    got = f(x, w)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_gradients_agree_with_library_convolution():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 5, 6)).astype(np.float32)
    w = rng.normal(size=(1, 1, 6, 3)).astype(np.float32)
    dn = ("NHWC", "HWIO", "NHWC")

    def loss(conv):
        return lambda x, w: (jnp.tanh(conv(x, w, (1, 1), "SAME", dimension_numbers=dn)) ** 2).sum()

    ours = jax.grad(loss(pointwise.conv_general_dilated), argnums=(0, 1))(x, w)
    ref = jax.grad(loss(lax.conv_general_dilated), argnums=(0, 1))(x, w)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_flax_conv_uses_it_with_the_same_parameters():
    """nn.Conv(..., conv_general_dilated=...) as the mobile zoo builds its 1x1 layers: same
    parameter tree and values as the library layer, and a matrix product inside."""
    import flax.linen as nn

    x = np.random.default_rng(3).normal(size=(2, 4, 4, 5)).astype(np.float32)
    ours = nn.Conv(7, (1, 1), use_bias=False, conv_general_dilated=pointwise.conv_general_dilated)
    ref = nn.Conv(7, (1, 1), use_bias=False)
    params = ref.init(jax.random.PRNGKey(0), x)
    assert jax.tree_util.tree_map(np.shape, ours.init(jax.random.PRNGKey(0), x)) == jax.tree_util.tree_map(np.shape, params)
    np.testing.assert_allclose(np.asarray(ours.apply(params, x)), np.asarray(ref.apply(params, x)), rtol=1e-5, atol=1e-5)
    if jax.default_backend() == "cpu":
        ops = conv_ops(lambda p, x: ours.apply(p, x), params, x)
        assert "dot_general" in ops and "conv_general_dilated" not in ops
