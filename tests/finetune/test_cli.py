"""`jscore finetune` end to end on a tiny synthetic .npz, and its bad-input errors."""

import csv
import json

import numpy as np
import pytest

from jscore.cli import main

from ft_helpers import synthetic_images


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "syn.npz"
    arrays = {}
    for split, n, seed in (("train", 96, 1), ("val", 30, 2), ("test", 30, 3)):
        x, y = synthetic_images(n, size=12, seed=seed)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y[:, None].astype(np.uint8)
    # A validation split holding a class that training lacks.
    x, y = synthetic_images(30, size=12, seed=4)
    arrays["badtrain_images"], arrays["badtrain_labels"] = x[y < 2], y[y < 2][:, None].astype(np.uint8)
    np.savez(path, **arrays)
    return str(path)


def test_cli_sweep_writes_records_and_ground_truth(npz, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["finetune", "--backbone", "resnet8_w4", "--data", f"npz:{npz}", "--image-size", "12",
            "--search", "grid:2x1", "--epochs", "1", "--batch-size", "32", "--eval-batch-size", "32",
            "--no-augment", "--devices", "1", "--no-progress", "--extra-test", f"ood=npz:{npz}@val",
            "--out", str(out)]
    assert main(argv) == 0
    lines = (out / "runs.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 2 and {r["status"] for r in records} == {"done"}
    r = records[0]
    for field in ("model", "weights_fingerprint", "dataset", "seed", "learning_rate", "weight_decay", "epochs",
                  "best_epoch", "val_loss", "val_balanced_accuracy", "test_balanced_accuracy", "test_accuracy",
                  "ood_balanced_accuracy", "wall_time_s", "images_per_s", "device", "versions"):
        assert field in r, field
    assert r["model"] == "resnet8_w4" and r["train_size"] == 96
    assert r["learning_rate"] == pytest.approx(1e-4) and records[1]["learning_rate"] == pytest.approx(1e-1)
    with open(out / "ground_truth.csv") as f:
        gt = list(csv.DictReader(f))
    assert len(gt) == 1 and gt[0]["model"] == "resnet8_w4"
    assert gt[0]["n_test"] == "30" and gt[0]["classes"] == "3"  # for the evaluate stage's noise model
    assert float(gt[0]["balanced_accuracy"]) in {rr["test_balanced_accuracy"] for rr in records}
    assert "ground truth resnet8_w4" in capsys.readouterr().out
    # Same command again: both runs are already recorded, nothing is retrained.
    assert main(argv) == 0
    assert len((out / "runs.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("extra, message", [
    (["--train-split", "badtrain"], "val split has classes absent from training"),
    (["--search", "sobol:3"], "bad search spec"),
    (["--extra-test", "test=npz:x.npz"], "reserved"),
    (["--mode", "probe", "--head-init", "probe"], "--head-init probe (LP-FT) applies to --mode full"),
    (["--optimizer", "adamw", "--momentum", "0.5"], "--momentum and --no-nesterov apply to --optimizer sgd"),
    (["--optimizer", "adamw", "--mode", "probe"], "--optimizer adamw applies to --mode full"),
    (["--batch-norm", "frozen", "--mode", "probe"], "--batch-norm frozen applies to --mode full"),
    (["--micro-batch-size", "3"], "--micro-batch-size 3 must divide --batch-size 8"),
    (["--micro-batch-size", "4"], "--micro-batch-size with --batch-norm train: resnet8_w4 keeps batch statistics"),
])
def test_cli_bad_input_is_one_clear_error(npz, tmp_path, capsys, extra, message):
    argv = ["finetune", "--backbone", "resnet8_w4", "--data", f"npz:{npz}", "--image-size", "12",
            "--epochs", "1", "--batch-size", "8", "--devices", "1", "--no-progress", "--out", str(tmp_path)] + extra
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.glob("**/*.npz"))  # refused before any feature is extracted


def test_cli_probe_fast_path_on_cached_features(npz, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["finetune", "--backbone", "resnet8_w4", "--data", f"npz:{npz}", "--image-size", "12",
            "--search", "point:0.1,1e-5", "--epochs", "2", "--batch-size", "16", "--mode", "probe",
            "--features-cache", str(cache), "--devices", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    (r,) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert r["status"] == "done" and r["inputs"] == "features" and r["mode"] == "probe"
    assert r["augment"] is False and len(r["history"]) == 2
    assert len(list(cache.glob("*.npz"))) == 3  # train, val, test features, extracted once
    from jscore.backbones import get_backbone, init_variables
    from jscore.backbones.weights import fingerprint

    assert r["weights_fingerprint"] == fingerprint(init_variables(get_backbone("resnet8_w4", image_size=12), 0))
    # Feature probing without --mode probe is refused.
    assert main(argv[:-9] + ["--features-cache", str(cache), "--out", str(out)]) == 2


def test_cli_micro_batches_reproduce_whole_batches(npz, tmp_path):
    """Through the whole loop (data, a random head, two epochs, evaluation): micro-batches of 4
    give the run that whole batches of 8 give, to float32 round-off, under the same run id."""
    records = {}
    for micro in ("0", "4"):
        out = tmp_path / f"m{micro}"
        argv = ["finetune", "--backbone", "resnet8_w4", "--data", f"npz:{npz}", "--image-size", "12",
                "--search", "point:0.05,1e-5", "--epochs", "2", "--batch-size", "8", "--batch-norm", "frozen",
                "--micro-batch-size", micro, "--no-augment", "--devices", "1", "--no-progress", "--out", str(out)]
        assert main(argv) == 0
        (records[micro],) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    whole, parts = records["0"], records["4"]
    assert parts["micro_batch_size"] == 4 and whole["micro_batch_size"] == 0
    assert parts["run_id"] == whole["run_id"]
    for k in ("val_loss", "test_loss"):
        assert parts[k] == pytest.approx(whole[k], rel=1e-4), k
    assert [h["train_loss"] for h in parts["history"]] == pytest.approx([h["train_loss"] for h in whole["history"]], rel=1e-4)
    assert whole["history"][0]["train_loss"] != pytest.approx(whole["history"][1]["train_loss"], rel=1e-3)  # it trains
