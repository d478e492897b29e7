"""Accelerator benchmark: one call, one JSON file, at most ~8 minutes on one GPU or TPU.

Parts (each timed with compile apart: `first` is the first call, `warm` the median of the next
`--repeats` calls; compile ~ first - warm):

1. `single`: every score of one model (`jscore.score`, features + source probabilities) at
   N in {10k, 50k, 200k}, D = 2048, C = 8, Cs = 1000. The pairwise scores (knn, tmi, parc,
   transrate: O(N^2 D)) are left out above `--pairwise-max-n` (default 50,000), and the
   list of scores actually run is recorded.
2. `zoo`: 10 models x N = 15k x every score in one `jscore.score_zoo` call (feature sizes
   1024-2048, so the models fall in several shape buckets, as a real zoo does).
3. `extract` and `finetune`: images/s of the jitted embedding forward pass and of
   `jscore.finetune`'s compiled train step (augmentation, backward, optax update) at 224 px.
   The model is a published checkpoint from `--models-dir` (default ../shared/models,
   `mobilenet_v2_1.0_224_quant`) when its file is there, else jscore's own zoo `resnet20`
   (random weights, no files needed); fine-tuning always uses the zoo model (the published
   TFLite checkpoints are uint8). A part that cannot run records {"skipped": reason}.

A time budget (`--budget-s`, default 420) is checked between parts and sizes: whatever would
start after it is recorded as skipped, so the call ends in time and the JSON is always written.

`--cpu-small` (automatic when the default backend is the CPU; `--full` forces the device sizes)
uses small sizes (N in {256, 512, 1024}, D = 64; zoo 3 x N = 256; the seven DART scores;
32 px images) and finishes in well under a minute on an idle 2-core machine; the test suite
runs it (tests/test_bench_device.py).

    python benchmarks/bench_device.py --json device.json            # on the GPU/TPU machine
    python benchmarks/bench_device.py --cpu-small --json small.json  # anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

SEVEN = ("hscore", "reg_hscore", "nce", "leep", "nleep", "logme", "gbc")
PAIRWISE = ("knn", "tmi", "parc", "transrate")
DEVICE = {"sizes": (10_000, 50_000, 200_000), "dim": 2048, "classes": 8, "source": 1000,
          "zoo_models": 10, "zoo_n": 15_000, "zoo_dims": (1024, 1280, 1536, 2048), "scores": "all",
          "image_size": 224, "batch": 128, "steps": 10, "pairwise_max_n": 50_000}
CPU_SMALL = {"sizes": (256, 512, 1024), "dim": 64, "classes": 4, "source": 50,
             "zoo_models": 3, "zoo_n": 256, "zoo_dims": (32, 48, 64), "scores": ",".join(SEVEN),
             "image_size": 32, "batch": 4, "steps": 2, "pairwise_max_n": 1024}


def make_data(n: int, d: int, c: int, cs: int, seed: int = 0):
    """Features [n, d] with class structure on a decaying spectrum, labels [n], source
    probabilities [n, cs] tied to the labels (see benchmarks/bench_scorers.py:make_data, of which
    this is a cheaper version for large N)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % c).astype(np.int32)
    r = min(128, d)
    basis = np.linalg.qr(rng.standard_normal((d, r)))[0].T.astype(np.float32)
    scale = (np.arange(1, r + 1) ** -0.55).astype(np.float32)
    means = (rng.standard_normal((c, r)) * scale * 0.6).astype(np.float32)
    means[:, 16:] = 0
    latent = rng.standard_normal((n, r), dtype=np.float32) * scale + means[labels]
    feats = latent @ basis + np.float32(0.01) * rng.standard_normal((n, d), dtype=np.float32)
    feats += rng.uniform(0.2, 1.0, size=d).astype(np.float32)
    logits = rng.standard_normal((n, cs), dtype=np.float32)
    ties = rng.integers(0, cs, size=c)
    logits[np.arange(n), ties[labels]] += 3.0
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return feats, labels, probs


def timed(fn, repeats: int) -> dict:
    """{"first": s, "warm": median s of `repeats` more calls, "compile_s": first - warm, "out": last}."""
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    warm = statistics.median(times) if times else first
    return {"first": first, "warm": warm, "compile_s": max(first - warm, 0.0), "out": out}


