"""Train-step throughput of the fine-tuning loop against a bare jitted forward+backward.

For a ResNet-18 and a ViT-S/16 (plain Flax, random weights) at 224 px, two timings per model, compile time apart:

- loop: `jscore.finetune`'s compiled train step as `fit` runs it: a uint8 batch indexed from
  host memory and placed (sharded) on the devices, on-device augmentation (flips, resized crop,
  rotation, hue), forward, cross-entropy on the new head, backward, the optax chain (weight
  decay, Nesterov SGD, cosine schedule), BatchNorm statistics, donated state.
- loop without augmentation: the same step with a centre crop instead (isolates the
  augmentation's cost from the rest of the loop).
- bare: `jax.jit(value_and_grad(loss))` plus a plain SGD update on pre-made float32 batches
  already on the device: the reference for what the model itself costs.

The ratio loop / bare (images/s) is the loop's overhead. Run:

    python benchmarks/bench_finetune.py --batch 8 --steps 3            # CPU
    python benchmarks/bench_finetune.py --batch 128 --steps 20 --bf16  # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402


def _models():
    """ResNet-18 (ImageNet layout: 7x7/2 stem, max-pool, 4 stages of 2 basic blocks, 64-512
    channels, BatchNorm) and ViT-S/16 (12 blocks, width 384, 6 heads, MLP 1536, class token) in
    plain Flax, so the benchmark needs no transformers (whose v5 dropped the Flax classes)."""
    import flax.linen as nn

    class Block(nn.Module):
        ch: int
        stride: int
        dtype: object

        @nn.compact
        def __call__(self, x, train):
            bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)  # noqa: E731
            y = nn.Conv(self.ch, (3, 3), self.stride, use_bias=False, dtype=self.dtype)(x)
            y = nn.relu(bn()(y))
            y = bn()(nn.Conv(self.ch, (3, 3), use_bias=False, dtype=self.dtype)(y))
            if self.stride != 1 or x.shape[-1] != self.ch:
                x = bn()(nn.Conv(self.ch, (1, 1), self.stride, use_bias=False, dtype=self.dtype)(x))
            return nn.relu(x + y)

    class ResNet18(nn.Module):
        dtype: object

        @nn.compact
        def __call__(self, x, train):
            x = nn.Conv(64, (7, 7), 2, padding=3, use_bias=False, dtype=self.dtype)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x))
            x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
            for i, ch in enumerate((64, 128, 256, 512)):
                for j in range(2):
                    x = Block(ch, 2 if (i > 0 and j == 0) else 1, self.dtype)(x, train)
            return jnp.mean(x, axis=(1, 2))

    class ViTS16(nn.Module):
        dtype: object

        @nn.compact
        def __call__(self, x, train):
            x = nn.Conv(384, (16, 16), 16, dtype=self.dtype)(x)
            b, h, w, c = x.shape
            x = x.reshape(b, h * w, c)
            cls = self.param("cls", nn.initializers.zeros, (1, 1, c))
            x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, c)).astype(x.dtype), x], axis=1)
            x = x + self.param("pos", nn.initializers.normal(0.02), (1, h * w + 1, c)).astype(x.dtype)
            for _ in range(12):
                y = nn.LayerNorm(dtype=self.dtype)(x)
                x = x + nn.MultiHeadDotProductAttention(6, dtype=self.dtype)(y, y)
                y = nn.LayerNorm(dtype=self.dtype)(x)
                x = x + nn.Dense(c, dtype=self.dtype)(nn.gelu(nn.Dense(4 * c, dtype=self.dtype)(y)))
            return nn.LayerNorm(dtype=self.dtype)(x)[:, 0]

    return ResNet18, ViTS16


def build(name: str, dtype):
    from jscore.backbones.base import Backbone, Preprocess

    resnet, vit = _models()
    module, dim = {"resnet18": (resnet(dtype), 512), "vits16": (vit(dtype), 384)}[name]

    def init(rng, images):
        return dict(module.init(rng, images, train=False))

    def apply(variables, images, *, train, rng=None):
        if train and "batch_stats" in variables:
            feats, mutated = module.apply(variables, images, train=True, mutable=["batch_stats"])
            return feats, None, dict(mutated)
        return module.apply(variables, images, train=train), None, {}

    pre = Preprocess(image_size=224, resize_size=256)
    variables = jax.jit(init)(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3), jnp.float32))
    return Backbone(name, dim, 0, pre, init, apply, variables=variables)


def timed(fn, steps):
    """-> (first call seconds, steady seconds per call)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return first, (time.perf_counter() - t0) / steps


