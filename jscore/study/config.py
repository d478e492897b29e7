"""A study's TOML config, read and checked before any work starts.

Every problem (an unknown key, a missing dataset, an unknown backbone or score, a score that
needs source probabilities on a backbone without a source head) raises one `ValueError` whose
message names the key and the file. See docs/study-command.md for a commented example.

Standard library only (`tomllib`; the `tomli` package on Python 3.10).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

RECIPES = ("probe", "finetune", "none")
TRUTHS = ("balanced_accuracy", "accuracy")
SELECT_BY = ("val_balanced_accuracy", "val_loss", "val_accuracy")


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """One backbone of the study: a name `get_backbone` accepts and its build options."""

    name: str
    num_source_classes: Optional[int] = None  # jscore zoo only: a (random) source head
    weights: Optional[str] = None

    def label(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One target dataset: `data` is a dataset spec (npz:, csv:, folder:, tfds:), relative
    paths resolved against the config file's folder; `extra_tests` maps a name to `SPEC@SPLIT`
    (e.g. an out-of-distribution test set, evaluated with the selected run as it is)."""

    name: str
    data: str
    train: str = "train"
    val: str = "val"
    test: str = "test"
    extra_tests: tuple = ()  # ((name, spec, split), ...)
    max_examples: tuple = ()  # ((split, n), ...): a class-stratified subset of at most n images of that split

    def limit(self, split: str):
        """The image budget of `split` (None: every image)."""
        return dict(self.max_examples).get(split)


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """How the ground truth is produced: a linear probe on cached features ("probe"), full
    fine-tuning on the images ("finetune"), or none (a scores-only study, as `jscore rank`)."""

    recipe: str = "probe"
    name: str = ""  # how tables and unit ids name it; defaults to the recipe
    datasets: tuple = ()  # the dataset names it covers; empty: every dataset
    search: str = "halton:4"
    seeds: tuple = (0,)
    epochs: int = 20
    batch_size: int = 64
    lr_range: tuple = (1e-4, 1e-1)
    wd_range: tuple = (1e-6, 1e-4)
    select_by: str = "val_balanced_accuracy"
    truth: str = "balanced_accuracy"
    augment: bool = True  # finetune only
    head_init: str = "random"  # finetune only: "probe" starts the head at the linear probe (LP-FT)
    optimizer: str = "sgd"  # finetune only: "sgd" (the paper's) or "adamw"
    batch_norm: str = "train"  # finetune only: "train" (the paper's) or "frozen" (inference-mode backbone)
    micro_batch_size: int = 0  # finetune only: memory, not the recipe (TrainConfig); not in the unit keys

    def covers(self, dataset: str) -> bool:
        return not self.datasets or dataset in self.datasets

    def describe(self) -> str:
        if self.recipe == "none":
            return "none"
        what = "linear probe on cached features" if self.recipe == "probe" else "full fine-tuning"
        if self.head_init == "probe":
            what += " from the linear probe's head (LP-FT)"
        if self.optimizer != "sgd":
            what += f" with {self.optimizer}"
        if self.batch_norm != "train":
            what += f", BatchNorm {self.batch_norm}"
        ranges = "" if self.search.startswith("point:") else (  # a point uses no range
            f" (lr {self.lr_range[0]:g}..{self.lr_range[1]:g}, wd {self.wd_range[0]:g}..{self.wd_range[1]:g})")
        return (f"{what}, search {self.search}{ranges}, {self.epochs} epochs, batch {self.batch_size}, "
                f"seeds {list(self.seeds)}, selected by {self.select_by}; truth = test {self.truth}"
                + (f"; datasets {list(self.datasets)}" if self.datasets else ""))


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """A whole study. `out` is absolute after loading; `source` is the file it came from."""

    datasets: tuple
    backbones: tuple
    out: str
    scores: tuple = ("all",)
    score_options: dict = dataclasses.field(default_factory=dict)
    score_split: str = "train"
    image_size: Optional[int] = None
    seed: int = 0
    batch_size: int = 64
    bootstrap: int = 1000
    models_dir: Optional[str] = None
    ground_truth: GroundTruth = GroundTruth()  # the primary ground truth (the first one)
    name: str = "study"
    source: str = "<dict>"
    written: dict = dataclasses.field(default_factory=dict)  # resolved path -> as the file writes it
    ground_truths: tuple = ()  # every ground truth, the primary first

    def truths(self) -> tuple:
        return self.ground_truths or (self.ground_truth,)

    def truth_named(self, name: str) -> GroundTruth:
        return next(g for g in self.truths() if g.name == name)


def missing_data(specs) -> list:
    """The dataset specs among `specs` that are not found on this machine."""
    return sorted({s for s in specs if not _dataset_exists(s)})


