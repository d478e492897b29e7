"""Run a study's plan: skip finished units, run the rest, one record per unit.

Each unit's record is written atomically (a temporary file, then `os.replace`) when the unit
finishes, so an interruption loses at most the unit in progress (and extraction resumes even
inside a unit from its finished chunks). With `jax.distributed` initialised, every process runs
the units whose position in the plan is its `jax.process_index()` modulo `jax.process_count()`
and waits, at the end of each stage, for the other processes' records (the output folder must be
shared); the records are the merge. With `claim=True` (`jscore study --claim`) independent
processes share the units instead, each taking the next free one by a claim file
(`jscore.study.claims`): any number, started at any time, the load balanced as they go.

The runner orchestrates the stages (`jscore.features`, `jscore.api.score`, `jscore.finetune`,
`jscore.evaluate`); it adds no scoring or training logic of its own.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Callable, List, Optional

from jscore.study.plan import STAGES, Plan, Unit


def _write_json_atomic(path: str, obj: dict) -> None:
    _write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True, default=_json_default))


def _json_default(v):
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


class Context:
    """What the units of one run share: the config, built backbones and their variables."""

    def __init__(self, plan: Plan):
        self.plan, self.cfg = plan, plan.config
        self._backbones = {}

    def backbone(self, name: str):
        """(Backbone, variables) for a study backbone, built once per process."""
        if name not in self._backbones:
            from jscore.backbones import get_backbone, init_variables

            spec = next(b for b in self.cfg.backbones if b.name == name)
            kw = {}
            if spec.num_source_classes is not None:
                kw["num_source_classes"] = spec.num_source_classes
            if self.cfg.models_dir is not None:
                kw["models_dir"] = self.cfg.models_dir
            if self.cfg.image_size is not None:
                kw["image_size"] = self.cfg.image_size
            bb = get_backbone(name, weights=spec.weights, **kw)
            self._backbones[name] = (bb, init_variables(bb, self.cfg.seed))
        return self._backbones[name]

    def open_split(self, spec: str, split: str, max_examples=None):
        """One split of a dataset, cut to its class-stratified budget when it has one."""
        from jscore.data import open_dataset

        ds = open_dataset(spec, split)
        if max_examples is not None:
            from jscore.data.subset import stratified_subset

            ds = stratified_subset(ds, int(max_examples), seed=self.cfg.seed)
        return ds

    def features_dir(self) -> str:
        return os.path.join(self.cfg.out, "features")

    def features_path(self, extract_id: str) -> str:
        """The features file of a finished extraction unit (the record's path, or where it was
        extracted again: `regenerate_features`)."""
        unit = next(u for u in self.plan.units["extract"] if u.id == extract_id)
        rec = self.plan.read_record(unit)
        if rec is None:
            raise RuntimeError(f"features of {extract_id} are not extracted yet")
        path = features_file(self.plan, unit, rec)
        if path is None:
            raise RuntimeError(f"features file of {extract_id} ({rec['result']['path']}) is missing and was not "
                               "extracted again")
        return path


def _alias_path(plan: Plan, extract_unit: Unit) -> str:
    return os.path.join(plan.config.out, "features", extract_unit.id + ".path")


def features_file(plan: Plan, extract_unit: Unit, rec: Optional[dict] = None) -> Optional[str]:
    """The features file of a finished extraction on this machine, or None when it is gone.

    The records are what a study keeps (and publishes); the feature files are a cache beside
    them. One extracted again may have another name than its record's (the features cache key
    holds the dataset's absolute path, which a clone elsewhere changes): `features/<unit id>.path`
    then names it, so the published record is never rewritten.
    """
    rec = rec if rec is not None else plan.read_record(extract_unit)
    if rec is None:
        return None
    path = os.path.join(plan.config.out, rec["result"]["path"])
    if os.path.isfile(path):
        return path
    try:
        with open(_alias_path(plan, extract_unit)) as fh:
            path = os.path.join(plan.config.out, fh.read().strip())
    except OSError:
        return None
    return path if os.path.isfile(path) else None


PINNED = ("weights_fingerprint", "num_examples", "num_classes", "feature_dim", "num_source_classes", "skipped")


def regenerate_features(ctx: "Context", unit: Unit) -> str:
    """Extract a finished unit's missing features again -> their path. What the record pins
    (`PINNED`: the weights fingerprint, the example, class and feature counts) must come out
    the same, else ValueError naming the record to delete. Every ValueError starts with
    "extract unit <id>:"."""
    rec = ctx.plan.read_record(unit)
    print(f"jscore study: {unit.id}: features file {rec['result']['path']} missing, extracting again",
          file=sys.stderr)
    try:
        again = run_extract(ctx, unit)
    except ValueError as err:
        raise ValueError(f"extract unit {unit.id}: extracting its missing features again: {err}") from err
    changed = [f"{k} {rec['result'][k]} -> {again[k]}" for k in PINNED
               if k in rec["result"] and rec["result"][k] != again[k]]
    if changed:
        raise ValueError(f"extract unit {unit.id}: extracting its missing features again does not give what its record "
                         f"holds ({'; '.join(changed)}): the backbone or the data changed since the record was "
                         f"written; delete {ctx.plan.record_path(unit)} to extract it afresh")
    if again["path"] != rec["result"]["path"]:
        _write_text_atomic(_alias_path(ctx.plan, unit), again["path"])
    return os.path.join(ctx.cfg.out, again["path"])


def _write_text_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def features_to_regenerate(plan: Plan, stages=STAGES, readers: Optional[dict] = None) -> List[Unit]:
    """The finished extraction units, in plan order, whose features file is gone and that an
    unfinished unit of `stages` reads (a scoring, a probe). `readers`: `regeneration_readers`'
    answer when the caller has it (it reads every record of the plan)."""
    readers = regeneration_readers(plan, stages) if readers is None else readers
    return [u for u in plan.units.get("extract", []) if u.id in readers]


def regeneration_readers(plan: Plan, stages) -> dict:
    """{extract unit id: the first unfinished unit that reads it} for finished extractions whose
    features file is gone."""
    extracts = {u.id: u for u in plan.units.get("extract", [])}
    gone, readers = {}, {}
    for stage in stages:
        if stage not in ("score", "truth"):
            continue
        for u in plan.units.get(stage, []):
            ids = u.args.get("features")
            if ids is None:
                continue
            ids = list(ids.values()) if isinstance(ids, dict) else [ids]
            if all(e in gone for e in ids) or plan.is_done(u):
                continue
            for e in ids:
                if e not in gone and e in extracts:
                    ex = extracts[e]
                    gone[e] = plan.is_done(ex) and features_file(plan, ex) is None
                    if gone[e]:
                        readers[e] = u.id
    return readers


def count_params(variables) -> int:
    """Parameters of a variables pytree: its "params" collection when it has one."""
    import jax
    import numpy as np

    tree = variables.get("params", variables) if isinstance(variables, dict) else variables
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def run_extract(ctx: Context, unit: Unit) -> dict:
    from jscore.features import extract, load_features

    a = unit.args
    bb, variables = ctx.backbone(a["backbone"])
    ds = ctx.open_split(a["data"], a["split"], a.get("max_examples"))
    path = extract(bb, ds, ctx.features_dir(), variables=variables, batch_size=ctx.cfg.batch_size, progress=False)
    meta = load_features(path)["metadata"]
    return {"path": os.path.relpath(path, ctx.cfg.out), "num_examples": meta["num_examples"],
            "feature_dim": meta["feature_dim"], "num_source_classes": meta["num_source_classes"],
            "num_classes": meta["num_classes"], "weights_fingerprint": meta["weights_fingerprint"],
            "num_params": count_params(variables), "skipped": len(meta.get("skipped", []))}


def reusable_scores(path: str, deps: dict, names: list):
    """(kept, todo): the values of a score unit's earlier record (at `path`, any key) that still
    hold, and the names to compute. A value holds when the record is done, was computed from the
    same features with the same options and seed, and its score (and every component of a combined
    score) has the same implementation version. No usable record: ({}, names)."""
    from jscore.scorers import REGISTRY

    try:
        with open(path) as fh:
            rec = json.load(fh)
    except (OSError, ValueError):
        return {}, list(names)
    old = rec.get("deps", {})
    values = (rec.get("result") or {}).get("scores") or {}
    same_inputs = all(old.get(k) == deps.get(k) for k in ("features", "options", "seed"))
    if rec.get("status") != "done" or not same_inputs:
        return {}, list(names)
    before, now = old.get("versions", {}), deps.get("versions", {})

    def unchanged(n):
        spec = REGISTRY.get(n)
        parts = [n] + list(getattr(spec, "components", None) or ())
        return all(before.get(p, 1) == now.get(p, 1) for p in parts)

    listed = set(old.get("scores", []))
    kept = {n: values[n] for n in names if n in listed and n in values and unchanged(n)}
    # Unchanged scores the record listed but has no value for were left out by `score` (too few
    # samples for them): they stay out. Scores it did not list are new: computed.
    return kept, [n for n in names if n not in listed or not unchanged(n)]


def run_score(ctx: Context, unit: Unit) -> dict:
    from jscore.api import score
    from jscore.features import load_features

    a = unit.args
    f = load_features(ctx.features_path(a["features"]))
    source = f.get("source_probs")
    names = list(a["scores"])
    kept, todo = reusable_scores(ctx.plan.record_path(unit), unit.deps, names)
    if kept and todo:
        # Only some scores changed version: the rest keep their recorded values (same features,
        # options, seed and implementation), the changed ones are computed.
        values = score(f["features"], f["labels"], source_probs=source, scores=todo,
                       num_classes=f["num_classes"], seed=ctx.cfg.seed, **ctx.cfg.score_options)
        values = {**kept, **{n: values[n] for n in todo if n in values}}
        values = {n: values[n] for n in names if n in values}
        return {"scores": values, "num_examples": int(len(f["labels"])), "num_classes": int(f["num_classes"]),
                "reused": sorted(kept)}
    if "all" in ctx.cfg.scores:
        # "all" lets `score` choose: the source scores only with a head (known once the features
        # are read, e.g. for hf: ids), and none that this sample is too small for (a warning says which).
        values = score(f["features"], f["labels"], source_probs=source, scores="all", num_classes=f["num_classes"],
                       seed=ctx.cfg.seed, **ctx.cfg.score_options)
        values = {n: v for n, v in values.items() if n in names}
    else:
        values = score(f["features"], f["labels"], source_probs=source, scores=names,
                       num_classes=f["num_classes"], seed=ctx.cfg.seed, **ctx.cfg.score_options)
    return {"scores": values, "num_examples": int(len(f["labels"])), "num_classes": int(f["num_classes"])}


def _truth_of(ctx: Context, a: dict):
    return ctx.cfg.truth_named(a.get("truth") or ctx.cfg.ground_truth.name)


def _train_config(ctx: Context, a: dict):
    from jscore.finetune.train import TrainConfig

    gt = _truth_of(ctx, a)
    return TrainConfig(learning_rate=a["learning_rate"], weight_decay=a["weight_decay"], epochs=gt.epochs,
                       batch_size=gt.batch_size, mode="probe" if gt.recipe == "probe" else "full",
                       augment=gt.augment, seed=a["seed"], head_init=gt.head_init, optimizer=gt.optimizer,
                       batch_norm=gt.batch_norm, micro_batch_size=gt.micro_batch_size)


def run_dir_for(out: str, unit: Unit) -> str:
    """The checkpoint folder of a fine-tuning unit, `<out>/runs/<unit id>`, holding its key: a
    folder left by a unit of the same id but another key (a changed recipe or code version) is
    emptied first, so a run never resumes from another configuration's checkpoint."""
    import shutil

    run_dir = os.path.join(out, "runs", unit.id)
    key_file = os.path.join(run_dir, "unit_key")
    if os.path.isdir(run_dir):
        try:
            with open(key_file) as f:
                same = f.read().strip() == unit.key
        except OSError:
            same = False
        if not same:
            shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    with open(key_file, "w") as f:
        f.write(unit.key)
    return run_dir


