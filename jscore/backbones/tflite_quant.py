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
2^k + 1/2) 2^-k + 1/2)`, half up, in the GEMM-based convolutions and the int8 per-channel
depthwise kernel; half away from zero, `sign(v) q(|v|)`, in MUL and the uint8 depthwise kernel
(gemmlowp's fixed-point primitives; which kernel rounds which way was measured against the
runtime, not read from its code). That is not `round(v)`:
it rounds up from `v = n + 1/2 - 2^-(k+1)` on, so a quantised layer's outputs sit on average
`2^-(k+1)` of a step above a float forward that rounds once, and a few percent of a layer's
elements move up one step. Measured against `ai-edge-litert`'s builtin kernels fed their own
input tensors, the double rounding reproduces all but a few elements in 10^6 of every
convolution, depthwise and MUL layer of the uint8 MobileNetV2/V3/EdgeTPU files and the int8
per-channel MCUNet file, where single rounding is off by one step on 0.5-5% of a layer
(docs/zoo.md). With `k <= 0` (`M >= 1/2`) there is no second rounding.

Elementwise kernels with their own fixed-point arithmetic (HARD_SWISH) become a table over the
256 input codes (`hard_swish_table`), applied with `lookup`.

This module holds the pieces; `jscore.backbones.tflite` applies them when `fake_quant=True`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["multiplier_shift", "double_round", "requantize", "quantize_multiplier", "fixed_point_multiply",
           "hard_swish_table", "lookup",
           "srdhm16", "sdhm16", "rounding_divide_by_pot"]


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


# ----------------------------------------------------------------------------------------------
# Fixed-point primitives (gemmlowp's, as the quantisation spec's kernels use them), on NumPy
# int64 arrays holding int16/int32 values.

_I16_MIN, _I16_MAX = -(1 << 15), (1 << 15) - 1


def quantize_multiplier(m: float) -> tuple:
    """A real multiplier as `(q31, exponent)`, `m ~= q31 2^-31 2^exponent`, `q31` in `[2^30,
    2^31)` (0 for `m = 0`): frexp, the mantissa rounded half away from zero to 31 bits, a
    mantissa that rounds up to 1 renormalised, an exponent below -31 flushed to zero.

    >>> quantize_multiplier(0.75), quantize_multiplier(3.0)
    ((1610612736, 0), (1610612736, 2))
    """
    m = float(m)
    if m == 0.0:
        return 0, 0
    mant, exp = np.frexp(m)
    q = int(np.sign(mant) * np.floor(abs(mant) * 2.0 ** 31 + 0.5))
    if abs(q) == 1 << 31:
        q //= 2
        exp += 1
    if exp < -31:
        return 0, 0
    return q, int(exp)


def fixed_point_multiply(acc, q31, exponent, away_from_zero: bool = False):
    """An integer accumulator times a quantised multiplier `q31 2^-31 2^exponent`, rounded the
    way the integer kernels round: `floor(floor(acc q31 2^-31 2^e+ + 1/2) 2^-k + 1/2)` with
    `e+ = max(exponent, 0)` and `k = max(-exponent, 0)` (half up; with `away_from_zero`, both
    roundings are half away from zero, as in `double_round`). Exact, in 32-bit integer JAX arithmetic (no
    float64 or int64, so it runs on any accelerator): the 55-bit product is formed from 16-bit
    limbs.

    Args:
      acc: integer-valued array (float32 or int32), `|acc 2^e+| < 2^31`.
      q31, exponent: `quantize_multiplier` of the real multiplier, scalars or per channel on the
        last axis (NumPy). A negative `q31` negates the product.
    Returns:
      int32 array like `acc`.

    >>> import jax.numpy as jnp
    >>> q, e = quantize_multiplier(0.0162)
    >>> [int(v) for v in fixed_point_multiply(jnp.array([154., 155., -155.]), q, e)]
    [2, 3, -3]
    """
    import jax.numpy as jnp

    q31 = np.asarray(q31, np.int64)
    exponent = np.asarray(exponent, np.int64)
    left = np.maximum(exponent, 0)
    right = np.maximum(-exponent, 0)
    acc = jnp.asarray(acc)
    acc = (jnp.round(acc) if jnp.issubdtype(acc.dtype, jnp.floating) else acc).astype(jnp.int32)
    acc = acc * jnp.asarray(np.sign(q31).astype(np.int32)) * jnp.asarray((1 << left).astype(np.int32))
    negative = acc < 0
    a = jnp.abs(acc).astype(jnp.uint32)
    b = jnp.asarray(np.abs(q31).astype(np.uint32))
    mask16 = jnp.uint32(0xFFFF)
    a1, a0, b1, b0 = a >> 16, a & mask16, b >> 16, b & mask16
    hi = a1 * b1
    lo = a0 * b0
    for mid in (a1 * b0, a0 * b1):                  # each < 2^32: add mid * 2^16 to (hi, lo)
        part = (mid & mask16) << 16
        lo_new = lo + part
        hi = hi + (mid >> 16) + (lo_new < lo).astype(jnp.uint32)
        lo = lo_new
    # floor((|acc| q31 + 2^30 - [acc < 0]) / 2^31): half up on the signed product (or half away
    # from zero: the magnitude rounded half up).
    nudge = jnp.where(negative & (not away_from_zero), jnp.uint32((1 << 30) - 1), jnp.uint32(1 << 30))
    lo_new = lo + nudge
    hi = hi + (lo_new < lo).astype(jnp.uint32)
    r = ((hi << 1) | (lo_new >> 31)).astype(jnp.int32)
    r = jnp.where(negative, -r, r)
    right = jnp.asarray(right.astype(np.int32))
    half = jnp.where(right > 0, jnp.left_shift(jnp.int32(1), jnp.maximum(right - 1, 0)), 0)
    if away_from_zero:
        return jnp.sign(r) * jnp.right_shift(jnp.abs(r) + half, right)
    return jnp.right_shift(r + half, right)


def _i16_multiplier(q31: int) -> int:
    """A 31-bit fixed-point multiplier cut to 15 bits, rounded, saturating at the int16 maximum."""
    if q31 >= (1 << 31) - 1 - (1 << 15):
        return _I16_MAX
    return (q31 + (1 << 15)) >> 16


def _div_toward_zero(a, b: int):
    return np.sign(a) * (np.abs(a) // b)


def srdhm16(a, b):
    """Saturating rounding doubling high multiply of int16 values: `(a b + nudge) / 2^15`, nudge
    `2^14` (or `1 - 2^14` for a negative product), C division (toward zero); `-2^15 * -2^15`
    saturates to `2^15 - 1`."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    out = _div_toward_zero(ab + nudge, 1 << 15)
    return np.where((a == _I16_MIN) & (b == _I16_MIN), _I16_MAX, out)


def sdhm16(a, b):
    """Saturating doubling high multiply of int16 values without rounding: `a b / 2^15` toward
    zero."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    out = _div_toward_zero(a * b, 1 << 15)
    return np.where((a == _I16_MIN) & (b == _I16_MIN), _I16_MAX, out)


def rounding_divide_by_pot(x, exponent: int):
    """`x / 2^exponent` rounded half away from zero (gemmlowp's RoundingDivideByPOT)."""
    x = np.asarray(x, np.int64)
    if exponent <= 0:
        return x
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def _sat_left_shift16(x, n: int):
    return np.clip(np.asarray(x, np.int64) << n, _I16_MIN, _I16_MAX)


def hard_swish_table(in_scale: float, in_zero_point: int, out_scale: float, out_zero_point: int,
                     qmin: int, qmax: int) -> np.ndarray:
    """The integer HARD_SWISH kernel of an 8-bit tensor, `x relu6(x + 3) / 6`, as a table over
    every input code: `table[q - qmin]` is the output code of input code `q`.

    The kernel works in int16 fixed point: the input `x = q - z_in` scaled by 2^7; its value on
    the output scale, `x 2^7 * M_out` (`M_out = s_in / (2^7 s_out)`, a 15-bit multiplier); the
    "reluish" gate `relu6(x + 3) / 6` as `clamp(x / 3, -1, 1)` in Q0.15 (`M_relu = s_in / 2^7 /
    (3 / 2^15)`) mapped to `[0, 1]` by `(g + 2^15) / 2`; their product without rounding; the
    output multiplier's exponent as a rounding right shift; the zero point; saturation.

    Args:
      in_scale, in_zero_point, out_scale, out_zero_point: the two grids.
      qmin, qmax: the code range (0, 255 or -128, 127).
    Returns:
      int64 `[qmax - qmin + 1]` output codes.
    """
    f32 = np.float32
    hires_scale = f32(1.0 / 128.0) * f32(in_scale)
    out_q31, out_exp = quantize_multiplier(float(hires_scale / f32(out_scale)))
    out_m16 = _i16_multiplier(out_q31)
    if out_exp > 0:
        raise ValueError(f"hard swish: output scale {out_scale} is under 1/128 of the input scale {in_scale}")
    relu_q31, relu_exp = quantize_multiplier(float(hires_scale / f32(3.0 / 32768.0)))
    relu_m16 = _i16_multiplier(relu_q31)

    q = np.arange(qmin, qmax + 1, dtype=np.int64)
    x = q - int(in_zero_point)
    hires = x * (1 << 7)                                       # int16: |x| <= 255, 255 * 128 < 2^15
    on_out_scale = srdhm16(hires, out_m16)
    gate = hires
    if relu_exp > 0:
        gate = _sat_left_shift16(gate, relu_exp - 1)
    gate = srdhm16(gate, relu_m16)
    if relu_exp > 0:
        gate = _sat_left_shift16(gate, 1)
    if relu_exp < 0:
        gate = rounding_divide_by_pot(gate, -relu_exp)
    gate = (gate + (1 << 15)) >> 1                             # [-1, 1] -> [0, 1] in Q0.15
    y = rounding_divide_by_pot(sdhm16(gate, on_out_scale), -out_exp)
    return np.clip(y + int(out_zero_point), qmin, qmax)


def lookup(x, table: np.ndarray, in_scale: float, in_zero_point: int, qmin: int,
           out_scale: float, out_zero_point: int, float_fn):
    """Apply an elementwise integer kernel given as a code table to real values `x` on the input
    grid: `out_scale (table[round(x / in_scale) + z_in - qmin] - z_out)`, with the gradient of
    `float_fn` (the op's real function) as the straight-through estimate."""
    import jax.numpy as jnp
    from jax import lax

    codes = jnp.clip(jnp.floor(x / in_scale + 0.5) + in_zero_point, qmin, qmin + table.size - 1)
    y = (jnp.asarray(table, jnp.float32)[(codes - qmin).astype(jnp.int32)] - out_zero_point) * out_scale
    y_float = float_fn(x)
    return y_float + lax.stop_gradient(y - y_float)
