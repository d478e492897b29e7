"""The TFLite importer on tiny files written by tests/backbones/tflite_builder.py: dequantisation
(per channel int8, per tensor uint8, int32 biases), the forward built from the graph, the
classifier/features split, background columns, preprocessing from the input quantisation, bad
files, and training through the imported parameters. Oracles: tests/oracles/tflite_ops.py."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("tflite")  # the schema bindings: the importer and the test-file builder need them

from jscore.backbones.tflite import import_tflite, input_norm_from_file, load_tflite, tflite_operators
from tests.backbones.tflite_builder import TinyGraph
from tests.oracles import tflite_ops as ref

S_IN, Z_IN = 1 / 128, 128
W1_SCALE = np.array([0.01, 0.02, 0.03, 0.04])
Y1 = (6 / 255, 0)          # RELU6 output grid
W2 = (0.02, 120)
Y2 = (0.05, 10)            # range [-0.5, 12.25]: the clip binds
W3 = (0.01, 128)
Y4 = (0.1, 100)            # logits range [-10, 15.5]


def _quantised_graph(n_out=1001, head="fc", per_channel=True):
    """uint8 input -> CONV_2D (int8 per-channel) -> DEPTHWISE (uint8, multiplier 2) -> AVG_POOL ->
    FULLY_CONNECTED or 1x1 CONV_2D -> (RESHAPE) -> SOFTMAX. Returns (bytes, raw weights)."""
    rng = np.random.default_rng(0)
    g = TinyGraph()
    x = g.tensor("input", [1, 6, 6, 3], "UINT8", S_IN, Z_IN)
    qb1 = rng.integers(-2000, 2000, size=4)
    if per_channel:   # int8 symmetric per output channel
        q1 = rng.integers(-127, 128, size=(4, 3, 3, 3))
        w1_scale, w1_zp = W1_SCALE, np.zeros(4)
        w1 = g.const("w1", q1, "INT8", scale=w1_scale, zero_point=w1_zp, qdim=0)
    else:             # uint8 per tensor (what the runtime's uint8 kernels accept)
        q1 = rng.integers(0, 256, size=(4, 3, 3, 3))
        w1_scale, w1_zp = np.full(4, 0.02), np.full(4, 128.0)
        w1 = g.const("w1", q1, "UINT8", scale=0.02, zero_point=128)
    b1 = g.const("b1", qb1, "INT32", scale=S_IN * w1_scale, zero_point=np.zeros(4), qdim=0)
    y1 = g.tensor("y1", [1, 3, 3, 4], "UINT8", *Y1)
    g.op("CONV_2D", [x, w1, b1], [y1], padding="SAME", strides=(2, 2), activation="RELU6")
    q2 = rng.integers(0, 256, size=(1, 3, 3, 8))
    qb2 = rng.integers(-500, 500, size=8)
    w2 = g.const("w2", q2, "UINT8", scale=W2[0], zero_point=W2[1])
    b2 = g.const("b2", qb2, "INT32", scale=Y1[0] * W2[0], zero_point=0)
    y2 = g.tensor("y2", [1, 3, 3, 8], "UINT8", *Y2)
    g.op("DEPTHWISE_CONV_2D", [y1, w2, b2], [y2], padding="SAME", depth_multiplier=2)
    y3 = g.tensor("pooled", [1, 1, 1, 8], "UINT8", *Y2)
    g.op("AVERAGE_POOL_2D", [y2], [y3], window=(3, 3), strides=(1, 1), padding="VALID")
    q3 = rng.integers(0, 256, size=(n_out, 8))
    qb3 = rng.integers(-3000, 3000, size=n_out)
    b3 = g.const("b3", qb3, "INT32", scale=Y2[0] * W3[0], zero_point=0)
    y4 = g.tensor("logits", [1, n_out], "UINT8", *Y4)
    if head == "fc":
        w3 = g.const("w3", q3, "UINT8", scale=W3[0], zero_point=W3[1])
        g.op("FULLY_CONNECTED", [y3, w3, b3], [y4])
        pre = y4
    else:
        w3 = g.const("w3", q3.reshape(n_out, 1, 1, 8), "UINT8", scale=W3[0], zero_point=W3[1])
        y4c = g.tensor("logits4d", [1, 1, 1, n_out], "UINT8", *Y4)
        g.op("CONV_2D", [y3, w3, b3], [y4c], padding="SAME")
        shape = g.const("shape", np.array([1, n_out]), "INT32")
        g.op("RESHAPE", [y4c, shape], [y4])
        pre = y4
    y5 = g.tensor("probs", [1, n_out], "UINT8", 1 / 256, 0)
    g.op("SOFTMAX", [pre], [y5])
    data = g.finish([x], [y5])
    return data, dict(q1=q1, qb1=qb1, q2=q2, qb2=qb2, q3=q3, qb3=qb3, w1_scale=w1_scale, w1_zp=w1_zp)


def _oracle_quantised(x_real, raw, fake_quant=False):
    """Float64 forward of _quantised_graph: dequantised weights, each activation clipped to its
    grid's range (or rounded onto the grid with fake_quant). -> (features [B, 8], logits [B, n])."""
    def grid(v, s, z):
        return ref.fake_quant(v, s, z, 0, 255) if fake_quant else np.clip(v, s * (0 - z), s * (255 - z))

    w1 = ref.dequantize(raw["q1"], raw["w1_scale"], raw["w1_zp"], axis=0)
    b1 = ref.dequantize(raw["qb1"], S_IN * raw["w1_scale"], 0)
    y1 = grid(ref.conv_2d(x_real, w1, b1, (2, 2), "SAME", act="RELU6"), *Y1)
    w2 = ref.dequantize(raw["q2"], *W2)
    b2 = ref.dequantize(raw["qb2"], Y1[0] * W2[0], 0)
    y2 = grid(ref.depthwise_conv_2d(y1, w2, b2, (1, 1), "SAME", 2), *Y2)
    y3 = grid(ref.pool_2d(y2, (3, 3), (1, 1), "VALID", "avg"), *Y2)
    w3 = ref.dequantize(raw["q3"], *W3)
    b3 = ref.dequantize(raw["qb3"], Y2[0] * W3[0], 0)
    y4 = grid(ref.fully_connected(y3, w3, b3), *Y4)
    return y3.reshape(len(x_real), -1), y4


