"""Imports run one way through the layers of shared/design.md: a module imports only its own
package and the layers below it (function-level imports included, they are parsed too)."""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "jscore")

# Lowest first. design.md: _numerics -> stats -> scorers -> batch/sharding -> data/backbones ->
# features -> finetune -> evaluate -> study/cli. `api` (one model) sits under `batch` (many models);
# `backbones` under `data` (readers take a backbone's preprocessing preset).
LAYERS = [
    "jscore.assets", "jscore._numerics", "jscore._lbfgs", "jscore._pairwise", "jscore.stats",
    "jscore.moments", "jscore.class_scatter", "jscore.validate", "jscore.scorers", "jscore.streaming",
    "jscore.api",
    "jscore.sharding", "jscore.batch", "jscore",  # the package: lazy re-exports of api and batch
    "jscore.backbones", "jscore.data", "jscore.demo", "jscore.features", "jscore.finetune",
    "jscore.evaluate", "jscore.study", "jscore.commands", "jscore.cli", "jscore.__main__",
]


def layer_of(module: str) -> str:
    """The longest LAYERS entry that is `module` or a package above it."""
    best = None
    for name in LAYERS:
        if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best)):
            best = name
    return best


def module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(ROOT))[: -len(".py")].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def imports(path: str, module: str):
    """(line, imported module) for every jscore import in the file, relative ones resolved."""
    tree = ast.parse(open(path).read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                # `from jscore import api` imports the module jscore.api
                full = f"{base}.{alias.name}"
                yield node.lineno, full if layer_of(full) not in (None, "jscore") else base


def sources():
    for dirpath, _, files in os.walk(ROOT):
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.join(dirpath, f)


def test_every_module_has_a_layer():
    missing = [module_name(p) for p in sources() if layer_of(module_name(p)) in (None, "jscore")
               and module_name(p) != "jscore"]
    assert not missing, f"modules without a layer in LAYERS: {missing}"


def test_no_module_imports_a_later_layer():
    bad = []
    for path in sources():
        me = module_name(path)
        mine = LAYERS.index(layer_of(me))
        for line, target in imports(path, me):
            if not (target == "jscore" or target.startswith("jscore.")):
                continue
            theirs = layer_of(target)
            if theirs is None:
                continue
            if LAYERS.index(theirs) > mine:
                bad.append(f"{me}:{line} imports {target} ({theirs} is above {layer_of(me)})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source, expected", [
    ("from jscore.batch import score_buckets\n", ["jscore.batch.score_buckets"]),
    ("def f():\n    from jscore import api\n", ["jscore.api"]),
    ("from . import zoo\n", ["jscore.backbones.zoo"]),
])
def test_the_checker_sees_imports(tmp_path, source, expected):
    path = tmp_path / "x.py"
    path.write_text(source)
    got = [t for _, t in imports(str(path), "jscore.backbones.x")]
    assert got == expected
    # ...and a violation is caught: the scorer layer importing the batch layer.
    assert LAYERS.index(layer_of("jscore.batch")) > LAYERS.index(layer_of("jscore.scorers.logme"))
