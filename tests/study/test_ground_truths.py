"""Several ground truths in one study ([[ground_truth]] tables) and per-split image budgets."""

import os

import numpy as np
import pandas as pd
import pytest

from tests.study import helpers as h


def _config(path, data, out, truths: str, extra_dataset: str = "") -> str:
    with open(path, "w") as fh:
        fh.write(f"""name = "multi"
out = "{out}"
image_size = 16
scores = ["logme", "hscore"]
bootstrap = 200
batch_size = 16
backbones = ["resnet8", "mobilenet6", "resnet14"]

[[datasets]]
name = "toy"
data = "npz:{data}"
max_examples = {{train = 30, test = 12}}
{extra_dataset}
{truths}
""")
    return path


TRUTHS = """
[[ground_truth]]
name = "short"
recipe = "probe"
search = "grid:2x1"
epochs = 2
batch_size = 16

[[ground_truth]]
name = "long"
recipe = "probe"
search = "grid:2x1"
epochs = 6
seeds = [0, 1]
batch_size = 16
datasets = ["toy"]
"""

SECOND = """
[[datasets]]
name = "toy2"
data = "npz:{data2}"
"""


def test_plan_of_several_ground_truths(tmp_path):
    from jscore.study import load_config, make_plan

    data = h.make_dataset(str(tmp_path / "toy.npz"))
    data2 = h.make_dataset(str(tmp_path / "toy2.npz"), seed=1)
    cfg = load_config(_config(str(tmp_path / "s.toml"), data, str(tmp_path / "out"), TRUTHS,
                              SECOND.format(data2=data2)))
    assert [g.name for g in cfg.truths()] == ["short", "long"] and cfg.ground_truth.name == "short"
    plan = make_plan(cfg)
    ids = [u.id for u in plan.units["truth"]]
    # short: 2 datasets x 3 backbones x 2 points; long: toy only, 3 backbones x 2 points x 2 seeds
    assert sum(i.startswith("truth__short__") for i in ids) == 12
    assert sum(i.startswith("truth__long__toy__") for i in ids) == 12 and len(ids) == 24
    assert len(set(ids)) == len(ids) and len({u.key for u in plan.units["truth"]}) == len(ids)
    # The budgets: the subset split keys carry their size; the val split (no budget) does not.
    ex = {u.id: u for u in plan.units["extract"]}
    assert ex["extract__toy__resnet8__train"].deps["max_examples"] == 30
    assert "max_examples" not in ex["extract__toy__resnet8__val"].deps
    assert "max_examples" not in ex["extract__toy2__resnet8__train"].deps


def test_adamw_fine_tuning_is_its_own_recipe(tmp_path):
    """optimizer = "adamw" changes the fine-tuning units' keys and ids (its runs never resume or
    replace SGD's); the default "sgd" leaves the keys of earlier studies as they were."""
    from jscore.study import load_config, make_plan

    data = h.make_dataset(str(tmp_path / "toy.npz"))
    ft = TRUTHS.replace('recipe = "probe"\nsearch = "grid:2x1"\nepochs = 6', 'recipe = "finetune"\nsearch = "grid:2x1"\nepochs = 6')
    plans = {}
    for opt in ("", 'optimizer = "sgd"\n', 'optimizer = "adamw"\n'):
        text = ft.replace('epochs = 6\n', 'epochs = 6\n' + opt)
        cfg = load_config(_config(str(tmp_path / "s.toml"), data, str(tmp_path / "out"), text))
        plans[opt] = {u.id: u.key for u in make_plan(cfg).units["truth"] if "__long__" in u.id}
    default, sgd, adamw = plans.values()
    assert default == sgd and len(default) == 12
    assert set(adamw) == set(default) and all(adamw[i] != default[i] for i in default)
    assert "with adamw" in load_config(_config(str(tmp_path / "s.toml"), data, str(tmp_path / "out"),
                                               ft.replace('epochs = 6\n', 'epochs = 6\noptimizer = "adamw"\n'))
                                       ).truth_named("long").describe()


