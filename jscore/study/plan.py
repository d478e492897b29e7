"""The plan of a study: its units of work, each keyed by a hash of exactly what it depends on.

Stages, in order (a unit depends only on units of earlier stages):
  extract   one (dataset, backbone, split): features and source probabilities on disk
  score     one (dataset, backbone): every score on the scored split's features
  truth     one ground-truth run (dataset, backbone, search point, seed): a linear probe on the
            cached features, or full fine-tuning on the images
  evaluate  one for the study: the scores against the ground truth, and the report

A unit is done when its record (`<out>/records/<stage>/<id>.json`) carries the unit's current
key, so editing the config recomputes only the units whose inputs the edit touches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Dict, List, Optional

from jscore.study.config import StudyConfig, has_source_head, portable, scores_for

STAGES = ("extract", "score", "truth", "evaluate")
PLAN_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Unit:
    """One unit: `stage`, a readable `id` (the record's file name), `key` (sha256 of `deps`),
    `deps` (what the result depends on, JSON-able) and `args` (what the runner needs)."""

    stage: str
    id: str
    key: str
    deps: dict
    args: dict


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")[:60] or "x"


def _unit(stage: str, parts, deps: dict, args: dict) -> Unit:
    deps = {"stage": stage, "plan_version": PLAN_VERSION, **deps}
    key = _hash(deps)
    return Unit(stage, "__".join(_safe(p) for p in parts), key, deps, args)


def backbone_deps(cfg: StudyConfig, spec) -> dict:
    """Everything that decides a backbone's weights and inputs. Not where its files are found
    (`models_dir`): a published checkpoint is its name (its bytes are fixed by their sha256), plus
    the version of jscore's import of it when that is above 1."""
    from jscore.backbones.pretrained import PRETRAINED

    deps = {"name": spec.name, "num_source_classes": spec.num_source_classes, "weights": portable(spec.weights, cfg),
            "image_size": cfg.image_size, "init_seed": cfg.seed}
    entry = PRETRAINED.get(spec.name)
    if entry is not None and entry.numerics > 1:
        deps["numerics"] = entry.numerics
    return deps


def has_batch_norm(name: str) -> bool:
    """Whether backbone `name` may have BatchNorm layers whose mode a fine-tuning recipe sets.
    False only for what is known to have none: the TFLite imports (batch norm folded into the
    convolutions; their `apply` ignores `train`)."""
    from jscore.backbones.pretrained import PRETRAINED

    entry = PRETRAINED.get(name)
    return entry is None or entry.format != "tflite"


def score_versions(names) -> dict:
    """The implementation versions above 1 of the scores `names` (empty when all are at 1)."""
    from jscore.scorers import REGISTRY

    return {n: REGISTRY[n].version for n in names if n in REGISTRY and REGISTRY[n].version > 1}


def data_deps(cfg: StudyConfig, d, spec: str, split: str) -> dict:
    """What decides the images of one split: the dataset (its path relative to the config file),
    the split, and the subset budget of that split."""
    deps = {"data": portable(spec, cfg), "split": split}
    limit = d.limit(split) if spec == d.data else None
    if limit is not None:
        deps["max_examples"] = limit
        deps["subset_seed"] = cfg.seed
    return deps


@dataclasses.dataclass
class Plan:
    """The units of a study per stage, in execution order."""

    config: StudyConfig
    units: Dict[str, List[Unit]]

    def all_units(self) -> List[Unit]:
        return [u for s in STAGES for u in self.units.get(s, [])]

    def record_path(self, unit: Unit) -> str:
        return os.path.join(self.config.out, "records", unit.stage, unit.id + ".json")

    def read_record(self, unit: Unit) -> Optional[dict]:
        """The unit's record when it is done with the current key, else None."""
        path = self.record_path(unit)
        try:
            with open(path) as fh:
                rec = json.load(fh)
        except (OSError, ValueError):
            return None
        return rec if rec.get("key") == unit.key and rec.get("status") == "done" else None

    def is_done(self, unit: Unit) -> bool:
        return self.read_record(unit) is not None


def _splits(cfg: StudyConfig, d) -> List[tuple]:
    """(split name in the study, dataset spec, split in the dataset) that the plan extracts."""
    out = [("score", d.data, cfg.score_split)]
    if any(g.recipe == "probe" and g.covers(d.name) for g in cfg.truths()):
        out += [("train", d.data, d.train), ("val", d.data, d.val), ("test", d.data, d.test)]
        out += [(name, spec, split) for name, spec, split in d.extra_tests]
    seen, unique = set(), []
    for role, spec, split in out:  # the scored split is usually the training split: extract it once
        if (spec, split) not in seen:
            seen.add((spec, split))
            unique.append((role, spec, split))
    return unique


def make_plan(cfg: StudyConfig) -> Plan:
    """Every unit of `cfg` with its key (no file is read or written)."""
    from jscore.finetune.search import parse_search

    truths = [g for g in cfg.truths() if g.recipe != "none"]
    several = len(truths) > 1
    units: Dict[str, List[Unit]] = {s: [] for s in STAGES}
    extract_of = {}  # (dataset, backbone, spec, split) -> unit
    score_units, truth_units = [], []
    for d in cfg.datasets:
        for b in cfg.backbones:
            bdeps = backbone_deps(cfg, b)
            for role, spec, split in _splits(cfg, d):
                u = _unit("extract", ["extract", d.name, b.name, split if spec == d.data else f"{role}-{split}"],
                          {"backbone": bdeps, **data_deps(cfg, d, spec, split)},
                          {"dataset": d.name, "backbone": b.name, "data": spec, "split": split,
                           "max_examples": d.limit(split) if spec == d.data else None})
                units["extract"].append(u)
                extract_of[(d.name, b.name, spec, split)] = u
            src = extract_of[(d.name, b.name, d.data, cfg.score_split)]
            head = has_source_head(b)
            names = scores_for(cfg, b, head is not False)
            sdeps = {"features": src.key, "scores": list(names), "options": cfg.score_options, "seed": cfg.seed}
            versions = score_versions(names)
            if versions:
                sdeps["versions"] = versions
            u = _unit("score", ["score", d.name, b.name], sdeps,
                      {"dataset": d.name, "backbone": b.name, "features": src.id, "scores": list(names)})
            units["score"].append(u)
            score_units.append(u)
            for gt in truths:
                if gt.covers(d.name):
                    _truth_units(cfg, gt, several, d, b, bdeps, extract_of, units, truth_units)
    # Cheap ground truths first (a probe trains on cached features in seconds; fine-tuning takes
    # minutes per run), so their results are complete long before a fine-tuning sweep is.
    units["truth"].sort(key=lambda u: cfg.truth_named(u.args["truth"]).recipe == "finetune")
    if truths:
        units["evaluate"].append(_unit(
            "evaluate", ["evaluate"],
            {"scores": sorted(u.key for u in score_units), "truth": sorted(u.key for u in truth_units),
             "bootstrap": cfg.bootstrap, "seed": cfg.seed,
             "truths": [[g.name, g.select_by, g.truth] for g in truths],
             "datasets": [d.name for d in cfg.datasets], "backbones": [b.name for b in cfg.backbones]},
            {}))
    return Plan(cfg, units)


def restrict(plan: Plan, *, datasets=None, truths=None, backbones=None) -> Plan:
    """The units of `plan` that belong to the named datasets, ground truths and backbones (None:
    all), without the evaluation (it needs every unit). Keys and ids are those of the full plan,
    so what a restricted run records is what the full study finds done (`jscore study
    --datasets/--truths/--backbones`; e.g. two processes on disjoint backbones share a long
    fine-tuning sweep).

    Raises ValueError naming an unknown dataset, ground truth or backbone; warns about a named
    ground truth that covers none of the named datasets (it runs nothing there)."""
    cfg = plan.config
    for what, names, known in (("--datasets", datasets, [d.name for d in cfg.datasets]),
                               ("--truths", truths, [g.name for g in cfg.truths()]),
                               ("--backbones", backbones, [b.name for b in cfg.backbones])):
        unknown = sorted(set(names or ()) - set(known))
        if unknown:
            raise ValueError(f"{what}: {unknown} not in the study (it has {known})")
    if datasets is not None and truths is not None:  # a truth asked for on datasets it does not cover
        idle = [f"--truths {gt.name}: that ground truth covers datasets {list(gt.datasets)}, none of --datasets "
                f"{sorted(datasets)}" for gt in cfg.truths()
                if gt.name in truths and not any(gt.covers(d) for d in datasets)]
        if idle:  # a warning, not an error: the run may be for the extract and score stages
            import warnings

            warnings.warn("; ".join(idle) + ": it runs nothing here", UserWarning, stacklevel=2)
    keep = {}
    for stage, units in plan.units.items():
        if stage == "evaluate":
            continue
        keep[stage] = [u for u in units
                       if (datasets is None or u.args["dataset"] in datasets)
                       and (backbones is None or u.args["backbone"] in backbones)
                       and (truths is None or stage != "truth" or u.args["truth"] in truths)]
    return Plan(cfg, keep)


def _truth_units(cfg, gt, several: bool, d, b, bdeps: dict, extract_of: dict, units: dict, truth_units: list) -> None:
    """The ground-truth units of one (ground truth, dataset, backbone): search points x seeds."""
    from jscore.finetune.choices import drop_legacy_defaults
    from jscore.finetune.search import parse_search

    points = parse_search(gt.search, lr_range=gt.lr_range, wd_range=gt.wd_range)
    recipe = drop_legacy_defaults({k: v for k, v in dataclasses.asdict(gt).items()  # earlier records keep their keys
                                   if k not in ("seeds", "search", "truth", "select_by", "name", "datasets",
                                                "micro_batch_size")})
    if gt.recipe == "probe":
        inputs = {role: extract_of[(d.name, b.name, spec, split)].key
                  for role, spec, split in [("train", d.data, d.train), ("val", d.data, d.val),
                                            ("test", d.data, d.test)] + list(d.extra_tests)}
        recipe.pop("augment")
        feature_ids = {role: extract_of[(d.name, b.name, spec, split)].id
                       for role, spec, split in [("train", d.data, d.train), ("val", d.data, d.val),
                                                 ("test", d.data, d.test)] + list(d.extra_tests)}
    else:
        if not has_batch_norm(b.name):
            recipe.pop("batch_norm", None)  # no BatchNorm (folded into the weights): "frozen" changes nothing
        inputs = {"backbone": bdeps, "splits": [data_deps(cfg, d, d.data, s) for s in (d.train, d.val, d.test)],
                  "extra_tests": [[n, portable(sp, cfg), sl] for n, sp, sl in d.extra_tests]}
        feature_ids = None
    prefix = ["truth", gt.name] if several else ["truth"]
    for seed in gt.seeds:
        for i, p in enumerate(points):
            u = _unit("truth", prefix + [d.name, b.name, f"p{i:03d}", f"s{seed}"],
                      {"inputs": inputs, "recipe": recipe, "learning_rate": p.learning_rate,
                       "weight_decay": p.weight_decay, "seed": seed},
                      {"dataset": d.name, "backbone": b.name, "features": feature_ids, "truth": gt.name,
                       "learning_rate": p.learning_rate, "weight_decay": p.weight_decay, "seed": seed})
            units["truth"].append(u)
            truth_units.append(u)


# Rough seconds per unit on a 2-core CPU when no record of the stage exists yet (the estimate
# uses the mean wall time of the stage's finished units once there are some).
_DEFAULT_COST = {"extract": 8.0, "score": 3.0, "truth": 6.0, "evaluate": 20.0}


def _earlier_wall_times(plan: Plan, stage: str, prefix: str) -> list:
    """Wall times of up to 50 records of `stage` whose id starts with `prefix`, whatever their
    key: records of earlier configs still say what such a unit costs."""
    folder = os.path.join(plan.config.out, "records", stage)
    times = []
    for f in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not f.startswith(prefix):
            continue
        try:
            with open(os.path.join(folder, f)) as fh:
                times.append(float(json.load(fh).get("wall_s", 0.0)))
        except (OSError, ValueError):
            pass
        if len(times) == 50:
            break
    return times


def _estimate_units(plan: Plan, units, stage: str, prefix: str, default: float) -> dict:
    times, done = [], 0
    for u in units:
        rec = plan.read_record(u)
        if rec is not None:
            done += 1
            times.append(float(rec.get("wall_s", 0.0)))
    if not times:
        times = _earlier_wall_times(plan, stage, prefix)
    per = sum(times) / len(times) if times else default
    return {"units": len(units), "done": done, "todo": len(units) - done,
            "estimate_s": round(per * (len(units) - done), 1), "per_unit_s": round(per, 2)}


def _train_sizes(plan: Plan) -> Dict[str, float]:
    """Training images per dataset: the `num_examples` of an extraction record of its training
    split (any backbone, any key: a split's size does not depend on the backbone), else the
    config's cap on the split; datasets with neither are left out."""
    sizes = {}
    train_of = {d.name: (d.data, d.train) for d in plan.config.datasets}
    for u in plan.units.get("extract", []):
        d = u.args["dataset"]
        if d in sizes or (u.args["data"], u.args["split"]) != train_of.get(d):
            continue
        try:
            with open(plan.record_path(u)) as fh:
                n = json.load(fh).get("result", {}).get("num_examples")
        except (OSError, ValueError):
            continue
        if n:
            sizes[d] = float(n)
    for d in plan.config.datasets:
        if d.name not in sizes and d.limit(d.train):
            sizes[d.name] = float(d.limit(d.train))
    return sizes


def _fine_tuning_rates(plan: Plan, records: Dict[str, Optional[dict]]) -> Optional[dict]:
    """Seconds per training image per epoch of each backbone's finished fine-tuning runs (every
    fine-tuning ground truth of the study pooled; wall time, compile included), with the training
    sizes they were computed with: {"by_backbone": {name: s}, "all": s, "sizes": {dataset: n}}.
    `records`: unit id -> its current record or None, for the fine-tuning units. None when no
    fine-tuning run of the study has finished."""
    cfg = plan.config
    sizes = _train_sizes(plan)
    per_backbone: Dict[str, list] = {}
    for u in plan.units.get("truth", []):
        if u.id not in records or u.args["dataset"] not in sizes:
            continue
        gt = cfg.truth_named(u.args["truth"])
        rec = records[u.id]
        if rec is None or not rec.get("wall_s"):
            continue
        rate = float(rec["wall_s"]) / (gt.epochs * sizes[u.args["dataset"]])
        per_backbone.setdefault(u.args["backbone"], []).append(rate)
    if not per_backbone:
        return None
    means = {b: sum(r) / len(r) for b, r in per_backbone.items()}
    return {"by_backbone": means, "all": sum(means.values()) / len(means), "sizes": sizes}


def _estimate_fine_tuning(gt, units, records: Dict[str, Optional[dict]], rates: dict) -> dict:
    """A fine-tuning ground truth's units left, each costed as its backbone's seconds per image
    and epoch (`_fine_tuning_rates`; the mean over backbones for one not yet run) times its
    epochs times its dataset's training images: a zoo's runs differ by 40x between backbones,
    and a sweep extended to a larger dataset costs more per run."""
    sizes = rates["sizes"]
    typical = sum(sizes.values()) / len(sizes)
    done, left = 0, 0.0
    for u in units:
        if records[u.id] is not None:
            done += 1
            continue
        rate = rates["by_backbone"].get(u.args["backbone"], rates["all"])
        left += rate * gt.epochs * sizes.get(u.args["dataset"], typical)
    todo = len(units) - done
    return {"units": len(units), "done": done, "todo": todo, "estimate_s": round(left, 1),
            "per_unit_s": round(left / todo, 2) if todo else 0.0}


def estimate(plan: Plan) -> Dict[str, dict]:
    """Per stage: units, done, todo, and an estimate of the remaining seconds: the mean wall time
    of the stage's finished units (or of earlier configs' records) times the units left. The
    truth stage is estimated per ground truth (a probe takes seconds, a fine-tuning run minutes)
    and carries the parts under "by_truth"; a fine-tuning ground truth's runs are costed one by
    one from their backbone's seconds per image and epoch (`_estimate_fine_tuning`)."""
    out = {}
    for stage in STAGES:
        units = plan.units.get(stage, [])
        if stage != "truth":
            out[stage] = _estimate_units(plan, units, stage, f"{stage}__", _DEFAULT_COST[stage])
            continue
        parts = {}
        # Each fine-tuning run's record read once, for its rate and for whether it is done.
        records = {u.id: plan.read_record(u) for u in units
                   if plan.config.truth_named(u.args["truth"]).recipe == "finetune"}
        rates = _fine_tuning_rates(plan, records)
        for gt in plan.config.truths():
            mine = [u for u in units if u.args.get("truth") == gt.name]
            if not mine:
                continue
            if gt.recipe == "finetune" and rates is not None:
                parts[gt.name] = _estimate_fine_tuning(gt, mine, records, rates)
                continue
            # First-run guess for fine-tuning: about a minute per epoch of an 800-image subset for
            # the zoo's mobile backbones on 2 CPU cores (measured 15-220 s per epoch, 2026-11-30).
            default = 60.0 * gt.epochs if gt.recipe == "finetune" else _DEFAULT_COST["truth"]
            parts[gt.name] = _estimate_units(plan, mine, stage, f"truth__{_safe(gt.name)}__", default)
        total = {k: sum(p[k] for p in parts.values()) for k in ("units", "done", "todo", "estimate_s")}
        total["estimate_s"] = round(total["estimate_s"], 1)
        total["per_unit_s"] = round(total["estimate_s"] / total["todo"], 2) if total["todo"] else 0.0
        out[stage] = {**total, "by_truth": parts}
    return out


def format_plan(plan: Plan) -> str:
    """The `--dry-run` text: units per stage, how many are done, and the estimated cost."""
    cfg = plan.config
    est = estimate(plan)
    lines = [f"study {cfg.name!r}: {len(cfg.datasets)} dataset(s) x {len(cfg.backbones)} backbone(s); "
             f"output {cfg.out}",
             *[f"ground truth {g.name!r}: {g.describe()}" for g in cfg.truths()],
             ]
    parts = est["truth"].get("by_truth", {}) if "truth" in est else {}
    width = max([10] + [len(n) + 3 for n in parts])

    def row(label, e):
        return f"{label:<{width}}{e['units']:>7}{e['done']:>7}{e['todo']:>7}{e['estimate_s']:>10.0f}"

    lines.append(f"{'stage':<{width}}{'units':>7}{'done':>7}{'todo':>7}{'est. s':>10}")
    for stage, e in est.items():
        if e["units"]:
            lines.append(row(stage, e))
        if stage == "truth" and len(parts) > 1:   # a probe takes seconds, a fine-tuning run minutes
            lines += [row("  " + name, part) for name, part in parts.items()]
    total = sum(e["estimate_s"] for e in est.values())
    lines.append(f"estimated time left: about {total:.0f} s on this machine (first-run guesses until records "
                 "of a stage exist; compile time included)")
    return "\n".join(lines)
