"""jscore: transferability scoring in JAX.

Rank pretrained backbones for a target task from their features, in seconds:

    >>> import jscore
    >>> scores = jscore.score(features, labels, source_probs=probs)   # dict name -> float
    >>> jscore.REGISTRY["logme"].paper

Heavier stages (feature extraction, fine-tuning, evaluation) live in sub-packages and load flax,
optax or matplotlib only when used.
"""

__version__ = "0.1.0"

__all__ = ["score", "score_zoo", "REGISTRY", "__version__"]

# Sub-modules reachable as attributes of `jscore` (imported on first use).
_SUBMODULES = ("scorers", "stats", "validate", "batch", "sharding", "api", "data", "backbones",
               "features", "finetune", "evaluate", "demo", "streaming", "moments")


def __getattr__(name):
    # Lazy so that `import jscore` (and the CLI's start-up) stays cheap.
    if name == "score":
        from jscore.api import score

        return score
    if name == "score_zoo":
        from jscore.batch import score_zoo

        return score_zoo
    if name == "REGISTRY":
        from jscore.scorers import REGISTRY

        return REGISTRY
    if name in _SUBMODULES:  # `import jscore; jscore.scorers.logme(...)` without a second import
        import importlib

        return importlib.import_module(f"jscore.{name}")
    raise AttributeError(f"module 'jscore' has no attribute {name!r}")
