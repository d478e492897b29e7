"""`open_dataset(spec, split)`: one entry point for every reader.

SPEC strings:
  npz:PATH            MedMNIST-style arrays; the split picks `<split>_images`/`<split>_labels`.
  csv:DIR             a manifest folder: DIR/<split>.csv (+ DIR/classes.txt when present).
  csv:FILE.csv        one manifest; the split is only recorded.
  folder:ROOT         ROOT/<class>/<image>, or ROOT/<split>/<class>/<image>.
  tfds:NAME           a TFDS dataset by name (`tfds.data_source`), e.g. tfds:colorectal_histology.
  PATH                a bare path: `.npz` file -> npz, `.csv` file -> csv, a folder with
                      `<split>.csv` or `train.csv` -> csv, any other folder -> folder.
"""

from __future__ import annotations

import os

from jscore.data.base import ImageDataset

KINDS = ("npz", "csv", "folder", "tfds")


def parse_spec(spec: str):
    """-> (kind, target). Raises `ValueError` for an unknown kind or an unrecognisable path."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"dataset spec must be a non-empty string, got {spec!r}")
    kind, sep, target = spec.partition(":")
    if sep and kind in KINDS:
        if not target:
            raise ValueError(f"dataset spec {spec!r} names no path or dataset after '{kind}:'")
        return kind, target
    if sep and len(kind) > 1 and not os.path.exists(spec):  # 'C:\\...' stays a path
        raise ValueError(f"unknown dataset kind {kind!r} in {spec!r}; use one of {', '.join(k + ':' for k in KINDS)}")
    path = spec
    if os.path.isfile(path):
        if path.endswith(".npz"):
            return "npz", path
        if path.endswith(".csv"):
            return "csv", path
        raise ValueError(f"cannot tell the dataset kind of file {path!r}; prefix it with npz: or csv:")
    if os.path.isdir(path):
        if any(f.endswith(".csv") for f in os.listdir(path)):
            return "csv", path
        return "folder", path
    raise FileNotFoundError(f"dataset not found: {spec!r} (a path, or npz:/csv:/folder:/tfds: spec)")


def open_dataset(spec: str, split: str = "train", **kw) -> ImageDataset:
    """Open one split of a dataset -> an `ImageDataset` (`len`, `ds[i] -> (uint8 [H, W, C], int)`,
    `num_classes`, `class_names`, `describe()`).

    Keyword arguments go to the reader: `classes=` (class names, all kinds but tfds), `root=`
    (csv: base folder of relative image paths), `image_column=`/`label_column=` (csv),
    `data_dir=`/`download=` (tfds). Every structural problem (missing file, column or split,
    unknown label or class, unknown TFDS name) raises here, before any image is decoded.

    Example:
        >>> ds = open_dataset("npz:pneumoniamnist.npz", "val")
        >>> image, label = ds[0]          # uint8 [28, 28, 1], int
    """
    kind, target = parse_spec(spec)
    if kind == "npz":
        from jscore.data.npz import open_npz

        return open_npz(target, split, **kw)
    if kind == "csv":
        from jscore.data.manifest import open_manifest

        return open_manifest(target, split, **kw)
    if kind == "folder":
        from jscore.data.folder import open_folder

        return open_folder(target, split, **kw)
    from jscore.data.tfds_source import TfdsDataset

    return TfdsDataset(target, split, **kw)