def test_frozen_batch_norm_changes_only_the_keys_of_backbones_with_batch_norm(tmp_path):
    """batch_norm = "frozen" is a new recipe for a backbone with BatchNorm layers (jscore's own
    zoo here); a TFLite import has its batch norm folded into its weights, so the setting changes
    nothing there and its finished runs keep their keys. The default ("train") keys nothing."""
    from jscore.study import load_config, make_plan

    data = h.make_dataset(str(tmp_path / "toy.npz"))
    ft = TRUTHS.replace('recipe = "probe"\nsearch = "grid:2x1"\nepochs = 6', 'recipe = "finetune"\nsearch = "grid:2x1"\nepochs = 6')
    plans = {}
    for opt in ("", 'batch_norm = "train"\n', 'batch_norm = "frozen"\n'):
        text = ft.replace('epochs = 6\n', 'epochs = 6\n' + opt)
        path = _config(str(tmp_path / "s.toml"), data, str(tmp_path / "out"), text)
        text = open(path).read().replace('"resnet14"]', '"resnet14", "mobilenet_v2_1.0_224_quant"]')
        open(path, "w").write(text)
        cfg = load_config(path)
        plans[opt] = {u.id: u.key for u in make_plan(cfg).units["truth"] if "__long__" in u.id}
    default, train, frozen = plans.values()
    assert default == train and len(default) == 16
    tflite = [i for i in default if "mobilenet_v2_1.0_224_quant" in i]
    assert len(tflite) == 4 and all(frozen[i] == default[i] for i in tflite)
    assert all(frozen[i] != default[i] for i in default if i not in tflite)
    assert "BatchNorm frozen" in cfg.truth_named("long").describe()
    # micro_batch_size is memory, not the recipe: the keys stay those of whole batches.
    path = _config(str(tmp_path / "m.toml"), data, str(tmp_path / "out"),
                   ft.replace('epochs = 6\n', 'epochs = 6\nbatch_norm = "frozen"\nmicro_batch_size = 8\n'))
    micro = {u.id: u.key for u in make_plan(load_config(path)).units["truth"] if "__long__" in u.id}
    assert micro == {i: k for i, k in frozen.items() if "mobilenet_v2" not in i}


@pytest.mark.parametrize("truths,message", [
    (TRUTHS.replace('name = "long"', 'name = "short"'), "ground truth names repeat"),
    (TRUTHS.replace('datasets = ["toy"]', 'datasets = ["toy3"]'), "datasets ['toy3'] are not datasets of this study"),
    (TRUTHS + '\n[[ground_truth]]\nname = "x"\nrecipe = "none"\n', "cannot be combined"),
    (TRUTHS.replace('seeds = [0, 1]', 'seeds = 0'), "seeds must be an array"),
    (TRUTHS.replace('epochs = 6', 'epochs = 6\noptimizer = "adamw"'), "applies to recipe = 'finetune' only"),
    (TRUTHS.replace('recipe = "probe"\nsearch = "grid:2x1"\nepochs = 6',
                    'recipe = "finetune"\nsearch = "grid:2x1"\nepochs = 6\noptimizer = "adam"'),
     "optimizer must be one of"),
    (TRUTHS.replace('epochs = 6', 'epochs = 6\nbatch_norm = "frozen"'), "batch_norm = 'frozen' applies to recipe = 'finetune' only"),
    (TRUTHS.replace('recipe = "probe"\nsearch = "grid:2x1"\nepochs = 6',
                    'recipe = "finetune"\nsearch = "grid:2x1"\nepochs = 6\nbatch_norm = "eval"'),
     "batch_norm must be one of"),
    (TRUTHS.replace('epochs = 6', 'epochs = 6\nmicro_batch_size = 4'), "micro_batch_size applies to recipe = 'finetune' only"),
    (TRUTHS.replace('recipe = "probe"\nsearch = "grid:2x1"\nepochs = 6',
                    'recipe = "finetune"\nsearch = "grid:2x1"\nepochs = 6\nbatch_norm = "frozen"\nmicro_batch_size = 5'),
     "micro_batch_size must be 0 .* or divide batch_size = 16, got 5"),
    (TRUTHS.replace('recipe = "probe"\nsearch = "grid:2x1"\nepochs = 6',
                    'recipe = "finetune"\nsearch = "grid:2x1"\nepochs = 6\nmicro_batch_size = 4'),
     "ground truth 'long': micro_batch_size with batch_norm = 'train' would normalise by micro-batch statistics"),
])
def test_bad_ground_truth_tables(tmp_path, truths, message):
    from jscore.study import load_config

    data = h.make_dataset(str(tmp_path / "toy.npz"))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(_config(str(tmp_path / "s.toml"), data, str(tmp_path / "out"), truths))


