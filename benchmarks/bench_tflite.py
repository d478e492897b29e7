"""Speed of an imported TFLite model against the same architecture written in Flax by hand.

MobileNetV1 (TF-slim: a 3x3/2 conv, 13 depthwise-separable blocks with folded batch norm and
ReLU6, average pooling, a 1x1 conv classifier) is written below as a Flax module; the imported
file's dequantised parameters are copied into it in layer order, so both programs compute the
same function (checked: max |difference| of the logits is printed). Timed: the jitted forward
of a batch (median of --repeats after a warm-up), compile time separately, for

  flax        the hand-written Flax MobileNetV1;
  imported    `load_tflite(..., fake_quant=False).embed` (quantised files: activations clipped
              to their ranges, not rounded);
  float-sum   `load_tflite(..., integer_accumulation=False).embed`: rounded onto the grids,
              float32 sums (the registry's numerics 2);
  integer     `load_tflite(...).embed`, the default: integer sums, fixed-point requantisation
              (bit-exact with the runtime's builtin kernels);
  litert      the reference runtime (`ai-edge-litert`) on the same batch (the input resized to
              the batch size), its default path (XNNPACK delegate), `--threads` threads;
  litert-builtin  its builtin kernels (`BUILTIN_WITHOUT_DEFAULT_DELEGATES`).

All in one process, same inputs; XLA compile time is the first call's, reported separately.

    python benchmarks/bench_tflite.py --batch-size 32 --repeats 5
    python benchmarks/bench_tflite.py --model mobilenet_v1_0.5_160_quant

The machine is shared: record `uptime` beside the numbers. Results: docs/zoo.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jscore.backbones.tflite import load_tflite  # noqa: E402

MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "models")
FILES = {
    "mobilenet_v1_0.25_224_float": "mobilenet_v1_0.25_224_1_default_1.tflite",
    "mobilenet_v1_0.5_160_quant": "mobilenet_v1_0.5_160_quant.tflite",
    "mobilenet_v1_0.75_192_quant": "mobilenet_v1_0.75_192_quant.tflite",
}
# (stride of the depthwise conv) for the 13 blocks of MobileNetV1.
STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)


class DepthwiseBias(nn.Module):
    """A depthwise 3x3 convolution with bias, through `jscore.backbones.depthwise` (the fast CPU
    form the zoo's Flax families use), so that the baseline is the best hand-written Flax."""

    strides: int

    @nn.compact
    def __call__(self, x):
        from jscore.backbones.depthwise import depthwise_conv

        c = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, 1, c))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        return depthwise_conv(x, kernel, strides=(self.strides, self.strides), padding="SAME") + bias


class MobileNetV1(nn.Module):
    """TF-slim MobileNetV1 with folded batch norm: -> (features [B, D], logits [B, 1001])."""

    widths: tuple      # output channels of the stem and of the 13 pointwise convs
    num_classes: int = 1001

    @nn.compact
    def __call__(self, x):
        conv = lambda f, k, s, name, groups=1: nn.Conv(f, (k, k), (s, s), padding="SAME", feature_group_count=groups,
                                                       precision=jax.lax.Precision.HIGHEST, name=name)
        x = jnp.clip(conv(self.widths[0], 3, 2, "stem")(x), 0, 6)
        for i, s in enumerate(STRIDES):
            c = x.shape[-1]
            x = jnp.clip(DepthwiseBias(s, name=f"dw{i}")(x), 0, 6)
            x = jnp.clip(conv(self.widths[i + 1], 1, 1, f"pw{i}")(x), 0, 6)
        features = jnp.mean(x, axis=(1, 2))
        logits = conv(self.num_classes, 1, 1, "head")(features[:, None, None, :])[:, 0, 0, :]
        return features, logits


def flax_params(imported: dict) -> dict:
    """The imported params (keys `NNN_<op>` in graph order) renamed to the Flax module's layers."""
    keys = sorted(imported)
    names = ["stem"] + [n for i in range(13) for n in (f"dw{i}", f"pw{i}")] + ["head"]
    if len(keys) != len(names):
        raise ValueError(f"not a MobileNetV1 graph: {len(keys)} layers")
    return {n: dict(imported[k]) for n, k in zip(names, keys)}


