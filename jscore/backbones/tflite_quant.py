"""The integer arithmetic of TFLite's quantised kernels, for fake-quantised float forwards.

A quantised TFLite op computes an int32 accumulator and maps it to its 8-bit output with a real
multiplier `M` (conv, depthwise and dense: `M = s_in * s_w / s_out`, per output channel when the
weights are; MUL: `M = s_a * s_b / s_out`). The quantisation spec
(https://www.tensorflow.org/lite/performance/quantization_spec, and the gemmlowp paper, Jacob et
al., CVPR 2018, section 2.2) stores `M` as a 31-bit fixed-point number and a power-of-two shift,
`M = M0 * 2^-k` with `M0` in `[0.5, 1)`, and applies it in two rounding steps:

1. `r = round(acc * M0)`: the doubling high multiply by the 31-bit `M0`, an integer in units of
   `2^-k` output steps;
2. `q = round(r / 2^k)`: the rounding right shift by `k`.

The output is the real value `v = acc * M` (in output steps) rounded twice: `q = floor(floor(v
2^k + 1/2) 2^-k + 1/2)`, half up, in the convolution kernels (ruy's output stage); half away from
zero, `sign(v) q(|v|)`, in MUL (gemmlowp's fixed-point primitives). That is not `round(v)`:
it rounds up from `v = n + 1/2 - 2^-(k+1)` on, so a quantised layer's outputs sit on average
`2^-(k+1)` of a step above a float forward that rounds once, and a few percent of a layer's
elements move up one step. Measured against `ai-edge-litert`'s builtin kernels fed their own
input tensors, the double rounding reproduces every output of every 1x1 and 3x3 convolution and
3x3 depthwise layer of the uint8 MobileNetV2/V3 files and every depthwise layer of the int8
per-channel MCUNet file, where single rounding is off by one step on 0.5-5% of them
(docs/zoo.md). With `k <= 0` (`M >= 1/2`) there is no second rounding.

This module holds the pieces; `jscore.backbones.tflite` applies them when `fake_quant=True`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["multiplier_shift", "double_round", "requantize"]


def multiplier_shift(multiplier) -> np.ndarray:
    """The right shift `k` of a real multiplier `|M| = M0 * 2^-k`, `M0` in `[0.5, 1)`, clipped at 0
    (`|M| >= 1/2` rounds once). Elementwise over per-channel multipliers.

    Args:
      multiplier: `M`, a scalar or `[C]` (float64 recommended: the spec computes it in double).
        Its sign does not matter (MCUNet's int8 file has a few negative per-channel scales).
    Returns:
      int64 array of the same shape, `k = max(-floor(log2 M) - 1, 0)`; a channel whose `M` is 0
      (all-zero weights with scale 0) gets 0.
    Raises:
      ValueError: a non-finite multiplier.

    >>> multiplier_shift(0.0162).tolist(), multiplier_shift([0.75, 0.3]).tolist()
    (5, [0, 1])
    """
    m = np.abs(np.asarray(multiplier, np.float64))
    if not np.all(np.isfinite(m)):
        raise ValueError(f"requantisation multipliers must be finite, got {m.ravel()[:8]}")
    mant, exp = np.frexp(m)            # m = mant * 2^exp, mant in [0.5, 1): k = -exp
    # frexp's mantissa is exact; the spec's M0 is it rounded to 31 bits: 1.0 -> shift one less.
    q31 = np.round(mant * 2.0 ** 31)
    exp = np.where(q31 == 2.0 ** 31, exp + 1, exp)
    return np.where(m > 0, np.maximum(-exp, 0), 0).astype(np.int64)


def double_round(v, shift, away_from_zero: bool = False):
    """TFLite's two-step requantisation rounding of real values `v` in output steps:
    `floor(floor(v 2^k + 1/2) 2^-k + 1/2)`, `k = shift` (broadcast against `v`, per channel on
    the last axis); with `away_from_zero`, `sign(v)` times that of `|v|`. Works on NumPy and JAX
    arrays (float32 is exact for `|v| 2^k < 2^23`).

    >>> float(double_round(2.49, 5)), float(double_round(2.48, 5)), float(double_round(2.49, 0))
    (3.0, 2.0, 2.0)
    >>> float(double_round(-2.49, 5)), float(double_round(-2.49, 5, away_from_zero=True))
    (-2.0, -3.0)
    """
    import jax.numpy as jnp

    xp = jnp if not isinstance(v, np.ndarray) else np
    scale = xp.asarray(np.exp2(np.asarray(shift, np.float64)).astype(np.float32))
    if away_from_zero:
        return xp.sign(v) * xp.floor(xp.floor(xp.abs(v) * scale + 0.5) / scale + 0.5)
    return xp.floor(xp.floor(v * scale + 0.5) / scale + 0.5)


def requantize(x, scale, zero_point, qmin: int, qmax: int, shift=0, away_from_zero: bool = False):
    """Round and clip a real tensor `x` onto an 8-bit grid the way the integer kernels do, with a
    straight-through gradient: `scale * (clip(double_round(x / scale, shift) + z, qmin, qmax) -
    z)`. `shift = 0` is plain round-half-up (`floor(v + 1/2)`), which is also what the kernels
    without a multiplier (average pooling, ADD's 2^-20 rescaling) amount to.

    Args:
      x: float array (`[..., C]`).
      scale, zero_point: the output grid (scalars).
      qmin, qmax: its integer range (0, 255 for uint8; -128, 127 for int8).
      shift: `multiplier_shift` of the op's multiplier: a scalar or `[C]` per output channel.
      away_from_zero: round half away from zero (MUL) rather than half up.
    Returns:
      float array like `x`, on the grid; its gradient is the identity's.
    """
    import jax.numpy as jnp
    from jax import lax

    q = jnp.clip(double_round(x / scale, shift, away_from_zero) + zero_point, qmin, qmax)
    y = (q - zero_point) * scale
    return x + lax.stop_gradient(y - x)