@pytest.mark.parametrize("limits,message", [
    ("{trian = 5}", "names split 'trian'"),
    ("{train = 0}", "must be a positive integer"),
    ("5", "must be a table"),
])
def test_bad_budgets(tmp_path, limits, message):
    from jscore.study import load_config

    data = h.make_dataset(str(tmp_path / "toy.npz"))
    path = _config(str(tmp_path / "s.toml"), data, str(tmp_path / "out"), TRUTHS)
    text = open(path).read().replace("{train = 30, test = 12}", limits)
    open(path, "w").write(text)
    with pytest.raises(ValueError, match=message):
        load_config(path)


def test_study_with_two_ground_truths_reports_their_agreement(tmp_path):
    from scipy.stats import kendalltau

    from jscore.cli import main

    data = h.make_dataset(str(tmp_path / "toy.npz"))
    out = str(tmp_path / "out")
    cfg = _config(str(tmp_path / "s.toml"), data, out, TRUTHS)
    assert main(["study", cfg, "--no-progress"]) == 0
    short = pd.read_csv(os.path.join(out, "results_short.csv"))
    long = pd.read_csv(os.path.join(out, "results_long.csv"))
    assert sorted(long["seed"].unique()) == [0, 1] and list(short["seed"].unique()) == [0]
    assert os.path.isfile(os.path.join(out, "evaluation_short", "summary.csv"))
    assert os.path.isfile(os.path.join(out, "evaluation_long", "summary.csv"))
    # The budgets held: 30 training images scored, 12 test images per model.
    assert (short["n_test"] == 12).all()
    # Agreement: Kendall tau of the long truth (mean over its seeds) against the short one, by SciPy.
    a = short.drop_duplicates(["model"]).set_index("model")["test_balanced_accuracy"]
    b = long.drop_duplicates(["model", "seed"]).groupby("model")["test_balanced_accuracy"].mean()
    want = kendalltau(a.loc[b.index].to_numpy(), b.to_numpy()).statistic
    md = open(os.path.join(out, "report.md")).read()
    assert "## Agreement between ground truths" in md
    row = next(line for line in md.splitlines() if line.startswith("| long | short | toy |"))
    got = row.split("|")[5].strip().split(" ")[0]
    if np.isnan(want):
        assert got == "n/a"
    else:
        assert float(got) == pytest.approx(want, abs=0.005)
    assert "## Compute spent" in md and "truth (long)" in md
    # Against the other ground truth as the reference: short scored against long, the same tau
    # (Kendall's tau is symmetric), in its own tidy table that jscore evaluate reads.
    assert "### Against ground truth `long`" in md
    other = pd.read_csv(os.path.join(out, "agreement_long.csv"))
    assert set(other["score"]) == {"short"} and "long_test_balanced_accuracy" in other
    mine = other.set_index("model")
    np.testing.assert_allclose(mine.loc[b.index, "value"], a.loc[b.index])
    np.testing.assert_allclose(mine.loc[b.index, "long_test_balanced_accuracy"], b)
    row = next(line for line in md.splitlines() if line.startswith("| short | long | toy |"))
    got = row.split("|")[5].strip().split(" ")[0]
    assert got == "n/a" if np.isnan(want) else float(got) == pytest.approx(want, abs=0.005)