def _block(tree):
    import jax

    return jax.block_until_ready(tree)


class Budget:
    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def single_part(cfg, repeats, budget) -> list:
    import jscore

    rows = []
    for n in cfg["sizes"]:
        if budget.left() <= 0:
            rows.append({"n": n, "skipped": "time budget spent"})
            continue
        scores = cfg["scores"]
        if scores == "all" and n > cfg["pairwise_max_n"]:
            names = [s for s in jscore.resolve_scores("all", have_features=True, have_source=True)
                     if s not in PAIRWISE]
            scores = ",".join(names)
        f, y, p = make_data(n, cfg["dim"], cfg["classes"], cfg["source"])
        t = timed(lambda: jscore.score(f, y, source_probs=p, scores=scores, num_classes=cfg["classes"]),
                  repeats)
        values = t.pop("out")
        rows.append({"n": n, "d": cfg["dim"], "c": cfg["classes"], "scores": list(values), "values": values, **t})
        print(f"single N={n}: first {t['first']:.2f} s, warm {t['warm']:.3f} s ({len(values)} scores)", flush=True)
    return rows


def zoo_part(cfg, repeats, budget) -> dict:
    import jscore

    if budget.left() <= 0:
        return {"skipped": "time budget spent"}
    n, c = cfg["zoo_n"], cfg["classes"]
    models = {}
    labels = None
    for i in range(cfg["zoo_models"]):
        d = cfg["zoo_dims"][i % len(cfg["zoo_dims"])]
        f, y, p = make_data(n, d, c, cfg["source"], seed=i)
        labels = y if labels is None else labels
        # One label vector for the zoo: reorder each model's rows to it (same class balance).
        order = np.concatenate([np.flatnonzero(y == k) for k in range(c)])
        target = np.concatenate([np.flatnonzero(labels == k) for k in range(c)])
        ff, pp = np.empty_like(f), np.empty_like(p)
        ff[target], pp[target] = f[order], p[order]
        models[f"model{i}_d{d}"] = {"features": ff, "source_probs": pp}
    t = timed(lambda: jscore.score_zoo(models, labels, scores=cfg["scores"], num_classes=c), repeats)
    values = t.pop("out")
    some = next(iter(values.values()))
    print(f"zoo {len(models)} x N={n}: first {t['first']:.2f} s, warm {t['warm']:.3f} s ({len(some)} scores)",
          flush=True)
    return {"models": len(models), "n": n, "dims": sorted({int(v["features"].shape[1]) for v in models.values()}),
            "scores": list(some), "values": values, **t}


def _backbone(name, models_dir, image_size):
    from jscore.backbones import get_backbone

    if name != "resnet20":
        try:
            return get_backbone(name, models_dir=models_dir), name
        except (FileNotFoundError, ValueError, OSError) as err:
            print(f"{name} unavailable ({err}); using the zoo's resnet20", flush=True)
    return get_backbone("resnet20", image_size=image_size), "resnet20"


def extract_part(cfg, model, models_dir, budget) -> dict:
    import jax
    import jax.numpy as jnp

    from jscore.backbones import init_variables

    if budget.left() <= 0:
        return {"skipped": "time budget spent"}
    try:
        from jscore.features import make_embed_fn

        bb, used = _backbone(model, models_dir, cfg["image_size"])
        variables = init_variables(bb)
        s = bb.preprocess.image_size
        rng = np.random.default_rng(0)
        images = jnp.asarray(rng.integers(0, 256, size=(cfg["batch"], s, s, 3), dtype=np.uint8))
        embed = make_embed_fn(bb)  # jscore.features' jitted normalise + embed
        t = timed(lambda: _block(embed(variables, images)), cfg["steps"])
        t.pop("out")
    except Exception as err:  # a missing optional dependency or file: skip cleanly, say why
        return {"skipped": f"{type(err).__name__}: {err}"}
    rate = cfg["batch"] / t["warm"]
    print(f"extract {used} {s}px batch {cfg['batch']}: {rate:.1f} images/s", flush=True)
    return {"model": used, "image_size": s, "batch": cfg["batch"], "images_per_s": rate, **t}


