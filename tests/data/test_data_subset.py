"""Class-stratified split budgets (jscore.data.subset)."""

import numpy as np
import pytest

from jscore.data.npz import ArrayDataset
from jscore.data.subset import stratified_counts, stratified_subset


def _dataset(counts, seed=0):
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(seed).shuffle(labels)
    images = (np.arange(len(labels)) % 256).astype(np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)
    return ArrayDataset(images, labels, [f"c{i}" for i in range(len(counts))], {"path": "toy", "split": "train"})


def test_counts_by_hand():
    # 60/30/10 of 100 -> 10 places: exactly 6/3/1.
    assert stratified_counts(np.array([60, 30, 10]), 10).tolist() == [6, 3, 1]
    # 50/49/1 -> 4 places: shares 2.0/1.96/0.04; the rare class keeps one, the remainder goes to class 1.
    assert stratified_counts(np.array([50, 49, 1]), 4).tolist() == [2, 1, 1]
    # 7/7/0 -> 5: an absent class gets nothing; 3.5/3.5 round so the sum is 5.
    got = stratified_counts(np.array([7, 7, 0]), 5)
    assert got.sum() == 5 and got[2] == 0 and sorted(got[:2].tolist()) == [2, 3]
    assert stratified_counts(np.array([3, 2]), 10).tolist() == [3, 2]


@pytest.mark.parametrize("counts,budget", [([500, 300, 20, 180], 150), ([9, 1], 2), ([40] * 8, 17)])
def test_subset_keeps_class_shares_and_is_deterministic(counts, budget):
    ds = _dataset(counts)
    sub = stratified_subset(ds, budget, seed=3)
    assert len(sub) == budget
    got = np.bincount(sub.labels, minlength=len(counts))
    share = np.asarray(counts) * budget / sum(counts)
    assert np.all(np.abs(got - share) < 1.0 + 1e-9) and np.all(got >= 1)
    # Images and labels are those of the parent at the kept positions, in the parent's order.
    assert np.all(np.diff(sub.indices) > 0)
    for i in (0, len(sub) - 1):
        image, label = sub[i]
        assert label == ds.labels[sub.indices[i]] and np.array_equal(image, ds[int(sub.indices[i])][0])
    again = stratified_subset(ds, budget, seed=3)
    assert np.array_equal(again.indices, sub.indices)
    other = stratified_subset(ds, budget, seed=4)
    assert not np.array_equal(other.indices, sub.indices)
    d = sub.describe()
    assert d["num_examples"] == budget and d["subset"]["max_examples"] == budget and d["subset"]["of"] == sum(counts)
    assert d["subset"]["indices_sha256"] != other.describe()["subset"]["indices_sha256"]


def test_no_subset_when_the_split_fits():
    ds = _dataset([5, 5])
    assert stratified_subset(ds, 10) is ds


@pytest.mark.parametrize("budget,message", [(0, "positive integer"), (2.5, "positive integer"), (True, "positive integer"),
                                            (2, "cannot keep one image of each of the 3 classes")])
def test_bad_budgets(budget, message):
    with pytest.raises(ValueError, match=message):
        stratified_subset(_dataset([10, 10, 10]), budget)