def _probe_truth_study(tmp_path, search: str, lr_range: str):
    """The plan of a study with one probe ground truth (`search` over `lr_range`, 2 epochs), run
    through its truth stage."""
    from jscore.study import load_config, make_plan, run_plan

    data = h.make_dataset(str(tmp_path / "toy.npz"))
    truths = f"""
[ground_truth]
recipe = "probe"
search = "{search}"
lr_range = {lr_range}
epochs = 2
batch_size = 16
"""
    plan = make_plan(load_config(_config(str(tmp_path / "s.toml"), data, str(tmp_path / "out"), truths)))
    run_plan(plan, stages=("extract", "score", "truth"), progress=False)
    return plan


def test_diverged_run_is_recorded_and_never_selected(tmp_path):
    """A learning rate that blows the loss up is an outcome of the search: the unit is done,
    its record says diverged, and the ground truth is the other point's run."""
    from jscore.study.report import truth_rows

    plan = _probe_truth_study(tmp_path, "grid:2x1", "[1e-2, 1e35]")
    recs = [plan.read_record(u) for u in plan.units["truth"]]
    assert all(r is not None for r in recs)  # every unit is done, none raised
    diverged = [r for r in recs if r["result"].get("status") == "diverged"]
    assert diverged and all(r["result"]["learning_rate"] > 1e30 for r in diverged)
    rows = truth_rows(plan)
    assert len(rows) == 3 and all(row["learning_rate"] == pytest.approx(1e-2) for row in rows)


def test_half_finished_search_is_left_out_and_named_in_the_report(tmp_path):
    """During a sweep (`--stages evaluate` with some runs still to do) a (dataset, backbone) whose
    search has only some of its runs finished gets no ground truth: the best of part of a search
    is not the search's answer. The report names it with its count of runs."""
    from jscore.study.report import pending_searches, truth_rows, write_study_report

    plan = _probe_truth_study(tmp_path, "grid:3x1", "[1e-3, 1.0]")
    cfg = plan.config
    full = {r["model"]: r for r in truth_rows(plan)}
    assert set(full) == {"resnet8", "mobilenet6", "resnet14"} and not pending_searches(plan)
    # Take away the chosen run of resnet14: what is left of its search would give another answer.
    chosen = [u for u in plan.units["truth"] if u.args["backbone"] == "resnet14"
              and plan.read_record(u)["result"]["learning_rate"] == pytest.approx(full["resnet14"]["learning_rate"])]
    assert len(chosen) == 1
    os.remove(plan.record_path(chosen[0]))
    rows = {r["model"]: r for r in truth_rows(plan)}
    assert set(rows) == {"resnet8", "mobilenet6"}
    for m in rows:
        assert rows[m]["balanced_accuracy"] == full[m]["balanced_accuracy"]
    assert pending_searches(plan) == [{"dataset": "toy", "backbone": "resnet14", "seed": 0, "done": 2, "planned": 3}]
    write_study_report(plan)
    md = open(os.path.join(cfg.out, "report.md")).read()
    assert "Left out of ground truth `probe` until their search finishes: toy / resnet14 (2 of 3 runs)." in md
    assert set(pd.read_csv(os.path.join(cfg.out, "results.csv"))["model"]) == {"resnet8", "mobilenet6"}
    # A search with none of its runs finished is simply not there yet, not "pending".
    for u in plan.units["truth"]:
        if u.args["backbone"] == "resnet14" and os.path.isfile(plan.record_path(u)):
            os.remove(plan.record_path(u))
    assert pending_searches(plan) == [] and {r["model"] for r in truth_rows(plan)} == {"resnet8", "mobilenet6"}


