"""benchmarks/bench_device.py in its CPU mode: the JSON it writes holds every part, with
finite scores inside their known bounds, positive timings and throughputs (or a stated skip)."""

import json
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEVEN = {"hscore", "reg_hscore", "nce", "leep", "nleep", "logme", "gbc"}


def _check_scores(values, c):
    assert set(values) == SEVEN
    assert all(math.isfinite(v) for v in values.values()), values
    # Known bounds: LEEP, NCE, N-LEEP are log-likelihoods (<= 0); GBC is minus a sum of
    # Bhattacharyya coefficients in [-(C^2 - C), 0]; H-score of whitened features lies in [0, C - 1].
    for name in ("leep", "nce", "nleep"):
        assert values[name] <= 1e-6, (name, values[name])
    assert -(c * c - c) - 1e-6 <= values["gbc"] <= 1e-6
    assert -1e-6 <= values["hscore"] <= c - 1 + 1e-4


def _check_timing(part):
    assert part["first"] > 0 and part["warm"] > 0
    assert part["compile_s"] == pytest.approx(max(part["first"] - part["warm"], 0.0))


def test_cpu_small_mode_writes_every_part(tmp_path):
    sys.path.insert(0, ROOT)
    from benchmarks import bench_device

    path = tmp_path / "small.json"
    bench_device.main(["--cpu-small", "--repeats", "1", "--json", str(path)])
    out = json.loads(path.read_text())
    cfg = bench_device.CPU_SMALL
    assert out["mode"] == "cpu-small" and out["device"]["backend"]
    assert [row["n"] for row in out["single"]] == list(cfg["sizes"])
    for row in out["single"]:
        assert row["d"] == cfg["dim"] and row["scores"] == sorted(row["scores"], key=row["scores"].index)
        _check_scores(row["values"], cfg["classes"])
        _check_timing(row)
    zoo = out["zoo"]
    assert zoo["models"] == cfg["zoo_models"] and zoo["n"] == cfg["zoo_n"]
    assert zoo["dims"] == sorted(cfg["zoo_dims"])
    assert len(zoo["values"]) == cfg["zoo_models"]
    for values in zoo["values"].values():
        _check_scores(values, cfg["classes"])
    _check_timing(zoo)
    for part in ("extract", "finetune"):
        got = out[part]
        if "skipped" in got:  # allowed, but it must say why
            assert isinstance(got["skipped"], str) and got["skipped"]
            continue
        assert got["image_size"] == cfg["image_size"] and got["batch"] == cfg["batch"]
        assert got["images_per_s"] == pytest.approx(cfg["batch"] / got["warm"])
        _check_timing(got)
    assert out["total_s"] > 0
