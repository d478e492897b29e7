"""The `jscore score` command as a user runs it."""

import json

import numpy as np
import pytest

import jscore
from jscore.cli import main


def _write(tmp_path, name="model.npz", n=60, d=12, c=3, seed=0, **extra):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % c
    features = rng.normal(size=(c, d))[labels] + rng.normal(size=(n, d))
    logits = rng.normal(size=(n, 5))
    arrays = {"features": features.astype(np.float32), "labels": labels, "source_logits": logits}
    arrays.update(extra)
    path = tmp_path / name
    np.savez(path, **arrays)
    return path, arrays


def test_score_file_json_equals_api(tmp_path, capsys):
    path, arrays = _write(tmp_path)
    assert main(["score", str(path), "--json", "--scores", "hscore,logme,leep"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = jscore.score(arrays["features"], arrays["labels"], source_logits=arrays["source_logits"],
                            scores=["hscore", "logme", "leep"])
    assert printed.keys() == expected.keys()
    for k in expected:
        assert printed[k] == pytest.approx(expected[k], rel=1e-6)


def test_score_several_files_ranks_a_zoo(tmp_path, capsys):
    good, _ = _write(tmp_path, "good.npz", seed=1)
    rng = np.random.default_rng(2)
    noise = {"features": rng.normal(size=(60, 12)).astype(np.float32), "labels": np.arange(60) % 3}
    np.savez(tmp_path / "noise.npz", **noise)
    assert main(["score", str(good), str(tmp_path / "noise.npz"), "--scores", "hscore,logme,gbc", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for name in ("hscore", "logme", "gbc"):
        assert out["good"][name] > out["noise"][name]


def test_bad_inputs_give_one_clear_line(tmp_path, capsys):
    path, _ = _write(tmp_path, "nan.npz")
    data = dict(np.load(path))
    data["features"][0, 0] = np.nan
    np.savez(path, **data)
    assert main(["score", str(path)]) == 2
    err = capsys.readouterr().err
    assert "NaN" in err and "Traceback" not in err

    assert main(["score", str(tmp_path / "missing.npz")]) == 2
    assert "no such file" in capsys.readouterr().err

    np.savez(tmp_path / "nolabels.npz", features=np.zeros((4, 2)))
    assert main(["score", str(tmp_path / "nolabels.npz")]) == 2
    assert "labels" in capsys.readouterr().err

    (tmp_path / "junk.npz").write_text("not a zip")
    assert main(["score", str(tmp_path / "junk.npz")]) == 2
    assert "not a readable" in capsys.readouterr().err

    path, _ = _write(tmp_path, "unknown.npz")
    assert main(["score", str(path), "--scores", "hscore,nope"]) == 2
    assert "unknown score" in capsys.readouterr().err


def test_demo_ranks_the_simulated_zoo_by_quality(capsys):
    from jscore.demo import demo_zoo

    models, labels, quality = demo_zoo(num_samples=300)
    results = jscore.score_zoo(models, labels, scores=["hscore", "logme", "leep", "nce", "gbc"])
    best = max(quality, key=quality.get)
    worst = min(quality, key=quality.get)
    for name in ("logme", "leep", "nce", "gbc"):
        assert results[best][name] > results[worst][name], name


def test_zoo_rows_are_named_by_the_stored_backbone(tmp_path, capsys):
    for i, backbone in enumerate(["resnet8", "vit2_w64"]):
        path, _ = _write(tmp_path, f"{backbone}__data__train__abc{i}.npz", seed=i)
        (tmp_path / f"{backbone}__data__train__abc{i}.json").write_text(json.dumps({"backbone": backbone}))
    files = sorted(str(p) for p in tmp_path.glob("*.npz"))
    assert main(["score", *files, "--scores", "hscore", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"resnet8", "vit2_w64"}


def test_score_file_with_regression_targets(tmp_path, capsys):
    """A feature file with `targets` (regression / multi-label) is scored by LogME's regression
    form, the same as `jscore.score(features, targets=...)` and the float64 oracle."""
    from tests.oracles import logme as logme_oracle

    rng = np.random.default_rng(4)
    f = rng.normal(size=(50, 6)).astype(np.float32)
    t = np.stack([f @ rng.normal(size=6) + 0.3 * rng.normal(size=50), (f[:, 0] > 0).astype(float)], 1)
    np.savez(tmp_path / "reg.npz", features=f, targets=t.astype(np.float32))
    assert main(["score", str(tmp_path / "reg.npz"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"logme"}
    assert printed["logme"] == pytest.approx(jscore.score(f, targets=t)["logme"], rel=1e-6)
    assert printed["logme"] == pytest.approx(logme_oracle.logme_regression(f, t.astype(np.float32)), rel=1e-3)
    np.savez(tmp_path / "bad.npz", features=f, targets=np.where(np.arange(50) == 7, np.nan, t[:, 0]))
    assert main(["score", str(tmp_path / "bad.npz")]) != 0
    assert "nan" in capsys.readouterr().err.lower()