def portable(path_or_spec: Optional[str], cfg: "StudyConfig") -> Optional[str]:
    """A path or dataset spec as the config file writes it: what unit keys record, so that a
    study's records stay valid when the study moves to another machine with the same layout
    (relative paths), while an absolute path stays what it is."""
    return cfg.written.get(path_or_spec, path_or_spec)


_TOP = {"name", "out", "datasets", "backbones", "scores", "score_options", "score_split", "image_size", "seed",
        "batch_size", "bootstrap", "models_dir", "ground_truth"}
_DATASET = {"name", "data", "train", "val", "test", "extra_tests", "max_examples"}
_BACKBONE = {"name", "num_source_classes", "weights"}
_GT = {f.name for f in dataclasses.fields(GroundTruth)}


def _err(where: str, msg: str) -> ValueError:
    return ValueError(f"{where}: {msg}")


def _check_keys(table: dict, allowed: set, where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _err(where, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _typed(value, kind, where: str, key: str):
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        name = getattr(kind, "__name__", str(kind))
        raise _err(where, f"{key} must be {name}, got {value!r}")
    return value


def _resolve_spec(spec: str, base: str) -> str:
    """Relative paths in a dataset spec are relative to the config file's folder."""
    kind, sep, target = spec.partition(":")
    if sep and kind in ("npz", "csv", "folder"):
        return f"{kind}:{target if os.path.isabs(target) else os.path.normpath(os.path.join(base, target))}"
    if sep and kind == "tfds":
        return spec
    return spec if os.path.isabs(spec) else os.path.normpath(os.path.join(base, spec))


def _dataset_exists(spec: str) -> bool:
    from jscore.data.spec import parse_spec  # standard library only at import

    try:
        kind, target = parse_spec(spec)
    except FileNotFoundError:
        return False
    return kind == "tfds" or os.path.exists(target)


def from_dict(raw: dict, *, base_dir: str = ".", source: str = "<dict>") -> StudyConfig:
    """Build and check a `StudyConfig` from the parsed TOML table (see `load_config`)."""
    where = source
    written = {}
    _check_keys(raw, _TOP, where)
    for key in ("datasets", "backbones"):
        if key not in raw or not raw[key]:
            raise _err(where, f"missing {key!r} (at least one entry)")
    datasets = []
    raw_ds = raw["datasets"]
    if not isinstance(raw_ds, list):
        raise _err(where, "datasets must be an array of tables ([[datasets]])")
    for i, d in enumerate(raw_ds):
        w = f"{where}: datasets[{i}]"
        if not isinstance(d, dict):
            raise ValueError(f"{w}: must be a table with name and data")
        _check_keys(d, _DATASET, w)
        for key in ("name", "data"):
            if key not in d:
                raise ValueError(f"{w}: missing {key!r}")
        data = _resolve_spec(_typed(d["data"], str, w, "data"), base_dir)
        written[data] = d["data"]
        # A missing dataset is an error only when a unit that reads it is still to run (the
        # runner checks): a finished study's records reproduce its report without the data.
        extras = []
        for ename, espec in (d.get("extra_tests") or {}).items():
            espec = _typed(espec, str, w, f"extra_tests.{ename}")
            spec, _, split = espec.rpartition("@") if "@" in espec else (espec, "", "test")
            written[_resolve_spec(spec, base_dir)] = spec
            spec = _resolve_spec(spec, base_dir)
            if ename in ("train", "val", "test"):
                raise ValueError(f"{w}: extra test name {ename!r} is reserved")
            extras.append((ename, spec, split or "test"))
        limits = d.get("max_examples", {})
        if not isinstance(limits, dict):
            raise ValueError(f"{w}: max_examples must be a table {{split = N, ...}}, got {limits!r}")
        splits = [str(d.get(k, k)) for k in ("train", "val", "test")]
        for split, n in limits.items():
            if split not in splits:
                raise ValueError(f"{w}: max_examples names split {split!r}, not one of this dataset's {splits}")
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"{w}: max_examples.{split} must be a positive integer, got {n!r}")
        datasets.append(DatasetSpec(_typed(d["name"], str, w, "name"), data, *splits, tuple(extras),
                                    tuple(sorted(limits.items()))))
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise _err(where, f"dataset names repeat: {names}")

    backbones = []
    for i, b in enumerate(raw["backbones"] if isinstance(raw["backbones"], list) else [None]):
        w = f"{where}: backbones[{i}]"
        if isinstance(b, str):
            b = {"name": b}
        if not isinstance(b, dict):
            raise ValueError(f"{w}: a backbone is a name or a table {{name = ..., num_source_classes = ...}}")
        _check_keys(b, _BACKBONE, w)
        if "name" not in b:
            raise ValueError(f"{w}: missing 'name'")
        weights = b.get("weights")
        if weights is not None and not os.path.isabs(weights):
            written[os.path.normpath(os.path.join(base_dir, weights))] = weights
            weights = os.path.normpath(os.path.join(base_dir, weights))
        backbones.append(BackboneSpec(_typed(b["name"], str, w, "name"), b.get("num_source_classes"), weights))
    bnames = [b.name for b in backbones]
    if len(set(bnames)) != len(bnames):
        raise _err(where, f"backbone names repeat: {bnames}")

    gt_raw = raw.get("ground_truth", {})
    many = isinstance(gt_raw, list)
    truths = []
    for i, table in enumerate(gt_raw if many else [gt_raw]):
        w = f"{where}: ground_truth[{i}]" if many else f"{where}: [ground_truth]"
        if not isinstance(table, dict):
            raise ValueError(f"{w}: must be a table")
        truths.append(_ground_truth(table, w, [d.name for d in datasets]))
    if not truths:
        raise _err(where, "ground_truth is an empty array: give at least one [[ground_truth]] table")
    names = [g.name for g in truths]
    if len(set(names)) != len(names):
        raise _err(where, f"ground truth names repeat: {names} (give each [[ground_truth]] a distinct name)")
    if any(g.recipe == "none" for g in truths) and len(truths) > 1:
        raise _err(where, "recipe = 'none' (no ground truth) cannot be combined with other ground truths")
    gt = truths[0]

    scores = raw.get("scores", "all")
    scores = tuple(s.strip() for s in scores.split(",")) if isinstance(scores, str) else tuple(scores)
    out = raw.get("out", "study-out")
    out = out if os.path.isabs(out) else os.path.normpath(os.path.join(base_dir, out))
    models_dir = raw.get("models_dir")
    if models_dir is not None and not os.path.isabs(models_dir):
        written[os.path.normpath(os.path.join(base_dir, models_dir))] = models_dir
        models_dir = os.path.normpath(os.path.join(base_dir, models_dir))
    cfg = StudyConfig(
        datasets=tuple(datasets), backbones=tuple(backbones), out=out, scores=scores,
        score_options=dict(raw.get("score_options", {})), score_split=str(raw.get("score_split", "train")),
        image_size=raw.get("image_size"), seed=int(raw.get("seed", 0)), batch_size=int(raw.get("batch_size", 64)),
        bootstrap=int(raw.get("bootstrap", 1000)), models_dir=models_dir, ground_truth=gt, ground_truths=tuple(truths),
        written=written,
        name=str(raw.get("name", os.path.splitext(os.path.basename(source))[0] or "study")), source=source,
    )
    check_scores(cfg)
    from jscore.study.plan import has_batch_norm

    for t in truths:
        with_bn = [b.name for b in backbones if has_batch_norm(b.name)]
        if t.micro_batch_size and t.batch_norm == "train" and with_bn:
            raise _err(where, f"ground truth {t.name!r}: micro_batch_size with batch_norm = 'train' would normalise "
                              f"by micro-batch statistics on {with_bn[:3]}: set batch_norm = 'frozen' or drop "
                              "micro_batch_size")
    if gt.recipe != "none" and len(backbones) < 2:
        raise _err(where, "a study with ground truth ranks backbones: give at least two")
    if cfg.bootstrap < 1 or cfg.batch_size < 1:
        raise _err(where, "bootstrap and batch_size must be >= 1")
    return cfg


def _ground_truth(table: dict, w: str, dataset_names: list) -> GroundTruth:
    """One [ground_truth] table -> `GroundTruth`, checked."""
    _check_keys(table, _GT, w)
    kw = dict(table)
    for key in ("seeds", "lr_range", "wd_range", "datasets"):
        if key in kw:
            if not isinstance(kw[key], list):
                raise ValueError(f"{w}: {key} must be an array, got {kw[key]!r}")
            kw[key] = tuple(kw[key])
    gt = GroundTruth(**kw)
    if not gt.name:
        gt = dataclasses.replace(gt, name=gt.recipe)
    if gt.recipe not in RECIPES:
        raise ValueError(f"{w}: recipe must be one of {RECIPES}, got {gt.recipe!r}")
    from jscore.finetune.choices import BATCH_NORM_MODES, HEAD_INITS, OPTIMIZERS

    if gt.head_init not in HEAD_INITS:
        raise ValueError(f"{w}: head_init must be one of {HEAD_INITS}, got {gt.head_init!r}")
    if gt.head_init == "probe" and gt.recipe != "finetune":
        raise ValueError(f"{w}: head_init = 'probe' (LP-FT) applies to recipe = 'finetune' only")
    if gt.optimizer not in OPTIMIZERS:
        raise ValueError(f"{w}: optimizer must be one of {OPTIMIZERS}, got {gt.optimizer!r}")
    if gt.optimizer != "sgd" and gt.recipe != "finetune":
        raise ValueError(f"{w}: optimizer = {gt.optimizer!r} applies to recipe = 'finetune' only (the probe's "
                         "recipe is fixed)")
    if gt.batch_norm not in BATCH_NORM_MODES:
        raise ValueError(f"{w}: batch_norm must be one of {BATCH_NORM_MODES}, got {gt.batch_norm!r}")
    if gt.batch_norm != "train" and gt.recipe != "finetune":
        raise ValueError(f"{w}: batch_norm = {gt.batch_norm!r} applies to recipe = 'finetune' only (a probe's "
                         "backbone is always frozen)")
    if not isinstance(gt.micro_batch_size, int) or gt.micro_batch_size < 0 or (
            gt.micro_batch_size and gt.batch_size % gt.micro_batch_size):
        raise ValueError(f"{w}: micro_batch_size must be 0 (whole batches) or divide batch_size = {gt.batch_size}, "
                         f"got {gt.micro_batch_size!r}")
    if gt.micro_batch_size and gt.recipe != "finetune":
        raise ValueError(f"{w}: micro_batch_size applies to recipe = 'finetune' only")
    if gt.truth not in TRUTHS:
        raise ValueError(f"{w}: truth must be one of {TRUTHS}, got {gt.truth!r}")
    if gt.select_by not in SELECT_BY:
        raise ValueError(f"{w}: select_by must be one of {SELECT_BY}, got {gt.select_by!r}")
    if not gt.seeds or gt.epochs < 1 or gt.batch_size < 1:
        raise ValueError(f"{w}: seeds must be non-empty, epochs and batch_size >= 1")
    unknown = [d for d in gt.datasets if d not in dataset_names]
    if unknown:
        raise ValueError(f"{w}: datasets {unknown} are not datasets of this study ({dataset_names})")
    if gt.recipe != "none":
        from jscore.finetune.search import parse_search

        parse_search(gt.search, lr_range=gt.lr_range, wd_range=gt.wd_range)
    return gt


def has_source_head(spec: BackboneSpec) -> Optional[bool]:
    """Whether the backbone gives source probabilities: True, False, or None (known only once
    its checkpoint is read, e.g. `hf:` ids). Raises `ValueError` for an unknown name."""
    from jscore.backbones import backbone_info

    info = backbone_info(spec.name)
    if info.source == "zoo":
        return bool(spec.num_source_classes)
    if spec.num_source_classes is not None:
        raise ValueError(f"num_source_classes applies to jscore zoo backbones only, not {spec.name!r}")
    if spec.name.startswith("hf:"):
        return None
    return bool(info.has_source_head)


def check_scores(cfg: StudyConfig) -> None:
    """Unknown backbones, unknown scores, bad options, and source scores on headless backbones."""
    from jscore.api import plan_scores
    from jscore.scorers import REGISTRY

    where = cfg.source
    heads = {}
    for b in cfg.backbones:
        try:
            heads[b.name] = has_source_head(b)
        except ValueError as err:
            raise ValueError(f"{where}: backbones: {err}") from None
    want = [s for s in cfg.scores if s != "all"]
    try:
        plan_scores(want or "all", cfg.score_options, have_features=True, have_source=True)
    except ValueError as err:
        raise ValueError(f"{where}: scores: {err}") from None
    needs_source = [s for s in want if REGISTRY[s].needs == "source"]
    for b in cfg.backbones:
        if needs_source and heads[b.name] is False:
            raise ValueError(f"{where}: score(s) {needs_source} need source probabilities, but backbone "
                             f"{b.name!r} has no source head (drop them, or give a model with a classifier)")


def scores_for(cfg: StudyConfig, spec: BackboneSpec, have_source: bool) -> tuple:
    """The registry names this backbone is scored with ("all": every score its outputs allow)."""
    from jscore.api import resolve_scores

    if "all" in cfg.scores:
        return resolve_scores("all", have_features=True, have_source=have_source)
    return resolve_scores(list(cfg.scores), have_features=True, have_source=have_source)


def load_config(path: str, *, out: Optional[str] = None, models_dir: Optional[str] = None) -> StudyConfig:
    """Read and check a study TOML file -> `StudyConfig`; `out`/`models_dir` override the file's."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"study config not found: {path}")
    with open(path, "rb") as fh:
        try:
            raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML ({err})") from None
    if out is not None:
        raw["out"] = os.path.abspath(out)
    if models_dir is not None:
        raw["models_dir"] = os.path.abspath(models_dir)
    return from_dict(raw, base_dir=os.path.dirname(os.path.abspath(path)), source=path)
