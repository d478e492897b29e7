"""A fine-tuning step of the same network in jscore and in PyTorch, on the CPU, in one process.

The medical study's recipe (LP-FT's second stage): every weight trained with AdamW, BatchNorm
frozen (PyTorch's `eval()` mode, its statistics kept; jscore's `batch_norm="frozen"`), a new
2-class head, cross-entropy, batch 32 summed over micro-batches of --micro images. Networks from
`benchmarks/torch_reference_models.py` (written independently of jscore's): EfficientNet-Lite
(depthwise and 1x1 convolutions, ReLU6) and the CIFAR ResNets (3x3 convolutions), random weights
(speed does not depend on them). PyTorch runs in NCHW and in channels-last memory layout (its
faster CPU path for depthwise convolutions). Both sides on one thread, the way the study's sweep
runs them (one process per core):

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \\
      GLIBC_TUNABLES=glibc.malloc.hugetlb=1 taskset -c 0 \\
      python benchmarks/bench_train_step_torch.py --backbones efficientnet_lite0,cifar10_resnet20

Prints warm step times (median of --repeats after one warm-up step; jscore's compile time
apart) and the ratio PyTorch / jscore (above 1: jscore is faster). Needs torch (`pip install
torch`; not a dependency of jscore).
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

BATCH = 32


def _torch_model(name):
    from benchmarks import torch_reference_models as ref

    if name.startswith("efficientnet_lite"):
        variant = int(name[-1])
        return ref.TorchEfficientNetLite(variant), 1280
    if name.startswith("cifar10_resnet"):
        return ref.TorchCifarResNet(int(name[len("cifar10_resnet"):])), 64
    raise SystemExit(f"no PyTorch reference for {name!r} (efficientnet_lite0/1/2, cifar10_resnet20/32/44/56)")


def _torch_steps(name, images, labels, micro, repeats, channels_last):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, dim = _torch_model(name)
    model.eval()                                   # BatchNorm frozen: running statistics kept
    head = torch.nn.Linear(dim, 2)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=1e-5)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = x.contiguous()
    y = torch.from_numpy(labels).long()

    def step():
        opt.zero_grad(set_to_none=True)
        for i in range(0, BATCH, micro):
            loss = F.cross_entropy(head(model.features(x[i:i + micro])), y[i:i + micro], reduction="sum") / BATCH
            loss.backward()
        opt.step()

    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _jscore_steps(name, images, labels, micro, repeats, models_dir):
    from jscore.backbones import get_backbone, init_variables
    from jscore.finetune.train import TrainConfig, image_input_fn, init_state, make_optimizer, make_train_step

    bb = get_backbone(name, **({"models_dir": models_dir} if models_dir else {}))
    variables = init_variables(bb, 0)
    cfg = TrainConfig(learning_rate=1e-5, optimizer="adamw", batch_norm="frozen", augment=False,
                      batch_size=BATCH, micro_batch_size=micro if micro < BATCH else 0)
    cfg.validate()
    tx = make_optimizer(cfg, 100)
    state = init_state(variables, bb.feature_dim, 2, tx, jax.random.PRNGKey(1))
    step = jax.jit(make_train_step(bb, variables, tx, cfg, 2,
                                   image_input_fn(bb.preprocess, bb.preprocess.image_size, False)), donate_argnums=0)
    args = (jnp.asarray(images), jnp.asarray(labels), jnp.ones(BATCH))
    t0 = time.perf_counter()
    step = step.lower(state, *args, jax.random.PRNGKey(0)).compile()
    compile_s = time.perf_counter() - t0
    state, metrics = step(state, *args, jax.random.PRNGKey(0))
    jax.block_until_ready(metrics)
    times = []
    for k in range(repeats):
        t0 = time.perf_counter()
        state, metrics = step(state, *args, jax.random.PRNGKey(k + 1))
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), compile_s, bb.preprocess.image_size


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default="efficientnet_lite0,cifar10_resnet20")
    p.add_argument("--micro", type=int, default=8, help="micro-batch size (32: whole batches)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models-dir", default="")
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        raise SystemExit("this benchmark needs torch: pip install torch")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__}, "
          f"torch {torch.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, batch {BATCH}, "
          f"micro-batch {args.micro}")
    print("| backbone | px | jscore step (s) | jscore compile (s) | torch NCHW (s) | torch channels-last (s) "
          "| torch best / jscore |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for name in args.backbones.split(","):
        probe_size = 32 if name.startswith("cifar") else {"0": 224, "1": 240, "2": 260}[name[-1]]
        images = rng.integers(0, 256, (BATCH, probe_size, probe_size, 3), dtype=np.uint8)
        labels = rng.integers(0, 2, BATCH).astype(np.int32)
        ours, compile_s, size = _jscore_steps(name, images, labels, args.micro, args.repeats, args.models_dir)
        if size != probe_size:
            raise SystemExit(f"{name}: jscore's preset is {size} px, the benchmark assumed {probe_size}")
        nchw = _torch_steps(name, images, labels, args.micro, args.repeats, channels_last=False)
        cl = _torch_steps(name, images, labels, args.micro, args.repeats, channels_last=True)
        print(f"| {name} | {size} | {ours:.2f} | {compile_s:.1f} | {nchw:.2f} | {cl:.2f} | {min(nchw, cl) / ours:.2f}x |")


if __name__ == "__main__":
    main()