def _pixels(n=3, seed=1):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 6, 6, 3)).astype(np.float64)


@pytest.mark.parametrize("head", ["fc", "conv"])
@pytest.mark.parametrize("fake_quant", [False, True])
def test_quantised_graph_matches_oracle(head, fake_quant):
    data, raw = _quantised_graph(head=head)
    apply_fn, params, info = import_tflite(data, where="tiny.tflite", fake_quant=fake_quant)
    x = S_IN * (_pixels() - Z_IN)                       # the float model input of raw pixels
    feats, logits = jax.jit(apply_fn)(params, x.astype(np.float32))
    want_f, want_l = _oracle_quantised(x, raw, fake_quant)
    np.testing.assert_allclose(np.asarray(feats), want_f, rtol=1e-4, atol=1e-4)
    assert logits.shape == (3, 1000)                    # 1001 outputs: background column 0 dropped
    # With fake quant a float32 sum can land on the other side of a rounding boundary: one step.
    np.testing.assert_allclose(np.asarray(logits), want_l[:, 1:], rtol=1e-4, atol=Y4[0] * 1.01 if fake_quant else 1e-4)
    assert info.feature_dim == 8 and info.classifier_outputs == 1001
    assert info.input_dtype == "UINT8" and info.input_zero_point == Z_IN
    # The parameters are the dequantised weights in jscore's layouts.
    conv = params["000_conv_2d"]
    np.testing.assert_allclose(conv["kernel"], ref.dequantize(raw["q1"], W1_SCALE, 0, axis=0).transpose(1, 2, 3, 0), rtol=1e-6)
    np.testing.assert_allclose(conv["bias"], raw["qb1"] * S_IN * W1_SCALE, rtol=1e-6)
    assert tflite_operators(data) == {"CONV_2D": 1 + (head == "conv"), "DEPTHWISE_CONV_2D": 1, "AVERAGE_POOL_2D": 1,
                                      **({"FULLY_CONNECTED": 1} if head == "fc" else {"RESHAPE": 1}), "SOFTMAX": 1}


