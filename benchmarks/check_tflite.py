"""Imported TFLite models against the reference runtime (`ai-edge-litert`), on real images.

For each `.tflite` file in ../shared/models: the same preprocessed pixels go to jscore's imported
model (jitted, batched) and to the runtime's builtin kernels
(`OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`, one image at a time, all tensors kept so the
penultimate one can be read) and, for the runtime's self-agreement, to its default path (the
XNNPACK delegate). Printed per model: top-1 agreement with the builtin kernels, the runtime's
builtin-vs-XNNPACK agreement, the mean cosine between our features and the runtime's dequantised
features tensor, our top-1, the runtime's top-1, the published top-1, and for float files the
largest relative logit error (max |ours - runtime| / max |runtime| per image).

    python benchmarks/check_tflite.py                       # all models, 250 images, all forwards
    python benchmarks/check_tflite.py --forward integer     # only the default (bit-exact) forward
    python benchmarks/check_tflite.py --models mobilenet_v2_1.0_224_quant --images 20

Forwards (`--forward`, comma-separated): `float` (`fake_quant=False`: float activations clipped to
their grids), `float-sum` (`fake_quant=True, integer_accumulation=False`: rounded onto the grids,
float32 sums; numerics 2 of the registry), `integer` (the default: integer sums, fixed-point
requantisation).

ImageNet models use ../shared/data/imagenet_sample (test.csv, 250 images); the CIFAR-10 ResNet-8
uses the first N images of ../shared/data/cifar10_test. Results: docs/zoo.md.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
MODELS = os.path.join(SHARED, "models")
DATA = os.path.join(SHARED, "data")


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    file: str
    published: str
    dataset: str = "imagenet_sample"
    kwargs: Tuple = ()   # extra load_tflite keywords, as pairs


ENTRIES: List[Entry] = [
    Entry("mobilenet_v1_0.25_128_quant", "mobilenet_v1_0.25_128_quant.tflite", "39.5"),
    Entry("mobilenet_v1_0.5_160_quant", "mobilenet_v1_0.5_160_quant.tflite", "57.2"),
    Entry("mobilenet_v1_0.75_192_quant", "mobilenet_v1_0.75_192_quant.tflite", "66.1"),
    Entry("mobilenet_v1_1.0_224_embedding", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", "70.9 (full)"),
    Entry("mobilenet_v2_1.0_224_quant", "mobilenet_v2_1.0_224_quant.tflite", "70.8"),
    Entry("mobilenet_v2_torchvision_quant", "mobilenet_v2_quantized_1x3x224x224.tflite", "~71.7"),
    Entry("mobilenet_v3_small_1.0_224_quant", "v3-small_224_1.0_uint8.tflite", "64.9"),
    Entry("mobilenet_edgetpu_0.75_224_quant", "mobilenet_edgetpu_0.75_224_post_training_quant.tflite", "73.5"),
    Entry("mobilenet_edgetpu_1.0_224_quant", "mobilenet_edgetpu_1.0_224.uint8.tflite", "75.6"),
    Entry("mcunet_in3", "mcunet-320kb-1mb_imagenet.tflite", "61.8"),
    Entry("mobilenet_v2_1.0_224_inat_bird_quant", "mobilenet_v2_1.0_224_inat_bird_quant.tflite", "-",
          kwargs=(("background", True),)),
    Entry("mobilenet_v2_1.0_224_inat_insect_quant", "mobilenet_v2_1.0_224_inat_insect_quant.tflite", "-",
          kwargs=(("background", True),)),
    Entry("mobilenet_v1_0.25_224_float", "mobilenet_v1_0.25_224_1_default_1.tflite", "49.7"),
    Entry("cifar10_resnet8_mlperf_tiny", "pretrainedResnet.tflite", "~85", dataset="cifar10_test",
          kwargs=(("input_norm", (0.0, 1.0)), ("crop_fraction", 1.0))),
]


def model_path(entry: Entry) -> str:
    return os.path.join(MODELS, entry.name, entry.file)


def load_images(dataset: str, n: int, preset) -> Tuple[np.ndarray, np.ndarray]:
    """-> (uint8 crops [n, S, S, 3], labels [n]) of the first n rows of the dataset's test.csv."""
    from PIL import Image

    from jscore.data.preprocess import resize_crop

    root = os.path.join(DATA, dataset)
    with open(os.path.join(root, "test.csv")) as f:
        rows = list(csv.DictReader(f))[:n]
    crops = [resize_crop(np.asarray(Image.open(os.path.join(root, r["image"])).convert("RGB")), preset) for r in rows]
    return np.stack(crops), np.array([int(r["label"]) for r in rows])


