"""Fixtures that write small image datasets (PNG/JPEG files, CSVs, folders, npz) to tmp dirs."""

import numpy as np
import pytest
from imagefiles import write_image


@pytest.fixture
def image_tree(tmp_path):
    """root/<class>/<i>.png|jpg: 3 classes x 3 images of distinct sizes, plus the arrays."""
    rng = np.random.default_rng(0)
    root = tmp_path / "tree"
    truth = {}
    for c, name in enumerate(["benign", "malignant", "normal"]):
        for i in range(3):
            h, w = 20 + 2 * i, 24 + c
            grey = (c + i) % 2 == 0
            arr = rng.integers(0, 256, (h, w, 1) if grey else (h, w, 3), dtype=np.uint8)
            path = root / name / f"img{i}.png"
            write_image(str(path), arr)
            truth[str(path)] = (arr, c)
    return root, truth
