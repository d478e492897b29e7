"""`FileDataset`: labelled image files on disk, decoded on access."""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from jscore.data.decode import decode_image


class FileDataset:
    """Image files with integer labels, in a fixed order (the `ImageDataset` contract).

    Attributes:
      paths: absolute file paths, `[N]`.
      labels: int64 `[N]` in `[0, num_classes)`.
      class_names: `num_classes` names; `class_names[label]` names the class.
      extra: any other manifest columns, name -> `[N]` strings (e.g. a patient id).
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], class_names: Sequence[str],
                 description: dict, extra: Optional[Dict[str, List[str]]] = None):
        self.paths = [os.path.abspath(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.extra = dict(extra or {})
        self._description = dict(description)
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        check_labels(self.labels, self.num_classes, where=description.get("path", "dataset"))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]:
        return decode_image(self.paths[index]), int(self.labels[index])

    def describe(self) -> dict:
        return dict(self._description, num_examples=len(self), num_classes=self.num_classes,
                    class_names=self.class_names)


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    """Raise a `ValueError` naming the first label outside `[0, num_classes)`."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{where}: label {int(labels[i])} at row {i} is outside the "
                         f"{num_classes} classes ({bad.size} such rows)")


def check_files_exist(paths: Sequence[str], where: str) -> None:
    """Raise `FileNotFoundError` listing the first missing files (checked before heavy work)."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(repr(p) for p in missing[:3])
        raise FileNotFoundError(f"{where}: {len(missing)} image file(s) not found, e.g. {shown}")
