"""Group-aware splits: no group crosses splits; sizes and class shares near the targets."""

import csv

import numpy as np
import pytest

from jscore.data import group_split, split_manifest


def test_groups_never_cross_and_cover_everything():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), rng.integers(1, 8, 60))
    labels = (groups % 3).astype(int)  # one label per patient
    parts = group_split(groups, labels, (0.6, 0.2, 0.2), seed=3)
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(len(groups)))  # a partition
    owner = {}
    for k, idx in enumerate(parts):
        for g in np.unique(groups[idx]):
            assert owner.setdefault(g, k) == k  # each patient in one split only
    n = len(groups)
    for k, frac in enumerate((0.6, 0.2, 0.2)):
        assert abs(len(parts[k]) / n - frac) < 0.08
        for c in range(3):  # stratified: every class close to its share in every split
            share = np.mean(labels[parts[k]] == c)
            assert abs(share - np.mean(labels == c)) < 0.15


def test_deterministic_and_seed_dependent():
    groups = np.arange(100) // 2
    a = group_split(groups, None, (0.5, 0.5), seed=1)
    b = group_split(groups, None, (0.5, 0.5), seed=1)
    c = group_split(groups, None, (0.5, 0.5), seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_bad_fractions():
    with pytest.raises(ValueError, match="fractions"):
        group_split([1, 2], None, (-1, 2))


def test_split_manifest_writes_csvs(tmp_path):
    src = tmp_path / "all.csv"
    with open(src, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "label", "patient"])
        for i in range(40):
            w.writerow([f"img/{i}.png", i % 2, f"p{i // 4}"])
    (tmp_path / "classes.txt").write_text("neg\npos\n")
    out = split_manifest(str(src), str(tmp_path / "splits"), group_column="patient", seed=0)
    seen = {}
    total = 0
    for name, path in out.items():
        with open(path) as fh:
            rows = list(csv.DictReader(fh))
        total += len(rows)
        for r in rows:
            assert seen.setdefault(r["patient"], name) == name
            assert r["image"].startswith("../img/")  # relative paths still point at the files
    assert total == 40
    assert (tmp_path / "splits" / "classes.txt").read_text() == "neg\npos\n"
    with pytest.raises(ValueError, match="missing column 'site'"):
        split_manifest(str(src), str(tmp_path / "x"), group_column="site")
