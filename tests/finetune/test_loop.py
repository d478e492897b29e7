"""Whole runs on tiny synthetic data: learning, checkpoint selection, data parallelism, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscore.finetune.loop import Split, check_splits, fit
from jscore.finetune.train import TrainConfig, image_input_fn

from ft_helpers import synthetic_images


def _vars(tiny):
    return tiny.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 3)))


def test_accuracy_rises_well_above_chance_with_augmentation(tiny, splits, tmp_path):
    train, val, test = splits
    cfg = TrainConfig(learning_rate=0.05, weight_decay=1e-5, epochs=4, batch_size=32, eval_batch_size=64)
    rec = fit(tiny, _vars(tiny), train, val, {"test": test}, 3, cfg, image_input_fn(tiny.preprocess, 12, True),
              run_dir=str(tmp_path), devices=jax.devices()[:1])
    hist = rec["history"]
    assert hist[-1]["train_loss"] < 0.8 * hist[0]["train_loss"]
    assert rec["test_balanced_accuracy"] > 0.75  # chance is 1/3
    assert rec["val_loss"] == min(h["val_loss"] for h in hist)
    assert rec["best_epoch"] == int(np.argmin([h["val_loss"] for h in hist]))


def test_best_checkpoint_is_the_min_validation_loss_epoch(tiny, splits, tmp_path):
    """Validation labels shifted by one class: the better the model learns the training task,
    the worse its validation loss, so the minimum is early. The selected checkpoint, restored
    from disk and re-evaluated on the validation images, must give exactly that epoch's loss."""
    train, val, _ = splits
    shifted = Split(val.inputs, (val.labels + 1) % 3)
    cfg = TrainConfig(learning_rate=0.05, epochs=3, batch_size=32, eval_batch_size=64, augment=False)
    rec = fit(tiny, _vars(tiny), train, shifted, {"test": shifted}, 3, cfg, image_input_fn(tiny.preprocess, 12, False),
              run_dir=str(tmp_path), devices=jax.devices()[:1])
    losses = [h["val_loss"] for h in rec["history"]]
    assert rec["best_epoch"] == int(np.argmin(losses)) < len(losses) - 1
    assert rec["test_loss"] == pytest.approx(losses[rec["best_epoch"]], rel=1e-6)
    assert abs(rec["test_loss"] - losses[-1]) > 1e-3
    # Only the last and the best checkpoints are kept on disk.
    kept = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert kept == [f"best_{rec['best_epoch']}", f"last_{cfg.epochs - 1}"]


def test_eight_devices_match_one(tiny, splits):
    assert len(jax.devices()) >= 8
    train, val, test = splits
    cfg = TrainConfig(learning_rate=0.05, epochs=2, batch_size=32, eval_batch_size=64, augment=False)
    input_fn = image_input_fn(tiny.preprocess, 12, False)
    one = fit(tiny, _vars(tiny), train, val, {"test": test}, 3, cfg, input_fn, devices=jax.devices()[:1])
    eight = fit(tiny, _vars(tiny), train, val, {"test": test}, 3, cfg, input_fn, devices=jax.devices()[:8])
    assert eight["device"].startswith("8x")
    for h1, h8 in zip(one["history"], eight["history"]):
        assert h8["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-4)
        assert h8["val_loss"] == pytest.approx(h1["val_loss"], rel=1e-4)
    assert eight["test_loss"] == pytest.approx(one["test_loss"], rel=1e-4)


def test_batch_must_divide_over_devices(tiny, splits):
    train, val, test = splits
    with pytest.raises(ValueError, match="multiples of the 8 devices"):
        fit(tiny, _vars(tiny), train, val, {"test": test}, 3, TrainConfig(batch_size=12, epochs=1),
            image_input_fn(tiny.preprocess, 12, False), devices=jax.devices()[:8])


def test_bad_splits_are_clear_errors():
    tr = Split(*synthetic_images(30, classes=[0, 1], size=8))
    va = Split(*synthetic_images(12, size=8))  # has class 2, absent from training
    with pytest.raises(ValueError, match=r"val split has classes absent from training: \[2\]"):
        check_splits(tr, va, {}, 3)
    with pytest.raises(ValueError, match="test split is empty"):
        check_splits(tr, Split(tr.inputs[:4], tr.labels[:4]), {"test": Split(tr.inputs[:0], tr.labels[:0])}, 3)
    with pytest.raises(ValueError, match="ood split has classes absent"):
        check_splits(tr, Split(tr.inputs[:4], tr.labels[:4]), {"ood": va}, 3)
    with pytest.raises(ValueError, match="outside"):
        check_splits(tr, va, {}, 2)


def test_load_split_resizes_every_image_to_a_square():
    from jscore.finetune.data import load_split

    class Mixed:
        num_classes, class_names = 2, ["a", "b"]
        images = [np.full((20, 10), 7, np.uint8), np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3) % 251]

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return self.images[i], i

        def describe(self):
            return {}

    s = load_split(Mixed(), 16, workers=2)
    assert s.inputs.shape == (2, 16, 16, 3) and s.inputs.dtype == np.uint8
    np.testing.assert_array_equal(s.labels, [0, 1])
    assert (s.inputs[0] == 7).all()  # a flat grey image stays flat, copied to RGB
    np.testing.assert_array_equal(s.inputs[1], Mixed.images[1])  # already 16x16: untouched
    with pytest.raises(ValueError, match="empty"):
        load_split(type("Empty", (Mixed,), {"__len__": lambda self: 0})(), 16)