def test_restricted_run_records_what_the_full_study_finds_done(tmp_path, capsys):
    """`--datasets toy2 --truths short`: only toy2's extraction, scoring and short runs, with the
    full study's keys, so the full plan then finds exactly those done; unknown names fail first."""
    from jscore.cli import main
    from jscore.study import load_config, make_plan
    from jscore.study.plan import restrict

    data = h.make_dataset(str(tmp_path / "toy.npz"))
    data2 = h.make_dataset(str(tmp_path / "toy2.npz"), seed=1)
    path = _config(str(tmp_path / "s.toml"), data, str(tmp_path / "out"), TRUTHS, SECOND.format(data2=data2))
    plan = make_plan(load_config(path))
    part = restrict(plan, datasets=["toy2"], truths=["short"])
    assert "evaluate" not in part.units and part.units["truth"]
    assert all(u.args["dataset"] == "toy2" for s in part.units for u in part.units[s])
    assert {u.args["truth"] for u in part.units["truth"]} == {"short"}
    with pytest.raises(ValueError, match=r"--truths: \['shrot'\] not in the study"):
        restrict(plan, truths=["shrot"])
    with pytest.warns(UserWarning, match=r"--truths long: that ground truth covers datasets \['toy'\], none of"):
        idle = restrict(plan, datasets=["toy2"], truths=["long"])  # "long" covers toy only
    assert not idle.units["truth"] and idle.units["extract"]  # extraction and scoring still run
    with pytest.warns(UserWarning, match="--truths long: .* it runs nothing here"):
        assert restrict(plan, datasets=["toy2"], truths=["short", "long"]).units["truth"]  # "short" does
    assert main(["study", path, "--datasets", "toy3", "--no-progress"]) == 2
    assert "--datasets: ['toy3'] not in the study" in capsys.readouterr().err
    cfg = plan.config
    first, rest = cfg.backbones[0].name, [b.name for b in cfg.backbones[1:]]
    assert rest, "the test config needs two backbones"
    one = restrict(plan, backbones=[first])
    assert one.units["truth"] and all(u.args["backbone"] == first for s in one.units for u in one.units[s])
    other = restrict(plan, backbones=rest)  # disjoint halves cover every unit once
    for stage in one.units:
        ids = [u.id for u in one.units[stage]] + [u.id for u in other.units[stage]]
        assert sorted(ids) == sorted(u.id for u in plan.units[stage]), stage
    assert main(["study", path, "--backbones", "nonet", "--no-progress"]) == 2
    assert "--backbones: ['nonet'] not in the study" in capsys.readouterr().err

    assert main(["study", path, "--datasets", "toy2", "--truths", "short", "--stages", "extract,score,truth",
                 "--no-progress"]) == 0
    plan = make_plan(load_config(path))  # the full study, as a later plain run sees it
    done = {u.id for u in plan.all_units() if plan.is_done(u)}
    assert done == {u.id for s in part.units for u in part.units[s]}


def test_dry_run_estimates_each_ground_truth_from_its_own_records(tmp_path):
    """A finished `short` run says nothing about what a `long` run costs: each ground truth's
    estimate is the mean wall time of its own finished units times its units left; one without
    records falls back to records of earlier configs with its name, then to a default."""
    import json

    from jscore.study import estimate, format_plan, load_config, make_plan

    data = h.make_dataset(str(tmp_path / "toy.npz"))
    cfg = load_config(_config(str(tmp_path / "s.toml"), data, str(tmp_path / "out"), TRUTHS))
    plan = make_plan(cfg)
    short = [u for u in plan.units["truth"] if u.args["truth"] == "short"]
    long_ = [u for u in plan.units["truth"] if u.args["truth"] == "long"]
    os.makedirs(os.path.dirname(plan.record_path(short[0])), exist_ok=True)
    for u, wall in zip(short[:2], (2.0, 4.0)):      # two finished short units: 3 s each on average
        with open(plan.record_path(u), "w") as fh:
            json.dump({"key": u.key, "status": "done", "wall_s": wall}, fh)
    with open(plan.record_path(long_[0]), "w") as fh:   # a long record of an earlier config
        json.dump({"key": "stale", "status": "done", "wall_s": 100.0}, fh)
    est = estimate(plan)["truth"]
    assert est["by_truth"]["short"] == {"units": 6, "done": 2, "todo": 4, "estimate_s": 12.0, "per_unit_s": 3.0}
    assert est["by_truth"]["long"]["todo"] == 12 and est["by_truth"]["long"]["estimate_s"] == 1200.0
    assert est["estimate_s"] == 1212.0 and est["todo"] == 16
    text = format_plan(plan)
    assert "  short" in text and "  long" in text


