"""Fixtures for the fine-tuning tests; the helpers live in ft_helpers.py."""

import pytest

from ft_helpers import synthetic_images, tiny_backbone


@pytest.fixture(scope="session")
def tiny():
    return tiny_backbone()


@pytest.fixture(scope="session")
def splits():
    from jscore.finetune.loop import Split

    tr = synthetic_images(192, seed=1)
    va = synthetic_images(60, seed=2)
    te = synthetic_images(60, seed=3)
    return Split(*tr), Split(*va), Split(*te)