def run_truth(ctx: Context, unit: Unit) -> dict:
    import jax

    from jscore.finetune.loop import DivergedError, fit

    a = unit.args
    gt = _truth_of(ctx, a)
    d = next(x for x in ctx.cfg.datasets if x.name == a["dataset"])
    config = _train_config(ctx, a)
    devices = jax.local_devices()
    if gt.recipe == "probe":
        from jscore.finetune.probe import feature_backbone, load_feature_split, probe_config
        from jscore.finetune.train import identity_input_fn

        splits = {}
        for role, eid in a["features"].items():
            splits[role], num_classes = load_feature_split(ctx.features_path(eid))
        train, val = splits.pop("train"), splits.pop("val")
        tests = {"test": splits.pop("test"), **splits}
        # One device: a probe on [N, D] features is too small to gain from data parallelism, and
        # its numbers then do not depend on how many devices a process has.
        try:
            result = fit(feature_backbone(train.inputs.shape[1]), {}, train, val, tests, num_classes,
                         probe_config(config), identity_input_fn, devices=devices[:1])
        except DivergedError as err:
            result = {"status": "diverged", "error": str(err)}
    else:
        from jscore.finetune.data import load_split
        from jscore.finetune.train import image_input_fn

        bb, variables = ctx.backbone(a["backbone"])
        size = bb.preprocess.image_size
        load_size = max(bb.preprocess.resize_size, size)
        named = [("train", d.data, d.train), ("val", d.data, d.val), ("test", d.data, d.test)] + list(d.extra_tests)
        loaded = {}
        for role, spec, split in named:
            ds = ctx.open_split(spec, split, d.limit(split) if spec == d.data else None)
            num_classes = ds.num_classes if role == "train" else num_classes
            loaded[role] = load_split(ds, load_size)
        train, val = loaded.pop("train"), loaded.pop("val")
        tests = {"test": loaded.pop("test"), **loaded}
        # Checkpoints (resume inside a run) only in a single process: each process trains its own units.
        run_dir = run_dir_for(ctx.cfg.out, unit) if jax.process_count() == 1 else None
        try:
            result = fit(bb, variables, train, val, tests, num_classes, config,
                         image_input_fn(bb.preprocess, size, config.augment, config.augment_config),
                         run_dir=run_dir, devices=devices)
        except DivergedError as err:
            # A diverged run is an outcome of the search, not a failure of the study (as in
            # `jscore.finetune.sweep`): recorded, and left out when the ground truth is selected.
            result = {"status": "diverged", "error": str(err)}
    result.pop("history", None)
    result.update({"model": a["backbone"], "dataset": a["dataset"], "learning_rate": a["learning_rate"],
                   "weight_decay": a["weight_decay"], "seed": a["seed"], "mode": config.mode,
                   "epochs": config.epochs, "num_classes": num_classes, "test_size": int(len(tests["test"].labels)),
                   "extra_tests": [k for k in tests if k != "test"]})
    return result


