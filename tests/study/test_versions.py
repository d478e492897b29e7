"""Implementation versions in the unit keys: a change to a score's or an import's numbers
recomputes exactly the units it touches, and leaves the keys of everything else unchanged."""

import dataclasses

from jscore.backbones import pretrained
from jscore.study import load_config, make_plan
from jscore.study.plan import backbone_deps
from tests.study.helpers import make_dataset, write_config

import jscore.scorers as scorers


def _keys(plan):
    return {(u.stage, u.id): u.key for u in plan.all_units()}


def _plan(tmp_path, backbones=None):
    data = make_dataset(str(tmp_path / "toy.npz"))
    cfg = write_config(str(tmp_path / "study.toml"), data, str(tmp_path / "out"), backbones=backbones,
                       scores=["hscore", "nleep"])
    return make_plan(load_config(cfg))


def test_score_version_changes_score_and_evaluate_keys_only(tmp_path, monkeypatch):
    before = _keys(_plan(tmp_path))
    spec = scorers.REGISTRY["hscore"]
    monkeypatch.setitem(scorers.REGISTRY, "hscore", spec._replace(version=spec.version + 1))
    after = _keys(_plan(tmp_path))
    changed = {stage for (stage, _), key in after.items() if before[(stage, _)] != key}
    assert changed == {"score", "evaluate"}
    assert all(before[k] != after[k] for k in before if k[0] == "score")


def test_version_one_leaves_keys_as_before_versions_existed(tmp_path, monkeypatch):
    # Records written before versions existed stay valid for every score and import still at 1.
    monkeypatch.setitem(scorers.REGISTRY, "nleep", scorers.REGISTRY["nleep"]._replace(version=1))
    plan = _plan(tmp_path)
    score = plan.units["score"][0]
    assert "versions" not in score.deps
    monkeypatch.setitem(scorers.REGISTRY, "nleep", scorers.REGISTRY["nleep"]._replace(version=2))
    assert _plan(tmp_path).units["score"][0].deps["versions"] == {"nleep": 2}


def test_import_version_reaches_the_extraction_key(tmp_path, monkeypatch):
    plan = _plan(tmp_path)
    cfg, spec = plan.config, plan.config.backbones[0]
    assert "numerics" not in backbone_deps(cfg, spec)  # the small zoo is not a published import
    entry = pretrained.PRETRAINED["mobilenet_v2_1.0_224_quant"]
    assert entry.numerics == 3  # integer TFLite: integer sums, bit-exact with the runtime's kernels
    assert pretrained.PRETRAINED["mobilenet_v2_torchvision_quant"].numerics == 3
    assert pretrained.PRETRAINED["mobilenet_v1_0.25_224_float"].numerics == 1   # a float file
    assert pretrained.PRETRAINED["efficientnet_lite0"].numerics == 1
    published = dataclasses.replace(spec, name=entry.name)
    assert backbone_deps(cfg, published)["numerics"] == 3
    monkeypatch.setitem(pretrained.PRETRAINED, entry.name, dataclasses.replace(entry, numerics=4))
    assert backbone_deps(cfg, published)["numerics"] == 4
