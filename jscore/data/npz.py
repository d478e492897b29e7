"""MedMNIST-style `.npz`: `<split>_images` uint8 `[N, H, W]` or `[N, H, W, 3]`,
`<split>_labels` int `[N]` or `[N, 1]`."""

from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import numpy as np

from jscore.data.files import check_labels


class ArrayDataset:
    """In-memory uint8 images with integer labels (the `ImageDataset` contract)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], description: dict):
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise ValueError(f"{description.get('path', 'arrays')}: images must be uint8, got {images.dtype}")
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"images must be [N, H, W], [N, H, W, 1] or [N, H, W, 3]; got {images.shape}")
        self.images = images
        self.labels = np.asarray(labels).astype(np.int64).reshape(-1)
        if len(self.labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(self.labels)} labels")
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self._description = dict(description)
        check_labels(self.labels, self.num_classes, where=description.get("path", "arrays"))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])

    def describe(self) -> dict:
        return dict(self._description, num_examples=len(self), num_classes=self.num_classes,
                    class_names=self.class_names)


def _labels_1d(arr: np.ndarray, key: str, path: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{path}: {key} has shape {arr.shape}; only single-label classification "
                         "([N] or [N, 1]) is supported (multi-label sets such as ChestMNIST are not)")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{path}: {key} must hold integers, got {arr.dtype}")
    return arr


def open_npz(path: str, split: str, *, classes: Optional[Sequence[str]] = None) -> ArrayDataset:
    """Read one split of a MedMNIST-style `.npz`.

    The class count is the largest label over all splits plus one (the files name no classes),
    unless `classes` gives the names.
    """
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"npz file not found: {path!r}")
    with np.load(path) as z:
        keys = set(z.files)
        splits = sorted(k[: -len("_images")] for k in keys if k.endswith("_images"))
        if f"{split}_images" not in keys:
            raise ValueError(f"no split {split!r} in {path}: it has {splits}")
        if f"{split}_labels" not in keys:
            raise ValueError(f"{path}: missing array {split}_labels")
        labels = _labels_1d(z[f"{split}_labels"], f"{split}_labels", path)
        images = z[f"{split}_images"]
        if classes is None:
            top = max(int(_labels_1d(z[f"{s}_labels"], f"{s}_labels", path).astype(np.int64).max(initial=-1))
                      for s in splits if f"{s}_labels" in keys)
            classes = [str(i) for i in range(top + 1)]
    desc = {"kind": "npz", "path": path, "split": split}
    return ArrayDataset(images, labels, [str(c) for c in classes], desc)
