"""Dataset x backbone -> features (and source probabilities) on disk, cached and resumable.

Layout under `out_dir`, for one (backbone, weights fingerprint, compute dtype, dataset, split,
preprocessing) key `K`:

    <stem>.npz     features float32 [N, D], labels int64 [N], indices int64 [N] (dataset
                   positions kept), num_classes int64 [], and source_probs float32 [N, Cs]
                   (softmax of the source logits) when the backbone has a head
    <stem>.json    metadata: the key's parts, versions, N, D, skipped images, timings
    <stem>.parts/  chunk files while extracting; removed once merged

`<stem>` is `<backbone>__<dataset>__<split>__<K[:12]>`. A second call with the same key returns
the stored file; an interrupted call resumes from its finished chunks (each chunk is written
atomically, so an interruption loses at most the chunk in progress).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import time
from typing import Optional

import numpy as np

FORMAT_VERSION = 1


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:48] or "x"


def _versions() -> dict:
    import jax

    import jscore

    out = {"jscore": jscore.__version__, "jax": jax.__version__, "numpy": np.__version__}
    for mod in ("flax", "transformers", "tensorflow_datasets"):
        if mod in sys.modules:
            out[mod] = getattr(sys.modules[mod], "__version__", "?")
    return out


def cache_key(backbone_name: str, weights_fingerprint: str, dtype: str, dataset_description: dict,
              preprocess: dict, forward_variant: str = "") -> str:
    """sha256 of everything that changes the arrays (not of timings or versions). `forward_variant`
    (`Backbone.forward_variant`) enters only when set, so keys of backbones without one stay."""
    desc = {k: v for k, v in dataset_description.items() if k != "class_names"}
    desc["class_names"] = list(dataset_description.get("class_names", []))
    fields = {"format": FORMAT_VERSION, "backbone": backbone_name, "weights": weights_fingerprint,
              "dtype": dtype, "dataset": desc, "preprocess": preprocess}
    if forward_variant:
        fields["forward"] = forward_variant
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


_EMBED_CACHE: dict = {}


def make_embed_fn(backbone):
    """-> jitted `(variables, images uint8 [B, S, S, 3]) -> (features f32 [B, D], probs f32 [B, Cs] or None)`.

    Normalisation runs on the device, so only uint8 crosses the host-device link; whatever the
    compute dtype, features and probabilities come back float32.
    """
    import jax
    import jax.numpy as jnp

    from jscore.data.preprocess import normalize

    preset = backbone.preprocess
    # One compiled program per backbone: a second extraction with the same shapes reuses it.
    cache_id = (id(backbone.apply), preset, backbone.dtype)
    if cache_id in _EMBED_CACHE:
        return _EMBED_CACHE[cache_id][1]

    def embed(variables, images):
        x = normalize(images, preset, xp=jnp)
        if backbone.dtype != "float32":
            x = x.astype(backbone.dtype)
        features, logits = backbone.embed(variables, x)
        features = features.astype(jnp.float32)
        probs = None if logits is None else jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        return features, probs

    fn = jax.jit(embed)
    _EMBED_CACHE[cache_id] = (backbone.apply, fn)  # holding apply keeps its id unique
    return fn


def _write_npz_atomic(path: str, **arrays) -> None:
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _write_json_atomic(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """Where one (backbone, weights, dtype, forward, dataset split, preprocessing) key lives on disk.

    key: the sha256 of `cache_key`; stem: `<backbone>__<dataset>__<split>__<key[:12]>`; final,
    meta, parts: the `.npz`, `.json` and `.parts/` paths under the cache folder;
    forward_variant: the backbone's (`Backbone.forward_variant`).
    """

    key: str
    stem: str
    final: str
    meta: str
    parts: str
    fingerprint: str
    description: dict
    preprocess: dict
    forward_variant: str = ""


def cache_entry(backbone, variables, dataset, out_dir: str) -> CacheEntry:
    """The cache entry of `dataset` under `backbone` with `variables` (no file is touched)."""
    from jscore.backbones.weights import fingerprint

    fp = fingerprint(variables)
    description = dataset.describe()
    preset = dataclasses.asdict(backbone.preprocess)
    variant = getattr(backbone, "forward_variant", "")
    key = cache_key(backbone.name, fp, backbone.dtype, description, preset, variant)
    data_name = description.get("name") or os.path.splitext(os.path.basename(
        str(description.get("path", "data")).rstrip("/")))[0]
    stem = "__".join([_safe(backbone.name), _safe(data_name), _safe(str(description.get("split", ""))), key[:12]])
    final, meta, parts = (os.path.join(out_dir, stem + ext) for ext in (".npz", ".json", ".parts"))
    return CacheEntry(key, stem, final, meta, parts, fp, description, preset, variant)


def cached(entry: CacheEntry) -> Optional[str]:
    """The stored `.npz` path when the entry is complete (file and matching metadata), else None."""
    if os.path.isfile(entry.final) and os.path.isfile(entry.meta):
        with open(entry.meta) as fh:
            if json.load(fh).get("key") == entry.key:
                return entry.final
    return None


@dataclasses.dataclass(frozen=True)
class ResumePlan:
    """The chunks of one extraction: `starts` (every chunk's first index), `todo` (those without
    a finished chunk file), `chunk` (images per chunk) and `n` (images in the split)."""

    parts: str
    chunk: int
    n: int
    starts: tuple
    todo: tuple

    def chunk_file(self, c0: int) -> str:
        return os.path.join(self.parts, f"chunk_{c0 // self.chunk:06d}.npz")

    def todo_images(self) -> int:
        return sum(min(self.chunk, self.n - c0) for c0 in self.todo)

    def runs(self) -> list:
        """Contiguous runs `[start, stop)` of unfinished chunks (one loader each, so decoding runs
        ahead across chunk boundaries)."""
        runs = []
        for c0 in self.todo:
            if runs and runs[-1][1] == c0:
                runs[-1][1] = min(c0 + self.chunk, self.n)
            else:
                runs.append([c0, min(c0 + self.chunk, self.n)])
        return runs


def resume_plan(entry: CacheEntry, n: int, batch_size: int, chunk_batches: int, *, overwrite: bool = False) -> ResumePlan:
    """Prepare `entry.parts` and list the chunks still to compute. Finished chunks of an earlier,
    interrupted call with the same key and chunking are kept; anything else is cleared."""
    if overwrite and os.path.isdir(entry.parts):
        shutil.rmtree(entry.parts)
    os.makedirs(entry.parts, exist_ok=True)
    chunk = batch_size * chunk_batches
    plan_path = os.path.join(entry.parts, "plan.json")
    plan = {"key": entry.key, "batch_size": batch_size, "chunk": chunk, "n": n}
    if os.path.isfile(plan_path):
        with open(plan_path) as fh:
            old = json.load(fh)
        if old != plan:  # a different chunking or data: the old chunks cannot be reused
            shutil.rmtree(entry.parts)
            os.makedirs(entry.parts)
    _write_json_atomic(plan_path, plan)
    starts = tuple(range(0, n, chunk))
    probe = ResumePlan(entry.parts, chunk, n, starts, ())
    todo = tuple(c0 for c0 in starts if not os.path.isfile(probe.chunk_file(c0)))
    return dataclasses.replace(probe, todo=todo)


class _ChunkWriter:
    """Collects finished batches and writes a chunk file (atomically) when a batch closes a chunk."""

    def __init__(self, plan: ResumePlan, bar=None):
        self.plan, self.bar = plan, bar
        self.pending = {"feats": [], "probs": [], "labels": [], "indices": [], "ok": [], "bad": []}

    def collect(self, out, batch) -> None:
        f, p = out
        pending, m = self.pending, len(batch.indices)
        pending["feats"].append(np.asarray(f)[:m])
        if p is not None:
            pending["probs"].append(np.asarray(p)[:m])
        pending["labels"].append(batch.labels)
        pending["indices"].append(batch.indices)
        pending["ok"].append(batch.ok)
        pending["bad"].extend(batch.bad)
        if self.bar is not None:
            self.bar.update(m)
        end = int(batch.indices[-1]) + 1
        if end % self.plan.chunk == 0 or end == self.plan.n:
            arrays = {"features": np.concatenate(pending["feats"]), "labels": np.concatenate(pending["labels"]),
                      "indices": np.concatenate(pending["indices"]), "ok": np.concatenate(pending["ok"]),
                      "bad": np.asarray(json.dumps([[int(i), msg] for i, msg in pending["bad"]]))}
            if pending["probs"]:
                arrays["source_probs"] = np.concatenate(pending["probs"])
            _write_npz_atomic(self.plan.chunk_file(end - len(arrays["indices"])), **arrays)
            for v in pending.values():
                v.clear()


def run_chunks(plan: ResumePlan, backbone, variables, dataset, *, batch_size: int, embed, to_device,
               num_workers: Optional[int] = None, skip_bad: bool = False, bar=None) -> Optional[float]:
    """The decode-and-batch loop: embed every unfinished chunk of `plan` and write its file.

    Batch k+1 is dispatched before batch k is read back; the last batch is zero-padded to
    `batch_size` (one compiled shape) and its padding dropped. An interruption keeps the chunks
    already written (and the one the batch in flight closes). Returns the first batch's
    compile-and-run time in seconds (None when nothing was left to do).
    """
    import jax

    from jscore.data.loader import iter_batches

    labels_all = getattr(dataset, "labels", None)
    writer = _ChunkWriter(plan, bar)
    compile_s = None
    for r0, r1 in plan.runs():
        in_flight = None  # (outputs, batch)
        try:
            for batch in iter_batches(dataset, backbone.preprocess, batch_size=batch_size, start=r0, stop=r1,
                                      num_workers=num_workers, skip_bad=skip_bad, labels=labels_all):
                images = batch.images
                if len(images) < batch_size:  # pad: one compiled shape for every batch
                    pad = np.zeros((batch_size - len(images),) + images.shape[1:], np.uint8)
                    images = np.concatenate([images, pad])
                if compile_s is None:
                    tc = time.perf_counter()
                    out = embed(variables, to_device(images))
                    jax.block_until_ready(out)
                    compile_s = time.perf_counter() - tc
                else:
                    out = embed(variables, to_device(images))
                if in_flight is not None:
                    item, in_flight = in_flight, None
                    writer.collect(*item)
                in_flight = (out, batch)
        except BaseException:
            # Interrupted (or a bad image): the batch already computed may close a chunk; keep it.
            if in_flight is not None:
                try:
                    writer.collect(*in_flight)
                except Exception:  # noqa: BLE001  (the original error matters more)
                    pass
            raise
        if in_flight is not None:
            writer.collect(*in_flight)
    return compile_s


def merge_chunks(plan: ResumePlan, num_classes: int) -> tuple:
    """Read the chunk files in order -> (merged arrays, skipped [(index, error)]): the images that
    decoded, features/labels/indices (and source_probs when present) in dataset order."""
    pieces = [dict(np.load(plan.chunk_file(c0))) for c0 in plan.starts]
    ok = np.concatenate([p["ok"] for p in pieces])
    merged = {
        "features": np.concatenate([p["features"] for p in pieces])[ok].astype(np.float32),
        "labels": np.concatenate([p["labels"] for p in pieces])[ok].astype(np.int64),
        "indices": np.concatenate([p["indices"] for p in pieces])[ok].astype(np.int64),
        "num_classes": np.asarray(int(num_classes), np.int64),
    }
    if "source_probs" in pieces[0]:
        merged["source_probs"] = np.concatenate([p["source_probs"] for p in pieces])[ok].astype(np.float32)
    skipped = [item for p in pieces for item in json.loads(str(p["bad"]))]
    return merged, skipped


def extract(backbone, dataset, out_dir: str, *, variables=None, seed: int = 0, batch_size: int = 64,
            chunk_batches: int = 16, num_workers: Optional[int] = None, skip_bad: bool = False,
            progress: bool = True, overwrite: bool = False, data_parallel: bool = False) -> str:
    """Extract (or reuse) the features of `dataset` under `backbone` -> path of the `.npz`.

    The steps, each a function of this module: `cache_entry` (key and file names), `cached`
    (a stored result), `resume_plan` (finished chunks of an interrupted call), `run_chunks`
    (decode, batch, embed, write chunks), `merge_chunks` (the final file).

    Args:
      backbone: a `jscore.backbones.Backbone`.
      dataset: an `ImageDataset` (`jscore.data.open_dataset`).
      out_dir: the cache folder.
      variables: weights; default `backbone.variables`, else a random init from `seed`
        (recorded in the metadata as `random_init`).
      batch_size: images per forward pass; the last batch is zero-padded to it (one compiled
        shape) and its padding dropped.
      chunk_batches: batches per chunk file (the unit of resumption).
      skip_bad: skip images that fail to decode (listed in the metadata) instead of raising.
      overwrite: recompute even when a stored result exists.
      data_parallel: split each batch over all local devices (a "data" mesh axis; weights
        replicated). `batch_size` must be a multiple of the device count.
    Returns:
      The `.npz` path (see the module docstring for its arrays). Raises `ValueError` for bad
      arguments or, without `skip_bad`, an undecodable image (the message names the file).
    """
    import jax

    from jscore.backbones import init_variables

    if batch_size < 1 or chunk_batches < 1:
        raise ValueError(f"batch_size and chunk_batches must be >= 1, got {batch_size}, {chunk_batches}")
    n_dev = len(jax.local_devices())
    if data_parallel and batch_size % n_dev:
        raise ValueError(f"data_parallel needs batch_size a multiple of the {n_dev} devices, got {batch_size}")
    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset split is empty")
    t_setup = time.perf_counter()
    random_init = variables is None and backbone.variables is None
    if variables is None:
        variables = init_variables(backbone, seed)
    entry = cache_entry(backbone, variables, dataset, out_dir)
    os.makedirs(out_dir, exist_ok=True)
    if not overwrite and cached(entry):
        return entry.final
    plan = resume_plan(entry, n, batch_size, chunk_batches, overwrite=overwrite)

    embed = make_embed_fn(backbone)
    to_device = lambda images: images  # noqa: E731  (one device: jit moves the batch)
    if data_parallel and n_dev > 1:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        mesh = Mesh(np.asarray(jax.local_devices()), ("data",))
        variables = jax.device_put(variables, NamedSharding(mesh, PartitionSpec()))
        rows = NamedSharding(mesh, PartitionSpec("data"))
        to_device = lambda images: jax.device_put(images, rows)  # noqa: E731
    else:
        variables = jax.device_put(variables)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, initial=n - plan.todo_images(), unit="img",
                   desc=f"{backbone.name} {entry.description.get('split', '')}", dynamic_ncols=True, file=sys.stderr)
    t0 = time.perf_counter()
    setup_s = t0 - t_setup
    compile_s = run_chunks(plan, backbone, variables, dataset, batch_size=batch_size, embed=embed,
                           to_device=to_device, num_workers=num_workers, skip_bad=skip_bad, bar=bar)
    if bar is not None:
        bar.close()
    loop_s = time.perf_counter() - t0

    t_merge = time.perf_counter()
    merged, skipped = merge_chunks(plan, dataset.num_classes)
    _write_npz_atomic(entry.final, **merged)
    metadata = {
        "key": entry.key, "format": FORMAT_VERSION, "backbone": backbone.name,
        "weights_fingerprint": entry.fingerprint, "forward_variant": entry.forward_variant,
        "random_init": random_init, "seed": seed if random_init else None, "compute_dtype": backbone.dtype,
        "dataset": entry.description, "split": entry.description.get("split"), "preprocess": entry.preprocess,
        "num_examples": int(merged["labels"].shape[0]), "feature_dim": int(merged["features"].shape[1]),
        "num_source_classes": int(merged["source_probs"].shape[1]) if "source_probs" in merged else 0,
        "num_classes": int(dataset.num_classes), "class_names": list(getattr(dataset, "class_names", [])),
        "skipped": [{"index": i, "error": msg} for i, msg in skipped],
        "batch_size": batch_size, "chunk_size": plan.chunk, "versions": _versions(),
        "devices": n_dev if data_parallel else 1,
        "device": str(jax.devices()[0].device_kind),
        # The last run only (a resumed run times its own chunks). loop_s includes compile_s.
        "timing": {"setup_s": round(setup_s, 3), "loop_s": round(loop_s, 3), "loop_images": plan.todo_images(),
                   "compile_s": None if compile_s is None else round(compile_s, 3),
                   "merge_s": round(time.perf_counter() - t_merge, 3)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_json_atomic(entry.meta, metadata)
    shutil.rmtree(entry.parts, ignore_errors=True)
    return entry.final


def load_features(path: str) -> dict:
    """Read a features file -> dict with `features` float32 [N, D], `labels` int64 [N],
    `indices` [N], `num_classes` int, `source_probs` float32 [N, Cs] when present, and
    `metadata` (the JSON beside it, or {} when absent). Accepts the `.npz` or the `.json` path."""
    if path.endswith(".json"):
        path = path[: -len(".json")] + ".npz"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"features file not found: {path!r}")
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    for required in ("features", "labels"):
        if required not in out:
            raise ValueError(f"{path}: missing array {required!r} (has {sorted(out)})")
    if out["features"].ndim != 2:
        raise ValueError(f"{path}: features must be [N, D], got shape {out['features'].shape}")
    meta_path = path[: -len(".npz")] + ".json" if path.endswith(".npz") else path + ".json"
    metadata = {}
    if os.path.isfile(meta_path):
        with open(meta_path) as fh:
            metadata = json.load(fh)
    if "num_classes" in out:
        out["num_classes"] = int(out["num_classes"])
    elif "num_classes" in metadata:
        out["num_classes"] = int(metadata["num_classes"])
    out["metadata"] = metadata
    return out


def score_file(path: str, **kwargs) -> dict:
    """Score a stored features file with `jscore.score`: features, labels, the class count and,
    when stored, the source probabilities are passed for you. `kwargs` go to `jscore.score`
    (e.g. `scores="logme,leep"`)."""
    from jscore.api import score

    arrays = load_features(path)
    kwargs.setdefault("num_classes", arrays.get("num_classes"))
    if "source_probs" in arrays:
        kwargs.setdefault("source_probs", arrays["source_probs"])
    return score(arrays["features"], arrays["labels"], **kwargs)
