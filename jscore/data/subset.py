"""A fixed, class-stratified subset of a dataset: the budget knob of a study on a small machine.

`stratified_subset(dataset, max_examples, seed)` keeps at most `max_examples` images, each class
keeping its share of the split (largest-remainder rounding, at least one image per class that has
any), chosen by NumPy's PCG64 with `seed` and returned in the dataset's own order. The subset's
`describe()` names the subset (its size, seed and a digest of the kept indices), so features
cached for it never collide with those of the full split.
"""

from __future__ import annotations

import hashlib
from typing import Sequence, Tuple

import numpy as np


class SubsetDataset:
    """The images `indices` of `dataset`, in that order (the `ImageDataset` contract).

    Attributes: `indices` int64 `[n]` (positions in the parent), `labels` int64 `[n]`,
    `num_classes` and `class_names` of the parent.
    """

    def __init__(self, dataset, indices: Sequence[int], labels: np.ndarray, note: dict):
        self.parent = dataset
        self.indices = np.asarray(indices, np.int64)
        self.labels = np.asarray(labels, np.int64)[self.indices]
        self.num_classes = dataset.num_classes
        self.class_names = list(dataset.class_names)
        self._note = dict(note)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]:
        image, label = self.parent[int(self.indices[index])]
        return image, int(label)

    def describe(self) -> dict:
        parent = self.parent.describe()
        return dict(parent, num_examples=len(self), subset=dict(self._note, of=parent.get("num_examples")))


def _labels_of(dataset) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return np.asarray(labels, np.int64).reshape(-1)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], np.int64)  # decodes every image


def stratified_counts(class_counts: np.ndarray, max_examples: int) -> np.ndarray:
    """How many images each class keeps: proportional to `class_counts` `[C]`, summing to
    `min(max_examples, total)`, largest remainders rounded up, every non-empty class >= 1.

    Raises ValueError when `max_examples` is smaller than the number of non-empty classes.
    """
    counts = np.asarray(class_counts, np.int64)
    total = int(counts.sum())
    present = int((counts > 0).sum())
    if max_examples >= total:
        return counts.copy()
    if max_examples < present:
        raise ValueError(f"max_examples={max_examples} cannot keep one image of each of the {present} classes")
    share = counts * (max_examples / total)
    keep = np.maximum(np.floor(share).astype(np.int64), (counts > 0).astype(np.int64))
    keep = np.minimum(keep, counts)
    # Hand the remaining places to the largest remainders; take back from the smallest when the
    # floor-at-one pushed the sum over.
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    while keep.sum() < max_examples:
        for c in order:
            if keep.sum() == max_examples:
                break
            if keep[c] < counts[c]:
                keep[c] += 1
    while keep.sum() > max_examples:
        c = int(np.argmax(np.where(keep > 1, keep - share, -np.inf)))
        keep[c] -= 1
    return keep


def stratified_subset(dataset, max_examples: int, seed: int = 0):
    """At most `max_examples` images of `dataset`, stratified by class -> `SubsetDataset` (or
    `dataset` itself when it is no larger). Deterministic for a given dataset and seed.

    Raises ValueError for `max_examples < 1` or fewer places than classes present.
    """
    if not isinstance(max_examples, (int, np.integer)) or isinstance(max_examples, bool) or max_examples < 1:
        raise ValueError(f"max_examples must be a positive integer, got {max_examples!r}")
    n = len(dataset)
    if n <= max_examples:
        return dataset
    labels = _labels_of(dataset)
    counts = np.bincount(labels, minlength=dataset.num_classes)
    keep = stratified_counts(counts, int(max_examples))
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(len(counts)):
        members = np.flatnonzero(labels == c)
        if keep[c]:
            chosen.append(rng.choice(members, size=int(keep[c]), replace=False))
    indices = np.sort(np.concatenate(chosen))
    digest = hashlib.sha256(indices.tobytes()).hexdigest()[:16]
    return SubsetDataset(dataset, indices, labels, {"max_examples": int(max_examples), "seed": int(seed),
                                                    "indices_sha256": digest})
