"""Depthwise convolution, written so that XLA's CPU backend runs it fast.

XLA lowers a grouped convolution with one channel per group (`feature_group_count = C`) to a
slow generic loop on the CPU: a 3x3 depthwise layer of MobileNetV2 runs about 10x slower than the
same arithmetic written as a sum of KH*KW shifted, per-channel-scaled copies of the input, which
XLA fuses into one elementwise pass (measured: [32, 56, 56, 144], 3x3, 2-core CPU, 0.58 s vs
0.047 s forward, 1.74 s vs 0.20 s forward+backward). The mobile backbones of the zoo (MobileNet
V1/V2/V3/EdgeTPU, MCUNet, EfficientNet-Lite) spend most of their time here, so this decides the
speed of extraction and fine-tuning on a laptop. On accelerators the library convolution is used.

Its gradients are written out as well (a custom VJP): left to autodiff, the input gradient is a
sum of KH*KW pads to the input's full size, which XLA:CPU runs as one slow loop, and the kernel
gradient materialises every shifted window before reducing it. Written out, the input gradient
is the forward's own pattern (one pad of the output gradient, then shifted slices times the
kernel turned round) and the kernel gradient sums row by row; a 3x3 layer of `[8, 56, 56, 144]`
takes 0.26 s forward and backward against 0.98 s (`benchmarks/bench_depthwise.py`,
docs/performance.md). Forward-mode differentiation (`jax.jvp`) of the shifted method is not
defined; reverse mode, `vmap` and `jit` are.

`depthwise_conv` is the function; `DepthwiseConv` is a Flax layer with the parameter layout of
`flax.linen.Conv(features=C, feature_group_count=C)` (kernel `[KH, KW, 1, C]`), so converted
checkpoints load into either.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Padding = Union[str, Sequence[Tuple[int, int]]]


def _explicit_padding(size: int, k: int, stride: int, dilation: int, padding) -> Tuple[int, int]:
    """(before, after) padding of one spatial axis; "SAME" as TensorFlow/XLA define it."""
    span = (k - 1) * dilation + 1
    if isinstance(padding, str):
        if padding == "VALID":
            return 0, 0
        if padding == "SAME":
            out = -(-size // stride)
            total = max((out - 1) * stride + span - size, 0)
            return total // 2, total - total // 2
        raise ValueError(f"padding must be 'SAME', 'VALID' or ((before, after), (before, after)), got {padding!r}")
    before, after = padding
    return int(before), int(after)


def depthwise_conv(x, kernel, *, strides: Sequence[int] = (1, 1), padding: Padding = "SAME",
                   dilation: Sequence[int] = (1, 1), method: str = "auto"):
    """Depthwise 2-D convolution (cross-correlation, as every framework computes it).

    x: `[B, H, W, C]`; kernel: `[KH, KW, 1, C * M]` (channel multiplier M >= 1: output channel
    `k` filters input channel `k // M`); strides, dilation: `(sh, sw)`; padding: "SAME", "VALID"
    or explicit `((top, bottom), (left, right))`. Returns `[B, H', W', C * M]`, H' as in
    `lax.conv_general_dilated`.

    method: "shifted" (sum of KH*KW shifted slices: fast on the CPU), "lax" (the library grouped
    convolution), or "auto" (shifted on the CPU backend, lax elsewhere). Both compute the same
    products; only the order of the float32 sum differs.

    Raises ValueError when the kernel's outputs are not a multiple of the input channels or the
    padding is malformed.
    """
    channels = x.shape[-1]
    kh, kw, one, outputs = kernel.shape
    if one != 1 or outputs % channels:
        raise ValueError(f"depthwise kernel {kernel.shape} does not fit {channels} input channels "
                         "(expected [KH, KW, 1, C * M])")
    if method == "auto":
        method = "shifted" if jax.default_backend() == "cpu" else "lax"
    if method == "lax":
        if not isinstance(padding, str):
            padding = tuple(tuple(p) for p in padding)
        return lax.conv_general_dilated(x, kernel, tuple(strides), padding, rhs_dilation=tuple(dilation),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels,
                                        precision=lax.Precision.HIGHEST)
    if method != "shifted":
        raise ValueError(f"method must be 'auto', 'shifted' or 'lax', got {method!r}")
    pads = padding if not isinstance(padding, str) else (padding, padding)
    (sh, sw), (dh, dw) = (int(v) for v in strides), (int(v) for v in dilation)
    pads = (_explicit_padding(x.shape[1], kh, sh, dh, pads[0]), _explicit_padding(x.shape[2], kw, sw, dw, pads[1]))
    padded = (x.shape[1] + sum(pads[0]), x.shape[2] + sum(pads[1]))
    if padded[0] < (kh - 1) * dh + 1 or padded[1] < (kw - 1) * dw + 1:
        raise ValueError(f"depthwise kernel {kh}x{kw} is larger than its padded input {padded}")
    return _shifted(x, kernel.astype(x.dtype), (sh, sw), pads, (dh, dw))


def _windows(xp, kernel_hw, strides, dilation, out_hw):
    """`((i, j), slice)` of the padded input `xp` under kernel tap `(i, j)`: `[B, H', W', C]`."""
    (kh, kw), (sh, sw), (dh, dw), (out_h, out_w) = kernel_hw, strides, dilation, out_hw
    for i in range(kh):
        for j in range(kw):
            yield (i, j), lax.slice(xp, (0, i * dh, j * dw, 0),
                                    (xp.shape[0], i * dh + (out_h - 1) * sh + 1, j * dw + (out_w - 1) * sw + 1,
                                     xp.shape[3]), (1, sh, sw, 1))


def _repeat_and_pad(x, outputs, pads):
    if outputs != x.shape[-1]:
        x = jnp.repeat(x, outputs // x.shape[-1], axis=-1)
    return jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def _out_hw(padded_hw, kernel_hw, strides, dilation):
    return tuple((p - (k - 1) * d - 1) // s + 1 for p, k, s, d in zip(padded_hw, kernel_hw, strides, dilation))


def _shifted_forward(x, kernel, strides, pads, dilation):
    xp = _repeat_and_pad(x, kernel.shape[-1], pads)
    kernel_hw = kernel.shape[:2]
    y = None
    for (i, j), window in _windows(xp, kernel_hw, strides, dilation, _out_hw(xp.shape[1:3], kernel_hw, strides,
                                                                             dilation)):
        term = window * kernel[i, j, 0]
        y = term if y is None else y + term
    return y


# The gradients are written out rather than left to autodiff: the transpose of each strided slice
# is a pad to the full input size, and XLA's CPU backend runs the sum of KH*KW such pads in one
# slow loop (0.70 of 0.97 s for a [8, 56, 56, 144] 3x3 layer, forward 0.08 s). Here the input
# gradient is one pad of the output gradient (zeros between its rows and columns for a stride)
# followed by the same sum of shifted, per-channel-scaled slices as the forward, with the kernel
# turned round; the kernel gradient is summed row by row (below).
@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _shifted(x, kernel, strides, pads, dilation):
    return _shifted_forward(x, kernel, strides, pads, dilation)


def _shifted_fwd(x, kernel, strides, pads, dilation):
    return _shifted_forward(x, kernel, strides, pads, dilation), (x, kernel)


def _shifted_bwd(strides, pads, dilation, residuals, dy):
    x, kernel = residuals
    (kh, kw, _, outputs), (sh, sw), (dh, dw) = kernel.shape, strides, dilation
    b, h, w, channels = x.shape
    xp = _repeat_and_pad(x, outputs, pads)
    hp, wp = xp.shape[1], xp.shape[2]
    out_h, out_w = dy.shape[1], dy.shape[2]
    # dxp[y, x] = sum_ij dy_placed[y - i*dh, x - j*dw] kernel[i, j]: dy placed on the stride grid,
    # with (KH-1)*dh rows and (KW-1)*dw columns of zeros before it and the uncovered rest after.
    placed = lax.pad(dy, jnp.zeros((), dy.dtype),
                     ((0, 0, 0), ((kh - 1) * dh, hp - (out_h - 1) * sh - 1, sh - 1),
                      ((kw - 1) * dw, wp - (out_w - 1) * sw - 1, sw - 1), (0, 0, 0)))
    dxp = None
    for i in range(kh):
        for j in range(kw):
            top, left = (kh - 1 - i) * dh, (kw - 1 - j) * dw
            term = lax.slice(placed, (0, top, left, 0), (b, top + hp, left + wp, outputs)) * kernel[i, j, 0]
            dxp = term if dxp is None else dxp + term
    (pt, _), (pl, _) = pads
    dx = lax.slice(dxp, (0, pt, pl, 0), (b, pt + h, pl + w, outputs))
    if outputs != channels:  # output channel k came from input channel k // M
        dx = dx.reshape(b, h, w, channels, outputs // channels).sum(axis=-1)
    # dkernel[i, j] = sum over (b, y, x) of window_ij * dy, one output row at a time: a scan over
    # rows keeps each row's few input rows in cache for all KH*KW taps (6x faster on the CPU than
    # KH*KW reductions over whole windows, which XLA materialises first).
    span = (kh - 1) * dh + 1
    acc_dtype = jnp.promote_types(dy.dtype, jnp.float32)  # bfloat16 inputs: sum rows in float32

    def row(acc, r):
        rows = lax.dynamic_slice_in_dim(xp, r * sh, span, axis=1)          # [B, span, Wp, C*M]
        dy_row = lax.dynamic_index_in_dim(dy, r, axis=1, keepdims=False)   # [B, W', C*M]
        taps = [jnp.sum(lax.slice(rows, (0, i * dh, j * dw, 0), (b, i * dh + 1, j * dw + (out_w - 1) * sw + 1, outputs),
                                  (1, 1, sw, 1))[:, 0] * dy_row, axis=(0, 1), dtype=acc_dtype)
                for i in range(kh) for j in range(kw)]
        return acc + jnp.stack(taps), None

    dk, _ = lax.scan(row, jnp.zeros((kh * kw, outputs), acc_dtype), jnp.arange(out_h))
    return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


_shifted.defvjp(_shifted_fwd, _shifted_bwd)


class DepthwiseConv(nn.Module):
    """Flax depthwise convolution: `[B, H, W, C] -> [B, H', W', C]`, parameter `kernel`
    `[KH, KW, 1, C]` (the layout of `nn.Conv(C, feature_group_count=C)`), no bias."""

    kernel_size: Tuple[int, int]
    strides: Tuple[int, int] = (1, 1)
    padding: Padding = "SAME"
    dtype: Any = None  # computation dtype; None: promote the input with the float32 kernel, as nn.Conv
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, 1, c), jnp.float32)
        dtype = self.dtype or jnp.promote_types(x.dtype, jnp.float32)
        return depthwise_conv(x.astype(dtype), kernel.astype(dtype), strides=self.strides, padding=self.padding)