def quantize_input(x: np.ndarray, info) -> np.ndarray:
    """Float model input -> the runtime's input tensor (its own quantisation), NumPy."""
    if info.input_scale is None:
        return x.astype(np.float32)
    lo, hi = (0, 255) if info.input_dtype == "UINT8" else (-128, 127)
    q = np.clip(np.round(x / info.input_scale) + info.input_zero_point, lo, hi)
    return q.astype(np.uint8 if info.input_dtype == "UINT8" else np.int8)


def dequantize(detail: dict, q: np.ndarray) -> np.ndarray:
    scale, zp = detail["quantization"]
    if q.dtype.kind in "iu" and scale:
        return (scale * (q.astype(np.float64) - zp)).astype(np.float32)
    return q.astype(np.float32)


def run_runtime(path: str, q_inputs: np.ndarray, info, *, builtin: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """-> (features [n, D], logits [n, C] or None) dequantised, from the builtin kernels
    (`builtin=True`) or the default path (XNNPACK delegate; only logits are kept)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = dict(experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
              experimental_preserve_all_tensors=True) if builtin else {}
    interp = Interpreter(model_path=path, num_threads=1, **kw)
    interp.allocate_tensors()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    inp = interp.get_input_details()[0]["index"]
    out_t = interp.get_output_details()[0]["index"]
    feats, logits = [], []
    for q in q_inputs:
        interp.set_tensor(inp, q[None])
        interp.invoke()
        if builtin:
            feats.append(dequantize(details[info.features_tensor], interp.get_tensor(info.features_tensor)).reshape(-1))
            if info.logits_tensor is not None:
                t = info.logits_tensor
                logits.append(dequantize(details[t], interp.get_tensor(t)).reshape(-1))
        else:
            d = interp.get_output_details()[0]
            logits.append(dequantize(d, interp.get_tensor(out_t)).reshape(-1))
    return (np.stack(feats) if feats else None), (np.stack(logits) if logits else None)


def ours(backbone, x: np.ndarray, batch: int = 25) -> Tuple[np.ndarray, Optional[np.ndarray], float]:
    import jax

    fn = jax.jit(lambda v, im: backbone.embed(v, im))
    feats, logits = [], []
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        if len(chunk) < batch:  # pad: one compiled shape
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)])
        f, l = jax.device_get(fn(backbone.variables, chunk))
        feats.append(f[: len(x) - i])
        if l is not None:
            logits.append(l[: len(x) - i])
    return np.concatenate(feats), (np.concatenate(logits) if logits else None), time.perf_counter() - t0


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


FORWARDS = {"float": dict(fake_quant=False), "float-sum": dict(fake_quant=True, integer_accumulation=False),
            "integer": dict(fake_quant=True, integer_accumulation=True)}


def compare(entry: Entry, n_images: int, *, fake_quant=False, self_agreement: bool = True):
    """One model: jscore vs the runtime on the first n images. `fake_quant`: a forward (a name of
    `FORWARDS`, or a bool: True is the default forward, "integer"; False is "float") -> one dict
    of measurements, or a tuple of them -> a list of dicts, the runtime run once for all."""
    from jscore.backbones.tflite import import_tflite, load_tflite
    from jscore.data.preprocess import normalize

    modes = tuple(fake_quant) if isinstance(fake_quant, (tuple, list)) else (fake_quant,)
    modes = tuple(("integer" if m else "float") if isinstance(m, bool) else m for m in modes)
    path = model_path(entry)
    kwargs = dict(entry.kwargs)
    with open(path, "rb") as f:
        _, _, info = import_tflite(f.read(), where=path, background=kwargs.get("background"))
    bb = load_tflite(path, name=entry.name, **kwargs)
    crops, labels = load_images(entry.dataset, n_images, bb.preprocess)
    x = normalize(crops, bb.preprocess)                # float model input (NCHW if channels-first)
    q = quantize_input(x, info)                        # what the runtime gets
    x_same = x if info.input_scale is None else (info.input_scale * (q.astype(np.float32) - info.input_zero_point))
    f_rt, l_rt = run_runtime(path, q, info, builtin=True)
    l_x = run_runtime(path, q, info, builtin=False)[1] if self_agreement and l_rt is not None else None
    imagenet = entry.dataset == "imagenet_sample" and "inat" not in entry.name
    rows = []
    for fq in modes:
        bb = load_tflite(path, name=entry.name, **FORWARDS[fq], **kwargs)
        f_ours, l_ours, _ = ours(bb, x_same.astype(np.float32))
        row = {"model": entry.name, "images": len(labels), "forward": fq,
               "feature_cosine": float(cosine(f_ours, f_rt).mean()), "published": entry.published}
        drop = l_ours is not None and l_rt is not None and l_rt.shape[1] == l_ours.shape[1] + 1
        if l_ours is not None:
            l_rt_kept = l_rt[:, 1:] if drop else l_rt
            top_ours, top_rt = l_ours.argmax(1), l_rt_kept.argmax(1)
            row["agreement"] = float((top_ours == top_rt).mean())
            if imagenet or entry.dataset != "imagenet_sample":   # labels in the model's classes
                row.update(ours_top1=float((top_ours == labels).mean()), runtime_top1=float((top_rt == labels).mean()))
            if info.input_scale is None:
                err = np.abs(l_ours - l_rt_kept).max(1) / np.abs(l_rt_kept).max(1)
                row["logit_rel_err"] = float(err.max())
            if l_x is not None:
                l_xk = l_x[:, 1:] if drop else l_x
                if l_xk.shape == l_rt_kept.shape:
                    row["self_agreement"] = float((l_xk.argmax(1) == top_rt).mean())
        rows.append(row)
    return rows if isinstance(fake_quant, (tuple, list)) else rows[0]


def _fmt(v, pct=True):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.1f}" if pct else f"{v:.4f}"
    return str(v)


def print_table(rows: List[Dict]) -> None:
    head = ("| model | forward | images | top-1 agreement | runtime self-agreement | feature cosine | "
            "our top-1 | runtime top-1 | published top-1 | float logit rel. err |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        err = r.get("logit_rel_err")
        print(f"| {r['model']} | {r['forward']} | {r['images']} | {_fmt(r.get('agreement'))} | "
              f"{_fmt(r.get('self_agreement'))} | {_fmt(r['feature_cosine'], False)} | {_fmt(r.get('ours_top1'))} | "
              f"{_fmt(r.get('runtime_top1'))} | {r['published']} | {'-' if err is None else f'{err:.1e}'} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", help="folder names (default: all)")
    ap.add_argument("--images", type=int, default=250)
    ap.add_argument("--forward", default="float,float-sum,integer",
                    help=f"comma-separated forwards among {', '.join(FORWARDS)}")
    ap.add_argument("--no-self-agreement", action="store_true")
    ap.add_argument("--out", help="append one JSON line per row to this file as models finish")
    args = ap.parse_args(argv)
    by_name = {e.name: e for e in ENTRIES}
    unknown = [m for m in args.models or () if m not in by_name]
    if unknown:
        ap.error(f"unknown models {unknown}; known: {sorted(by_name)}")
    entries = [by_name[m] for m in args.models] if args.models else ENTRIES
    modes = [m for m in args.forward.split(",") if m]
    if not modes or any(m not in FORWARDS for m in modes):
        ap.error(f"--forward: expected a comma-separated list of {', '.join(FORWARDS)}, got {args.forward!r}")
    rows = []
    out = open(args.out, "a") if args.out else None
    for e in entries:
        if not os.path.isfile(model_path(e)):
            print(f"skip {e.name}: {model_path(e)} is absent", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        new = compare(e, args.images, fake_quant=tuple(modes), self_agreement=not args.no_self_agreement)
        rows += new
        print(f"{e.name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if out:
            for r in new:
                out.write(json.dumps(r) + "\n")
            out.flush()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
