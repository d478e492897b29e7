"""Writing small image files for the data tests."""

import os

import numpy as np


def write_image(path, array: np.ndarray, fmt=None) -> None:
    """Save uint8 `[H, W]`, `[H, W, 1]` or `[H, W, 3]` to `path` (format from the suffix or `fmt`)."""
    from PIL import Image

    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    arr = array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array
    Image.fromarray(arr).save(str(path), format=fmt)
