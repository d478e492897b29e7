"""TFLite's integer requantisation (jscore.backbones.tflite_quant) against hand-computed cases
and an independent Python-integer oracle written from the quantisation spec's definitions
(the 31-bit fixed-point multiplier, the rounding doubling high multiply, the rounding right
shift)."""

import numpy as np
import pytest

from jscore.backbones import tflite_quant as tq


def _q31(m):
    """Oracle: `m = q31 2^-31 2^-k`, q31 in [2^30, 2^31), from exact rational arithmetic."""
    from fractions import Fraction

    f, k = Fraction(m), 0
    while f < Fraction(1, 2):
        f, k = f * 2, k + 1
    q = int(f * 2 ** 31 + Fraction(1, 2))
    if q == 2 ** 31:
        q, k = q // 2, k - 1
    return q, k


def _runtime_requant(acc, m, away):
    """Oracle: Python integers. r = round(acc q31 / 2^31), then round(r / 2^k); half up, or half
    away from zero (gemmlowp's nudge and RoundingDivideByPOT)."""
    q, k = _q31(m)
    prod = acc * q
    if away:
        r = (abs(prod) + (1 << 30)) >> 31
        r = r if prod >= 0 else -r
        if k <= 0:
            return r
        out = (abs(r) + (1 << (k - 1))) >> k
        return out if r >= 0 else -out
    r = (prod + (1 << 30)) >> 31
    return r if k <= 0 else (r + (1 << (k - 1))) >> k


def test_multiplier_shift_hand_cases():
    # 0.0162 = 0.5184 * 2^-5; 0.75 = 0.75 * 2^0; 0.3 = 0.6 * 2^-1; M >= 1/2 rounds once.
    assert tq.multiplier_shift(0.0162).tolist() == 5
    assert tq.multiplier_shift([0.75, 0.3, 1.5, 0.0, -0.3]).tolist() == [0, 1, 0, 0, 1]
    # (1 - 2^-33) 2^-4: the 31-bit mantissa rounds up to 1, so M0 = 1/2 and k = 3.
    assert tq.multiplier_shift((1 - 2.0 ** -33) * 2.0 ** -4).tolist() == 3
    with pytest.raises(ValueError, match="finite"):
        tq.multiplier_shift([0.1, np.nan])


def test_quantize_multiplier_matches_the_rational_oracle():
    rng = np.random.default_rng(0)
    for m in np.exp(rng.uniform(np.log(1e-6), np.log(0.99), 200)):
        q, e = tq.quantize_multiplier(m)
        assert (q, -e) == _q31(m)


def test_double_round_hand_case():
    # acc = 133, M = 0.6 2^-5 = 0.01875: v = 2.49375. The runtime: r = round(133 * 0.6) = 80
    # sub-steps of 2^-5, then 80 / 32 = 2.5 rounds to 3. One rounding would give 2.
    v = 133 * 0.01875
    assert _runtime_requant(133, 0.01875, False) == 3
    assert float(tq.double_round(v, 5)) == 3.0 and float(np.floor(v + 0.5)) == 2.0
    # Negative: half up gives -2, half away from zero -3 (gemmlowp: -80 >> 5 = -3, remainder 16
    # not above the threshold 16).
    assert _runtime_requant(-133, 0.01875, False) == -2 and _runtime_requant(-133, 0.01875, True) == -3
    assert float(tq.double_round(-v, 5)) == -2.0
    assert float(tq.double_round(-v, 5, away_from_zero=True)) == -3.0


@pytest.mark.parametrize("away", [False, True])
def test_double_round_equals_integer_requantisation(away):
    """Random int32 accumulators and multipliers: the float emulation (float64 NumPy and float32
    JAX) equals the integer pipeline everywhere except within 1e-6 of a rounding boundary."""
    import jax.numpy as jnp

    rng = np.random.default_rng(1 + away)
    checked = 0
    for _ in range(40):
        m = float(np.exp(rng.uniform(np.log(2e-4), np.log(0.9))))
        acc = rng.integers(-200 / m, 200 / m, 500)
        want = np.array([_runtime_requant(int(a), m, away) for a in acc])
        k = int(tq.multiplier_shift(m))
        v = acc * m
        got64 = tq.double_round(v, k, away)
        got32 = np.asarray(tq.double_round(jnp.asarray(v, jnp.float32), k, away))
        # The oracle uses the 31-bit M0; float64 v differs from it by < 2^-31 relative.
        frac = np.abs((np.abs(v) * 2.0 ** k) % 1 - 0.5)
        clear = frac > 1e-3
        np.testing.assert_array_equal(got64[clear], want[clear])
        np.testing.assert_array_equal(got32[clear], want[clear])
        checked += clear.sum()
    assert checked > 15000