def _int_requant(acc, m, away):
    """Oracle: TFLite's fixed-point requantisation in Python integers (tests/backbones/
    test_tflite_quant.py's `_runtime_requant`), elementwise, `m` per channel on the last axis."""
    from tests.backbones.test_tflite_quant import _runtime_requant

    acc = np.asarray(acc)
    m = np.broadcast_to(np.asarray(m, np.float64), acc.shape)
    return np.array([_runtime_requant(int(a), float(v), away) for a, v in zip(acc.ravel(), m.ravel())]
                    ).reshape(acc.shape)


def _m(s_in, s_w, s_out):
    """The uint8 kernels' real multiplier: the float32 scales' product taken in float32 (as the
    runtime does before widening to double), over the output scale in double."""
    return np.float64(np.float32(s_in) * np.asarray(s_w, np.float32)) / np.float64(np.float32(s_out))


@pytest.mark.parametrize("per_channel", [True, False])
def test_integer_accumulation_is_the_integer_kernels(per_channel):
    """`integer_accumulation=True`: each convolution, depthwise convolution and dense layer of
    the tiny graph, fed our own previous tensor, gives exactly the output codes of an int64
    oracle: accumulator of the integer codes, the 31-bit multiplier, two roundings (half up;
    half away from zero for the uint8 depthwise kernel), the fused RELU6 as a clamp."""
    from jscore.backbones.tflite import _Graph

    data, raw = _quantised_graph(per_channel=per_channel)
    apply_fn, params, _ = import_tflite(data, where="tiny.tflite", integer_accumulation=True)
    names = {t.name: i for i, t in enumerate(_Graph(data, "tiny").tensors)}
    x = S_IN * (_pixels() - Z_IN)
    env = {k: np.asarray(v, np.float64) for k, v in jax.jit(apply_fn.all_tensors)(params, x.astype(np.float32)).items()}

    def codes(name, scale):
        v = env[names[name]] / scale
        assert np.abs(v - np.round(v)).max() < 1e-3          # on its grid
        return np.round(v).astype(np.int64)                  # q - z

    q_in = np.round(x / S_IN).astype(np.int64)
    acc1 = ref.conv_2d(q_in, raw["q1"] - raw["w1_zp"][:, None, None, None], raw["qb1"], (2, 2), "SAME")
    want1 = np.clip(_int_requant(acc1.astype(np.int64), _m(S_IN, raw["w1_scale"], Y1[0]), False), 0, 255 - Y1[1])
    np.testing.assert_array_equal(codes("y1", Y1[0]), want1)
    acc2 = ref.depthwise_conv_2d(codes("y1", Y1[0]), raw["q2"] - W2[1], raw["qb2"], (1, 1), "SAME", 2)
    want2 = np.clip(_int_requant(acc2.astype(np.int64), _m(Y1[0], W2[0], Y2[0]), True), -Y2[1], 255 - Y2[1])
    np.testing.assert_array_equal(codes("y2", Y2[0]), want2)
    acc4 = ref.fully_connected(codes("pooled", Y2[0]), raw["q3"] - W3[1], raw["qb3"])
    want4 = np.clip(_int_requant(acc4.astype(np.int64), _m(Y2[0], W3[0], Y4[0]), False), -Y4[1], 255 - Y4[1])
    np.testing.assert_array_equal(codes("logits", Y4[0]), want4)
    # The float accumulation path is within one step of it.
    apply_f, _, _ = import_tflite(data, where="tiny.tflite", integer_accumulation=False)
    _, logits_f = apply_f(params, x.astype(np.float32))
    assert np.abs(np.asarray(logits_f) / Y4[0] - want4[:, 1:]).max() <= 1.01


