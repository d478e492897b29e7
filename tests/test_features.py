"""Extraction: stored features equal a direct forward pass; the cache is reused byte for byte;
an interrupted run resumes from its finished chunks; bad images; the CLI."""

import os

import jax
import numpy as np
import pytest

from jscore.backbones import get_backbone, init_variables
from jscore.data import open_dataset, preprocess
from jscore.features import extract, load_features

N, SIDE = 11, 16  # 11 images in batches of 4: the last batch is padded


class Counting:
    """Wraps a dataset: counts reads, and can fail at one index (a simulated interruption)."""

    def __init__(self, ds, fail_at=None):
        self.ds, self.fail_at, self.reads = ds, fail_at, []
        self.num_classes, self.class_names = ds.num_classes, ds.class_names

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        if i == self.fail_at:
            raise RuntimeError("simulated interruption")
        self.reads.append(i)
        return self.ds[i]

    def describe(self):
        return self.ds.describe()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("feat")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", N), ("test", 3)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 20, 18), dtype=np.uint8)  # grey, resized
        arrays[f"{split}_labels"] = rng.integers(0, 3, (n, 1)).astype(np.uint8)
    arrays["train_labels"][:3, 0] = [0, 1, 2]
    path = str(root / "toy.npz")
    np.savez(path, **arrays)
    bb = get_backbone("resnet8", num_source_classes=5, image_size=SIDE)
    variables = init_variables(bb, 0)
    ds = open_dataset(f"npz:{path}", "train")
    out = extract(bb, ds, str(root / "cache"), batch_size=4, chunk_batches=2, progress=False)
    return root, path, arrays, bb, variables, ds, out


def test_features_equal_direct_forward_pass(setup):
    root, path, arrays, bb, variables, ds, out = setup
    got = load_features(out)
    images = arrays["train_images"]
    x = preprocess(list(images), bb.preprocess)  # host-side NumPy preprocessing
    f, logits = jax.jit(bb.embed)(variables, x)
    np.testing.assert_allclose(got["features"], np.asarray(f), rtol=1e-5, atol=1e-5)
    lg = np.asarray(logits, np.float64)
    probs = np.exp(lg - lg.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose(got["source_probs"], probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["labels"], arrays["train_labels"][:, 0])
    np.testing.assert_array_equal(got["indices"], np.arange(N))
    assert got["features"].dtype == np.float32 and got["source_probs"].dtype == np.float32
    assert got["num_classes"] == 3
    meta = got["metadata"]
    assert meta["num_examples"] == N and meta["feature_dim"] == bb.feature_dim == 64
    assert meta["num_source_classes"] == 5 and meta["random_init"] and meta["split"] == "train"
    assert not os.path.exists(out[:-4] + ".parts")  # chunks merged and removed
    assert load_features(out[:-4] + ".json")["features"].shape == (N, 64)


def test_second_call_reuses_and_fresh_run_is_byte_identical(setup, tmp_path):
    root, path, arrays, bb, variables, ds, out = setup
    counting = Counting(ds)
    again = extract(bb, counting, str(root / "cache"), batch_size=4, chunk_batches=2, progress=False)
    assert again == out and counting.reads == []  # served from the cache, nothing decoded
    fresh = extract(bb, ds, str(tmp_path), batch_size=4, chunk_batches=2, progress=False)
    a, b = np.load(out), np.load(fresh)
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        assert a[k].tobytes() == b[k].tobytes(), k
    # Other weights, other key: never served from this cache.
    other = extract(bb, ds, str(root / "cache"), variables=init_variables(bb, 1), batch_size=4,
                    chunk_batches=2, progress=False)
    assert other != out and not np.allclose(np.load(other)["features"], a["features"])


def test_interrupted_run_resumes_from_finished_chunks(setup, tmp_path):
    root, path, arrays, bb, variables, ds, out = setup
    cache = str(tmp_path / "c")
    with pytest.raises(RuntimeError, match="simulated"):
        extract(bb, Counting(ds, fail_at=9), cache, batch_size=4, chunk_batches=2, progress=False)
    parts = [p for p in os.listdir(cache) if p.endswith(".parts")]
    assert len(parts) == 1 and "chunk_000000.npz" in os.listdir(os.path.join(cache, parts[0]))
    counting = Counting(ds)
    resumed = extract(bb, counting, cache, batch_size=4, chunk_batches=2, progress=False)
    assert sorted(counting.reads) == list(range(8, N))  # only the unfinished chunk is redone
    a, b = np.load(out), np.load(resumed)
    for k in a.files:
        assert a[k].tobytes() == b[k].tobytes(), k


def _tree_with_a_bad_image(tmp_path):
    from PIL import Image

    for c in ("a", "b"):
        os.makedirs(tmp_path / "t" / c)
        for i in range(3):
            Image.fromarray(np.full((18, 18, 3), 40 * i, np.uint8)).save(tmp_path / "t" / c / f"{i}.png")
    (tmp_path / "t" / "b" / "1.png").write_bytes(b"not a png at all")
    return str(tmp_path / "t")


def test_bad_image_named_or_skipped(setup, tmp_path):
    root, path, arrays, bb, variables, ds, out = setup
    folder = open_dataset(f"folder:{_tree_with_a_bad_image(tmp_path)}", "all")
    with pytest.raises(ValueError, match="1.png"):
        extract(bb, folder, str(tmp_path / "c1"), batch_size=4, progress=False)
    got = load_features(extract(bb, folder, str(tmp_path / "c2"), batch_size=4, progress=False, skip_bad=True))
    assert got["features"].shape == (5, 64)
    np.testing.assert_array_equal(got["indices"], [0, 1, 2, 3, 5])
    np.testing.assert_array_equal(got["labels"], [0, 0, 0, 1, 1])
    skipped = got["metadata"]["skipped"]
    assert len(skipped) == 1 and skipped[0]["index"] == 4 and "1.png" in skipped[0]["error"]


def test_load_features_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_features(str(tmp_path / "none.npz"))
    np.savez(tmp_path / "x.npz", labels=np.zeros(3))
    with pytest.raises(ValueError, match="missing array 'features'"):
        load_features(str(tmp_path / "x.npz"))


def test_cli_extract_bf16_and_errors(setup, tmp_path, capsys):
    from jscore.cli import main

    root, path, arrays, bb, variables, ds, out = setup
    args = ["extract", "--backbone", "resnet8", "--num-source-classes", "5", "--image-size", str(SIDE),
            "--data", path, "--split", "train", "--out", str(tmp_path), "--batch-size", "4", "--no-progress"]
    assert main(args + ["--bf16"]) == 0
    printed = capsys.readouterr().out.split()[0]
    got = load_features(printed)
    assert got["features"].dtype == np.float32 and got["metadata"]["compute_dtype"] == "bfloat16"
    want = load_features(out)["features"]
    # bf16 keeps about 3 significant digits: close to float32, not equal to it.
    assert np.abs(got["features"] - want).max() <= 0.05 * np.abs(want).max() + 1e-3
    assert not np.array_equal(got["features"], want)
    assert main(["extract", "--backbone", "alexnet", "--data", path, "--out", str(tmp_path)]) == 2
    assert "unknown backbone 'alexnet'" in capsys.readouterr().err
    assert main(["extract", "--backbone", "resnet8", "--data", path, "--split", "dev", "--out", str(tmp_path)]) == 2
    assert "no split 'dev'" in capsys.readouterr().err
    assert main(["extract", "--backbone", "resnet8", "--data", "tfds:no_such_ds_xyz", "--out", str(tmp_path)]) == 2
    assert "unknown TFDS dataset" in capsys.readouterr().err


def test_score_file_passes_every_stored_array(setup):
    import jscore
    from jscore.features import score_file

    root, path, arrays, bb, variables, ds, out = setup
    got = score_file(out, scores="logme,leep")
    a = load_features(out)
    want = jscore.score(a["features"], a["labels"], source_probs=a["source_probs"], num_classes=3,
                        scores="logme,leep")
    assert set(got) == {"logme", "leep"}
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-6)