def bench(name, batch, steps, bf16, num_classes=10):
    from jscore.finetune.loop import _batches, _Runner, make_mesh
    from jscore.finetune.train import TrainConfig, image_input_fn, init_state, make_optimizer

    dtype = jnp.bfloat16 if bf16 else jnp.float32
    bb = build(name, dtype)
    variables = bb.variables
    size = bb.preprocess.image_size
    load = bb.preprocess.resize_size
    cfg = TrainConfig(batch_size=batch, eval_batch_size=batch, epochs=1,
                      compute_dtype="bfloat16" if bf16 else "float32")
    mesh = make_mesh()
    n = batch * 4
    rng = np.random.default_rng(0)
    host_images = rng.integers(0, 256, size=(n, load, load, 3), dtype=np.uint8)
    host_labels = rng.integers(0, num_classes, size=n).astype(np.int32)
    tx = make_optimizer(cfg, steps + 1)
    key = None
    idx, w = _batches(n, batch, np.arange(n))

    def time_loop(augment):
        nonlocal key
        runner = _Runner(bb, variables, cfg, num_classes, image_input_fn(bb.preprocess, size, augment), mesh, steps + 1)
        state = jax.device_put(jax.tree.map(jnp.copy, init_state(variables, bb.feature_dim, num_classes, tx,
                                                                 jax.random.PRNGKey(1))), runner.replicated)
        key = jax.device_put(jax.random.PRNGKey(2), runner.replicated)
        holder = {"state": state, "i": 0}

        def loop_step():
            i = holder["i"] % idx.shape[0]
            holder["i"] += 1
            holder["state"], m = runner.step(holder["state"], runner.put(host_images[idx[i]]),
                                             runner.put(host_labels[idx[i]]), runner.put(w[i]), key)
            return m

        return timed(loop_step, steps)

    loop_first, loop_dt = time_loop(True)
    noaug_first, noaug_dt = time_loop(False)

    # Bare reference: forward + backward + SGD on a pre-made, pre-normalised device batch.
    from jscore.finetune.train import init_head, split_variables, join_variables

    params, model_state = split_variables(jax.tree.map(jnp.copy, variables))
    params = {"backbone": params, "head": init_head(jax.random.PRNGKey(1), bb.feature_dim, num_classes)}
    x = jnp.asarray(rng.normal(size=(batch, size, size, 3)), jnp.float32)
    y = jnp.asarray(host_labels[:batch])

    def loss_fn(p, ms, x, y):
        pb = jax.tree.map(lambda a: a.astype(dtype), p["backbone"]) if bf16 else p["backbone"]
        feats, _, mutated = bb.apply(join_variables(pb, ms, variables), x.astype(dtype), train=True, rng=None)
        logits = feats.astype(jnp.float32) @ p["head"]["kernel"] + p["head"]["bias"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), mutated

    @jax.jit
    def bare(p, ms, x, y):
        (loss, mutated), g = jax.value_and_grad(loss_fn, has_aux=True)(p, ms, x, y)
        return jax.tree.map(lambda a, b: a - 0.01 * b, p, g), (mutated or ms), loss

    hold2 = {"p": params, "ms": model_state}

    def bare_step():
        hold2["p"], hold2["ms"], loss = bare(hold2["p"], hold2["ms"], x, y)
        return loss

    bare_first, bare_dt = timed(bare_step, steps)
    dev = jax.devices()[0]
    return {
        "model": name, "image_size": size, "batch": batch, "devices": len(jax.devices()),
        "device": getattr(dev, "device_kind", dev.platform), "dtype": "bfloat16" if bf16 else "float32",
        "loop_images_per_s": batch / loop_dt, "bare_images_per_s": batch / bare_dt,
        "loop_noaug_images_per_s": batch / noaug_dt,
        "loop_over_bare_time": loop_dt / bare_dt, "loop_noaug_over_bare_time": noaug_dt / bare_dt,
        "loop_compile_s": loop_first - loop_dt, "bare_compile_s": bare_first - bare_dt,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18,vits16")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    results = []
    for name in args.models.split(","):
        r = bench(name, args.batch, args.steps, args.bf16)
        results.append(r)
        print(f"{r['model']:>8} {r['dtype']:>8} batch {r['batch']:4d} on {r['devices']}x {r['device']}: "
              f"loop {r['loop_images_per_s']:8.1f} img/s, bare {r['bare_images_per_s']:8.1f} img/s, "
              f"loop/bare time {r['loop_over_bare_time']:.3f} (without augmentation "
              f"{r['loop_noaug_images_per_s']:.1f} img/s, {r['loop_noaug_over_bare_time']:.3f}); compile loop {r['loop_compile_s']:.1f} s, "
              f"bare {r['bare_compile_s']:.1f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
