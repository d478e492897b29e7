"""The dataset contract shared by feature extraction and fine-tuning."""

from __future__ import annotations

from typing import Protocol, Sequence, Tuple

import numpy as np


class ImageDataset(Protocol):
    """A finite, deterministically ordered labelled image collection.

    `dataset[i]` returns `(image, label)`: image uint8 `[H, W, C]` (C = 1 or 3), label an int in
    `[0, num_classes)`. `class_names[label]` names the class. `describe()` returns a JSON-able
    dict that identifies the data (used in cache keys and records).
    """

    num_classes: int
    class_names: Sequence[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]: ...

    def describe(self) -> dict: ...
