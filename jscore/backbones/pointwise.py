"""1x1 convolutions as matrix products, written so that XLA's CPU backend trains them fast.

A 1x1, stride-1 convolution of `[B, H, W, C]` with a `[1, 1, C, O]` kernel is the matrix product
`[B*H*W, C] @ [C, O]`. XLA's CPU backend runs it as a convolution, and its gradients as
convolutions that transpose both operands first: fine-tuning MobileNetV2 (224 px, batch 32, one
core) spent 4.3 of 14 s per step in those transposes; as a `dot` the step is 1.4x faster, and
2.5x with glibc's transparent huge pages (docs/performance.md, benchmarks/bench_train_step.py). The mobile zoo's expansion and
projection layers are all 1x1, so this decides the speed of fine-tuning on a laptop.

The products are the same; only the order of the float32 sums differs. The integer TFLite
imports sum integer codes, which float32 adds exactly in any order, so with their published
weights the forward is bit for bit the same; once fine-tuning has moved the weights off their
integer grid, the sums are ordinary float32 ones and differ in their last bits.

`conv_general_dilated` has the signature of `jax.lax.conv_general_dilated` (what `flax.linen.Conv`
calls; pass it as `nn.Conv(..., conv_general_dilated=conv_general_dilated)`): a 1x1 NHWC/HWIO
convolution with unit strides and input dilation, no padding, one group and operands of one
dtype becomes a `dot` (a kernel dilation cannot change a 1x1 kernel, so it is ignored);
anything else goes to the library convolution unchanged.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jscore.backbones import conv_gradients

_NHWC = ("NHWC", "HWIO", "NHWC")

# Read when a model is traced: False sends every convolution to the library (for benchmarks that
# time both, benchmarks/bench_train_step.py). Not an option a user needs.
USE_MATMUL = True


def _is_nhwc(dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers == lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
    return tuple(dimension_numbers) == _NHWC


def is_pointwise(x_shape, kernel_shape, strides: Sequence[int] = (1, 1), padding="SAME",
                 lhs_dilation=None, rhs_dilation=None, feature_group_count: int = 1) -> bool:
    """True when the NHWC convolution is a plain 1x1 one: kernel `[1, 1, C, O]` with C the input's
    channels, unit strides and input dilation, one group, and no padding (1x1 "SAME" pads nothing)."""
    if len(kernel_shape) != 4 or tuple(kernel_shape[:2]) != (1, 1) or kernel_shape[2] != x_shape[-1]:
        return False
    if feature_group_count != 1 or any(s != 1 for s in strides) or any(d != 1 for d in (lhs_dilation or ())):
        return False
    if isinstance(padding, str):
        return padding in ("SAME", "VALID")
    return all(tuple(p) == (0, 0) for p in padding)


def pointwise_conv(x, kernel, *, precision=lax.Precision.HIGHEST):
    """`[B, H, W, C]` x `[1, 1, C, O]` -> `[B, H, W, O]` as one matrix product (see the module)."""
    y = jnp.dot(x.reshape(-1, x.shape[-1]), kernel.reshape(kernel.shape[2:]), precision=precision)
    return y.reshape(*x.shape[:-1], kernel.shape[-1])


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None):
    """`jax.lax.conv_general_dilated`, with plain 1x1 NHWC convolutions on the CPU backend as a
    matrix product (`pointwise_conv`), and, inside `conv_gradients.product_gradients()` (the
    micro-batch loop of a training step), regular NHWC convolutions with their gradients as matrix
    products (`conv_gradients.conv_with_product_gradients`, same forward values); every other
    case, and other backends, call the library."""
    if (USE_MATMUL and jax.default_backend() == "cpu" and _is_nhwc(dimension_numbers) and batch_group_count == 1
            and preferred_element_type is None and lhs.dtype == rhs.dtype
            and is_pointwise(lhs.shape, rhs.shape, window_strides, padding, lhs_dilation, rhs_dilation,
                             feature_group_count)):
        return pointwise_conv(lhs, rhs, precision=precision)
    if (conv_gradients.is_active() and jax.default_backend() == "cpu" and _is_nhwc(dimension_numbers)
            and feature_group_count == 1 and batch_group_count == 1 and preferred_element_type is None
            and lhs.dtype == rhs.dtype and all(d == 1 for d in (lhs_dilation or ()))):
        dilation = tuple(rhs_dilation or (1, 1))
        pads = conv_gradients.explicit_padding(lhs.shape, rhs.shape, tuple(window_strides), padding, dilation)
        if all(p >= 0 for pair in pads for p in pair):  # inside a micro-batch loop: see conv_gradients
            return conv_gradients.conv_with_product_gradients(lhs, rhs, window_strides, pads, dilation, precision)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count, batch_group_count=batch_group_count,
                                    precision=precision, preferred_element_type=preferred_element_type)
