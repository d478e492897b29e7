"""Image file decoding with errors that name the file."""

from __future__ import annotations

import numpy as np


class BadImageError(ValueError):
    """An image file that cannot be read or decoded; `path` names it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot decode image {path!r}: {reason}")
        self.path = path


def decode_image(path: str) -> np.ndarray:
    """Read an image file -> uint8 `[H, W, 1]` (grey) or `[H, W, 3]` (anything else).

    16-bit greys are scaled to 8 bits; palettes, CMYK and alpha become RGB.
    Raises `BadImageError` (a `ValueError`) naming the file when it is missing or corrupt.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()  # force the full decode here, so truncated files fail now
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                hi = arr.max() if arr.size and arr.max() > 0 else 1.0
                return (arr / hi * 255.0).round().astype(np.uint8)[:, :, None]
            if img.mode == "L":
                return np.asarray(img, dtype=np.uint8)[:, :, None]
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BadImageError(path, f"{type(err).__name__}: {err}") from None
