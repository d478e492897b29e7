"""TFDS image-classification datasets through `tfds.data_source` (random access, no TensorFlow
graph): any catalogue dataset with one `Image` and one `ClassLabel` feature, by name."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def _supervised_keys(info, name: str) -> Tuple[str, str]:
    """(image key, label key): the declared supervised keys, else the only Image/ClassLabel."""
    import tensorflow_datasets as tfds

    keys = info.supervised_keys
    if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        return keys
    features = info.features
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    if len(images) != 1 or len(labels) != 1:
        raise ValueError(f"TFDS dataset {name!r} is not single-image classification "
                         f"(image features {images}, class-label features {labels})")
    return images[0], labels[0]


class TfdsDataset:
    """One split of a TFDS dataset (the `ImageDataset` contract), read lazily by index."""

    def __init__(self, name: str, split: str, *, data_dir: Optional[str] = None, download: bool = False):
        import tensorflow_datasets as tfds

        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            raise ValueError(f"unknown TFDS dataset {name!r} (see the TFDS catalogue for names)") from None
        info = builder.info
        self.image_key, self.label_key = _supervised_keys(info, name)
        label_feature = info.features[self.label_key]
        if not isinstance(label_feature, tfds.features.ClassLabel):
            raise ValueError(f"TFDS dataset {name!r}: {self.label_key!r} is not a class label")
        self.class_names = list(label_feature.names)
        self.num_classes = len(self.class_names)
        known = list(info.splits.keys()) if info.splits else []
        if known and split.split("[")[0] not in known and "+" not in split:
            raise ValueError(f"no split {split!r} in TFDS dataset {name!r}: it has {sorted(known)}")
        try:
            self._source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
        except (KeyError, FileNotFoundError, AssertionError, NotImplementedError) as err:
            if known:
                raise ValueError(f"TFDS dataset {name!r}: cannot open split {split!r}: {err}") from None
            raise FileNotFoundError(f"TFDS dataset {name!r} is not prepared in the TFDS data folder "
                                    "(pass download=True where the network allows, or data_dir=)") from None
        except ValueError as err:  # malformed split strings
            raise ValueError(f"TFDS dataset {name!r}: cannot open split {split!r}: {err}") from None
        self.name, self.split, self.data_dir = name, split, data_dir
        self.version = str(info.version)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]:
        example = self._source[index]
        image = np.asarray(example[self.image_key], dtype=np.uint8)
        if image.ndim == 2:
            image = image[:, :, None]
        return image, int(example[self.label_key])

    def describe(self) -> dict:
        return {"kind": "tfds", "name": self.name, "version": self.version, "split": self.split,
                "num_examples": len(self), "num_classes": self.num_classes, "class_names": self.class_names}