def test_dry_run_costs_fine_tuning_per_backbone_image_and_epoch(tmp_path):
    """A fine-tuning run's cost is its backbone's seconds per training image and epoch (from the
    finished runs of every fine-tuning ground truth), times its epochs and its dataset's training
    images (from an extraction record, else the config's cap); a backbone not yet run costs the
    mean of the others."""
    import json

    from jscore.study import estimate, load_config, make_plan

    truths = """
[[ground_truth]]
name = "ft"
recipe = "finetune"
search = "grid:2x1"
epochs = 2
batch_size = 16

[[ground_truth]]
name = "ft_long"
recipe = "finetune"
search = "point:0.01,1e-5"
epochs = 4
batch_size = 16
datasets = ["toy"]
"""
    data = h.make_dataset(str(tmp_path / "toy.npz"))
    data2 = h.make_dataset(str(tmp_path / "toy2.npz"), seed=1)
    cfg = load_config(_config(str(tmp_path / "s.toml"), data, str(tmp_path / "out"), truths,
                              SECOND.format(data2=data2)))
    plan = make_plan(cfg)

    def record(unit, body):
        os.makedirs(os.path.dirname(plan.record_path(unit)), exist_ok=True)
        with open(plan.record_path(unit), "w") as fh:
            json.dump(body, fh)

    # toy: no extraction record, so its cap of 30 training images; toy2 (no cap): 60, recorded.
    train2 = next(u for u in plan.units["extract"] if u.args["dataset"] == "toy2" and u.args["split"] == "train")
    record(train2, {"key": "of another config", "status": "done", "result": {"num_examples": 60}})
    ft = {(u.args["dataset"], u.args["backbone"], u.id.split("__")[-2]): u
          for u in plan.units["truth"] if u.args["truth"] == "ft"}
    # resnet8: 60 s for 2 epochs of 30 images = 1 s per image-epoch; mobilenet6: 120 s, 2 s.
    for key, wall in ((("toy", "resnet8", "p000"), 60.0), (("toy", "resnet8", "p001"), 60.0),
                      (("toy", "mobilenet6", "p000"), 120.0)):
        record(ft[key], {"key": ft[key].key, "status": "done", "wall_s": wall})
    est = estimate(plan)["truth"]["by_truth"]
    # ft left: resnet8 on toy2 2 x (1 x 2 x 60); mobilenet6 on toy 1 x (2 x 2 x 30) and on toy2
    # 2 x (2 x 2 x 60); resnet14 (not run: 1.5 s) 2 x (1.5 x 2 x 30) + 2 x (1.5 x 2 x 60).
    assert est["ft"]["todo"] == 9 and est["ft"]["done"] == 3
    assert est["ft"]["estimate_s"] == pytest.approx(240 + 120 + 480 + 180 + 360)
    # ft_long (4 epochs, toy only, no run of its own) takes the same rates: 1, 2 and 1.5 s.
    assert est["ft_long"]["estimate_s"] == pytest.approx((1 + 2 + 1.5) * 4 * 30)


def test_describe_leaves_out_ranges_a_point_does_not_use():
    from jscore.study.config import GroundTruth

    assert "lr 0.0001..0.1" in GroundTruth(search="halton:4").describe()
    point = GroundTruth(search="point:0.01,1e-5").describe()
    assert "search point:0.01,1e-5," in point and ".." not in point