def finetune_part(cfg, budget) -> dict:
    import jax
    import jax.numpy as jnp

    if budget.left() <= 0:
        return {"skipped": "time budget spent"}
    try:
        from jscore.backbones import get_backbone, init_variables
        from jscore.finetune.loop import _batches, _Runner, make_mesh
        from jscore.finetune.train import TrainConfig, image_input_fn, init_state, make_optimizer
    except Exception as err:
        return {"skipped": f"{type(err).__name__}: {err}"}
    try:
        s, batch, steps, classes = cfg["image_size"], cfg["batch"], cfg["steps"], 10
        bb = get_backbone("resnet20", image_size=s)
        variables = init_variables(bb)
        train_cfg = TrainConfig(batch_size=batch, eval_batch_size=batch, epochs=1)
        mesh = make_mesh()
        n = batch * 2
        rng = np.random.default_rng(0)
        load = bb.preprocess.resize_size
        host_images = rng.integers(0, 256, size=(n, load, load, 3), dtype=np.uint8)
        host_labels = rng.integers(0, classes, size=n).astype(np.int32)
        tx = make_optimizer(train_cfg, steps + 2)
        idx, w = _batches(n, batch, np.arange(n))
        runner = _Runner(bb, variables, train_cfg, classes, image_input_fn(bb.preprocess, s, True), mesh,
                         steps + 2)
        state = jax.device_put(jax.tree.map(jnp.copy, init_state(variables, bb.feature_dim, classes, tx,
                                                                 jax.random.PRNGKey(1))), runner.replicated)
        key = jax.device_put(jax.random.PRNGKey(2), runner.replicated)
        hold = {"state": state, "i": 0}

        def step():
            i = hold["i"] % idx.shape[0]
            hold["i"] += 1
            hold["state"], m = runner.step(hold["state"], runner.put(host_images[idx[i]]),
                                           runner.put(host_labels[idx[i]]), runner.put(w[i]), key)
            return _block(m)

        t = timed(step, steps)
        t.pop("out")
    except Exception as err:
        return {"skipped": f"{type(err).__name__}: {err}"}
    rate = batch / t["warm"]
    print(f"finetune resnet20 {s}px batch {batch}: {rate:.1f} images/s", flush=True)
    return {"model": "resnet20", "image_size": s, "batch": batch, "images_per_s": rate, **t}


def device_info() -> dict:
    import jax

    dev = jax.devices()[0]
    return {"backend": jax.default_backend(), "device_kind": getattr(dev, "device_kind", dev.platform),
            "device_count": jax.device_count(), "jax": jax.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "load": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--cpu-small", action="store_true", help="small sizes (default on the CPU backend)")
    mode.add_argument("--full", action="store_true", help="device sizes even on the CPU")
    parser.add_argument("--json", default="bench_device.json", help="output file")
    parser.add_argument("--repeats", type=int, default=3, help="warm calls per measurement")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no part after this many seconds")
    parser.add_argument("--model", default=None, help="extraction model (default: mobilenet_v2_1.0_224_quant "
                        "on a device, the zoo's resnet20 with --cpu-small)")
    parser.add_argument("--models-dir", default=os.path.join(_ROOT, "..", "shared", "models"))
    parser.add_argument("--parts", default="single,zoo,extract,finetune")
    args = parser.parse_args(argv)

    import jax

    small = args.cpu_small or (not args.full and jax.default_backend() == "cpu")
    cfg = dict(CPU_SMALL if small else DEVICE)
    parts = set(args.parts.split(","))
    budget = Budget(args.budget_s)
    start = time.perf_counter()
    out = {"mode": "cpu-small" if small else "device", "config": cfg, "device": device_info(),
           "repeats": args.repeats, "command": " ".join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:]))}
    if "single" in parts:
        out["single"] = single_part(cfg, args.repeats, budget)
    if "zoo" in parts:
        out["zoo"] = zoo_part(cfg, args.repeats, budget)
    if "extract" in parts:
        model = args.model or ("resnet20" if small else "mobilenet_v2_1.0_224_quant")
        out["extract"] = extract_part(cfg, model, args.models_dir, budget)
    if "finetune" in parts:
        out["finetune"] = finetune_part(cfg, budget)
    out["total_s"] = time.perf_counter() - start
    with open(args.json, "w") as fh:
        json.dump(out, fh, indent=1, default=float)
    print(f"wrote {args.json} ({out['total_s']:.1f} s)", flush=True)
    return out


if __name__ == "__main__":
    main()
