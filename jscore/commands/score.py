"""`jscore score`: score a feature file (or the built-in demo zoo) with every score; `.npy`
feature files with `--labels` are memory-mapped and streamed (`--chunk-size`)."""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE.npz",
                   help="feature files with arrays `features` [N, D], `labels` [N], optional `source_probs` "
                        "or `source_logits` [N, Cs] (as `jscore extract` writes); or `features` and "
                        "`targets` [N] / [N, K] (regression or multi-label: LogME's regression form); "
                        "several files are scored as a zoo and ranked")
    p.add_argument("--demo", action="store_true", help="score a small simulated zoo (no download)")
    p.add_argument("--scores", default="all", help="comma-separated score names (default: all that apply)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="C; default: the files' stored `num_classes`, else labels are remapped to their "
                        "sorted unique values")
    p.add_argument("--seed", type=int, default=0, help="seed of N-LEEP's mixture initialisation")
    p.add_argument("--float64", action="store_true",
                   help="compute in float64 (for severely ill-conditioned features; CPU/GPU only)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="stream the samples this many rows at a time (memory independent of N; only the "
                        "streamable scores: hscore, reg_hscore, logme, gbc, transrate, nce, leep). FILE.npy "
                        "feature files are memory-mapped and always streamed (default 4096 rows)")
    p.add_argument("--labels", default=None, metavar="LABELS.npy",
                   help="the [N] labels of FILE.npy feature files (memory-mapped features [N, D])")


def load_npz(path: str) -> dict:
    import numpy as np

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"{path} is not a readable .npz file ({err})") from None
    keys = set(data.files)
    if "targets" in keys:
        if "features" not in keys:
            raise ValueError(f"{path} has `targets` but no `features` array (found: {sorted(keys)})")
        if "labels" in keys:
            raise ValueError(f"{path} has both `labels` and `targets`: keep one (labels for classes, "
                             "targets for regression or multi-label)")
        return {"features": data["features"], "targets": data["targets"]}
    if "labels" not in keys:
        raise ValueError(f"{path} has no `labels` array (or `targets`) (found: {sorted(keys)})")
    if not keys & {"features", "source_probs", "source_logits"}:
        raise ValueError(f"{path} needs a `features`, `source_probs` or `source_logits` array (found: {sorted(keys)})")
    out = {k: data[k] for k in ("features", "labels", "source_probs", "source_logits") if k in keys}
    if "num_classes" in keys:  # written by `jscore extract`: keeps classes absent from a split
        out["num_classes"] = int(data["num_classes"])
    return out


def model_name(path: str, taken) -> str:
    """The backbone named in the metadata `jscore extract` writes beside the file, else the file's
    stem; the stem too when two files name the same backbone."""
    stem = os.path.splitext(path)[0]
    try:
        with open(stem + ".json") as f:
            name = str(json.load(f)["backbone"])
    except (OSError, ValueError, KeyError, TypeError):
        name = None
    return name if name and name not in taken else os.path.basename(stem)


def format_table(results: dict, quality: dict | None = None) -> str:
    """Rows models, columns scores, each cell `value (rank)`; rank 1 = best (higher is better)."""
    names = []
    for r in results.values():
        names += [n for n in r if n not in names]
    ranks = {}
    for n in names:
        order = sorted((m for m in results if n in results[m]), key=lambda m: -results[m][n])
        for i, m in enumerate(order, 1):
            ranks[(m, n)] = i
    width = max(len(m) for m in results) + 2
    header = "model".ljust(width) + ("quality  " if quality else "") + "".join(n.rjust(16) for n in names)
    lines = [header, "-" * len(header)]
    for m, r in results.items():
        row = m.ljust(width) + (f"{quality[m]:<9.2f}" if quality else "")
        for n in names:
            cell = f"{r[n]:.4g} ({ranks[(m, n)]})" if n in r else "-"
            row += cell.rjust(16)
        lines.append(row)
    return "\n".join(lines)