def test_integer_accumulation_past_float32_integers():
    """A 1x1 convolution over 600 channels whose accumulator A is odd and above 2^24, where
    float32 holds only even integers, with an output scale placed so that A and its float32
    neighbour requantise to different codes: the split sum still gives the int64 oracle's code
    (a single float32 sum gives the neighbour's)."""
    from jscore.backbones.tflite import _Graph

    rng = np.random.default_rng(9)
    pixels = rng.integers(220, 256, size=(1, 1, 1, 600))
    total = int(pixels.sum()) * 127
    bias = 1 - total % 2                                              # A = 127 sum(p) + bias, odd
    acc = total + bias
    assert acc > 2 ** 24
    neighbour = acc + 1 if (acc + 1) % 4 == 0 else acc - 1            # float32(A): round to even
    s_in, s_w = 0.02, 1e-3
    start = np.float32(s_in * s_w * acc / 100.5)                     # A M near the tie 100.5
    for s_out in (start + np.float32(i) * np.spacing(start) for i in range(-3000, 3000)):
        m = _m(s_in, s_w, s_out)                                      # a scale where A and its
        if _int_requant(np.array([acc]), m, False)[0] != _int_requant(np.array([neighbour]), m, False)[0]:
            break                                                     # neighbour round apart
    else:
        pytest.fail("no output scale separates A from its float32 neighbour")
    g = TinyGraph()
    x = g.tensor("input", [1, 1, 1, 600], "UINT8", s_in, 0)
    w = g.const("w", np.full((1, 1, 1, 600), 127), "INT8", scale=np.array([s_w]), zero_point=np.zeros(1), qdim=0)
    b = g.const("b", np.array([bias]), "INT32", scale=np.array([np.float32(s_in) * np.float32(s_w)]),
                zero_point=np.zeros(1), qdim=0)
    y = g.tensor("y", [1, 1, 1, 1], "UINT8", float(s_out), 0)
    g.op("CONV_2D", [x, w, b], [y], padding="VALID")
    data = g.finish([x], [y])
    apply_fn, params, _ = import_tflite(data, where="wide.tflite")
    env = jax.jit(apply_fn.all_tensors)(params, (s_in * pixels).astype(np.float32))
    got = np.round(np.asarray(env[{t.name: i for i, t in enumerate(_Graph(data, "w").tensors)}["y"]]) / s_out)
    assert got.ravel().tolist() == [float(_int_requant(np.array([acc]), _m(s_in, s_w, s_out), False)[0])]


def test_integer_forward_follows_fine_tuned_weights():
    """The file's weights are read as exact codes, but a fine-tuned weight keeps its fraction: a
    training step smaller than half a quantisation step still moves the output (it was lost when
    every weight was rounded back to its code), while float32 noise on the file's weights is not
    a step at all."""
    data, _ = _quantised_graph(n_out=7)
    apply_fn, params, _ = import_tflite(data, where="tiny.tflite")
    x = (S_IN * (_pixels(4, 3) - Z_IN)).astype(np.float32)
    base = np.asarray(apply_fn(params, x)[1])
    scaled = {k: ({**v, "kernel": v["kernel"] * np.float32(1.003)} if k == "003_fully_connected" else v)
              for k, v in params.items()}
    assert not np.array_equal(np.asarray(apply_fn(scaled, x)[1]), base)      # 0.3%: < half a step, moves
    noisy = {k: {n: a * np.float32(1 + 1e-7) for n, a in v.items()} for k, v in params.items()}
    np.testing.assert_array_equal(np.asarray(apply_fn(noisy, x)[1]), base)   # round-off: same codes