def _runtime_programs(path: str, x: np.ndarray, threads: int):
    """`(label, fn, None)` for the reference runtime's two kernel paths on the batch `x` (float
    model input; quantised with the input tensor's parameters for an integer file)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        print("ai-edge-litert is not installed: no runtime rows", file=sys.stderr)
        return []
    out = []
    for label, kw in (("litert", {}),
                      ("litert-builtin", {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES})):
        it = Interpreter(model_path=path, num_threads=threads, **kw)
        d = it.get_input_details()[0]
        it.resize_tensor_input(d["index"], list(x.shape))
        try:
            it.allocate_tensors()
        except RuntimeError as e:   # e.g. XNNPACK cannot resize the batch of some integer files
            print(f"{label}: no row, the runtime cannot run a batch of {x.shape[0]} here ({e})", file=sys.stderr)
            continue
        scale, zp = d["quantization"]
        q = x.astype(np.float32) if not scale else np.clip(np.round(x / scale) + zp, *(
            (0, 255) if d["dtype"] == np.uint8 else (-128, 127))).astype(d["dtype"])

        def run(_v, _x, it=it, q=q, index=d["index"]):
            it.set_tensor(index, q)
            it.invoke()
            return it.get_tensor(it.get_output_details()[0]["index"])
        out.append((label, run, None))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet_v1_0.25_224_float", choices=sorted(FILES))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="runtime threads (XLA uses every core)")
    args = ap.parse_args(argv)
    path = os.path.join(MODELS, args.model, FILES[args.model])
    t = time.perf_counter()
    bb = load_tflite(path, fake_quant=False)
    import_s = time.perf_counter() - t
    bb_fs = load_tflite(path, integer_accumulation=False)
    bb_int = load_tflite(path)
    s = bb.preprocess.image_size
    x = jax.random.uniform(jax.random.key(0), (args.batch_size, s, s, 3), minval=-1.0, maxval=1.0)
    params = bb.variables["params"]
    widths = tuple(int(params[k]["kernel"].shape[-1]) for k in sorted(params) if k.endswith("_conv_2d") and "depthwise" not in k)[:-1]
    module = MobileNetV1(widths=widths)
    fvars = {"params": flax_params(params)}
    f_flax = jax.jit(lambda v, im: module.apply(v, im))
    f_imp = jax.jit(bb.embed)
    programs = [("flax", f_flax, fvars), ("imported", f_imp, bb.variables),
                ("float-sum", jax.jit(bb_fs.embed), bb_fs.variables), ("integer", jax.jit(bb_int.embed), bb_int.variables)]
    programs += _runtime_programs(path, np.asarray(x), args.threads)
    first, flops = {}, {}
    for label, fn, v in programs:
        t = time.perf_counter()
        jax.block_until_ready(fn(v, x))
        first[label] = time.perf_counter() - t
        if not hasattr(fn, "lower"):
            flops[label] = float("nan")
            continue
        cost = fn.lower(v, x).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops[label] = float(cost.get("flops", float("nan"))) if cost else float("nan")
    # Interleaved repeats: on a shared machine the load drifts, so each round times every program.
    times = {label: [] for label, _, _ in programs}
    for _ in range(args.repeats):
        for label, fn, v in programs:
            t = time.perf_counter()
            jax.block_until_ready(fn(v, x))
            times[label].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    (_, l_flax), (_, l_imp) = f_flax(fvars, x), f_imp(bb.variables, x)
    diff = float(jnp.abs(l_flax[:, 1:] - l_imp).max())
    print(f"model {args.model}, batch {args.batch_size}x{s}x{s}, import {import_s:.2f} s, "
          f"max |logit difference| flax vs imported {diff:.2e}, load: {os.getloadavg()[0]:.1f}")
    ref = med.get("litert")
    print("| program | first call (compile + run; litert: first invoke), s | forward, ms (median) | images/s | ratio to flax | "
          "ratio to litert | XLA flops |")
    print("|---|---|---|---|---|---|---|")
    for label, _, _ in programs:
        r = f"{med[label] / ref:.2f}" if ref else "-"
        print(f"| {label} | {first[label]:.2f} | {1000 * med[label]:.1f} | {args.batch_size / med[label]:.0f} | "
              f"{med[label] / med['flax']:.2f} | {r} | {flops[label]:.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