@pytest.mark.parametrize("away", [False, True])
def test_fixed_point_multiply_equals_integer_requantisation(away):
    """The exact 32-bit path against the Python-integer oracle on random accumulators, including
    exact ties, negative accumulators and multipliers at and above 1/2 (no second rounding)."""
    import jax.numpy as jnp

    rng = np.random.default_rng(3 + away)
    for m in list(np.exp(rng.uniform(np.log(1e-5), np.log(0.99), 60))) + [0.5, 0.75, 0.0162]:
        acc = rng.integers(-min(2 ** 23, int(300 / m)), min(2 ** 23, int(300 / m)), 400)
        q, e = tq.quantize_multiplier(m)
        k = -e
        if k > 0:   # exact ties of the second rounding: acc q31 = (n + 1/2) 2^(31 + k)
            acc[:8] = [(2 * n + 1) * 2 ** (30 + k) // q for n in range(-4, 4)]
        want = np.array([_runtime_requant(int(a), m, away) for a in acc])
        got = np.asarray(tq.fixed_point_multiply(jnp.asarray(acc, jnp.float32), q, e, away))
        np.testing.assert_array_equal(got, want, err_msg=f"m={m}")
    # Per channel on the last axis, and a negative multiplier negates the product.
    qs, es = zip(*(tq.quantize_multiplier(v) for v in (0.01, -0.02)))
    got = np.asarray(tq.fixed_point_multiply(jnp.full((3, 2), 150.0), np.array(qs), np.array(es)))
    assert got.tolist() == [[2, -3]] * 3                 # 1.5 -> 2 (half up), -3.0 -> -3


def test_fixed_point_multiply_hand_case():
    import jax.numpy as jnp

    # The double_round hand case: acc = 133, M = 0.6 2^-5: r = round(133 * 0.6 * 2^31 / 2^31) = 80
    # sub-steps, 80 / 32 = 2.5 -> 3 (half up) ; -133 -> -2 half up, -3 half away from zero.
    q, e = tq.quantize_multiplier(0.01875)
    assert np.asarray(tq.fixed_point_multiply(jnp.array([133, -133]), q, e)).tolist() == [3, -2]
    assert np.asarray(tq.fixed_point_multiply(jnp.array([133, -133]), q, e, True)).tolist() == [3, -3]
    # M = 3 = 0.75 2^2: a left shift first, no second rounding.
    q, e = tq.quantize_multiplier(3.0)
    assert np.asarray(tq.fixed_point_multiply(jnp.array([7, -7]), q, e)).tolist() == [21, -21]


def test_requantize_grid_and_gradient():
    import jax
    import jax.numpy as jnp

    # scale 0.5, zero point 10, uint8: 1.245 -> 2.49 steps -> 79.68 -> 80 sub-steps (k=5) -> 2.5 -> 3 (1.5 real)
    y = tq.requantize(jnp.array([1.245, -20.0, 200.0]), 0.5, 10.0, 0, 255, 5)
    np.testing.assert_allclose(np.asarray(y), [1.5, -5.0, 122.5])
    g = jax.grad(lambda x: tq.requantize(x, 0.5, 10.0, 0, 255, 5).sum())(jnp.array([1.24, 3.0]))
    np.testing.assert_array_equal(np.asarray(g), [1.0, 1.0])


def test_hard_swish_table_hand_cases():
    """s_in = 3/64, s_out = 3/128, z_in = 128, z_out = 16: the multipliers are exact powers of two
    (reluish 4 = 2^30 2^-31 2^3, output 1/64 = 2^30 2^-31 2^-5), so the int16 steps can be
    followed by hand:
    - q = 160 (x = 32, 1.5): hires 4096; on the output scale (4096 16384 + 2^14) / 2^15 -> 2048;
      gate: 4096 << 2 = 16384, (16384 16384 + 2^14) / 2^15 -> 8192, << 1 = 16384 (x/3 = 1/2 in
      Q0.15), (16384 + 2^15) >> 1 = 24576 (= 3/4 = (x + 3) / 6); 24576 2048 / 2^15 = 1536;
      1536 / 2^5 = 48; + 16 = 64. (Real: 1.5 * 4.5 / 6 = 1.125 = 48 steps.)
    - q = 96 (x = -32, -1.5): -2048; gate 8192 (1/4); 8192 (-2048) / 2^15 = -512 -> -16; 0.
    - q = 228 (x = 100, 4.6875): gate saturates at 32767; on the output scale 6400;
      32767 6400 / 2^15 = 6399 (truncated); 6399 / 2^5 rounds to 200; 216.
    - q = 0 (x = -128, -6): gate 0, output 0 steps; 16."""
    table = tq.hard_swish_table(3 / 64, 128, 3 / 128, 16, 0, 255)
    assert table.shape == (256,)
    assert [int(table[q]) for q in (160, 96, 228, 0, 128)] == [64, 0, 216, 16, 16]


@pytest.mark.parametrize("s_in,z_in,s_out,z_out,qmin,qmax", [
    (0.49307096, 130, 0.22009954, 2, 0, 255),       # MobileNetV3-Small's op 31 (uint8)
    (0.1390971, 117, 0.072776, 5, 0, 255),
    (0.05, -10, 0.03, -100, -128, 127),             # int8
])
def test_hard_swish_table_is_hard_swish_within_one_step(s_in, z_in, s_out, z_out, qmin, qmax):
    table = tq.hard_swish_table(s_in, z_in, s_out, z_out, qmin, qmax)
    x = s_in * (np.arange(qmin, qmax + 1) - z_in)
    ideal = np.clip(np.floor(x * np.clip(x + 3, 0, 6) / 6 / s_out + 0.5) + z_out, qmin, qmax)
    assert np.abs(table - ideal).max() <= 1
    assert (table == ideal).mean() > 0.9
    assert np.all(np.diff(table[x >= -1.5]) >= 0)   # monotone where hard swish is


def test_lookup_applies_the_table_with_a_straight_through_gradient():
    import jax
    import jax.numpy as jnp

    table = np.arange(256)[::-1].copy()
    f = lambda x: tq.lookup(x, table, 0.5, 10.0, 0, 1.0, 0.0, lambda v: 3.0 * v)
    x = jnp.array([0.0, 1.0, -5.0])               # codes 10, 12, 0 -> 245, 243, 255
    np.testing.assert_allclose(np.asarray(f(x)), [245.0, 243.0, 255.0])
    np.testing.assert_allclose(np.asarray(jax.grad(lambda v: f(v).sum())(x)), [3.0, 3.0, 3.0])
