"""A depthwise convolution layer's forward and gradients on the CPU: jscore's written-out backward
against autodiff of the same forward and against the library's grouped convolution, in one
process on the same data.

For each layer shape (MobileNetV2's 3x3 layers at 112/56/28/14 px and a 5x5 one of
EfficientNet-Lite, batch 8: the micro-batch of the medical study's fine-tuning), three ways:

- `written`  `depthwise_conv(method="shifted")`: forward as KH*KW shifted, per-channel-scaled
             slices, gradients as written in `jscore.backbones.depthwise` (the default on the CPU);
- `autodiff` the same forward differentiated by JAX (what jscore did before session 14);
- `library`  `lax.conv_general_dilated(feature_group_count=C)` and its autodiff gradients.

It prints warm times (median of --repeats) of the forward and of value-and-gradient of
`sum(sin(y))` with respect to input and kernel, compile time apart, and the largest relative
difference of each gradient from the library's.

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 0 python benchmarks/bench_depthwise.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jscore.backbones import depthwise  # noqa: E402

LAYERS = [  # (input [B, H, W, C], kernel size, stride)
    ((8, 112, 112, 96), 3, 2),
    ((8, 56, 56, 144), 3, 1),
    ((8, 28, 28, 192), 3, 1),
    ((8, 14, 14, 576), 3, 1),
    ((8, 28, 28, 240), 5, 2),
]


def _autodiff(x, kernel, strides):
    """The shifted forward without its custom backward."""
    kh, kw = kernel.shape[:2]
    pads = tuple(depthwise._explicit_padding(x.shape[1 + a], (kh, kw)[a], strides[a], 1, "SAME") for a in (0, 1))
    return depthwise._shifted_forward(x, kernel, strides, pads, (1, 1))


def _time(fn, args, repeats):
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    out = compiled(*args)
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = compiled(*args)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), compile_s, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    ways = {
        "written": lambda x, k, s: depthwise.depthwise_conv(x, k, strides=s, method="shifted"),
        "autodiff": _autodiff,
        "library": lambda x, k, s: depthwise.depthwise_conv(x, k, strides=s, method="lax"),
    }
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__}, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print("| input | kernel, stride | way | forward (ms) | value and gradient (ms) | compile (s) "
          "| max rel diff dx / dk vs library |")
    print("|---|---|---|---:|---:|---:|---|")
    rng = np.random.default_rng(0)
    for shape, k, stride in LAYERS:
        x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
        w = jnp.asarray(rng.standard_normal((k, k, 1, shape[-1])) / k, jnp.float32)
        s = (stride, stride)
        results = {}
        for name, conv in ways.items():
            fwd_s, _, _ = _time(lambda x, w: conv(x, w, s), (x, w), args.repeats)
            grad_fn = jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w, s))), argnums=(0, 1))
            step_s, compile_s, (_, grads) = _time(grad_fn, (x, w), args.repeats)
            results[name] = (fwd_s, step_s, compile_s, grads)
        ref = results["library"][3]
        for name, (fwd_s, step_s, compile_s, grads) in results.items():
            diff = " / ".join(f"{float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))):.1e}" for a, b in zip(grads, ref))
            print(f"| {list(shape)} | {k}x{k}, {stride} | {name} | {fwd_s * 1e3:.1f} | {step_s * 1e3:.1f} | "
                  f"{compile_s:.1f} | {diff} |")


if __name__ == "__main__":
    main()
