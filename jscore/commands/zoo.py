"""`jscore zoo`: every backbone name jscore knows, with what a user choosing one needs to know.

    jscore zoo [--models-dir DIR] [--json] [--all]

One row per backbone: source task, published top-1, parameter count, input size, feature size,
where the weights come from, and whether the files are found (published checkpoints). `--all`
adds jscore's own randomly initialised zoo and the transformers presets.

Top level: standard library only (the CLI imports every command to build its help).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", help="folder with one sub-folder per published checkpoint "
                                        "(default: $JSCORE_MODELS, then the checkpoints shipped with jscore)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--all", action="store_true", help="also list jscore's own zoo and the transformers presets")


def rows(models_dir=None, include_all: bool = False) -> list:
    """-> one dict per backbone (name, source, architecture, source_task, num_source_classes,
    published_top1, num_params, input_size, feature_dim, weights, licence, available)."""
    from jscore.backbones import backbone_info, list_backbones
    from jscore.backbones.pretrained import PRETRAINED, is_available, models_dirs

    models_dirs(models_dir)  # a --models-dir that does not exist is an error, not an empty zoo
    out = []
    for name in list_backbones():
        info = backbone_info(name)
        if info.source != "pretrained" and not include_all:
            continue
        entry = PRETRAINED.get(name)
        out.append({
            "name": name, "source": info.source, "architecture": info.family,
            "source_task": info.source_task, "num_source_classes": entry.num_source_classes if entry else None,
            "published_top1": info.published_top1, "num_params": info.num_params,
            "input_size": info.input_size, "feature_dim": info.feature_dim, "weights": info.weights,
            "licence": entry.licence if entry else None,
            "available": is_available(name, models_dir) if entry else True,
        })
    return out


def _fmt(value, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def format_table(items: list) -> str:
    cols = [("name", "name", ""), ("source task", "source_task", ""), ("top-1", "published_top1", ".1f"),
            ("params", "num_params", ","), ("input", "input_size", ""), ("D", "feature_dim", ""),
            ("found", "available", ""), ("weights", "weights", "")]
    table = [[h for h, _, _ in cols]]
    for r in items:
        table.append([("yes" if r[k] else "no") if k == "available" else _fmt(r[k], spec) for _, k, spec in cols])
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def run(args) -> int:
    import json

    items = rows(args.models_dir, args.all)
    print(json.dumps(items, indent=2) if args.json else format_table(items))
    return 0
