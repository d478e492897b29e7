"""TFLite builtin operators as float JAX functions (the semantics of the TFLite reference kernels).

Each function takes float activations and float (already dequantised) parameters in the layouts
that `jscore.backbones.tflite` converts the file's tensors to:

- activations NHWC `[B, H, W, C]`;
- `conv_2d` kernel HWIO `[KH, KW, C_in / groups, C_out]` (the file stores OHWI);
- `depthwise_conv_2d` kernel `[KH, KW, 1, C_in * M]` (the file stores `[1, KH, KW, C_in * M]`;
  output channel `k` reads input channel `k // M`);
- `fully_connected` kernel `[C_in, C_out]` (the file stores `[C_out, C_in]`).

Padding follows TensorFlow: VALID has none; SAME pads `total = max((out - 1) * stride +
(k - 1) * dilation + 1 - in, 0)` with `total // 2` before and the rest after, `out =
ceil(in / stride)`. Average pooling with SAME padding divides by the number of in-bounds
elements (the TFLite and TF kernels' rule), not by the window size.

Source: the TFLite schema (`tensorflow/compiler/mlir/lite/schema/schema.fbs`) and the reference
kernels' documented behaviour (https://www.tensorflow.org/mlir/tfl_ops).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax import lax

from jscore.backbones import pointwise
from jscore.backbones.depthwise import depthwise_conv

# TFLite's ActivationFunctionType values (schema.fbs), as names.
ACTIVATIONS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")

_HIGHEST = lax.Precision.HIGHEST


def fused_activation(x, name: str):
    """A TFLite fused activation by name: NONE, RELU, RELU_N1_TO_1 (clip to [-1, 1]), RELU6, TANH.

    Raises:
      ValueError: SIGN_BIT or an unknown name.
    """
    if name == "NONE":
        return x
    if name == "RELU":
        return jax.nn.relu(x)
    if name == "RELU6":
        return jnp.clip(x, 0.0, 6.0)
    if name == "RELU_N1_TO_1":
        return jnp.clip(x, -1.0, 1.0)
    if name == "TANH":
        return jnp.tanh(x)
    raise ValueError(f"unsupported fused activation {name!r}")


def _padding(padding: str) -> str:
    if padding not in ("SAME", "VALID"):
        raise ValueError(f"unsupported padding {padding!r} (TFLite has SAME and VALID)")
    return padding


def conv_2d(x, kernel, bias=None, *, strides: Tuple[int, int] = (1, 1), padding: str = "SAME",
            dilation: Tuple[int, int] = (1, 1), activation: str = "NONE"):
    """TFLite CONV_2D: `[B, H, W, C_in]`, kernel `[KH, KW, C_in / G, C_out]`, bias `[C_out]` ->
    `[B, H', W', C_out]`. Groups G = C_in / kernel's input channels (1 for plain convolutions)."""
    groups = x.shape[-1] // kernel.shape[2]
    # 1x1 layers as matrix products on the CPU (jscore.backbones.pointwise: faster training steps).
    y = pointwise.conv_general_dilated(x, kernel, tuple(strides), _padding(padding), rhs_dilation=tuple(dilation),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
                                       precision=_HIGHEST)
    if bias is not None:
        y = y + bias
    return fused_activation(y, activation)


def depthwise_conv_2d(x, kernel, bias=None, *, strides: Tuple[int, int] = (1, 1), padding: str = "SAME",
                      dilation: Tuple[int, int] = (1, 1), activation: str = "NONE"):
    """TFLite DEPTHWISE_CONV_2D: `[B, H, W, C]`, kernel `[KH, KW, 1, C * M]`, bias `[C * M]` ->
    `[B, H', W', C * M]`; output channel `k` convolves input channel `k // M`."""
    channels = x.shape[-1]
    if kernel.shape[-1] % channels:
        raise ValueError(f"depthwise kernel has {kernel.shape[-1]} outputs, not a multiple of {channels} inputs")
    y = depthwise_conv(x, kernel, strides=tuple(strides), padding=_padding(padding), dilation=tuple(dilation))
    if bias is not None:
        y = y + bias
    return fused_activation(y, activation)


def fully_connected(x, kernel, bias=None, *, keep_num_dims: bool = False, activation: str = "NONE"):
    """TFLite FULLY_CONNECTED: input flattened to `[-1, C_in]` (or kept `[..., C_in]` with
    `keep_num_dims`), kernel `[C_in, C_out]`, bias `[C_out]` -> `[N, C_out]`."""
    c_in = kernel.shape[0]
    if x.size % c_in and x.shape[-1] != c_in:
        raise ValueError(f"fully connected: input {x.shape} does not flatten to rows of {c_in}")
    y = x if keep_num_dims else x.reshape(-1, c_in)
    y = jnp.matmul(y, kernel, precision=_HIGHEST)
    if bias is not None:
        y = y + bias
    return fused_activation(y, activation)


def _pool_counts(shape, window, strides, padding):
    ones = jnp.ones((1,) + tuple(shape[1:3]) + (1,), jnp.float32)
    return lax.reduce_window(ones, 0.0, lax.add, (1,) + tuple(window) + (1,), (1,) + tuple(strides) + (1,), padding)


