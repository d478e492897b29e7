"""Readers: npz, CSV manifests, class folders, TFDS (mocked); spec parsing; bad input."""

import csv
import os

import numpy as np
import pytest

from jscore.data import BadImageError, decode_image, open_dataset, parse_spec

from imagefiles import write_image  # tests/data/imagefiles.py


def _write_csv(path, rows, header=("image", "label")):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


# ---------- npz ----------

def _npz(tmp_path, grey=True):
    rng = np.random.default_rng(0)
    shape = (5, 6, 7) if grey else (5, 6, 7, 3)
    arrays = {}
    for split, n in (("train", 5), ("val", 3), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n,) + shape[1:], dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 3, (n, 1)).astype(np.uint8)
    arrays["test_labels"][0, 0] = 4  # the top class only shows in test: num_classes must still be 5
    path = tmp_path / "toy.npz"
    np.savez(path, **arrays)
    return str(path), arrays


@pytest.mark.parametrize("grey", [True, False])
def test_npz_reader_order_labels_and_channels(tmp_path, grey):
    path, arrays = _npz(tmp_path, grey)
    ds = open_dataset(f"npz:{path}", "val")
    assert len(ds) == 3 and ds.num_classes == 5
    for i in range(3):
        img, label = ds[i]
        expect = arrays["val_images"][i]
        np.testing.assert_array_equal(img, expect[..., None] if grey else expect)
        assert label == int(arrays["val_labels"][i, 0])
    assert ds.describe()["split"] == "val"
    assert parse_spec(path) == ("npz", path)  # bare path: kind inferred


def test_npz_errors(tmp_path):
    path, _ = _npz(tmp_path)
    with pytest.raises(ValueError, match="no split 'dev'.*test.*train.*val"):
        open_dataset(f"npz:{path}", "dev")
    bad = tmp_path / "multi.npz"
    np.savez(bad, train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="multi-label"):
        open_dataset(f"npz:{bad}", "train")
    with pytest.raises(FileNotFoundError):
        open_dataset(f"npz:{tmp_path}/missing.npz", "train")


# ---------- CSV manifests ----------

def _manifest(tmp_path, classes_txt=True, names=False):
    root = tmp_path / "ds"
    rng = np.random.default_rng(1)
    truth = {}
    for split, n in (("train", 6), ("val", 3)):
        rows = []
        for i in range(n):
            label = i % 3
            arr = rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8)
            rel = f"images/c{label}/{split}_{i}.png"
            write_image(str(root / rel), arr)
            rows.append((rel, ["a", "b", "c"][label] if names else label, f"patient{i // 2}"))
            truth[(split, i)] = (arr, label)
        _write_csv(root / f"{split}.csv", rows, header=("image", "label", "patient"))
    if classes_txt:
        (root / "classes.txt").write_text("a\nb\nc\n")
    return root, truth


@pytest.mark.parametrize("classes_txt,names", [(True, False), (False, False), (False, True), (True, True)])
def test_csv_manifest_reads_rows_in_order(tmp_path, classes_txt, names):
    root, truth = _manifest(tmp_path, classes_txt, names)
    ds = open_dataset(f"csv:{root}", "val")
    assert len(ds) == 3 and ds.num_classes == 3
    if classes_txt or names:
        assert ds.class_names == ["a", "b", "c"]
    for i in range(3):
        img, label = ds[i]
        np.testing.assert_array_equal(img, truth[("val", i)][0])
        assert label == truth[("val", i)][1]
    assert ds.extra["patient"] == ["patient0", "patient0", "patient1"]  # extra columns kept
    assert parse_spec(str(root)) == ("csv", str(root))


def test_csv_single_file_absolute_paths_and_root(tmp_path):
    root, truth = _manifest(tmp_path)
    # Absolute paths in a CSV elsewhere, with an explicit class list.
    rows = [(str(root / "images/c1/train_1.png"), 1), (str(root / "images/c0/train_0.png"), 0)]
    other = tmp_path / "elsewhere.csv"
    _write_csv(other, rows)
    ds = open_dataset(f"csv:{other}", "test", classes=["a", "b", "c"])
    np.testing.assert_array_equal(ds[0][0], truth[("train", 1)][0])
    assert ds.labels.tolist() == [1, 0] and ds.num_classes == 3
    # Relative to a given root.
    rel = tmp_path / "rel.csv"
    _write_csv(rel, [("images/c2/train_2.png", 2)])
    ds = open_dataset(str(rel), "x", root=str(root), classes=["a", "b", "c"])
    np.testing.assert_array_equal(ds[0][0], truth[("train", 2)][0])