def run_evaluate(ctx: Context, unit: Unit) -> dict:
    from jscore.study.report import write_study_report

    return write_study_report(ctx.plan)


RUNNERS = {"extract": run_extract, "score": run_score, "truth": run_truth, "evaluate": run_evaluate}

# Result fields that are measurements of the run, not of the data (left out when comparing records).
TIMING_FIELDS = ("wall_time_s", "train_time_s", "images_per_s", "compile_s", "device", "report")


def _bar(total: int, initial: int, desc: str, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"{desc:<8}", unit="unit", dynamic_ncols=True, file=sys.stderr)


def _wait_until(left_fn: Callable[[], list], timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    """Block until `left_fn()` is empty (RuntimeError after `timeout_s`)."""
    t0 = time.time()
    while True:
        left = left_fn()
        if not left:
            return
        if time.time() - t0 > timeout_s:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {len(left)} {what}, e.g. {left[0]}")
        time.sleep(poll_s)


def _failed_since(plan: Plan, units, since: float) -> None:
    """Raise RuntimeError when one of `units` failed in another process: a `.failed` file
    beside its record written after `since` (older ones are left from earlier runs)."""
    for u in units:
        failed = plan.record_path(u) + ".failed"
        if os.path.isfile(failed) and os.path.getmtime(failed) >= since:
            with open(failed) as fh:
                raise RuntimeError(f"unit {u.id} failed in another process: {fh.read().strip()}")


def _wait_for(plan: Plan, units, timeout_s: float, since: float, poll_s: float = 0.2) -> None:
    """Block until every unit has a current record (another process's), or one has failed."""
    def left():
        units_left = [u for u in units if not plan.is_done(u)]
        _failed_since(plan, units_left, since)
        return [u.id for u in units_left]

    _wait_until(left, timeout_s, "unit(s) of other processes", poll_s)


def _write_failed(plan: Plan, unit: Unit, err: Exception) -> None:
    path = plan.record_path(unit) + ".failed"
    _write_text_atomic(path, f"{type(err).__name__}: {err}\n")


def data_needed(plan: Plan, stages=STAGES, readers: Optional[dict] = None) -> dict:
    """{dataset spec: first unfinished unit id that reads it} over `stages`. Probe ground truth
    and scores read cached features, not images, unless a finished extraction's features file is
    gone (it is then extracted again: `features_to_regenerate`). `readers`: as there."""
    needed = {}
    extracts = {u.id: u for u in plan.units.get("extract", [])}
    readers = regeneration_readers(plan, stages) if readers is None else readers
    for eid, reader in readers.items():
        needed.setdefault(extracts[eid].args["data"], reader)
    for stage in stages:
        for u in plan.units.get(stage, []):
            if stage == "extract":
                specs = [u.args["data"]]
            elif stage == "truth" and u.args.get("features") is None:
                d = next(x for x in plan.config.datasets if x.name == u.args["dataset"])
                specs = [d.data] + [spec for _, spec, _ in d.extra_tests]
            else:
                continue
            if any(s not in needed for s in specs) and not plan.is_done(u):
                for s in specs:
                    needed.setdefault(s, u.id)
    return needed


def check_data(plan: Plan, stages=STAGES, readers: Optional[dict] = None) -> None:
    """Raise one ValueError naming every dataset that an unfinished unit needs and that is not
    on this machine (a finished study reproduces its report without its data). `readers`: as
    for `features_to_regenerate`."""
    from jscore.study.config import missing_data

    needed = data_needed(plan, stages, readers)
    missing = missing_data(needed)
    if missing:
        names = {d.data: d.name for d in plan.config.datasets}
        for d in plan.config.datasets:
            names.update({spec: f"{d.name} (extra test {n})" for n, spec, _ in d.extra_tests})
        raise ValueError(f"{plan.config.source}: dataset(s) not found, needed by unfinished units: "
                         + "; ".join(f"{names.get(s, s)}: {s} (e.g. unit {needed[s]})" for s in missing))


def prepare_run(plan: Plan, stages=STAGES) -> dict:
    """What `run_plan` checks before any work: every dataset an unfinished unit needs is here
    (`check_data`: one ValueError otherwise) -> `regeneration_readers(plan, stages)`."""
    readers = regeneration_readers(plan, stages)
    check_data(plan, stages, readers)
    return readers


def run_plan(plan: Plan, *, stages=STAGES, progress: bool = True, wait_timeout_s: float = 24 * 3600.0,
             on_unit: Optional[Callable[[Unit, dict], None]] = None, readers: Optional[dict] = None,
             claim: bool = False) -> dict:
    """Run every unfinished unit of `plan` (this process's share of them) -> {stage: units run}.
    `readers`: `prepare_run(plan, stages)`'s answer when the caller has run it already (it reads
    the records and checks the data; run_plan does both itself otherwise).
    `claim`: share the units with any other processes started with it on the same output folder,
    each taking the next free unit by a claim file (`jscore.study.claims`), and wait at the end of
    each stage until every unit of it is finished (by whichever process). Not with
    `jax.distributed`, which divides the units by position instead.

    Raises `RuntimeError` naming the unit when a unit fails (its error is also written beside
    the record as `<id>.json.failed`, so the other processes stop too), and when no unit of a
    stage another process holds finishes within `wait_timeout_s`.
    """
    import jax

    pid, count = jax.process_index(), jax.process_count()
    if claim and count > 1:
        raise ValueError("claim=True (--claim) with jax.distributed: use one of them (jax.distributed "
                         "divides the units by position, claims share them between independent processes)")
    readers = prepare_run(plan, stages) if readers is None else readers
    ctx = Context(plan)
    ran = {}
    started = time.time() - 1.0
    # Feature files gone from finished extractions (published records, a cleaned cache): each is
    # extracted again by the process that owns its extraction unit, once, before anything reads it.
    regenerate = features_to_regenerate(plan, stages, readers)
    def again(unit):
        try:
            regenerate_features(ctx, unit)
        except Exception as err:
            _write_failed(plan, unit, err)  # the other processes stop waiting for it
            raise

    if regenerate and claim:
        _run_claimed(plan, regenerate, lambda u: features_file(plan, u) is not None, again, started,
                     wait_timeout_s, "feature files extracted again by other processes")
    elif regenerate:
        owner = {u.id: k % count for k, u in enumerate(plan.units["extract"])}
        for unit in regenerate:
            if owner[unit.id] == pid:
                again(unit)
        if count > 1:
            def left():
                missing = [u for u in regenerate if features_file(plan, u) is None]
                _failed_since(plan, missing, started)
                return [u.id for u in missing]

            _wait_until(left, wait_timeout_s, "feature files extracted again by other processes")
    for stage in stages:
        units = plan.units.get(stage, [])
        if not units:
            continue
        mine = [u for k, u in enumerate(units) if k % count == pid]
        todo = [u for u in mine if not plan.is_done(u)]
        bar = _bar(len(mine), len(mine) - len(todo), stage, progress and pid == 0)
        ran[stage] = 0

        def run_unit(unit):
            path = plan.record_path(unit)
            if os.path.isfile(path + ".failed"):
                os.remove(path + ".failed")
            t0 = time.perf_counter()
            try:
                result = RUNNERS[stage](ctx, unit)
            except Exception as err:
                _write_failed(plan, unit, err)
                if isinstance(err, ValueError):
                    raise ValueError(f"{stage} unit {unit.id}: {err}") from err
                raise
            status = "done"
            if stage == "evaluate" and not all(plan.is_done(u) for s in STAGES[:-1] for u in plan.units.get(s, [])):
                # A report of the records so far (`--stages evaluate` during a long sweep): not
                # done, so that a later run, with more finished units, writes it again.
                status = "partial"
            record = {"stage": stage, "id": unit.id, "key": unit.key, "deps": unit.deps, "status": status,
                      "result": result, "wall_s": round(time.perf_counter() - t0, 3), "process": pid,
                      "worker": f"{socket.gethostname()}:{os.getpid()}",
                      "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            _write_json_atomic(path, record)
            ran[stage] += 1
            if on_unit is not None:
                on_unit(unit, record)
            if bar is not None:
                bar.update(1)

        if claim:
            _run_claimed(plan, units, lambda u: _finished(plan, u, started), run_unit, started, wait_timeout_s,
                         f"{stage} unit(s) other processes hold")
        else:
            for unit in todo:
                run_unit(unit)
        if bar is not None:
            bar.close()
        if count > 1:
            _wait_for(plan, units, wait_timeout_s, started)
    return ran


def _finished(plan: Plan, unit: Unit, since: float) -> bool:
    """Done, or recorded with its current key by a run since `since` (an evaluation written while
    some units are not done is `partial`, not done, and must not run again in a loop)."""
    if plan.is_done(unit):
        return True
    path = plan.record_path(unit)
    try:
        if os.path.getmtime(path) < since:
            return False
    except OSError:
        return False
    rec = plan.read_record(unit)
    return rec is not None and rec.get("key") == unit.key


def _run_claimed(plan: Plan, units, finished: Callable[[Unit], bool], run_one: Callable[[Unit], None],
                 since: float, timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    """Run, one at a time, every unit of `units` not `finished` that no live process has claimed,
    until all are finished. Stops with another process's error (its `.failed` file since
    `since`), or with RuntimeError when nothing finishes for `timeout_s` s."""
    from jscore.study import claims

    last_progress, n_left = time.time(), None
    while True:
        left = [u for u in units if not finished(u)]
        if not left:
            return
        _failed_since(plan, left, since)
        if len(left) != n_left:
            last_progress, n_left = time.time(), len(left)
        took = False
        for unit in left:
            held = claims.take(plan.record_path(unit) + ".claim")
            if held is None:
                continue
            with held:
                if finished(unit):  # finished between our look and our claim
                    continue
                _failed_since(plan, [unit], since)  # failed elsewhere and released: stop, do not retry
                run_one(unit)
                took = True
        if took:
            continue
        if time.time() - last_progress > timeout_s:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {len(left)} {what}, e.g. {left[0].id}")
        time.sleep(poll_s)
