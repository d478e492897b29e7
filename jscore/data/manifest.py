"""CSV manifests (the DART 2023 `data/` layout): columns `image,label`, extra columns kept.

A manifest directory holds `train.csv`, `val.csv`, `test.csv` and optionally `classes.txt`
(line i names label i). Image paths are absolute, or relative to `root` when given, else to
the CSV's folder. Labels are class indices or class names.

The class list comes from, in order: the `classes` argument, `classes.txt` beside the CSV, or
the labels of all the CSVs in the folder. In the last case every split must show the same
classes, because nothing else says which index a class should get.
"""

from __future__ import annotations

import csv
import glob
import os
from typing import List, Optional, Sequence

from jscore.data.files import FileDataset, check_files_exist


def _read_rows(csv_path: str, image_column: str, label_column: str):
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"manifest not found: {csv_path!r}")
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        for col in (image_column, label_column):
            if col not in columns:
                raise ValueError(f"{csv_path}: missing column {col!r} (columns: {columns})")
        rows = list(reader)
    return columns, rows


def read_classes_file(path: str) -> List[str]:
    """`classes.txt`: one class name per line, line i names label i."""
    with open(path) as fh:
        names = [line.strip() for line in fh if line.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate class names")
    return names


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


def _implicit_classes(csv_paths: Sequence[str], image_column: str, label_column: str) -> List[str]:
    """Class names from the labels of sibling CSVs; every split must show the same set."""
    per_split = {}
    for p in csv_paths:
        _, rows = _read_rows(p, image_column, label_column)
        per_split[os.path.basename(p)] = {r[label_column].strip() for r in rows}
    union = set().union(*per_split.values())
    for name, seen in per_split.items():
        if seen != union:
            raise ValueError(
                f"classes differ between splits: {name} lacks {sorted(union - seen)}; "
                "write a classes.txt (line i names label i) or pass classes= to fix the class list")
    if union and all(_is_int(v) for v in union):
        return [str(i) for i in range(max(int(v) for v in union) + 1)]
    return sorted(union)


def read_manifest(csv_path: str, *, root: Optional[str] = None, classes: Optional[Sequence[str]] = None,
                  image_column: str = "image", label_column: str = "label", split: Optional[str] = None,
                  check_files: bool = True) -> FileDataset:
    """One CSV manifest -> `FileDataset` (order = row order).

    Raises `ValueError` for a missing column, an unknown label or splits whose classes differ,
    and `FileNotFoundError` for missing image files, before anything is decoded.
    """
    csv_path = os.path.abspath(csv_path)
    folder = os.path.dirname(csv_path)
    columns, rows = _read_rows(csv_path, image_column, label_column)
    if classes is None:
        classes_txt = os.path.join(folder, "classes.txt")
        if os.path.isfile(classes_txt):
            classes = read_classes_file(classes_txt)
        else:
            siblings = sorted(glob.glob(os.path.join(folder, "*.csv")))
            classes = _implicit_classes(siblings or [csv_path], image_column, label_column)
    classes = [str(c) for c in classes]
    index = {name: i for i, name in enumerate(classes)}
    base = os.path.abspath(root) if root else folder
    paths, labels = [], []
    for row_no, row in enumerate(rows):
        value = row[label_column].strip()
        if value in index:  # a class name (also covers names that look like integers)
            label = index[value]
        elif _is_int(value):
            label = int(value)
            if not 0 <= label < len(classes):
                raise ValueError(f"{csv_path}: label {label} (row {row_no + 2}) is outside the "
                                 f"{len(classes)} classes {classes}")
        else:
            raise ValueError(f"{csv_path}: label {value!r} (row {row_no + 2}) is not in the class list {classes}")
        image = row[image_column].strip()
        paths.append(image if os.path.isabs(image) else os.path.join(base, image))
        labels.append(label)
    if check_files:
        check_files_exist(paths, csv_path)
    extra = {c: [r[c] for r in rows] for c in columns if c not in (image_column, label_column)}
    desc = {"kind": "csv", "path": csv_path, "split": split or os.path.splitext(os.path.basename(csv_path))[0]}
    return FileDataset(paths, labels, classes, desc, extra)


def open_manifest(path: str, split: str, **kw) -> FileDataset:
    """`path` is a CSV file, or a folder holding `<split>.csv`."""
    if os.path.isdir(path):
        csv_path = os.path.join(path, f"{split}.csv")
        if not os.path.isfile(csv_path):
            have = sorted(os.path.splitext(f)[0] for f in os.listdir(path) if f.endswith(".csv"))
            raise ValueError(f"no split {split!r} in {path}: it has {have}")
        return read_manifest(csv_path, split=split, **kw)
    return read_manifest(path, split=split, **kw)
