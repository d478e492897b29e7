"""Read PyTorch checkpoints (`torch.save` files: `.pth`, `.pt`, `.th`) without torch.

`torch.save` writes one of two containers (both described in torch's `serialization.py`):

- **zip** (torch >= 1.6, the default): a zip archive `<name>/data.pkl` (the pickled object),
  `<name>/data/<key>` (one raw little-endian buffer per storage), optionally `<name>/byteorder`.
- **legacy** (`_use_new_zipfile_serialization=False`, and every checkpoint from before 1.6):
  five things back to back in one stream: a pickled magic number, a pickled protocol version
  (1001), a pickled `sys_info` dict (byte order, type sizes), the pickled object, a pickled list of
  storage keys, then for each key in that order an int64 element count followed by the raw bytes.

In both, the object pickle refers to tensor data by *persistent ids*
`("storage", storage_type, key, location, numel[, view_metadata])` and rebuilds tensors with
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, ...)`.

Safety: pickles can run arbitrary code through the globals they name. We unpickle with a
restricted `pickle.Unpickler` whose `find_class` resolves only a fixed list (`ALLOWED_GLOBALS`:
`collections.OrderedDict`, the tensor/parameter rebuild functions and the typed storage classes),
each mapped to a harmless stand-in of our own; any other global (`os.system`,
`builtins.eval`, ...) raises `UnsafeCheckpointError` before it can be called. Tensors become
NumPy arrays: the stand-in for `_rebuild_tensor_v2` records (storage, offset, size, stride), and
once the storage bytes are read each tensor is copied out with bounds-checked strides.

    >>> sd = read_state_dict("resnet20-12fca82f.th")     # {"module.conv1.weight": ndarray, ...}
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Dict, Union

import numpy as np

__all__ = ["read_state_dict", "read_checkpoint", "UnsafeCheckpointError", "ALLOWED_GLOBALS"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# A tensor view (e.g. a stride-0 broadcast) may not expand past this many bytes when copied out.
MAX_TENSOR_BYTES = 1 << 34


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """The checkpoint's pickle names a global outside `ALLOWED_GLOBALS` (refused, never called)."""


def _bfloat16():
    import ml_dtypes  # ships with jax

    return np.dtype(ml_dtypes.bfloat16)


# torch's typed storage classes -> NumPy element dtype (bfloat16 resolved lazily).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    """Stand-in for `torch.FloatStorage` & co.: only carries the element dtype."""

    def __init__(self, name: str):
        self.name = name

    @property
    def dtype(self) -> np.dtype:
        dt = _STORAGE_DTYPES[self.name]
        return _bfloat16() if dt == "bfloat16" else np.dtype(dt)

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """One storage: its bytes arrive after the object pickle (legacy) or from the zip (zip)."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, int(numel)
        self.data = None  # 1-d np.ndarray of `numel` elements once read


class _TensorRef:
    """A tensor awaiting its storage: `_rebuild_tensor_v2`'s arguments."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _Storage):
            raise ValueError(f"torch checkpoint: a tensor's storage is {type(storage).__name__}, not a storage reference")
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        if len(self.size) != len(self.stride) or any(s < 0 for s in self.size + self.stride) or self.offset < 0:
            raise ValueError(f"torch checkpoint: invalid tensor geometry size={self.size} stride={self.stride} "
                             f"offset={self.offset}")

    def materialise(self) -> np.ndarray:
        buf = self.storage.data
        if buf is None:
            raise ValueError(f"torch checkpoint: storage {self.storage.key!r} has no data")
        n = int(np.prod(self.size, dtype=np.int64))
        if n == 0:
            return np.zeros(self.size, buf.dtype)
        if n * buf.dtype.itemsize > MAX_TENSOR_BYTES:
            raise ValueError(f"torch checkpoint: a tensor of size {self.size} ({n * buf.dtype.itemsize} bytes) "
                             f"exceeds the {MAX_TENSOR_BYTES}-byte limit")
        last = self.offset + sum((s - 1) * st for s, st in zip(self.size, self.stride))
        if last >= buf.shape[0]:
            raise ValueError(f"torch checkpoint: a tensor of size {self.size}, stride {self.stride}, offset "
                             f"{self.offset} reaches past its storage {self.storage.key!r} of {buf.shape[0]} elements")
        item = buf.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(buf[self.offset:], self.size, [s * item for s in self.stride],
                                               writeable=False)
        return np.array(view, copy=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data  # an nn.Parameter is its tensor for our purposes


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return data


# The only globals a checkpoint may name (module, name) -> what it resolves to.
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: Dict[str, _Storage], where: str):
        super().__init__(file, encoding="utf-8")
        self._storages, self._where = storages, where

    def find_class(self, module, name):
        target = ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise UnsafeCheckpointError(
                f"{self._where}: the pickle asks for the global {module}.{name}, which a tensor checkpoint does "
                f"not need; refused (allowed: {', '.join(sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS))})")
        return target

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise ValueError(f"{self._where}: unsupported persistent id {str(pid)[:80]!r} "
                             "(only tensor storages are supported)")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], pid[4]
        if not isinstance(storage_type, _StorageType):
            raise ValueError(f"{self._where}: storage {key!r} has type {storage_type!r}, not a typed storage")
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            raise ValueError(f"{self._where}: storage views (pre-1.0 checkpoints) are not supported")
        st = self._storages.get(key)
        if st is None:
            st = self._storages[key] = _Storage(key, storage_type.dtype, numel)
        elif st.dtype != storage_type.dtype:
            raise ValueError(f"{self._where}: storage {key!r} is used as both {st.dtype} and {storage_type.dtype}")
        return st


