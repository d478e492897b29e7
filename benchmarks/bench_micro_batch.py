"""Peak memory and speed of a fine-tuning step with and without micro-batches (one process per
setting, so each peak resident size is its own).

    python benchmarks/bench_micro_batch.py efficientnet_lite2 --models-dir ../shared/models \
        --batch-size 32 --micro 0,8

Prints, per micro-batch size: peak resident memory of the process (ru_maxrss, GiB) after compile
and three steps, compile time and the mean time of steps 2-3 (s), in a table with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, jax, jax.numpy as jnp
from jscore.backbones import get_backbone, init_variables
from jscore.finetune.train import (TrainConfig, image_input_fn, init_state, make_optimizer, make_train_step)
name, models_dir, batch, micro = sys.argv[1], sys.argv[2] or None, int(sys.argv[3]), int(sys.argv[4])
kw = {"models_dir": models_dir} if models_dir else {}
bb = get_backbone(name, **kw)
variables = init_variables(bb, 0)
cfg = TrainConfig(learning_rate=1e-5, optimizer="adamw", batch_norm="frozen", augment=False, batch_size=batch,
                  micro_batch_size=micro)
cfg.validate()
tx = make_optimizer(cfg, 100)
state = init_state(variables, bb.feature_dim, 2, tx, jax.random.PRNGKey(1))
size = bb.preprocess.resize_size or bb.preprocess.image_size
step = jax.jit(make_train_step(bb, variables, tx, cfg, 2, image_input_fn(bb.preprocess, bb.preprocess.image_size, False)),
               donate_argnums=0)
rng = np.random.default_rng(0)
images = jnp.asarray(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
labels, weights = jnp.asarray(rng.integers(0, 2, batch)), jnp.ones(batch)
t0 = time.perf_counter()
step = step.lower(state, images, labels, weights, jax.random.PRNGKey(0)).compile()
compile_s = time.perf_counter() - t0
times = []
for k in range(3):
    t0 = time.perf_counter()
    state, m = step(state, images, labels, weights, jax.random.PRNGKey(k))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
print(json.dumps({"micro": micro, "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "compile_s": compile_s, "step_s": sum(times[1:]) / 2, "loss": float(m["loss_sum"])}))
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("backbone")
    p.add_argument("--models-dir", default="")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--micro", default="0,8", help="micro-batch sizes to compare (0: whole batches)")
    args = p.parse_args(argv)
    rows = []
    for micro in [int(m) for m in args.micro.split(",")]:
        out = subprocess.run([sys.executable, "-c", CHILD, args.backbone, args.models_dir, str(args.batch_size), str(micro)],
                             capture_output=True, text=True, env=dict(os.environ))
        if out.returncode:
            sys.exit(out.stderr[-3000:])
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.backbone}, batch {args.batch_size}, BatchNorm frozen, AdamW; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print("| micro-batch | peak RSS (GiB) | compile (s) | step (s) | loss of step 3 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['micro'] or 'whole'} | {r['peak_gib']:.2f} | {r['compile_s']:.1f} | {r['step_s']:.2f} | {r['loss']:.5f} |")


if __name__ == "__main__":
    main()
