"""Gradients of KxK convolutions as matrix products, for training steps that loop over micro-batches.

Inside a loop body, such as the `lax.scan` over micro-batches of a training step
(`TrainConfig.micro_batch_size`), XLA's CPU backend computes the gradients of a regular (KxK, one
group) NHWC convolution through a slow generic path: outside loops it rewrites the kernel
gradient into a fast form, inside them it does not (jax-ml/jax#12868 reports the same for a
forward convolution in another layout). Measured on the 2-core machine, one 3x3 convolution of
`[32, 56, 56, 64]` in a scan over 4 micro-batches: 55 s against 1.8 s for the whole batch; a
MobileNet-EdgeTPU training step at micro-batches of 8, 157 s against 16 s (docs/performance.md).

`conv_with_product_gradients` computes the forward with the library convolution (the same values,
bit for bit) and both gradients as matrix products of shifted slices, which XLA runs fast in or
out of loops. With `P` the zero-padded input and `X_ij` its slice at kernel offset `(i, j)` (with
the window's strides and dilation):

    dW[i, j] = X_ij^T dY                      (a [C, O] matrix product per kernel tap)
    dP       = sum_ij place_ij(dY W[i, j]^T)  (scattered back to the slice's positions by padding)
    dX       = dP without its padding

The same sums as the library's gradients, in another order (float32 round-off apart).
`product_gradients()` is the context in which `pointwise.conv_general_dilated` uses it: it is read
when a model is traced, so the train step enters it around the micro-batch loop only (outside
loops the library's own gradients are as fast or faster). JAX caches traces by function, not by
this context: enter it inside the function being traced (as the train step does), not around a
call of an already-traced one.
"""

from __future__ import annotations

import contextlib
import contextvars
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

_ACTIVE = contextvars.ContextVar("jscore_conv_product_gradients", default=False)


@contextlib.contextmanager
def product_gradients(active: bool = True):
    """While active, `pointwise.conv_general_dilated` traces regular NHWC convolutions with
    `conv_with_product_gradients` (on the CPU backend)."""
    token = _ACTIVE.set(active)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def is_active() -> bool:
    return _ACTIVE.get()


def explicit_padding(x_shape, kernel_shape, strides, padding, rhs_dilation):
    """((top, bottom), (left, right)) of an NHWC/HWIO convolution, from "SAME"/"VALID" or pairs."""
    if isinstance(padding, str):
        window = [(k - 1) * d + 1 for k, d in zip(kernel_shape[:2], rhs_dilation)]
        return tuple(tuple(p) for p in lax.padtype_to_pads(x_shape[1:3], window, strides, padding))
    return tuple(tuple(int(v) for v in p) for p in padding)


def _library(x, w, strides, padding, dilation, precision):
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, w, strides, padding, dilation, precision):
    return _library(x, w, strides, padding, dilation, precision)


def _conv_fwd(x, w, strides, padding, dilation, precision):
    return _library(x, w, strides, padding, dilation, precision), (x, w)


def _conv_bwd(strides, padding, dilation, precision, residuals, dy):
    x, w = residuals
    kh, kw, cin, cout = w.shape
    (sh, sw), (dh, dw) = strides, dilation
    (pt, pb), (pl, pr) = padding
    b, h, wd, _ = x.shape
    _, ho, wo, _ = dy.shape
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    hp, wp = xp.shape[1], xp.shape[2]
    dy2 = dy.reshape(-1, cout)
    taps, dxp = [], None
    for i in range(kh):
        for j in range(kw):
            top, left = i * dh, j * dw
            bottom, right = top + sh * (ho - 1) + 1, left + sw * (wo - 1) + 1
            xs = lax.slice(xp, (0, top, left, 0), (b, bottom, right, cin), (1, sh, sw, 1))
            taps.append(lax.dot_general(xs.reshape(-1, cin), dy2, (((0,), (0,)), ((), ())), precision=precision))
            part = jnp.dot(dy2, w[i, j].T, precision=precision).reshape(b, ho, wo, cin)
            part = lax.pad(part, jnp.zeros((), part.dtype),
                           ((0, 0, 0), (top, hp - bottom, sh - 1), (left, wp - right, sw - 1), (0, 0, 0)))
            dxp = part if dxp is None else dxp + part
    dw_ = jnp.stack(taps).reshape(kh, kw, cin, cout).astype(w.dtype)
    dx = lax.slice(dxp, (0, pt, pl, 0), (b, pt + h, pl + wd, cin)).astype(x.dtype)
    return dx, dw_


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_with_product_gradients(x, kernel, strides=(1, 1), padding="SAME", rhs_dilation=(1, 1), precision=None):
    """A regular NHWC convolution whose gradients are matrix products (see the module).

    x: `[B, H, W, C]`; kernel: `[KH, KW, C, O]` (one group); strides, rhs_dilation: `(sh, sw)`;
    padding: "SAME", "VALID" or `((top, bottom), (left, right))` (non-negative). Returns
    `[B, H', W', O]`, the library convolution's values.

    Raises ValueError when the kernel's input channels are not the input's or a padding is
    negative.
    """
    if kernel.ndim != 4 or kernel.shape[2] != x.shape[-1]:
        raise ValueError(f"kernel {kernel.shape} does not fit input channels {x.shape[-1]} (expected [KH, KW, C, O])")
    strides, rhs_dilation = tuple(int(s) for s in strides), tuple(int(d) for d in rhs_dilation)
    pads = explicit_padding(x.shape, kernel.shape, strides, padding, rhs_dilation)
    if any(p < 0 for pair in pads for p in pair):
        raise ValueError(f"negative padding {pads} is not supported here")
    return _conv(x, kernel, strides, pads, rhs_dilation, precision)