def test_integer_add_is_the_integer_kernel():
    """ADD of two uint8 tensors on different grids: the three fixed-point steps of the kernel
    (inputs shifted by 2^20 and scaled to 2 max(s_a, s_b), the sum requantised; rounding half
    away from zero), against a Python-integer oracle, exactly."""
    from jscore.backbones.tflite import _Graph
    from tests.backbones.test_tflite_quant import _q31

    rng = np.random.default_rng(5)
    g = TinyGraph()
    x = g.tensor("input", [1, 4, 4, 3], "UINT8", S_IN, Z_IN)
    grids = {"a": (0.037, 131), "b": (0.0113, 97), "sum": (0.045, 120)}
    outs = {}
    for name in ("a", "b"):
        w = g.const(f"w_{name}", rng.integers(0, 256, size=(5, 1, 1, 3)), "UINT8", scale=0.02, zero_point=128)
        b = g.const(f"b_{name}", rng.integers(-300, 300, size=5), "INT32", scale=S_IN * 0.02, zero_point=0)
        outs[name] = g.tensor(name, [1, 4, 4, 5], "UINT8", *grids[name])
        g.op("CONV_2D", [x, w, b], [outs[name]], padding="SAME")
    y = g.tensor("sum", [1, 4, 4, 5], "UINT8", *grids["sum"])
    g.op("ADD", [outs["a"], outs["b"]], [y])
    data = g.finish([x], [y])
    apply_fn, params, _ = import_tflite(data, where="add.tflite")
    names = {t.name: i for i, t in enumerate(_Graph(data, "add").tensors)}
    px = S_IN * (np.random.default_rng(6).integers(0, 256, size=(4, 4, 4, 3)) - Z_IN)
    env = jax.jit(apply_fn.all_tensors)(params, px.astype(np.float32))
    ca, cb, got = (np.round(np.asarray(env[names[n]], np.float64) / grids[n][0]).astype(np.int64)
                   for n in ("a", "b", "sum"))

    def mul(v, m):   # SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT (half away)
        q, k = _q31(m)
        r = (v * q + (1 << 30)) >> 31
        if k <= 0:
            return r
        mag = (abs(r) + (1 << (k - 1))) >> k
        return mag if r >= 0 else -mag

    twice = 2 * max(np.float64(np.float32(grids["a"][0])), np.float64(np.float32(grids["b"][0])))
    m_a, m_b = np.float64(np.float32(grids["a"][0])) / twice, np.float64(np.float32(grids["b"][0])) / twice
    m_out = twice / (2 ** 20 * np.float64(np.float32(grids["sum"][0])))
    want = np.array([mul(mul(int(a) << 20, m_a) + mul(int(b) << 20, m_b), m_out)
                     for a, b in zip(ca.ravel(), cb.ravel())]).reshape(ca.shape)
    want = np.clip(want, -grids["sum"][1], 255 - grids["sum"][1])
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got)) > 20
    # The gradient is the float ADD's: d(sum)/d(a) = 1.
    grads = jax.grad(lambda p: apply_fn(p, px.astype(np.float32))[0].sum())(params)
    assert all(bool(jnp.isfinite(v).all()) for v in jax.tree_util.tree_leaves(grads))
    assert float(jnp.abs(grads["000_conv_2d"]["kernel"]).sum()) > 0


def test_background_rule():
    data, raw = _quantised_graph(n_out=7)
    x = (S_IN * (_pixels() - Z_IN)).astype(np.float32)
    _, want = _oracle_quantised(x.astype(np.float64), raw)
    for background, cols in [(None, slice(None)), (True, slice(1, None)), (False, slice(None))]:
        apply_fn, params, _ = import_tflite(data, background=background, fake_quant=False)
        np.testing.assert_allclose(np.asarray(apply_fn(params, x)[1]), want[:, cols], rtol=1e-4, atol=1e-4)
    apply_fn, params, _ = import_tflite(_quantised_graph()[0], background=False)
    assert apply_fn(params, x)[1].shape == (3, 1001)


def test_load_tflite_backbone(tmp_path):
    data, raw = _quantised_graph()
    path = tmp_path / "tiny.tflite"
    path.write_bytes(data)
    bb = load_tflite(str(path), crop_fraction=0.75)
    p = bb.preprocess
    assert (p.image_size, p.resize_size, p.channels_first, bb.name) == (6, 8, False, "tiny")
    assert bb.feature_dim == 8 and bb.num_source_classes == 1000
    # (x / 255 - mean) / std must equal the input tensor's real value s (x - z) for raw pixels x.
    pixels = _pixels()
    normed = (pixels / 255 - np.array(p.mean)) / np.array(p.std)
    np.testing.assert_allclose(normed, S_IN * (pixels - Z_IN), rtol=1e-6, atol=1e-9)
    assert bb.init(jax.random.key(0), jnp.zeros((1, 6, 6, 3))) is bb.variables
    f, l, mutated = bb.apply(bb.variables, normed.astype(np.float32), train=True, rng=jax.random.key(1))
    f2, l2 = bb.embed(bb.variables, normed.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(l), np.asarray(l2))     # train=True behaves as eval
    assert mutated == {}
    # An explicit (x - a) / b override.
    bb2 = load_tflite(str(path), input_norm=(127.5, 127.5))
    assert np.allclose(bb2.preprocess.mean, 0.5) and np.allclose(bb2.preprocess.std, 0.5)