def run(args) -> int:
    import jscore

    quality = None
    if args.demo:
        if args.files:
            raise ValueError("give either --demo or feature files, not both")
        from jscore.demo import demo_zoo

        models, labels, quality = demo_zoo()
    elif not args.files:
        raise ValueError("give one or more FILE.npz, or --demo")
    elif any(path.endswith(".npy") for path in args.files):
        return _run_memmap(args)
    else:
        loaded = [load_npz(path) for path in args.files]
        if any("targets" in d for d in loaded):
            return _run_targets(args, loaded)
        models, labels, stored_classes = {}, None, set()
        for path, data in zip(args.files, loaded):
            if "num_classes" in data:
                stored_classes.add(data.pop("num_classes"))
            if labels is not None and len(data["labels"]) != len(labels):
                raise ValueError(f"{path} has {len(data['labels'])} labels, the first file {len(labels)}: "
                                 "a zoo is scored on one dataset")
            labels = data.pop("labels") if labels is None else labels
            models[model_name(path, models)] = data
        if args.num_classes is None and len(stored_classes) == 1:
            args.num_classes = stored_classes.pop()
    if args.labels is not None:
        raise ValueError("--labels goes with FILE.npy feature files; .npz files hold their labels")
    stream = {} if args.chunk_size is None else {"chunk_size": args.chunk_size}
    if len(models) == 1:
        (name, inputs), = models.items()
        results = {name: jscore.score(inputs.get("features"), labels, source_probs=inputs.get("source_probs"),
                                      source_logits=inputs.get("source_logits"), scores=args.scores,
                                      num_classes=args.num_classes, seed=args.seed, float64=args.float64, **stream)}
    else:
        results = jscore.score_zoo(models, labels, scores=args.scores, num_classes=args.num_classes,
                                   seed=args.seed, float64=args.float64, **stream)
    return _print(args, results, quality)


def _run_memmap(args) -> int:
    """FILE.npy feature files ([N, D], memory-mapped) with --labels: streamed, one model per file."""
    import jscore

    if not all(path.endswith(".npy") for path in args.files):
        raise ValueError("give either .npy feature files (with --labels) or .npz files, not both")
    if args.labels is None:
        raise ValueError("FILE.npy holds features only: give their labels with --labels LABELS.npy")
    models = {}
    for path in args.files:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such file: {path}")
        models[model_name(path, models)] = {"features": path}
    results = jscore.score_zoo(models, args.labels, scores=args.scores, num_classes=args.num_classes,
                               seed=args.seed, float64=args.float64, chunk_size=args.chunk_size or 4096)
    return _print(args, results, None)


def _print(args, results, quality) -> int:
    if args.json:
        json.dump(results if len(results) > 1 else next(iter(results.values())), sys.stdout, indent=2)
        print()
        return 0
    if args.demo:
        print("Simulated zoo: 5 backbones, 600 samples, 4 classes; `quality` is the true class-signal strength.")
    print(format_table(results, quality))
    if args.demo:
        print("\nRank 1 = best. A good score ranks the backbones in the order of `quality`.")
    return 0


def _run_targets(args, loaded) -> int:
    """Feature files with regression / multi-label `targets`: LogME's regression form per model."""
    import jscore

    if not all("targets" in d for d in loaded):
        raise ValueError("either every file has `targets` or none: a zoo is scored on one task")
    n = {len(d["targets"]) for d in loaded}
    if len(n) > 1:
        raise ValueError(f"the files' targets differ in length ({sorted(n)}): a zoo is scored on one dataset")
    results = {}
    for path, data in zip(args.files, loaded):
        results[model_name(path, results)] = jscore.score(data["features"], targets=data["targets"],
                                                          scores=args.scores, float64=args.float64)
    if args.json:
        json.dump(results if len(results) > 1 else next(iter(results.values())), sys.stdout, indent=2)
        print()
        return 0
    print(format_table(results))
    return 0
