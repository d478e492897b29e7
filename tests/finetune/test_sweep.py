"""Sweeps on cached features (the linear-probe fast path): records, resume, failures, ground truth."""

import json

import numpy as np
import pytest

from jscore.finetune import records as rec
from jscore.finetune.loop import Split
from jscore.finetune.probe import feature_backbone, probe_config
from jscore.finetune.search import HParams, parse_search
from jscore.finetune.sweep import sweep
from jscore.finetune.train import TrainConfig, identity_input_fn

TIMING = {"wall_time_s", "images_per_s", "compile_s", "train_time_s", "finished_at"}


def _features(n, seed, d=6, num_classes=3, scale=1.0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    means = np.random.default_rng(99).normal(size=(num_classes, d)) * 1.5
    x = (means[labels] + rng.normal(size=(n, d))) * scale
    return Split(x.astype(np.float32), labels.astype(np.int32))


def _run(out_dir, points, on_epoch_end=None, scale=1.0, epochs=3):
    import jax

    train, val, test = _features(96, 1, scale=scale), _features(48, 2, scale=scale), _features(48, 3, scale=scale)
    ood = Split(test.inputs + 1.0, test.labels)
    bb = feature_backbone(6)
    cfg = probe_config(TrainConfig(epochs=epochs, batch_size=16, eval_batch_size=32))
    return sweep(bb, {}, train, val, {"test": test, "ood": ood}, 3, points, cfg, str(out_dir), identity_input_fn,
                 model="probe-model", dataset="gauss", devices=jax.devices()[:1], progress=False,
                 on_epoch_end=on_epoch_end)


class Interrupt(Exception):
    pass


def _strip(r):
    return {k: v for k, v in r.items() if k not in TIMING}


def test_interrupted_sweep_resumes_to_the_same_records(tmp_path):
    points = parse_search("halton:3", lr_range=(1e-2, 1.0))
    full = _run(tmp_path / "a", points)
    assert [r["status"] for r in full] == ["done"] * 3
    best = max(full, key=lambda r: r["val_balanced_accuracy"])
    assert best["test_balanced_accuracy"] > 0.85  # separable features: far above chance (1/3)

    def stop(run_id, epoch):
        if run_id == full[1]["run_id"] and epoch == 1:
            raise Interrupt
    with pytest.raises(Interrupt):
        _run(tmp_path / "b", points, on_epoch_end=stop)
    assert len(rec.read_records(str(tmp_path / "b"))) == 1  # only the first run finished

    calls = []
    resumed = _run(tmp_path / "b", points, on_epoch_end=lambda rid, e: calls.append((rid, e)))
    # Run 0 is skipped, run 1 continues after its last finished epoch (1), run 2 runs in full.
    assert calls == [(full[1]["run_id"], 2)] + [(full[2]["run_id"], e) for e in range(3)]
    assert [_strip(r) for r in resumed] == [_strip(r) for r in full]


def test_diverging_run_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path):
    points = [HParams(1e30, 0.0), HParams(0.1, 1e-5)]
    out = _run(tmp_path, points, scale=1e5, epochs=2)  # logits overflow float32
    assert [r["status"] for r in out] == ["failed", "done"]
    assert "not finite" in out[0]["error"]
    gt = rec.read_ground_truth(str(tmp_path))
    assert len(gt) == 1 and gt[0]["failed"] == 1 and gt[0]["runs"] == 1
    assert gt[0]["learning_rate"] == pytest.approx(0.1)


def test_ground_truth_picks_best_validation_run(tmp_path):
    base = {"dataset": "d", "model": "m", "status": "done", "val_accuracy": 0.5, "best_epoch": 3,
            "learning_rate": 0.1, "weight_decay": 0.0, "test_accuracy": 0.0, "extra_tests": ["ood"],
            "ood_balanced_accuracy": 0.0, "ood_accuracy": 0.0}
    rows = [
        dict(base, run_id="a", val_balanced_accuracy=0.70, val_loss=0.5, test_balanced_accuracy=0.9),
        dict(base, run_id="b", val_balanced_accuracy=0.80, val_loss=0.9, test_balanced_accuracy=0.6, ood_balanced_accuracy=0.4),
        dict(base, run_id="c", val_balanced_accuracy=0.80, val_loss=0.7, test_balanced_accuracy=0.5),
        dict(base, run_id="x", status="failed", val_balanced_accuracy=None, val_loss=None, test_balanced_accuracy=None),
        dict(base, run_id="e", model="m2", val_balanced_accuracy=0.1, val_loss=2.0, test_balanced_accuracy=0.3),
    ]
    for r in rows:
        rec.append_record(str(tmp_path), r)
    gt = rec.write_tables(str(tmp_path))
    by_model = {r["model"]: r for r in gt}
    # Best val balanced accuracy (0.80), tie broken by the lower val loss: run c, not the best test (a).
    assert by_model["m"]["run_id"] == "c" and by_model["m"]["balanced_accuracy"] == 0.5
    assert by_model["m"]["runs"] == 3 and by_model["m"]["failed"] == 1  # runs: finished ones
    assert by_model["m2"]["balanced_accuracy"] == 0.3
    assert rec.ground_truth(rec.read_records(str(tmp_path)), "val_loss")[0]["run_id"] == "a"
    back = rec.read_ground_truth(str(tmp_path))
    assert {"dataset", "model", "balanced_accuracy", "accuracy", "ood_balanced_accuracy"} <= set(back[0])
    assert back[0]["balanced_accuracy"] == 0.5
    with pytest.raises(ValueError, match="select_by"):
        rec.ground_truth(rows, "test_accuracy")
    # A torn last line (a crash mid-write) is ignored, and NaN is stored as null.
    with open(tmp_path / rec.RUNS, "a") as f:
        f.write('{"run_id": "tor')
    assert len(rec.read_records(str(tmp_path))) == 5
    rec.append_record(str(tmp_path / "n"), {"v": float("nan")})
    assert json.loads((tmp_path / "n" / rec.RUNS).read_text())["v"] is None


def test_runs_sharing_one_compiled_step_equal_fresh_runs(tmp_path):
    """The sweep reuses one compiled step across hyper-parameters (they live in the optimiser
    state): the second run must equal the same run compiled on its own."""
    from jscore.finetune import loop

    points = [HParams(0.5, 1e-4), HParams(0.02, 1e-6)]
    loop._RUNNERS.clear()
    shared = _run(tmp_path / "a", points)
    assert shared[0]["history"] != shared[1]["history"]
    (runner,) = [entry[2] for entry in loop._RUNNERS.values()]
    assert runner.step._cache_size() == 1  # two runs, one compiled train step
    loop._RUNNERS.clear()
    alone = _run(tmp_path / "b", points[1:])
    assert _strip(alone[0]) == _strip(shared[1])