def test_quantisation_mode_keys_the_feature_cache(tmp_path):
    """The same file and weights under another quantisation mode is another forward: its
    features must not be served from the cache of the first (found in the study: a version bump
    of the integer imports reused the older forward's cached features)."""
    from jscore.features import cache_entry

    class Described:   # cache_entry only asks the dataset to describe itself
        def describe(self):
            return {"name": "d", "split": "test", "num_examples": 2, "class_names": ["a", "b"]}

    data, _ = _quantised_graph()
    path = tmp_path / "tiny.tflite"
    path.write_bytes(data)
    modes = {"integer": {}, "float-sum": dict(integer_accumulation=False), "float": dict(fake_quant=False)}
    ds = Described()
    keys = {}
    for variant, kw in modes.items():
        bb = load_tflite(str(path), **kw)
        assert bb.forward_variant == variant
        keys[variant] = cache_entry(bb, bb.variables, ds, str(tmp_path)).key
    assert len(set(keys.values())) == 3


def test_input_norm_int8_and_float():
    class Info:
        input_dtype, input_scale, input_zero_point = "INT8", 1 / 127, 0

    a, b = input_norm_from_file(Info)
    # int8 runtime input q = pixel - 128; real value s (q - z) = (pixel - 128) / 127.
    assert (a, b) == (128.0, 127.0)
    Info.input_dtype = "FLOAT32"
    assert input_norm_from_file(Info, (0.0, 1.0)) == (0.0, 1.0)


def _float_graph():
    """float NCHW input -> TRANSPOSE -> PAD -> CONV_2D VALID/2 -> HARD_SWISH -> ADD const -> MUL
    (x * x) -> MEAN keep_dims -> SQUEEZE -> FULLY_CONNECTED -> SOFTMAX."""
    rng = np.random.default_rng(3)
    g = TinyGraph()
    x = g.tensor("x", [1, 3, 5, 5])
    perm = g.const("perm", np.array([0, 2, 3, 1]), "INT32")
    t = g.tensor("nhwc", [1, 5, 5, 3])
    g.op("TRANSPOSE", [x, perm], [t])
    pads = g.const("pads", np.array([[0, 0], [1, 1], [1, 1], [0, 0]]), "INT32")
    p = g.tensor("padded", [1, 7, 7, 3])
    g.op("PAD", [t, pads], [p])
    w = rng.normal(size=(6, 3, 3, 3)).astype(np.float32)
    b = rng.normal(size=6).astype(np.float32)
    c = g.tensor("conv", [1, 3, 3, 6])
    g.op("CONV_2D", [p, g.const("w", w), g.const("b", b)], [c], padding="VALID", strides=(2, 2))
    h = g.tensor("hs", [1, 3, 3, 6])
    g.op("HARD_SWISH", [c], [h])
    k = rng.normal(size=6).astype(np.float32)
    a = g.tensor("added", [1, 3, 3, 6])
    g.op("ADD", [h, g.const("k", k)], [a], activation="RELU")
    m = g.tensor("sq", [1, 3, 3, 6])
    g.op("MUL", [a, a], [m])
    axes = g.const("axes", np.array([1, 2]), "INT32")
    mn = g.tensor("mean", [1, 1, 1, 6])
    g.op("MEAN", [m, axes], [mn], keep_dims=True)
    s = g.tensor("squeezed", [1, 6])
    g.op("SQUEEZE", [mn], [s], dims=[1, 2])
    wf = rng.normal(size=(5, 6)).astype(np.float32)
    bf = rng.normal(size=5).astype(np.float32)
    lg = g.tensor("logits", [1, 5])
    g.op("FULLY_CONNECTED", [s, g.const("wf", wf), g.const("bf", bf)], [lg])
    pr = g.tensor("probs", [1, 5])
    g.op("SOFTMAX", [lg], [pr])
    return g.finish([x], [pr]), dict(w=w, b=b, k=k, wf=wf, bf=bf)


def _oracle_float(x_nchw, r):
    t = np.pad(x_nchw.transpose(0, 2, 3, 1).astype(np.float64), [(0, 0), (1, 1), (1, 1), (0, 0)])
    c = ref.conv_2d(t, r["w"], r["b"], (2, 2), "VALID")
    a = np.maximum(ref.hard_swish(c) + r["k"], 0)
    s = (a * a).mean(axis=(1, 2))
    return s, ref.fully_connected(s, r["wf"], r["bf"])


