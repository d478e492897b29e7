"""The results table: one JSON line per run in `runs.jsonl`, a flat CSV summary, and the ground
truth (one row per dataset x model, the run chosen by validation) that the evaluate stage reads.

Standard library and NumPy only.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import warnings
from typing import Dict, Iterable, List, Optional

import numpy as np

RUNS = "runs.jsonl"
SUMMARY = "runs.csv"
GROUND_TRUTH = "ground_truth.csv"

# Column order of the CSV summary; other scalar fields follow alphabetically.
_SUMMARY_FIRST = [
    "run_id", "status", "model", "dataset", "seed", "mode", "learning_rate", "weight_decay",
    "epochs", "best_epoch", "val_loss", "val_balanced_accuracy", "val_accuracy",
    "test_balanced_accuracy", "test_accuracy", "wall_time_s", "images_per_s", "device",
]

SELECT_BY = ("val_balanced_accuracy", "val_loss", "val_accuracy")


def weights_fingerprint(variables) -> str:
    """The backbones stage's fingerprint of the starting weights (the same one feature caches
    use), so a record and a feature file of the same weights carry the same print."""
    from jscore.backbones.weights import fingerprint

    return fingerprint(variables)


def versions() -> Dict[str, str]:
    """Versions of the packages that decide a run's numbers."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    from jscore import __version__

    out["jscore"] = __version__
    return out


def _clean(value):
    # JSON has no NaN or infinity: write them as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def append_record(out_dir: str, record: dict) -> None:
    """Append one run to `runs.jsonl` (flushed and synced: a finished run survives a crash)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, RUNS), "a") as f:
        f.write(json.dumps(_clean(record), sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_records(out_dir: str) -> List[dict]:
    """Every run of `out_dir/runs.jsonl` in order; a torn last line (a crash mid-write) is ignored."""
    path = os.path.join(out_dir, RUNS)
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _write_csv(path: str, rows: List[dict], first: List[str]) -> None:
    keys = set()
    for r in rows:
        keys.update(k for k, v in r.items() if not isinstance(v, (dict, list)))
    columns = [k for k in first if k in keys] + sorted(keys - set(first))
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    os.replace(tmp, path)


def _better(a: dict, b: Optional[dict], select_by: str) -> bool:
    """Is run `a` better than run `b` by the validation criterion (ties: lower val loss, then
    earlier run)?"""
    if b is None:
        return True
    if select_by == "val_loss":
        return (a["val_loss"], ) < (b["val_loss"], )
    if a[select_by] != b[select_by]:
        return a[select_by] > b[select_by]
    return a["val_loss"] < b["val_loss"]


# What makes two runs of one (dataset, model) different recipes rather than points of one search
# (records written before `head_init` and `optimizer` existed started from a random head, with SGD).
_RECIPE_FIELDS = (("mode", None), ("head_init", "random"), ("optimizer", "sgd"), ("epochs", None), ("augment", None),
                  ("batch_size", None))


def ground_truth(records: Iterable[dict], select_by: str = "val_balanced_accuracy") -> List[dict]:
    """One row per (dataset, model): the finished run with the best validation score.

    Columns: dataset, model, balanced_accuracy and accuracy (on the test split, of the chosen
    run), n_test (test-split size: the evaluate stage's noise estimate) and classes, the chosen
    run's val scores and hyper-parameters, `<extra>_balanced_accuracy` /
    `<extra>_accuracy` for extra test sets, runs (finished), failed.
    """
    if select_by not in SELECT_BY:
        raise ValueError(f"select_by must be one of {SELECT_BY}, got {select_by!r}")
    best: Dict[tuple, dict] = {}
    counts: Dict[tuple, List[int]] = {}
    recipes: Dict[tuple, set] = {}
    for r in records:
        key = (r["dataset"], r["model"])
        recipes.setdefault(key, set()).add(tuple((f, str(r.get(f, default))) for f, default in _RECIPE_FIELDS))
        c = counts.setdefault(key, [0, 0])
        if r.get("status") != "done":
            c[1] += 1
            continue
        c[0] += 1
        if r.get(select_by) is None:
            continue
        if _better(r, best.get(key), select_by):
            best[key] = r
    mixed = sorted(k for k, v in recipes.items() if len(v) > 1)
    if mixed:
        warnings.warn(f"runs of {len(mixed)} (dataset, model) pair(s), e.g. {mixed[0]}, differ in their recipe "
                      f"({', '.join(f for f, _ in _RECIPE_FIELDS)}): the ground truth picks the best of them "
                      "by validation; keep one recipe per output folder to compare backbones fairly", stacklevel=2)
    rows = []
    for key in sorted(counts):
        r = best.get(key)
        if r is None:
            continue
        row = {
            "dataset": r["dataset"],
            "model": r["model"],
            "balanced_accuracy": r["test_balanced_accuracy"],
            "accuracy": r["test_accuracy"],
            "n_test": r.get("test_size"),
            "classes": r.get("num_classes"),
            "val_balanced_accuracy": r["val_balanced_accuracy"],
            "val_loss": r["val_loss"],
            "learning_rate": r["learning_rate"],
            "weight_decay": r["weight_decay"],
            "optimizer": r.get("optimizer", "sgd"),  # records before AdamW existed ran SGD
            "head_init": r.get("head_init", "random"),
            "best_epoch": r["best_epoch"],
            "run_id": r["run_id"],
            "selected_by": select_by,
            "runs": counts[key][0],
            "failed": counts[key][1],
        }
        for name in r.get("extra_tests", []):
            row[f"{name}_balanced_accuracy"] = r.get(f"{name}_balanced_accuracy")
            row[f"{name}_accuracy"] = r.get(f"{name}_accuracy")
        rows.append(row)
    return rows


def write_tables(out_dir: str, select_by: str = "val_balanced_accuracy") -> List[dict]:
    """Rewrite `runs.csv` and `ground_truth.csv` from `runs.jsonl`; returns the ground truth."""
    records = read_records(out_dir)
    _write_csv(os.path.join(out_dir, SUMMARY), records, _SUMMARY_FIRST)
    rows = ground_truth(records, select_by)
    _write_csv(
        os.path.join(out_dir, GROUND_TRUTH),
        rows,
        ["dataset", "model", "balanced_accuracy", "accuracy", "n_test", "classes", "val_balanced_accuracy", "val_loss",
         "learning_rate", "weight_decay", "best_epoch", "run_id", "selected_by", "runs", "failed"],
    )
    return rows


def read_ground_truth(path: str) -> List[dict]:
    """`ground_truth.csv` (or a directory holding one) -> rows with floats where numeric."""
    if os.path.isdir(path):
        path = os.path.join(path, GROUND_TRUTH)
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = {}
            for k, v in r.items():
                try:
                    row[k] = float(v) if k not in ("dataset", "model", "run_id", "selected_by") else v
                except ValueError:
                    row[k] = v
            rows.append(row)
    return rows
