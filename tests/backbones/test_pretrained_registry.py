"""The pretrained zoo's names: every published checkpoint is found by name, or a clear error says
which file is missing and where it was looked for."""

import csv
import hashlib
import json
import os

import pytest

from jscore.backbones import backbone_info, get_backbone, list_backbones
from jscore.backbones.pretrained import MODELS_ENV, PRETRAINED, find_files, is_available, models_dirs
from jscore.cli import main


def test_every_shared_model_folder_is_a_backbone_name(shared_models):
    folders = {d for d in os.listdir(shared_models) if os.path.isdir(os.path.join(shared_models, d))}
    assert folders <= set(PRETRAINED)
    assert {f"efficientnet_lite{v}" for v in range(3)} <= set(PRETRAINED)


def test_registry_files_are_the_published_bytes(shared_models):
    """Each file the registry names is in index.csv with the same sha256 (the original bytes)."""
    with open(os.path.join(shared_models, "index.csv")) as fh:
        index = {(row["name"], row["file"]): row["sha256"] for row in csv.DictReader(fh)}
    checked = 0
    for name, entry in PRETRAINED.items():
        if entry.files[0].startswith("pypi:"):
            continue
        for path in find_files(name, shared_models):
            key = (entry.folder or name, os.path.basename(path))
            assert key in index, key
            with open(path, "rb") as fh:
                assert hashlib.sha256(fh.read()).hexdigest() == index[key], path
            checked += 1
    assert checked == sum(len(e.files) for e in PRETRAINED.values() if not e.files[0].startswith("pypi:"))


def test_missing_file_names_the_file_and_the_folders(tmp_path, monkeypatch):
    monkeypatch.delenv(MODELS_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as err:
        find_files("mobilenet_v3_small_1.0_224_quant", str(tmp_path))
    text = str(err.value)
    assert os.path.join("mobilenet_v3_small_1.0_224_quant", "v3-small_224_1.0_uint8.tflite") in text
    assert str(tmp_path) in text and MODELS_ENV in text
    assert not is_available("mobilenet_v3_small_1.0_224_quant", str(tmp_path))


def test_models_dir_argument_then_environment(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    for root in (first, second):
        (root / "cifar10_resnet20").mkdir(parents=True)
        (root / "cifar10_resnet20" / "resnet20-12fca82f.th").write_bytes(b"x")
    monkeypatch.setenv(MODELS_ENV, str(second))
    assert find_files("cifar10_resnet20") == (str(second / "cifar10_resnet20" / "resnet20-12fca82f.th"),)
    assert find_files("cifar10_resnet20", str(first))[0].startswith(str(first))
    assert models_dirs(str(first))[:2] == (str(first), str(second))
    with pytest.raises(FileNotFoundError, match="models directory not found"):
        models_dirs(str(tmp_path / "nope"))


def test_unknown_names_are_value_errors():
    with pytest.raises(ValueError, match="unknown pretrained backbone"):
        find_files("mobilenet_v9")
    with pytest.raises(ValueError, match="jscore zoo"):
        backbone_info("mobilenet_v9")


def test_pretrained_info_carries_the_published_facts():
    info = backbone_info("mobilenet_v2_1.0_224_quant")
    assert (info.source, info.source_task, info.published_top1, info.input_size) == (
        "pretrained", "ImageNet-1k", 70.8, 224)
    assert backbone_info("mobilenet_v1_1.0_224_embedding").has_source_head is False
    assert backbone_info("cifar10_resnet56").source_task == "CIFAR-10"
    assert set(PRETRAINED) <= set(list_backbones())


def test_published_checkpoint_options_fixed_by_the_file_are_refused():
    with pytest.raises(ValueError, match="num_source_classes"):
        get_backbone("cifar10_resnet20", num_source_classes=3)
    with pytest.raises(ValueError, match="image_size"):
        get_backbone("mobilenet_v2_1.0_224_quant", image_size=96)
    with pytest.raises(FileNotFoundError, match="TFLite file not found"):
        get_backbone("tflite:/no/such/model.tflite")


def test_zoo_command_lists_every_backbone(shared_models, capsys):
    assert main(["zoo", "--models-dir", shared_models, "--json"]) == 0
    items = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(items) == set(PRETRAINED)
    row = items["efficientnet_lite2"]
    assert (row["published_top1"], row["input_size"], row["feature_dim"], row["source_task"]) == (
        77.6, 260, 1280, "ImageNet-1k")
    assert items["cifar10_resnet20"]["available"] is True
    assert main(["zoo", "--models-dir", shared_models]) == 0
    table = capsys.readouterr().out
    assert "mobilenet_v3_small_1.0_224_quant" in table and "top-1" in table


def test_zoo_command_bad_models_dir_is_one_line(tmp_path, capsys):
    assert main(["zoo", "--models-dir", str(tmp_path / "missing")]) == 2
    assert "models directory not found" in capsys.readouterr().err


def _num_params(variables) -> int:
    import jax

    return sum(int(x.size) for x in jax.tree_util.tree_leaves(variables["params"]))


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_loaded_checkpoint_has_the_registered_facts(name, shared_models):
    """`jscore zoo` lists the registry without reading files: the loaded model must agree with it."""
    if not is_available(name, shared_models):
        pytest.skip(f"{name}: checkpoint not installed")
    entry = PRETRAINED[name]
    backbone = get_backbone(name, models_dir=shared_models)
    assert backbone.name == name
    assert backbone.feature_dim == entry.feature_dim
    assert backbone.num_source_classes == entry.num_source_classes
    assert backbone.preprocess.image_size == entry.input_size
    assert _num_params(backbone.variables) == entry.num_params


def test_packaged_checkpoints_are_the_published_bytes(shared_models):
    """The demo's shipped TFLite files are byte for byte the published ones (NOTICE says so)."""
    from jscore.backbones.pretrained import packaged_models_dir

    with open(os.path.join(shared_models, "index.csv")) as fh:
        index = {(row["name"], row["file"]): row["sha256"] for row in csv.DictReader(fh)}
    root = packaged_models_dir()
    shipped = [(d, f) for d in sorted(os.listdir(root)) for f in os.listdir(os.path.join(root, d))]
    assert len(shipped) == 5
    for folder, file in shipped:
        with open(os.path.join(root, folder, file), "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == index[(folder, file)], file
        assert is_available(folder)  # found without --models-dir or JSCORE_MODELS