def average_pool_2d(x, *, window: Tuple[int, int], strides: Tuple[int, int], padding: str = "VALID",
                    activation: str = "NONE"):
    """TFLite AVERAGE_POOL_2D over H and W of `[B, H, W, C]`; SAME padding averages only the
    in-bounds elements."""
    padding = _padding(padding)
    dims, steps = (1,) + tuple(window) + (1,), (1,) + tuple(strides) + (1,)
    total = lax.reduce_window(x, 0.0, lax.add, dims, steps, padding)
    counts = _pool_counts(x.shape, window, strides, padding).astype(x.dtype)
    return fused_activation(total / counts, activation)


def max_pool_2d(x, *, window: Tuple[int, int], strides: Tuple[int, int], padding: str = "VALID",
                activation: str = "NONE"):
    """TFLite MAX_POOL_2D over H and W of `[B, H, W, C]` (SAME padding never wins the max)."""
    dims, steps = (1,) + tuple(window) + (1,), (1,) + tuple(strides) + (1,)
    y = lax.reduce_window(x, -jnp.inf, lax.max, dims, steps, _padding(padding))
    return fused_activation(y, activation)


def mean(x, axes: Sequence[int], *, keep_dims: bool = False):
    """TFLite MEAN over `axes` (negative axes count from the end)."""
    return jnp.mean(x, axis=tuple(int(a) % x.ndim for a in axes), keepdims=keep_dims)


def add(a, b, *, activation: str = "NONE"):
    """TFLite ADD with NumPy broadcasting and a fused activation."""
    return fused_activation(a + b, activation)


def sub(a, b, *, activation: str = "NONE"):
    """TFLite SUB with NumPy broadcasting and a fused activation."""
    return fused_activation(a - b, activation)


def mul(a, b, *, activation: str = "NONE"):
    """TFLite MUL with NumPy broadcasting and a fused activation."""
    return fused_activation(a * b, activation)


def hard_swish(x):
    """TFLite HARD_SWISH: `x * relu6(x + 3) / 6`."""
    return x * jnp.clip(x + 3.0, 0.0, 6.0) / 6.0


def logistic(x):
    """TFLite LOGISTIC: `1 / (1 + exp(-x))`."""
    return jax.nn.sigmoid(x)


def softmax(x, *, beta: float = 1.0):
    """TFLite SOFTMAX over the last axis: `exp(beta x) / sum exp(beta x)`."""
    return jax.nn.softmax(beta * x, axis=-1)


def pad(x, paddings):
    """TFLite PAD: `paddings` `[ndim, 2]` (before, after) per axis; pads with zeros (the real
    value 0, i.e. the zero point in a quantised graph)."""
    return jnp.pad(x, [(int(a), int(b)) for a, b in paddings])


def concatenation(inputs, *, axis: int, activation: str = "NONE"):
    """TFLite CONCATENATION along `axis` with a fused activation."""
    return fused_activation(jnp.concatenate(list(inputs), axis=axis), activation)


def transpose(x, perm: Sequence[int]):
    """TFLite TRANSPOSE by the permutation `perm`."""
    return jnp.transpose(x, tuple(int(p) for p in perm))


def reshape(x, new_shape: Sequence[int]):
    """TFLite RESHAPE whose leading (batch) entry follows the actual batch.

    The files are written for batch 1: a leading 1 (or -1) becomes the batch size of `x`, so a
    batch of B keeps B rows. Any other -1 is inferred as usual.
    """
    shape = [int(s) for s in new_shape]
    if shape and shape[0] in (1, -1):
        shape[0] = x.shape[0]
    return jnp.reshape(x, shape)


def squeeze(x, dims: Optional[Sequence[int]] = None):
    """TFLite SQUEEZE: drop the listed size-1 axes, or every size-1 axis but the batch one when
    `dims` is empty (the files are written for batch 1, so axis 0 is the batch)."""
    if dims:
        return jnp.squeeze(x, axis=tuple(int(d) % x.ndim for d in dims))
    return jnp.squeeze(x, axis=tuple(i for i in range(1, x.ndim) if x.shape[i] == 1))


def quantize_grid(x, scale, zero_point, qmin: int, qmax: int):
    """Round and clip `x` to a quantisation grid: `scale * (clip(round(x / scale) + z, qmin,
    qmax) - z)`, with a straight-through gradient (the gradient of the identity), so a model run
    with fake quantisation stays trainable. `scale`/`zero_point` broadcast against `x`."""
    q = jnp.clip(jnp.round(x / scale) + zero_point, qmin, qmax)
    y = (q - zero_point) * scale
    return x + lax.stop_gradient(y - x)


def clip_to_grid(x, scale, zero_point, qmin: int, qmax: int):
    """Clip `x` to the real range a quantised tensor can hold, `[scale (qmin - z), scale (qmax -
    z)]`, without rounding. The integer kernels saturate every output to that range, and
    converters rely on it: a uint8 tensor with zero point 0 is a ReLU even where the op's fused
    activation says NONE (MobileNetV3's files), so the float forward applies it too."""
    return jnp.clip(x, scale * (qmin - zero_point), scale * (qmax - zero_point))
