"""Fine-tuning ground truth: a Flax/Optax loop with a hyper-parameter search.

    >>> from jscore.finetune import fit, sweep, TrainConfig, Split, parse_search
    >>> points = parse_search("halton:75")                       # the paper's search
    >>> records = sweep(backbone, variables, train, val, {"test": test}, num_classes,
    ...                 points, TrainConfig(epochs=100), "out/", input_fn, model=..., dataset=...)

Modules: `search` (Halton/grid/random points), `augment` (on-device augmentation), `train`
(optimizer, pure steps), `loop` (one resumable data-parallel run), `sweep` (many runs, records),
`records` (runs.jsonl, CSV tables, ground truth), `probe` (linear probe on cached features),
`checkpoint` (orbax), `data` (datasets to host arrays), `choices` (the recipe's named options).
Importing this package loads jax, flax, optax lazily: only `search`, `records` and `choices` are
light.
"""

_LAZY = {
    "TrainConfig": "jscore.finetune.train",
    "TrainState": "jscore.finetune.train",
    "image_input_fn": "jscore.finetune.train",
    "identity_input_fn": "jscore.finetune.train",
    "make_optimizer": "jscore.finetune.train",
    "make_train_step": "jscore.finetune.train",
    "make_eval_step": "jscore.finetune.train",
    "Split": "jscore.finetune.loop",
    "fit": "jscore.finetune.loop",
    "DivergedError": "jscore.finetune.loop",
    "sweep": "jscore.finetune.sweep",
    "parse_search": "jscore.finetune.search",
    "halton": "jscore.finetune.search",
    "HParams": "jscore.finetune.search",
    "ground_truth": "jscore.finetune.records",
    "read_records": "jscore.finetune.records",
    "read_ground_truth": "jscore.finetune.records",
    "feature_backbone": "jscore.finetune.probe",
    "load_split": "jscore.finetune.data",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jscore.finetune' has no attribute {name!r}")
