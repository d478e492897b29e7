"""One fine-tuning step of a zoo backbone on the CPU: the 1x1 convolutions as matrix products
(`jscore.backbones.pointwise`, the default) against the library convolution, in one process.

For each backbone it times, warm (median of --repeats) and with compile time apart:
  forward   the inference forward pass on a batch (what extraction runs);
  step      value and gradient of a loss on the features with respect to every parameter, in
            training mode (what a fine-tuning step runs, without the optimizer's few elementwise
            updates);
with `pointwise.USE_MATMUL` True ("matmul") and False ("conv": every convolution through
`lax.conv_general_dilated`), the ratio conv / matmul, and whether the two forwards are bit for
bit equal (they are for the integer TFLite imports, which sum integer codes exactly) or the
largest relative difference of the gradients.

    python benchmarks/bench_train_step.py --backbones mobilenet_v2_1.0_224_quant --batch-size 32
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/bench_train_step.py ...

To time what one process of a sweep sees, pin it to one core with one XLA thread:
    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OPENBLAS_NUM_THREADS=1 \\
      taskset -c 0 python benchmarks/bench_train_step.py ...
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc >= 2.35, transparent huge pages in "madvise"
mode) backs XLA's large temporary buffers with 2 MiB pages, so a step no longer page-faults its
way through them; it must be set before Python starts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jscore.backbones import get_backbone, init_variables, pointwise  # noqa: E402

DEFAULT_MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "models")


def timed(fn, *args, repeats: int):
    """(first call s, median warm s, result)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        warm.append(time.perf_counter() - t0)
    return first, statistics.median(warm), out


def measure(name: str, models_dir: str, batch: int, repeats: int, use_matmul: bool):
    pointwise.USE_MATMUL = use_matmul  # read at trace time: build and trace after setting it
    bb = get_backbone(name, models_dir=models_dir)
    variables = init_variables(bb, 0)
    size = bb.preprocess.image_size
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32))
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}

    def loss(params, x):
        features, _, _ = bb.apply({**rest, "params": params}, x, train=True, rng=jax.random.PRNGKey(0))
        return jnp.mean(features ** 2)

    forward = jax.jit(lambda v, x: bb.apply(v, x, train=False, rng=None)[0])
    step = jax.jit(jax.value_and_grad(loss))
    f_first, f_warm, feats = timed(forward, variables, x, repeats=repeats)
    s_first, s_warm, (_, grads) = timed(step, params, x, repeats=repeats)
    return {"forward": (f_first, f_warm), "step": (s_first, s_warm), "features": np.asarray(feats),
            "grads": [np.asarray(g) for g in jax.tree_util.tree_leaves(grads)]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", default="mobilenet_v2_1.0_224_quant,efficientnet_lite0")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models-dir", default=DEFAULT_MODELS_DIR)
    args = ap.parse_args(argv)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs, "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}, batch {args.batch_size}")
    print("| backbone | forward conv s | forward matmul s | step conv s | step matmul s | step conv / matmul "
          "| compile conv / matmul s | forward equal | grads max rel diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    before = pointwise.USE_MATMUL
    try:
        for name in args.backbones.split(","):
            report(name, args)
    finally:
        pointwise.USE_MATMUL = before


def report(name: str, args) -> None:
    conv = measure(name, args.models_dir, args.batch_size, args.repeats, use_matmul=False)
    mat = measure(name, args.models_dir, args.batch_size, args.repeats, use_matmul=True)
    equal = bool(np.array_equal(conv["features"], mat["features"]))
    rel = max(float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))
              for a, b in zip(conv["grads"], mat["grads"]))
    print(f"| {name} | {conv['forward'][1]:.2f} | {mat['forward'][1]:.2f} | {conv['step'][1]:.2f} | "
          f"{mat['step'][1]:.2f} | {conv['step'][1] / mat['step'][1]:.2f}x | "
          f"{conv['step'][0] - conv['step'][1]:.0f} / {mat['step'][0] - mat['step'][1]:.0f} | {equal} | {rel:.1e} |",
          flush=True)


if __name__ == "__main__":
    main()
