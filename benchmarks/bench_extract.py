"""Feature extraction throughput: the full pipeline against the bare forward pass.

For each model (a ResNet-50-sized and a ViT-S/16-sized transformers model with random weights,
224 px inputs) it measures, in images per second:
  forward   the jitted forward pass alone (on-device normalisation included) on a pre-made
            uint8 batch already cropped to 224 px: the ceiling;
  decode    the threaded loader alone (JPEG decode, resize to 256, centre crop 224);
  loop      `jscore.features.extract`'s batch loop (decode, preprocess, forward, chunk files),
            with the compiled program already cached, so compile time is reported separately;
  end2end   the whole `extract` call: the loop plus set-up (weights fingerprint) and merge;
and the ratios loop / forward and end2end / forward: how busy the pipeline keeps the forward
pass.

    python benchmarks/bench_extract.py --batches 4 --batch-size 8 --repeats 2
    python benchmarks/bench_extract.py --data csv:../shared/data/brain_tumor_mri --split val

Images: by default 256x320 JPEGs written to a temporary folder (smooth random content, about
the size of a medical scan crop); --data reads a real dataset instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jscore.backbones import get_backbone  # noqa: E402
from jscore.data import iter_batches, open_dataset  # noqa: E402
from jscore.features import extract, make_embed_fn  # noqa: E402

MODELS = {"resnet50": "hf-random:resnet-50", "vit_s16": "hf-random:vit-s16"}


def write_jpegs(folder: str, n: int, seed: int = 0) -> str:
    """n smooth random JPEGs (256x320, 2 classes) in folder/<class>/; returns the folder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        low = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((320, 256), Image.BICUBIC)
        path = os.path.join(folder, f"c{i % 2}", f"{i:05d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        img.save(path, quality=90)
    return folder


def bench_model(key: str, dataset, args) -> dict:
    t = time.perf_counter()
    backbone = get_backbone(MODELS[key])
    build_s = time.perf_counter() - t
    variables = jax.device_put(backbone.variables)
    embed = make_embed_fn(backbone)
    b, s = args.batch_size, backbone.preprocess.image_size
    images = np.random.default_rng(0).integers(0, 256, (b, s, s, 3), dtype=np.uint8)
    t = time.perf_counter()
    jax.block_until_ready(embed(variables, images))
    compile_s = time.perf_counter() - t
    n = args.batches * b

    def forward_rate():
        t = time.perf_counter()
        for _ in range(args.batches):  # the same number of batches as the pipeline, back to back
            out = embed(variables, images)
        jax.block_until_ready(out)
        return n / (time.perf_counter() - t)

    def pipeline_rates():
        with tempfile.TemporaryDirectory() as out_dir:
            t = time.perf_counter()
            path = extract(backbone, _Head(dataset, n), out_dir, batch_size=b,
                           chunk_batches=max(1, args.batches // 2), num_workers=args.workers, progress=False)
            end2end = n / (time.perf_counter() - t)
            with open(path[:-4] + ".json") as fh:
                timing = json.load(fh)["timing"]
        return timing["loop_images"] / timing["loop_s"], end2end, timing

    # Loader alone.
    t = time.perf_counter()
    for _ in iter_batches(dataset, backbone.preprocess, batch_size=b, stop=n, num_workers=args.workers):
        pass
    decode = n / (time.perf_counter() - t)
    # Interleave forward and pipeline runs, so drifting load on a shared machine hits both alike;
    # report medians.
    fwd, loops, e2es = [], [], []
    for _ in range(args.repeats):
        fwd.append(forward_rate())
        loop, end2end, timing = pipeline_rates()
        loops.append(loop)
        e2es.append(end2end)
    forward, loop, pipeline = (float(np.median(x)) for x in (fwd, loops, e2es))
    return {"model": key, "name": MODELS[key], "feature_dim": backbone.feature_dim, "images": n,
            "batch_size": b, "build_s": round(build_s, 2), "compile_s": round(compile_s, 2),
            "forward_img_s": round(forward, 2), "decode_img_s": round(decode, 2),
            "pipeline_img_s": round(pipeline, 2), "loop_img_s": round(loop, 2),
            "setup_s": timing["setup_s"], "merge_s": timing["merge_s"],
            "busy_loop": round(loop / forward, 3), "busy_end_to_end": round(pipeline / forward, 3)}


class _Head:
    """The first n items of a dataset."""

    def __init__(self, ds, n):
        self.ds, self.n = ds, min(n, len(ds))
        self.num_classes, self.class_names = ds.num_classes, ds.class_names

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.ds[i]

    def describe(self):
        return dict(self.ds.describe(), head=self.n)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet50,vit_s16")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=3, help="timed batches per measurement")
    p.add_argument("--repeats", type=int, default=2, help="interleaved forward/pipeline repeats (median)")
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: CPU count)")
    p.add_argument("--data", help="dataset spec (default: synthetic JPEGs in a temporary folder)")
    p.add_argument("--split", default="all")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            dataset = open_dataset(args.data, args.split)
        else:
            dataset = open_dataset(f"folder:{write_jpegs(tmp, args.batches * args.batch_size)}", "all")
        print(f"device: {jax.devices()[0].device_kind} x{len(jax.devices())}, cpu cores: {os.cpu_count()}, "
              f"data: {args.data or 'synthetic 256x320 JPEG'}")
        rows = [bench_model(key, dataset, args) for key in args.models.split(",")]
    print(f"{'model':9} {'D':>5} {'compile s':>9} {'forward':>8} {'decode':>8} {'loop':>8} {'end2end':>8} "
          f"{'setup s':>8} {'busy loop':>9} {'busy e2e':>9}   (img/s)")
    for r in rows:
        print(f"{r['model']:9} {r['feature_dim']:>5} {r['compile_s']:>9.2f} {r['forward_img_s']:>8.2f} "
              f"{r['decode_img_s']:>8.2f} {r['loop_img_s']:>8.2f} {r['pipeline_img_s']:>8.2f} "
              f"{r['setup_s']:>8.2f} {r['busy_loop']:>9.2f} {r['busy_end_to_end']:>9.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