def _resolve(obj, memo=None):
    """Replace every `_TensorRef` in a tree of dicts/lists/tuples by its NumPy array."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _TensorRef):
        out = obj.materialise()
    elif isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        memo[id(obj)] = out
        for k, v in obj.items():
            out[k] = _resolve(v, memo)
        return out
    elif isinstance(obj, list):
        out = [_resolve(v, memo) for v in obj]
    elif isinstance(obj, tuple):
        out = tuple(_resolve(v, memo) for v in obj)
    else:
        out = obj
    memo[id(obj)] = out
    return out


def _read_zip(data: bytes, where: str):
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise ValueError(f"{where}: not a readable torch zip checkpoint ({err})") from None
    with zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ValueError(f"{where}: a torch zip checkpoint holds exactly one <name>/data.pkl; found {pkl or 'none'}")
        prefix = pkl[0][: -len("data.pkl")]
        order = "little"
        if prefix + "byteorder" in names:
            order = zf.read(prefix + "byteorder").decode().strip()
        storages: Dict[str, _Storage] = {}
        try:
            obj = _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), storages, where).load()
        except (UnsafeCheckpointError, ValueError):
            raise
        except Exception as err:  # truncated or corrupt pickle
            raise ValueError(f"{where}: cannot unpickle data.pkl ({type(err).__name__}: {err})") from None
        for key, st in storages.items():
            name = f"{prefix}data/{key}"
            if name not in names:
                raise ValueError(f"{where}: storage {key!r} is missing from the archive ({name})")
            raw = zf.read(name)
            st.data = _storage_array(raw, st, order, where)
    return obj


def _storage_array(raw: bytes, st: _Storage, order: str, where: str) -> np.ndarray:
    need = st.numel * st.dtype.itemsize
    if len(raw) < need:
        raise ValueError(f"{where}: storage {st.key!r} has {len(raw)} bytes, {need} expected (truncated file?)")
    dt = st.dtype.newbyteorder("<" if order == "little" else ">") if st.dtype.itemsize > 1 else st.dtype
    return np.frombuffer(raw, dt, count=st.numel).astype(st.dtype, copy=False)


def _read_legacy(data: bytes, where: str):
    f = io.BytesIO(data)

    def plain_load(what):
        try:
            return _RestrictedUnpickler(f, {}, where).load()
        except UnsafeCheckpointError:
            raise
        except Exception as err:
            raise ValueError(f"{where}: not a torch checkpoint (cannot read its {what}: {type(err).__name__})") from None

    magic = plain_load("magic number")
    if magic != LEGACY_MAGIC:
        raise ValueError(f"{where}: not a torch checkpoint (bad magic number)")
    protocol = plain_load("protocol version")
    if protocol != LEGACY_PROTOCOL:
        raise ValueError(f"{where}: unsupported legacy torch protocol version {protocol!r} (expected {LEGACY_PROTOCOL})")
    sys_info = plain_load("system info")
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    storages: Dict[str, _Storage] = {}
    try:
        obj = _RestrictedUnpickler(f, storages, where).load()
        keys = _RestrictedUnpickler(f, {}, where).load()
    except UnsafeCheckpointError:
        raise
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(f"{where}: cannot unpickle the checkpoint ({type(err).__name__}: {err}); truncated file?") from None
    if not isinstance(keys, list):
        raise ValueError(f"{where}: corrupt legacy checkpoint (storage key list is a {type(keys).__name__})")
    for key in keys:
        key = str(key)
        if key not in storages:
            raise ValueError(f"{where}: legacy checkpoint lists storage {key!r} that no tensor uses")
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{where}: truncated before storage {key!r}")
        (numel,) = struct.unpack("<q" if little else ">q", head)
        st = storages[key]
        if numel != st.numel:
            raise ValueError(f"{where}: storage {key!r} holds {numel} elements, the pickle says {st.numel}")
        raw = f.read(numel * st.dtype.itemsize)
        st.data = _storage_array(raw, st, "little" if little else "big", where)
    missing = [k for k, st in storages.items() if st.data is None]
    if missing:
        raise ValueError(f"{where}: storages {missing[:5]} have no data (truncated or corrupt file)")
    return obj


def read_checkpoint(path_or_bytes: Union[str, os.PathLike, bytes]) -> Any:
    """Unpickle a `torch.save` file (zip or legacy format) without torch -> the saved object, with
    every tensor as a NumPy array (its dtype; a copy in C order) and `nn.Parameter`s as their data.

    Raises:
      UnsafeCheckpointError (a ValueError): the pickle names a global outside `ALLOWED_GLOBALS`.
      ValueError: a missing, truncated, corrupt or foreign file, naming it.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data, where = bytes(path_or_bytes), "torch checkpoint (bytes)"
    else:
        where = os.fspath(path_or_bytes)
        if not os.path.isfile(where):
            raise ValueError(f"torch checkpoint {where!r} not found")
        with open(where, "rb") as fh:
            data = fh.read()
        where = f"torch checkpoint {where!r}"
    if len(data) < 4:
        raise ValueError(f"{where}: file too short to be a checkpoint ({len(data)} bytes)")
    if data[:4] == b"PK\x03\x04":
        obj = _read_zip(data, where)
    elif data[:1] == b"\x80":
        obj = _read_legacy(data, where)
    else:
        raise ValueError(f"{where}: neither a zip nor a legacy pickle torch checkpoint "
                         f"(starts with {data[:8]!r}; very old tar checkpoints are not supported)")
    return _resolve(obj)


def read_state_dict(path_or_bytes: Union[str, os.PathLike, bytes]) -> Dict[str, np.ndarray]:
    """A torch state dict `{name: array}` from a `.pth`/`.pt`/`.th` file or its bytes, without torch.

    Accepts a bare state dict, or a checkpoint dict holding one under `"state_dict"` (e.g.
    `{"state_dict": ..., "best_prec1": ...}`; the other entries are dropped; use
    `read_checkpoint` to keep them). Keys are returned as saved (prefixes such as `module.` kept),
    values as NumPy arrays with the saved dtype and shape (0-d for scalars such as
    `num_batches_tracked`).

    Raises:
      ValueError: unreadable file (see `read_checkpoint`), or an object that is not a dict of tensors
        (names the first offending key).
    """
    obj = read_checkpoint(path_or_bytes)
    where = "torch checkpoint" if isinstance(path_or_bytes, (bytes, bytearray, memoryview)) else repr(os.fspath(path_or_bytes))
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: holds a {type(obj).__name__}, not a state dict")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, np.ndarray):
            raise ValueError(f"{where}: entry {k!r} is a {type(v).__name__}, not a tensor; not a state dict")
        out[str(k)] = v
    return out