def test_float_nchw_graph_matches_oracle(tmp_path):
    data, r = _float_graph()
    x = np.random.default_rng(4).normal(size=(4, 3, 5, 5)).astype(np.float32)
    apply_fn, params, info = import_tflite(data)
    feats, logits = jax.jit(apply_fn)(params, x)
    want_f, want_l = _oracle_float(x, r)
    np.testing.assert_allclose(np.asarray(feats), want_f, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logits), want_l, rtol=1e-4, atol=1e-5)
    assert info.channels_first and info.classifier_outputs == 5
    path = tmp_path / "f.tflite"
    path.write_bytes(data)
    bb = load_tflite(str(path))
    assert bb.preprocess.channels_first and bb.preprocess.image_size == 5
    assert np.allclose(bb.preprocess.mean, 0.5) and np.allclose(bb.preprocess.std, 0.5)   # (x - 127.5) / 127.5
    assert "004_add" in params and "input1" in params["004_add"]                           # constants train too


def test_embedding_graph_without_classifier():
    g = TinyGraph()
    x = g.tensor("x", [1, 4, 4, 2])
    y = g.tensor("pool", [1, 1, 1, 2])
    g.op("AVERAGE_POOL_2D", [x], [y], window=(4, 4), strides=(1, 1))
    apply_fn, params, info = import_tflite(g.finish([x], [y]))
    v = np.random.default_rng(5).normal(size=(3, 4, 4, 2)).astype(np.float32)
    feats, logits = apply_fn(params, v)
    assert logits is None and info.classifier_outputs == 0
    np.testing.assert_allclose(np.asarray(feats), v.mean(axis=(1, 2)), rtol=1e-5)


def test_bad_files(tmp_path):
    data, _ = _quantised_graph()
    with pytest.raises(ValueError, match="not a TFLite"):
        import_tflite(b"\x89PNG\r\n\x1a\n" + bytes(100), where="photo.png")
    with pytest.raises(ValueError, match="not a TFLite"):
        import_tflite(b"", where="empty.tflite")
    for cut in (len(data) // 2, 64, 12):
        with pytest.raises(ValueError, match="cut.tflite"):
            import_tflite(data[:cut], where="cut.tflite")
    g = TinyGraph()
    x = g.tensor("x", [1, 4, 4, 2])
    y = g.tensor("y", [1, 4, 4, 2])
    g.op("GELU", [x], [y])
    with pytest.raises(ValueError, match=r"gelu_model.tflite.*unsupported TFLite operator\(s\) GELU"):
        import_tflite(g.finish([x], [y]), where="gelu_model.tflite")
    path = tmp_path / "gelu.tflite"
    path.write_bytes(g.finish([x], [y]))
    with pytest.raises(ValueError, match="gelu.tflite.*GELU"):
        load_tflite(str(path))
    with pytest.raises(FileNotFoundError, match="nope.tflite"):
        load_tflite(str(tmp_path / "nope.tflite"))


def test_gradients_train_the_imported_params():
    """jax.grad through the imported (dequantised) parameters is finite and SGD lowers a loss."""
    data, _ = _quantised_graph(n_out=7)
    for fake_quant, integer in ((False, False), (True, False), (True, True)):
        apply_fn, params, _ = import_tflite(data, fake_quant=fake_quant, integer_accumulation=integer)
        params = jax.tree_util.tree_map(jnp.asarray, params)
        x = jnp.asarray(S_IN * (_pixels(8, 7) - Z_IN), jnp.float32)
        labels = jnp.arange(8) % 7

        def loss(p):
            _, logits = apply_fn(p, x)
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), labels])

        step = jax.jit(lambda p: jax.tree_util.tree_map(lambda w, g: w - 0.05 * g, p, jax.grad(loss)(p)))
        grads = jax.grad(loss)(params)
        assert all(bool(jnp.isfinite(g).all()) for g in jax.tree_util.tree_leaves(grads))
        assert float(jnp.abs(grads["000_conv_2d"]["kernel"]).sum()) > 0     # reaches the first layer
        start = float(loss(params))
        for _ in range(10):
            params = step(params)
        assert float(loss(params)) < start - 0.05


