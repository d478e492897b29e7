"""`jscore study` end to end on a tiny study: records, resume after a kill, config edits,
bad configs, --dry-run, and the report."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from jscore.cli import main
from tests.study import helpers as h


def test_records_and_report(tiny, capsys):
    root, data, cfg, out = tiny
    recs = h.records(out)
    stages = [s for s, _ in recs]
    # 2 backbones x 3 splits; 2 scorings; 2 backbones x 2 search points; one evaluation
    assert {s: stages.count(s) for s in set(stages)} == {"extract": 6, "score": 2, "truth": 4, "evaluate": 1}
    assert all(r["status"] == "done" for r in recs.values())
    # The score records hold jscore.score of the stored features, recomputed here.
    import jscore
    from jscore.features import load_features

    for (stage, uid), r in recs.items():
        if stage != "score":
            continue
        bb = uid.split("__")[2]
        f = load_features(os.path.join(out, recs[("extract", f"extract__toy__{bb}__train")]["result"]["path"]))
        with pytest.warns(UserWarning, match="ncti"):  # 40 samples: NCTI's 64 PCA dims left out of "all"
            want = jscore.score(f["features"], f["labels"], num_classes=2)
        assert r["result"]["scores"] == pytest.approx(want, rel=1e-6)
        # headless: no LEEP/NCE/PAC source scores; too small for NCTI
        assert set(want) == {"hscore", "reg_hscore", "nleep", "logme", "gbc", "parc", "tmi", "transrate", "knn",
                             "sfda", "pactran", "etran_energy", "etran_lda"}
    # Ground truth: per backbone the best validation run of the 2-point search, and its test number.
    truth = [r["result"] for (s, _), r in recs.items() if s == "truth"]
    assert {t["model"] for t in truth} == set(h.BACKBONES)
    assert all(0 <= t["test_balanced_accuracy"] <= 1 for t in truth)
    tidy = __import__("pandas").read_csv(os.path.join(out, "results.csv"))
    for bb in h.BACKBONES:
        runs = [t for t in truth if t["model"] == bb]
        best = max(runs, key=lambda t: t["val_balanced_accuracy"])  # ties: first run (search order)
        got = tidy[(tidy["model"] == bb)]["test_balanced_accuracy"].unique()
        assert got.tolist() == [best["test_balanced_accuracy"]]
    # Baselines beside the scores: the parameter count, counted from the variables.
    from jscore.backbones import get_backbone, init_variables

    params = tidy[tidy["score"] == "num_params"].set_index("model")["value"]
    for bb in h.BACKBONES:
        v = init_variables(get_backbone(bb, image_size=16), 0)["params"]
        leaves = []
        stack = [v]
        while stack:  # walk the nested dicts by hand
            x = stack.pop()
            stack.extend(x.values()) if isinstance(x, dict) else leaves.append(np.size(x))
        assert params[bb] == sum(leaves)
    md = open(os.path.join(out, "report.md")).read()
    page = open(os.path.join(out, "report.html")).read()
    for text in ("Kendall tau-b per dataset", "Weighted Kendall tau", "num_params", "Diagnostics", "toy"):
        assert text in md and text in page
    assert "data:image/png;base64," in page and "<img" in page and "src=\"scatter" not in page


def test_rerun_skips_everything(tiny, capsys):
    root, data, cfg, out = tiny
    before = {k: os.path.getmtime(os.path.join(out, "records", k[0], k[1] + ".json")) for k in h.records(out)}
    assert main(["study", cfg, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "ran extract 0, score 0, truth 0, evaluate 0 unit(s)" in err
    after = {k: os.path.getmtime(os.path.join(out, "records", k[0], k[1] + ".json")) for k in h.records(out)}
    assert before == after


def test_config_edit_recomputes_only_what_it_touches(tiny, capsys, tmp_path):
    root, data, cfg, out = tiny
    import shutil

    out2 = str(tmp_path / "edit")
    shutil.copytree(out, out2)
    ref = h.records(out2)
    # Edit 1: the ground-truth epochs: every truth run and the evaluation, nothing else.
    cfg2 = h.write_config(str(tmp_path / "s.toml"), data, out2, epochs=3)
    from jscore.study import load_config, make_plan

    plan = make_plan(load_config(cfg2))
    todo = {s: sum(not plan.is_done(u) for u in plan.units[s]) for s in plan.units}
    assert todo == {"extract": 0, "score": 0, "truth": 4, "evaluate": 1}
    # Edit 2: the score list: the 2 scorings and the evaluation only.
    cfg3 = h.write_config(str(tmp_path / "s3.toml"), data, out2, scores=["logme", "gbc"])
    plan = make_plan(load_config(cfg3))
    todo = {s: sum(not plan.is_done(u) for u in plan.units[s]) for s in plan.units}
    assert todo == {"extract": 0, "score": 2, "truth": 0, "evaluate": 1}
    assert main(["study", cfg3, "--no-progress"]) == 0
    assert "ran extract 0, score 2, truth 0, evaluate 1 unit(s)" in capsys.readouterr().err
    new = h.records(out2)
    for k, r in ref.items():
        if k[0] in ("extract", "truth"):
            assert new[k] == r  # untouched
    assert set(new[("score", "score__toy__resnet8")]["result"]["scores"]) == {"logme", "gbc"}
    # Edit 3: one more backbone: its 3 extractions, 1 scoring and 2 runs (and the evaluation).
    cfg4 = h.write_config(str(tmp_path / "s4.toml"), data, out2, backbones=h.BACKBONES + ["resnet8_w32"],
                          scores=["logme", "gbc"])
    plan = make_plan(load_config(cfg4))
    todo = {s: sum(not plan.is_done(u) for u in plan.units[s]) for s in plan.units}
    assert todo == {"extract": 3, "score": 1, "truth": 2, "evaluate": 1}


def test_dry_run(tiny, capsys):
    root, data, cfg, out = tiny
    assert main(["study", cfg, "--dry-run"]) == 0
    text = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.split()[:1] in
            (["extract"], ["score"], ["truth"], ["evaluate"])}
    assert rows["extract"][:3] == ["6", "6", "0"] and rows["truth"][:3] == ["4", "4", "0"]
    assert "estimated time left" in text


def test_dry_run_applies_datasets_and_truths(tiny, capsys):
    """--dry-run shows what the command would run: an unknown dataset is an error there too, and
    --datasets / --truths cut the plan as a real run does (the evaluation needs every unit)."""
    root, data, cfg, out = tiny
    assert main(["study", cfg, "--dry-run", "--datasets", "nope"]) != 0
    assert "--datasets: ['nope'] not in the study" in capsys.readouterr().err
    from jscore.study import load_config

    name = load_config(cfg).datasets[0].name
    assert main(["study", cfg, "--dry-run", "--datasets", name]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()
            if line.split()[:1] in (["extract"], ["truth"], ["evaluate"])}
    assert rows["extract"][:3] == ["6", "6", "0"] and "evaluate" not in rows


@pytest.mark.parametrize("edit, message", [
    ("bogus = 1\n", "unknown key(s) ['bogus']"),
    ("backbones = [\"resnet8\", \"notanet\"]\n", "unknown backbone 'notanet'"),
    ("scores = [\"leep\"]\n", "need source probabilities, but backbone 'resnet8' has no source head"),
    ("scores = [\"logmee\"]\n", "unknown score(s) ['logmee']"),
    ("DATA", "dataset(s) not found, needed by unfinished units: toy: npz:"),
])
def test_bad_configs_fail_before_any_work(tmp_path, capsys, edit, message):
    data = h.make_dataset(str(tmp_path / "toy.npz"))
    out = str(tmp_path / "out")
    cfg = h.write_config(str(tmp_path / "s.toml"), data if edit != "DATA" else str(tmp_path / "missing.npz"), out)
    text = open(cfg).read()
    if edit != "DATA":
        key = edit.split("=")[0].strip()
        lines = [ln for ln in text.splitlines() if not ln.startswith(key + " ")]
        text = edit + "\n".join(lines) + "\n"
    open(cfg, "w").write(text)
    assert main(["study", cfg]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jscore study: error:") and message in err[0], err
    assert not os.path.exists(out)  # nothing was started


def test_interrupted_study_resumes(tiny, tmp_path):
    """Kill a study mid-way (SIGKILL): the rerun keeps every finished unit, finishes, and its
    records equal the uninterrupted run's."""
    root, data, cfg, ref_out = tiny
    out = str(tmp_path / "killed")
    cfg2 = h.write_config(str(tmp_path / "s.toml"), data, out)
    proc = subprocess.Popen(h.jscore_cmd("study", cfg2, "--no-progress"), env=h.env(), cwd=h.REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    try:
        while time.time() - t0 < 240:  # kill once the score stage has started
            if len(h.records(out)) >= 7 or proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the study ended before it could be interrupted"
    kept = h.records(out)
    assert 7 <= len(kept) < 13
    mtimes = {k: os.path.getmtime(os.path.join(out, "records", k[0], k[1] + ".json")) for k in kept}
    res = h.run_cli("study", cfg2, "--no-progress")
    assert res.returncode == 0, res.stderr
    ran = res.stderr.split("ran ")[1].split(" unit(s)")[0]
    redone = sum(int(part.split()[1]) for part in ran.split(", "))
    assert redone == 13 - len(kept)  # only the units without a record: at most the one in progress was lost
    for k, m in mtimes.items():  # finished units were not redone
        assert os.path.getmtime(os.path.join(out, "records", k[0], k[1] + ".json")) == m
    ref, got = h.records(ref_out), h.records(out)
    assert set(ref) == set(got)
    for k in ref:
        if k[0] != "evaluate":
            assert h.comparable(got[k]) == h.comparable(ref[k]), k
    assert got[("evaluate", "evaluate")]["result"]["summary"] == ref[("evaluate", "evaluate")]["result"]["summary"]


def test_missing_feature_files_are_extracted_again(tiny, tmp_path, capsys):
    """Published results keep the records, not the feature files: recomputing a score or a probe
    on such a folder extracts the features again, into the path the record names, and leaves the
    extraction records alone."""
    import shutil

    root, data, cfg, ref_out = tiny
    out = str(tmp_path / "published")
    shutil.copytree(ref_out, out)
    ref = h.records(out)
    shutil.rmtree(os.path.join(out, "features"))
    os.remove(os.path.join(out, "records", "score", "score__toy__resnet8.json"))
    os.remove(os.path.join(out, "records", "truth", "truth__toy__mobilenet6__p000__s0.json"))
    cfg2 = h.write_config(str(tmp_path / "s.toml"), data, out)
    assert main(["study", cfg2, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "ran extract 0, score 1, truth 1, evaluate 0 unit(s)" in err
    assert "extract__toy__resnet8__train: features file features/resnet8__toy__train__" in err
    got = h.records(out)
    for k, r in ref.items():
        if k[0] == "extract":
            assert got[k] == r  # untouched
            # Back where the record says for what the two units read (resnet8's scored training
            # split, mobilenet6's three probe splits); the rest stay gone until needed.
            needed = k[1] == "extract__toy__resnet8__train" or "mobilenet6" in k[1]
            assert os.path.isfile(os.path.join(out, r["result"]["path"])) == needed, k
        elif k[0] in ("score", "truth"):
            assert h.comparable(got[k]) == h.comparable(r), k  # same features: the same numbers


def test_published_study_moved_to_another_folder(tmp_path, capsys):
    """The real case: a study folder with relative paths (config, data, records) cloned elsewhere,
    its feature files absent. The features extracted again have another file name (the cache key
    holds the dataset's absolute path) and the same numbers."""
    import shutil

    first = tmp_path / "first"
    first.mkdir()
    h.make_dataset(str(first / "toy.npz"))
    h.write_config(str(first / "s.toml"), "toy.npz", "out", scores=["logme", "knn"])
    assert main(["study", str(first / "s.toml"), "--no-progress"]) == 0
    ref = h.records(str(first / "out"))
    clone = tmp_path / "clone"
    shutil.copytree(first, clone)
    shutil.rmtree(clone / "out" / "features")
    os.remove(clone / "out" / "records" / "score" / "score__toy__resnet8.json")
    capsys.readouterr()
    assert main(["study", str(clone / "s.toml"), "--no-progress"]) == 0
    assert "ran extract 0, score 1, truth 0, evaluate 0 unit(s)" in capsys.readouterr().err
    got = h.records(str(clone / "out"))
    assert h.comparable(got[("score", "score__toy__resnet8")]) == h.comparable(ref[("score", "score__toy__resnet8")])
    recorded = ref[("extract", "extract__toy__resnet8__train")]["result"]["path"]
    assert not os.path.exists(clone / "out" / recorded)
    assert len([f for f in os.listdir(clone / "out" / "features") if f.endswith(".npz")]) == 1
    assert got[("extract", "extract__toy__resnet8__train")] == ref[("extract", "extract__toy__resnet8__train")]
    # The record is not rewritten; features/<id>.path names the new file, so a later run finds it
    # without the data and without extracting again.
    os.remove(clone / "out" / "records" / "score" / "score__toy__resnet8.json")
    os.rename(clone / "toy.npz", clone / "away.npz")
    assert main(["study", str(clone / "s.toml"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "ran extract 0, score 1, truth 0, evaluate 0 unit(s)" in err and "extracting again" not in err
    # Data that changed under the same path: the re-extraction disagrees with the record, and
    # the error names the record to delete.
    other = tmp_path / "other"
    shutil.copytree(first, other)
    shutil.rmtree(other / "out" / "features")
    os.remove(other / "out" / "records" / "score" / "score__toy__resnet8.json")
    arrays = dict(np.load(other / "toy.npz"))
    arrays["train_images"], arrays["train_labels"] = arrays["train_images"][:30], arrays["train_labels"][:30]
    np.savez(other / "toy.npz", **arrays)
    assert main(["study", str(other / "s.toml"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "extract__toy__resnet8__train: extracting its missing features again does not give what its record holds" in err
    assert "num_examples 40 -> 30" in err and "extract__toy__resnet8__train.json to extract it afresh" in err


def test_missing_feature_files_need_their_data(tiny, tmp_path, capsys):
    """Without the dataset the features cannot be extracted again: one clear error, before any work."""
    import shutil

    root, data, cfg, ref_out = tiny
    out = str(tmp_path / "published")
    shutil.copytree(ref_out, out)
    shutil.rmtree(os.path.join(out, "features"))
    os.remove(os.path.join(out, "records", "score", "score__toy__resnet8.json"))
    cfg2 = h.write_config(str(tmp_path / "s.toml"), data, out)
    os.rename(data, data + ".away")  # the shared fixture's dataset, put back below
    try:
        assert main(["study", cfg2, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "dataset(s) not found, needed by unfinished units: toy" in err and "score__toy__resnet8" in err
        # A finished study needs neither: its report comes from the records.
        shutil.copy(os.path.join(ref_out, "records", "score", "score__toy__resnet8.json"),
                    os.path.join(out, "records", "score"))
        assert main(["study", cfg2, "--no-progress"]) == 0
    finally:
        os.rename(data + ".away", data)


def test_failed_regeneration_stops_the_other_processes(tiny, tmp_path, monkeypatch):
    """Process 1 of 2 waits for the feature file that process 0 extracts again; when process 0
    fails (its `.failed` file beside the extraction record), process 1 stops with its error
    instead of waiting until the timeout."""
    import shutil
    import threading

    import jax

    from jscore.study import load_config, make_plan
    from jscore.study.runner import _write_failed, features_to_regenerate, run_plan

    root, data, cfg, ref_out = tiny
    out = str(tmp_path / "published")
    shutil.copytree(ref_out, out)
    shutil.rmtree(os.path.join(out, "features"))
    os.remove(os.path.join(out, "records", "score", "score__toy__resnet8.json"))
    plan = make_plan(load_config(h.write_config(str(tmp_path / "s.toml"), data, out)))
    (unit,) = features_to_regenerate(plan)
    owner = [u.id for u in plan.units["extract"]].index(unit.id) % 2
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 1 - owner)

    def fail_in_owner():   # as the owner writes it: atomically (a plain write raced the reader)
        time.sleep(1.0)
        _write_failed(plan, unit, ValueError("extract unit X: the data changed"))

    writer = threading.Thread(target=fail_in_owner)
    writer.start()
    t0 = time.time()
    with pytest.raises(RuntimeError, match=f"unit {unit.id} failed in another process: ValueError: extract unit X"):
        run_plan(plan, progress=False, wait_timeout_s=120.0)
    writer.join()
    assert time.time() - t0 < 60.0


def test_demo_config_plans_from_the_package(tmp_path, capsys):
    """The demo's config and its embedded BreastMNIST ship inside the package."""
    assert main(["study", "--demo", "--dry-run", "--out", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    assert "study 'demo': 1 dataset(s) x 5 backbone(s)" in text and "linear probe" in text
    from jscore.commands.study import DEMO_CONFIG
    from jscore.data import open_dataset

    spec = "npz:" + os.path.join(os.path.dirname(DEMO_CONFIG), "breastmnist.npz")
    assert [len(open_dataset(spec, s)) for s in ("train", "val", "test")] == [546, 78, 156]
    assert not os.path.exists(str(tmp_path / "demo"))


def test_one_backbone_cannot_be_ranked(tmp_path, capsys):
    data = h.make_dataset(str(tmp_path / "toy.npz"))
    cfg = h.write_config(str(tmp_path / "s.toml"), data, str(tmp_path / "out"), backbones=["resnet8"])
    assert main(["study", cfg]) == 2
    assert "give at least two" in capsys.readouterr().err
