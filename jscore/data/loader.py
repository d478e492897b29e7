"""Threaded batch loading: decode and resize/crop in a thread pool, batches in order.

PIL releases the GIL while decoding and resizing, so threads keep the accelerator fed without
the cost of processes. Batches come out in dataset order whatever order the threads finish in.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
from typing import Iterator, NamedTuple, Optional

import numpy as np

from jscore.backbones.base import Preprocess
from jscore.data.decode import BadImageError
from jscore.data.preprocess import resize_crop


class Batch(NamedTuple):
    """images uint8 `[B, S, S, 3]` (resized, cropped; not normalised), labels int64 `[B]`,
    indices int64 `[B]` (positions in the dataset), ok bool `[B]` (False: a skipped bad image,
    its pixels are zeros), bad list of (index, message) for the skipped ones."""

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    ok: np.ndarray
    bad: list


def default_workers() -> int:
    return max(1, min(16, (os.cpu_count() or 1)))


def _load_one(dataset, index: int, preset: Preprocess, skip_bad: bool):
    try:
        image, label = dataset[index]
        return resize_crop(image, preset), int(label), None
    except BadImageError as err:
        if not skip_bad:
            raise
        return None, None, str(err)


def iter_batches(dataset, preset: Preprocess, *, batch_size: int, start: int = 0, stop: Optional[int] = None,
                 num_workers: Optional[int] = None, prefetch: int = 2, skip_bad: bool = False,
                 labels: Optional[np.ndarray] = None) -> Iterator[Batch]:
    """Yield `Batch`es covering `dataset[start:stop]` in order (the last one may be short).

    `prefetch` batches are decoded ahead while the caller computes. With `skip_bad`, an image
    that fails to decode is marked `ok=False` (its label is taken from `labels` when given,
    else -1) instead of raising `BadImageError` (a `ValueError` naming the file).
    """
    stop = len(dataset) if stop is None else min(stop, len(dataset))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    s = preset.image_size
    starts = list(range(start, stop, batch_size))
    with cf.ThreadPoolExecutor(num_workers or default_workers()) as pool:
        pending = collections.deque()

        def submit(b0):
            idx = range(b0, min(b0 + batch_size, stop))
            pending.append((idx, [pool.submit(_load_one, dataset, i, preset, skip_bad) for i in idx]))

        for b0 in starts[: prefetch + 1]:
            submit(b0)
        next_start = prefetch + 1
        while pending:
            idx, futures = pending.popleft()
            images = np.zeros((len(idx), s, s, 3), np.uint8)
            labs = np.full(len(idx), -1, np.int64)
            ok = np.ones(len(idx), bool)
            bad = []
            for j, fut in enumerate(futures):
                image, label, error = fut.result()
                if error is None:
                    images[j], labs[j] = image, label
                else:
                    ok[j] = False
                    bad.append((idx[j], error))
                    if labels is not None:
                        labs[j] = labels[idx[j]]
            if next_start < len(starts):
                submit(starts[next_start])
                next_start += 1
            yield Batch(images, labs, np.arange(idx.start, idx.stop, dtype=np.int64), ok, bad)
