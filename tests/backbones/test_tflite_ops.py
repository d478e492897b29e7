"""Every TFLite operator jscore imports, on tiny arrays, against the float64 loop oracles in
tests/oracles/tflite_ops.py (file layouts converted the way the importer converts them)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscore.backbones import tflite_ops as ops
from tests.oracles import tflite_ops as ref
from tests.tolerances import tolerance

RTOL, ATOL = tolerance(np.float32)


def _rand(shape, seed=0, lo=-2.0, hi=2.0):
    return np.random.default_rng(seed).uniform(lo, hi, size=shape).astype(np.float32)


def _close(ours, want):
    np.testing.assert_allclose(np.asarray(ours, np.float64), want, rtol=RTOL, atol=ATOL)


def test_same_padding_hand_case():
    # 5 wide, k=3, stride 2: out 3, total pad max(2*2+3-5, 0) = 2 -> 1 before, 1 after.
    assert ref.same_pads(5, 3, 2) == (3, 1)
    # 4 wide, k=3, stride 2: out 2, total 1 -> 0 before, 1 after (TF puts the extra one after).
    assert ref.same_pads(4, 3, 2) == (2, 0)
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 4, 1)          # [0, 1, 2, 3]
    w = np.ones((1, 1, 3, 1), np.float32)                          # OHWI, a 1x3 box filter
    y = ops.conv_2d(jnp.asarray(x), jnp.asarray(w.transpose(1, 2, 3, 0)), None, strides=(1, 2), padding="SAME")
    np.testing.assert_array_equal(np.asarray(y).ravel(), [0 + 1 + 2, 2 + 3])   # windows [0..2], [2..3]+pad


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (2, 1)])
@pytest.mark.parametrize("act", ["NONE", "RELU", "RELU6", "RELU_N1_TO_1", "TANH"])
def test_conv_2d(padding, stride, act):
    x = _rand((2, 7, 6, 3), 1)
    w = _rand((4, 3, 3, 3), 2)         # OHWI
    b = _rand((4,), 3)
    y = ops.conv_2d(jnp.asarray(x), jnp.asarray(w.transpose(1, 2, 3, 0)), jnp.asarray(b), strides=stride,
                    padding=padding, activation=act)
    _close(y, ref.conv_2d(x, w, b, stride, padding, act=act))


def test_conv_2d_dilation_and_groups():
    x = _rand((1, 8, 8, 4), 4)
    w = _rand((6, 3, 3, 2), 5)         # 2 groups of 2 input channels
    b = _rand((6,), 6)
    y = ops.conv_2d(jnp.asarray(x), jnp.asarray(w.transpose(1, 2, 3, 0)), jnp.asarray(b), strides=(1, 1),
                    padding="SAME", dilation=(2, 2))
    _close(y, ref.conv_2d(x, w, b, (1, 1), "SAME", dilation=(2, 2)))


@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("padding,stride", [("SAME", (1, 1)), ("SAME", (2, 2)), ("VALID", (2, 2))])
def test_depthwise_conv_2d(multiplier, padding, stride):
    x = _rand((2, 6, 7, 3), 7)
    w = _rand((1, 3, 3, 3 * multiplier), 8)
    b = _rand((3 * multiplier,), 9)
    y = ops.depthwise_conv_2d(jnp.asarray(x), jnp.asarray(w.transpose(1, 2, 0, 3)), jnp.asarray(b), strides=stride,
                              padding=padding, activation="RELU6")
    _close(y, ref.depthwise_conv_2d(x, w, b, stride, padding, multiplier, act="RELU6"))


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("padding,window,stride", [("VALID", (7, 7), (2, 2)), ("SAME", (3, 3), (2, 2)),
                                                   ("SAME", (2, 3), (1, 1)), ("VALID", (2, 2), (2, 2))])
def test_pool_2d(kind, padding, window, stride):
    x = _rand((2, 7, 7, 3), 10)
    f = ops.average_pool_2d if kind == "avg" else ops.max_pool_2d
    y = f(jnp.asarray(x), window=window, strides=stride, padding=padding)
    _close(y, ref.pool_2d(x, window, stride, padding, kind))


def test_average_pool_same_counts_only_in_bounds():
    # A 2x2 image of ones, 3x3 window, SAME, stride 1: every output is 1 (not 4/9 or 1/... ).
    y = ops.average_pool_2d(jnp.ones((1, 2, 2, 1)), window=(3, 3), strides=(1, 1), padding="SAME")
    np.testing.assert_allclose(np.asarray(y), np.ones((1, 2, 2, 1)), rtol=1e-6)


@pytest.mark.parametrize("keep", [False, True])
def test_fully_connected(keep):
    x = _rand((3, 1, 1, 5), 11)
    w = _rand((4, 5), 12)                # [O, I] as stored
    b = _rand((4,), 13)
    y = ops.fully_connected(jnp.asarray(x), jnp.asarray(w.T), jnp.asarray(b), activation="RELU")
    _close(y, ref.fully_connected(x, w, b, "RELU"))
    y2 = ops.fully_connected(jnp.asarray(x.reshape(3, 5)), jnp.asarray(w.T), jnp.asarray(b), keep_num_dims=keep)
    _close(y2, ref.fully_connected(x, w, b))


def test_elementwise_and_activations():
    a, b = _rand((2, 3, 3, 4), 14, -5, 5), _rand((1, 1, 1, 4), 15, -5, 5)
    _close(ops.add(a, b, activation="RELU6"), np.clip(a.astype(np.float64) + b, 0, 6))
    _close(ops.sub(a, b), a.astype(np.float64) - b)
    _close(ops.mul(a, b, activation="RELU"), np.maximum(a.astype(np.float64) * b, 0))
    _close(ops.hard_swish(a), ref.hard_swish(a))
    _close(ops.logistic(a), ref.logistic(a))
    _close(ops.fused_activation(jnp.asarray(a), "RELU_N1_TO_1"), np.clip(a, -1, 1))
    # hand values: hard_swish(-3) = 0, hard_swish(3) = 3, hard_swish(1) = 1 * 4 / 6
    np.testing.assert_allclose(np.asarray(ops.hard_swish(jnp.array([-4.0, -3.0, 1.0, 3.0]))), [0, 0, 4 / 6, 3], rtol=1e-6)
    with pytest.raises(ValueError, match="SIGN_BIT"):
        ops.fused_activation(jnp.asarray(a), "SIGN_BIT")


def test_softmax_mean_and_shape_ops():
    x = _rand((2, 3, 4, 5), 16)
    _close(ops.softmax(x, beta=0.5), ref.softmax(x, 0.5))
    _close(ops.mean(x, [1, 2], keep_dims=True), x.astype(np.float64).mean(axis=(1, 2), keepdims=True))
    _close(ops.mean(x, [-1]), x.astype(np.float64).mean(axis=-1))
    _close(ops.pad(x, [[0, 0], [1, 0], [0, 2], [0, 0]]), np.pad(x, [(0, 0), (1, 0), (0, 2), (0, 0)]))
    _close(ops.transpose(x, [0, 2, 3, 1]), x.transpose(0, 2, 3, 1))
    _close(ops.concatenation([x, 2 * x], axis=3, activation="RELU"), np.maximum(np.concatenate([x, 2 * x], 3), 0))
    # The file's batch-1 shapes follow the real batch.
    assert ops.reshape(jnp.zeros((7, 1, 1, 10)), [1, 10]).shape == (7, 10)
    assert ops.reshape(jnp.zeros((7, 1, 1, 10)), [-1, 10]).shape == (7, 10)
    assert ops.squeeze(jnp.zeros((7, 1, 1, 10)), ()).shape == (7, 10)
    assert ops.squeeze(jnp.zeros((1, 1, 1, 10)), ()).shape == (1, 10)     # the batch axis is never squeezed
    assert ops.squeeze(jnp.zeros((7, 1, 1, 10)), (1,)).shape == (7, 1, 10)


def test_quantisation_grid_and_clip():
    x = np.array([-1.03, -0.26, 0.0, 0.49, 0.74, 3.1], np.float32)
    for qmin, qmax, z in [(0, 255, 128), (-128, 127, -14), (0, 255, 0)]:
        y = ops.quantize_grid(jnp.asarray(x), 0.1, float(z), qmin, qmax)
        _close(y, ref.fake_quant(x, 0.1, z, qmin, qmax))
        lo, hi = 0.1 * (qmin - z), 0.1 * (qmax - z)
        _close(ops.clip_to_grid(jnp.asarray(x), 0.1, float(z), qmin, qmax), np.clip(x, lo, hi))
    # uint8, zero point 0: the representable range is [0, 25.5], a ReLU.
    np.testing.assert_allclose(np.asarray(ops.quantize_grid(jnp.array([-1.0, 0.26]), 0.1, 0.0, 0, 255)), [0.0, 0.3], atol=1e-7)
    # Straight-through: the gradient is 1 everywhere.
    g = jax.grad(lambda v: ops.quantize_grid(v, 0.1, 0.0, 0, 255).sum())(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(g), np.ones_like(x))