def test_data_parallel_matches_one_device(setup, tmp_path):
    root, path, arrays, bb, variables, ds, out = setup
    n_dev = len(jax.local_devices())
    if n_dev < 2:
        pytest.skip("needs several devices (tests/conftest.py forces 8 host devices)")
    with pytest.raises(ValueError, match="multiple of the"):
        extract(bb, ds, str(tmp_path / "x"), batch_size=n_dev + 1, data_parallel=True, progress=False)
    got = load_features(extract(bb, ds, str(tmp_path), batch_size=n_dev, chunk_batches=1, data_parallel=True,
                                progress=False))
    want = load_features(out)
    np.testing.assert_allclose(got["features"], want["features"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["source_probs"], want["source_probs"], rtol=1e-5, atol=1e-6)
    assert got["metadata"]["devices"] == n_dev


def test_extract_from_mock_tfds(setup, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    root, path, arrays, bb, variables, ds, out = setup
    with tfds.testing.mock_data(num_examples=5):
        source = open_dataset("tfds:colorectal_histology", "train")
        got = load_features(extract(bb, source, str(tmp_path), batch_size=4, progress=False))
        images = [source[i][0] for i in range(5)]
        labels = [source[i][1] for i in range(5)]
    f, _ = jax.jit(bb.embed)(variables, preprocess(images, bb.preprocess))
    np.testing.assert_allclose(got["features"], np.asarray(f), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["labels"], labels)
    assert got["num_classes"] == 8 and got["metadata"]["dataset"]["name"] == "colorectal_histology"


def test_cli_extract_max_examples(setup, tmp_path, capsys):
    """`--max-examples K`: a class-stratified subset of K images (seed --seed), its features those
    of the full extraction's same rows; a bad K fails before any work."""
    from jscore.cli import main

    root, path, arrays, bb, variables, ds, out = setup
    args = ["extract", "--backbone", "resnet8", "--num-source-classes", "5", "--image-size", str(SIDE),
            "--data", path, "--split", "train", "--out", str(tmp_path), "--batch-size", "4", "--no-progress"]
    assert main(args + ["--max-examples", "6"]) == 0
    got = load_features(capsys.readouterr().out.split()[0])
    full = load_features(out)
    assert got["features"].shape[0] == 6 and len(np.unique(got["labels"])) == len(np.unique(full["labels"]))
    from jscore.data import open_dataset
    from jscore.data.subset import stratified_subset

    chosen = stratified_subset(open_dataset(path, "train"), 6, seed=0).indices   # positions in the split
    rows = [int(np.flatnonzero(full["indices"] == chosen[i])[0]) for i in got["indices"]]
    np.testing.assert_allclose(got["features"], full["features"][rows], rtol=1e-5, atol=1e-6)
    assert main(args + ["--max-examples", "0"]) == 2
    assert "--max-examples must be >= 1" in capsys.readouterr().err