def test_runtime_agrees_on_tiny_file():
    """The tiny quantised file in the reference runtime: its logits sit within a few quantisation
    steps of the fake-quant forward (checks the builder and our reading of the file)."""
    interp_mod = pytest.importorskip("ai_edge_litert.interpreter")
    data, raw = _quantised_graph(per_channel=False)
    it = interp_mod.Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                                experimental_op_resolver_type=interp_mod.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    pixels = _pixels(1)
    it.set_tensor(it.get_input_details()[0]["index"], pixels.astype(np.uint8))
    it.invoke()
    idx = {d["name"]: d["index"] for d in it.get_tensor_details()}
    rt = Y4[0] * (it.get_tensor(idx["logits"]).astype(np.float64) - Y4[1])
    apply_fn, params, _ = import_tflite(data, fake_quant=True)
    _, ours = apply_fn(params, (S_IN * (pixels - Z_IN)).astype(np.float32))
    assert np.abs(np.asarray(ours) - rt[:, 1:]).max() <= 3 * Y4[0] + 1e-6


def test_finetune_fit_runs_with_an_imported_backbone(tmp_path):
    """`jscore.finetune.fit` trains an imported model: a new head on the features, the imported
    (dequantised) layers updated, losses finite."""
    from jscore.finetune import Split, TrainConfig, fit, image_input_fn

    data, _ = _quantised_graph(n_out=7)
    path = tmp_path / "tiny.tflite"
    path.write_bytes(data)
    bb = load_tflite(str(path), crop_fraction=0.75)              # 6 px crops of 8 px images
    rng = np.random.default_rng(0)
    labels = np.arange(32) % 2
    images = np.clip(rng.normal(80 + 100 * labels[:, None, None, None], 30, (32, 8, 8, 3)), 0, 255).astype(np.uint8)
    split = Split(images, labels)
    cfg = TrainConfig(learning_rate=0.05, epochs=2, batch_size=16, eval_batch_size=16, augment=False)
    rec = fit(bb, bb.variables, split, split, {"test": split}, 2, cfg, image_input_fn(bb.preprocess, 6, False),
              devices=jax.devices()[:1])
    assert rec["steps"] == 4 and np.isfinite(rec["val_loss"])
    assert rec["history"][-1]["train_loss"] < rec["history"][0]["train_loss"]


def test_integer_ops_take_the_float_ops_gradient():
    """The integer kernels' forward with the float ops' derivative (straight through): on the
    quantised graph (int8 CONV_2D, uint8 DEPTHWISE with multiplier 2, dense head) the gradient
    with integer accumulation equals the one through the float ops with fake quantisation, whose
    forward computes the same grid values here; and `_with_float_gradient` alone gives `exact`'s
    value with `float_apply`'s gradient, also when `float_apply` has a custom VJP of its own
    (the depthwise convolution's)."""
    from jscore.backbones.depthwise import depthwise_conv
    from jscore.backbones.tflite import _with_float_gradient

    data, _ = _quantised_graph()
    x = (S_IN * (_pixels() - Z_IN)).astype(np.float32)
    grads = {}
    for integer in (True, False):
        apply_fn, params, _ = import_tflite(data, where="q.tflite", integer_accumulation=integer)
        feats = jax.jit(apply_fn)(params, x)[0]
        loss = lambda p: jnp.sum(apply_fn(p, x)[0] ** 2)
        grads[integer] = (np.asarray(feats), jax.jit(jax.grad(loss))(params))
    np.testing.assert_array_equal(grads[True][0], grads[False][0])
    flat_int, flat_float = (jax.tree_util.tree_leaves(g[1]) for g in (grads[True], grads[False]))
    assert len(flat_int) == len(flat_float) >= 6
    for a, b in zip(flat_int, flat_float):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6 * float(np.abs(b).max()))
    reached = {key: max(float(np.abs(np.asarray(v)).max()) for v in layer.values())
               for key, layer in grads[True][1].items()}
    assert sum(m > 0 for m in reached.values()) >= 2, reached   # the convolution and the depthwise layer

    rng = np.random.default_rng(3)
    v = jnp.asarray(rng.normal(size=(1, 5, 5, 2)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 1, 2)), jnp.float32)
    smooth = lambda v, k: depthwise_conv(v, k, method="shifted")
    f = _with_float_gradient(lambda v, k: jnp.round(smooth(v, k)), smooth)
    np.testing.assert_array_equal(np.asarray(f(v, k)), np.round(np.asarray(smooth(v, k))))
    got = jax.grad(lambda v, k: jnp.sum(jnp.sin(f(v, k))), argnums=(0, 1))(v, k)
    y = jnp.round(smooth(v, k))   # the chain rule: cos at the exact forward, then the float op's pullback
    want = jax.vjp(smooth, v, k)[1](jnp.cos(y))
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