def test_csv_errors_are_clear(tmp_path):
    root, _ = _manifest(tmp_path)
    with pytest.raises(ValueError, match="no split 'test'"):
        open_dataset(f"csv:{root}", "test")
    bad = tmp_path / "nolabel.csv"
    _write_csv(bad, [("x.png",)], header=("image",))
    with pytest.raises(ValueError, match="missing column 'label'"):
        open_dataset(f"csv:{bad}", "train")
    out_of_range = tmp_path / "range" / "train.csv"
    os.makedirs(out_of_range.parent)
    _write_csv(out_of_range, [(str(root / "images/c0/train_0.png"), 7)])
    (out_of_range.parent / "classes.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="label 7.*outside the 2 classes"):
        open_dataset(str(out_of_range.parent), "train")
    unknown = tmp_path / "unknown" / "train.csv"
    os.makedirs(unknown.parent)
    _write_csv(unknown, [(str(root / "images/c0/train_0.png"), "zebra")])
    (unknown.parent / "classes.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="'zebra'.*not in the class list"):
        open_dataset(f"csv:{unknown.parent}", "train")
    missing = tmp_path / "missing" / "train.csv"
    os.makedirs(missing.parent)
    _write_csv(missing, [("nothere.png", 0)])
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        open_dataset(f"csv:{missing.parent}", "train", classes=["a"])


def test_csv_classes_differing_between_splits(tmp_path):
    root = tmp_path / "d"
    os.makedirs(root)
    img = root / "x.png"
    write_image(str(img), np.zeros((4, 4, 3), np.uint8))
    _write_csv(root / "train.csv", [("x.png", "cat"), ("x.png", "dog")])
    _write_csv(root / "val.csv", [("x.png", "cat"), ("x.png", "cow")])
    with pytest.raises(ValueError, match="classes differ between splits"):
        open_dataset(f"csv:{root}", "train")


# ---------- folders ----------

def test_folder_tree_sorted_classes(image_tree):
    root, truth = image_tree
    ds = open_dataset(f"folder:{root}", "all")
    assert ds.class_names == ["benign", "malignant", "normal"]
    assert len(ds) == 9
    assert ds.paths == sorted(ds.paths)  # class then file order
    for i in range(len(ds)):
        img, label = ds[i]
        arr, c = truth[ds.paths[i]]
        np.testing.assert_array_equal(img, arr if arr.ndim == 3 else arr[..., None])
        assert label == c
    with pytest.raises(ValueError, match="only split is 'all'"):
        open_dataset(f"folder:{root}", "train")


def test_folder_with_split_subtrees(tmp_path):
    for split, classes in (("train", ["a", "b"]), ("val", ["a", "b"])):
        for c in classes:
            write_image(str(tmp_path / "s" / split / c / "0.png"), np.zeros((4, 4, 3), np.uint8))
    ds = open_dataset(f"folder:{tmp_path / 's'}", "val")
    assert len(ds) == 2 and ds.class_names == ["a", "b"]
    write_image(str(tmp_path / "s" / "val" / "c" / "0.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="classes differ between splits"):
        open_dataset(f"folder:{tmp_path / 's'}", "train")


# ---------- decoding ----------

def test_jpeg_decodes_close_and_corrupt_file_is_named(tmp_path):
    arr = np.full((16, 16, 3), 120, np.uint8)
    write_image(str(tmp_path / "a.jpg"), arr, fmt="JPEG")
    got = decode_image(str(tmp_path / "a.jpg"))
    assert got.shape == (16, 16, 3) and np.abs(got.astype(int) - 120).max() <= 2
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(BadImageError, match="broken.jpg"):
        decode_image(str(bad))
    truncated = tmp_path / "trunc.png"
    write_image(str(truncated), np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(ValueError, match="trunc.png"):
        decode_image(str(truncated))


# ---------- spec strings ----------

def test_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset kind 'zip'"):
        parse_spec("zip:foo")
    with pytest.raises(FileNotFoundError, match="dataset not found"):
        parse_spec(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="names no path"):
        parse_spec("npz:")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="cannot tell"):
        parse_spec(str(tmp_path / "f.txt"))
    assert parse_spec("tfds:malaria") == ("tfds", "malaria")


# ---------- TFDS (mocked) ----------

def test_tfds_data_source_mocked():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        ds = open_dataset("tfds:colorectal_histology", "train")
        assert len(ds) == 6 and ds.num_classes == 8
        assert ds.class_names[0] == "tumor"
        img, label = ds[3]
        assert img.dtype == np.uint8 and img.shape == (150, 150, 3)
        assert 0 <= label < 8
        # Deterministic order: the same index gives the same example.
        np.testing.assert_array_equal(ds[3][0], img)
        assert ds.describe()["name"] == "colorectal_histology"


def test_tfds_unknown_name():
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError, match="unknown TFDS dataset 'no_such_dataset_xyz'"):
        open_dataset("tfds:no_such_dataset_xyz", "train")


def test_tfds_not_prepared_is_a_clear_error(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(FileNotFoundError, match="'malaria' is not prepared"):
        open_dataset("tfds:malaria", "train", data_dir=str(tmp_path))
