"""`ImageDataset` -> a host `Split`: every image resized once to a square uint8 `[R, R, 3]`.

Resizing uses the data stage's `resize_crop` (short side to R, centre crop R x R, grey to RGB),
in a thread pool since PIL releases the GIL. The training augmentation and the evaluation crop
then run on the device from these squares.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from jscore.backbones.base import Preprocess
from jscore.finetune.loop import Split


def load_split(dataset, size: int, *, workers: int = 8, progress: bool = False, desc: str = "") -> Split:
    """All of `dataset` -> `Split(inputs uint8 [N, size, size, 3], labels int32 [N])`."""
    from jscore.data.preprocess import resize_crop

    n = len(dataset)
    if n == 0:
        raise ValueError(f"the {desc or 'dataset'} split is empty")
    preset = Preprocess(image_size=size, resize_size=size)
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty((n,), np.int32)

    def one(i):
        image, label = dataset[i]
        images[i] = resize_crop(np.asarray(image), preset)
        labels[i] = int(label)

    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=f"load {desc}", leave=False)
        except ImportError:
            pass
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(one, range(n)):
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return Split(images, labels)
