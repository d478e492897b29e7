"""Opt-in: read every real dataset beside the checkout and check counts against its README.

Quick by design: counts come from the manifests and arrays, and only a few images decode.
"""

import os

import numpy as np
import pytest

from jscore.data import open_dataset

pytestmark = pytest.mark.shared_data

# name -> (classes, train, val, test, image side, channels) from the datasets' README
EXPECTED = {
    "pneumoniamnist.npz": (2, 4708, 524, 624, 28, 1),
    "breastmnist.npz": (2, 546, 78, 156, 28, 1),
    "retinamnist.npz": (5, 1080, 120, 400, 28, 3),
    "brain_tumor_mri": (4, 4676, 825, 1092, 224, None),
    "isic_skin": (8, 1429, 307, 307, 180, None),
    "lc25000_lung": (3, 2100, 450, 450, 224, None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_and_a_few_images(shared_data, name):
    classes, *counts, side, channels = EXPECTED[name]
    path = os.path.join(shared_data, name)
    if not os.path.exists(path):
        pytest.skip(f"{name} is not in the shared data")
    for split, n in zip(("train", "val", "test"), counts):
        ds = open_dataset(path, split)  # bare path: the kind is inferred
        assert len(ds) == n
        assert ds.num_classes == classes
        labels = np.asarray(ds.labels)
        assert labels.min() >= 0 and labels.max() < classes
        if split == "train":
            assert len(np.unique(labels)) == classes  # every class present in training
        for i in (0, n // 2, n - 1):
            img, label = ds[i]
            assert img.dtype == np.uint8 and img.ndim == 3
            assert min(img.shape[:2]) >= min(side, 28)
            if channels is not None:
                assert img.shape[2] == channels
            assert label == int(labels[i])


def test_folder_reader_on_manifest_images(shared_data):
    """The manifest datasets' images/ folders are also plain class-per-folder trees."""
    path = os.path.join(shared_data, "lc25000_lung")
    if not os.path.isdir(path):
        pytest.skip("lc25000_lung is not in the shared data")
    ds = open_dataset(f"folder:{path}/images", "all")
    with open(os.path.join(path, "classes.txt")) as fh:
        names = [line.strip() for line in fh if line.strip()]
    assert ds.class_names == sorted(names)
    assert len(ds) == 2100 + 450 + 450
