"""Group-aware (patient-level) splits: every group lands in exactly one split.

The DART 2023 paper's BreakHis split put images of one patient in both train and test, which
inflates test accuracy; splitting by a group column makes the right thing the easy thing.
"""

from __future__ import annotations

import csv
import os
import shutil
from typing import Dict, Optional, Sequence

import numpy as np


def group_split(groups: Sequence, labels: Optional[Sequence[int]] = None,
                fractions: Sequence[float] = (0.7, 0.15, 0.15), *, seed: int = 0) -> list:
    """Assign whole groups to splits -> a list of sorted int64 index arrays, one per fraction.

    Args:
      groups: `[N]` group ids (e.g. patient ids), any hashable values.
      labels: `[N]` ints, optional. When given, groups are stratified by their majority label,
        so each split gets about `fractions` of every class.
      fractions: target share of images per split (normalised to sum 1).
      seed: the order in which groups are dealt, from `numpy.random.default_rng(seed)`.

    Groups are shuffled, then dealt one at a time to the split furthest below its target
    image count (within the group's stratum). No group is ever divided.

    Example:
        >>> train, val, test = group_split(patient_ids, labels, (0.7, 0.15, 0.15))
    """
    groups = np.asarray([str(g) for g in groups])
    n = len(groups)
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or len(fr) < 1 or np.any(fr < 0) or fr.sum() <= 0:
        raise ValueError(f"fractions must be non-negative with a positive sum, got {fractions}")
    fr = fr / fr.sum()
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != n:
            raise ValueError(f"{n} groups but {len(labels)} labels")
    uniq, inverse = np.unique(groups, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(uniq))
    if labels is None:
        strata = np.zeros(len(uniq), np.int64)
    else:
        codes = np.unique(labels, return_inverse=True)[1]
        table = np.zeros((len(uniq), codes.max() + 1), np.int64)
        np.add.at(table, (inverse, codes), 1)
        strata = table.argmax(axis=1)  # each group's majority label
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(uniq), np.int64)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        members = members[rng.permutation(len(members))]
        counts = np.zeros(len(fr))
        total = sizes[members].sum()
        for g in members:
            k = int(np.argmax(fr * total - counts))  # the split furthest below its target
            assignment[g] = k
            counts[k] += sizes[g]
    per_image = assignment[inverse]
    return [np.flatnonzero(per_image == k).astype(np.int64) for k in range(len(fr))]


def split_manifest(csv_path: str, out_dir: str, *, group_column: str, label_column: str = "label",
                   image_column: str = "image", fractions: Sequence[float] = (0.7, 0.15, 0.15),
                   names: Sequence[str] = ("train", "val", "test"), seed: int = 0) -> Dict[str, str]:
    """Split one manifest CSV by `group_column` into `out_dir/<name>.csv` (all columns kept,
    relative image paths rewritten relative to `out_dir`; `classes.txt` copied when present).
    Returns name -> written path."""
    if len(names) != len(fractions):
        raise ValueError(f"{len(names)} split names but {len(fractions)} fractions")
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        rows = list(reader)
    for col in (group_column, label_column, image_column):
        if col not in columns:
            raise ValueError(f"{csv_path}: missing column {col!r} (columns: {columns})")
    src_dir = os.path.dirname(os.path.abspath(csv_path))
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    labels = [r[label_column] for r in rows]
    parts = group_split([r[group_column] for r in rows], np.unique(labels, return_inverse=True)[1],
                        fractions, seed=seed)
    written = {}
    for name, idx in zip(names, parts):
        path = os.path.join(out_dir, f"{name}.csv")
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for i in idx:
                row = dict(rows[i])
                image = row[image_column]
                if not os.path.isabs(image) and src_dir != out_dir:
                    row[image_column] = os.path.relpath(os.path.join(src_dir, image), out_dir)
                writer.writerow(row)
        written[name] = path
    classes = os.path.join(src_dir, "classes.txt")
    if os.path.isfile(classes) and src_dir != out_dir:
        shutil.copyfile(classes, os.path.join(out_dir, "classes.txt"))
    return written
