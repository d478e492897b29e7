"""Class-per-folder trees: `root/<class>/<image>`, labels from the sorted class names.

When `root` holds one sub-tree per split (`root/train/<class>/...`, `root/val/...`), the split
picks the sub-tree, and every split must have the same class folders. Without split sub-trees
the whole tree is the split `"all"`.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

from jscore.data.files import FileDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm")
SPLIT_NAMES = ("train", "val", "valid", "validation", "test")


def _class_dirs(root: str) -> List[str]:
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))


def _images_under(folder: str) -> List[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames)
                   if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
    return out


def open_folder(root: str, split: str = "all", *, classes: Optional[Sequence[str]] = None) -> FileDataset:
    """`root/<class>/**/<image>` (or `root/<split>/<class>/...`) -> `FileDataset`, sorted by
    class then path. `classes` fixes the class list (a folder not in it is an error)."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder not found: {root!r}")
    splits = [d for d in _class_dirs(root) if d in SPLIT_NAMES]
    if splits:
        if split not in splits:
            raise ValueError(f"no split {split!r} in {root}: it has split folders {splits}")
        tree = os.path.join(root, split)
        found = {s: _class_dirs(os.path.join(root, s)) for s in splits}
        if classes is None:
            first = found[splits[0]]
            for s, names in found.items():
                if names != first:
                    raise ValueError(f"classes differ between splits in {root}: {splits[0]} has {first}, "
                                     f"{s} has {names}")
    else:
        if split not in ("all", None):
            raise ValueError(f"{root} has no split folders ({'/'.join(SPLIT_NAMES)}), so its only split "
                             f"is 'all' (got {split!r}); make splits with jscore.data.group_split")
        tree = root
    names = _class_dirs(tree)
    if classes is not None:
        classes = [str(c) for c in classes]
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise ValueError(f"{tree}: class folders {unknown} are not in the class list {classes}")
        names = classes
    if not names:
        raise ValueError(f"{tree}: no class folders")
    paths, labels = [], []
    for label, name in enumerate(names):
        sub = os.path.join(tree, name)
        if os.path.isdir(sub):
            files = _images_under(sub)
            paths += files
            labels += [label] * len(files)
    if not paths:
        raise ValueError(f"{tree}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    desc = {"kind": "folder", "path": root, "split": split}
    return FileDataset(paths, labels, names, desc)
