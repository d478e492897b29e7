"""Datasets (npz, CSV manifests, class folders, TFDS) and preprocessing for backbones.

    >>> from jscore.data import open_dataset, preprocess, iter_batches
    >>> ds = open_dataset("csv:brain_tumor_mri", "train")
    >>> x = preprocess([ds[0][0], ds[1][0]], backbone.preprocess)   # float32 [2, S, S, 3]
"""

from jscore.backbones.base import Preprocess
from jscore.data.base import ImageDataset
from jscore.data.decode import BadImageError, decode_image
from jscore.data.loader import Batch, iter_batches
from jscore.data.preprocess import normalize, preprocess, resize_crop, to_rgb
from jscore.data.spec import open_dataset, parse_spec

__all__ = [
    "ImageDataset", "Preprocess", "open_dataset", "parse_spec", "preprocess", "resize_crop", "normalize",
    "to_rgb", "iter_batches", "Batch", "decode_image", "BadImageError", "group_split", "split_manifest",
]


def __getattr__(name):
    if name in ("group_split", "split_manifest"):
        from jscore.data import splits

        return getattr(splits, name)
    raise AttributeError(f"module 'jscore.data' has no attribute {name!r}")
