"""`read_state_dict` / `read_checkpoint` (torch-free reader) against hand-built pickles and torch.

Part 1 needs no torch: a legacy-format file assembled by hand from the format's description
(magic, protocol, sys_info, object pickle with persistent ids, key list, int64 count + bytes per
storage), a zip-format one likewise, malicious pickles, truncated and foreign files.
Part 2 uses torch when installed: files written by `torch.save` in both formats (float32, float16,
int64, bfloat16, views sharing a storage, non-contiguous strides) and every real checkpoint, compared
bit for bit with `torch.load`.
"""

from __future__ import annotations

import collections
import glob
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from jscore.backbones.torch_checkpoint import UnsafeCheckpointError, read_checkpoint, read_state_dict

SHARED_MODELS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "models"))


# ------------------------------------------------------------------ hand-built pickles (no torch)
class _Global:
    """Pickles as a reference to the global `module.name` (what torch writes for its classes)."""

    def __init__(self, module, name):
        self.module, self.name = module, name


class _Call:
    """Pickles as `module.name(*args)` (REDUCE)."""

    def __init__(self, fn: _Global, args):
        self.fn, self.args = fn, args


class _Pid:
    def __init__(self, pid):
        self.pid = pid


class _Pickler(pickle._Pickler):  # the pure-Python pickler: `save` can be extended
    """Writes `_Global` as a GLOBAL opcode and `_Call` as GLOBAL + args + REDUCE, so the tests
    build torch-style pickles without importing (or faking) torch's modules."""

    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Pid) else None

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        if isinstance(obj, _Call):
            self.save(obj.fn)
            self.save(obj.args)
            self.write(pickle.REDUCE)
            return
        super().save(obj, save_persistent_id)


def _dumps(obj, protocol=2):
    buf = io.BytesIO()
    _Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def _tensor(storage_pid, offset, size, stride):
    return _Call(_Global("torch._utils", "_rebuild_tensor_v2"),
                 (storage_pid, offset, tuple(size), tuple(stride), False, collections.OrderedDict()))


def _legacy_file(obj, storages):
    """storages: {key: (storage class name, 1-d array)} in file order."""
    out = io.BytesIO()
    for part in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                 "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        out.write(pickle.dumps(part, protocol=2))
    out.write(_dumps(obj))
    out.write(pickle.dumps(list(storages), protocol=2))
    for _, arr in storages.values():
        out.write(struct.pack("<q", arr.size))
        out.write(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    return out.getvalue()


def _zip_file(obj, storages, name="archive"):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(f"{name}/data.pkl", _dumps(obj))
        zf.writestr(f"{name}/byteorder", "little")
        for key, (_, arr) in storages.items():
            zf.writestr(f"{name}/data/{key}", arr.tobytes())
        zf.writestr(f"{name}/version", "3\n")
    return out.getvalue()


def _sample():
    """A state dict with a shared storage viewed three ways, a half tensor and an int64 scalar."""
    base = np.arange(24, dtype=np.float32) * 0.5 - 3.0
    half = np.array([1.5, -2.25, 65504.0], np.float16)
    count = np.array([7], np.int64)
    legacy_pid = lambda cls, key, n: _Pid(("storage", _Global("torch", cls), key, "cpu", n, None))
    zip_pid = lambda cls, key, n: _Pid(("storage", _Global("torch", cls), key, "cpu", n))
    expected = collections.OrderedDict([
        ("w", base[:12].reshape(3, 4)),                                    # contiguous view
        ("w_t", base[:12].reshape(3, 4).T),                                # transposed: strides (1, 4)
        ("tail", base[14:].reshape(2, 5)[:, ::2]),                         # offset 14, strides (5, 2)
        ("h", half),
        ("n", count.reshape(())),                                          # 0-d
    ])

    def obj(pid):
        f, h, n = pid("FloatStorage", "0", 24), pid("HalfStorage", "1", 3), pid("LongStorage", "2", 1)
        return collections.OrderedDict([
            ("w", _tensor(f, 0, (3, 4), (4, 1))), ("w_t", _tensor(f, 0, (4, 3), (1, 4))),
            ("tail", _tensor(f, 14, (2, 3), (5, 2))), ("h", _tensor(h, 0, (3,), (1,))), ("n", _tensor(n, 0, (), ())),
        ])

    storages = {"0": ("FloatStorage", base), "1": ("HalfStorage", half), "2": ("LongStorage", count)}
    return expected, obj(legacy_pid), obj(zip_pid), storages


def _assert_same(got, expected):
    assert list(got) == list(expected)
    for k in expected:
        assert got[k].dtype == expected[k].dtype, k
        assert got[k].shape == expected[k].shape, k
        np.testing.assert_array_equal(got[k], expected[k], err_msg=k)


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_hand_built_files(fmt, tmp_path):
    expected, legacy_obj, zip_obj, storages = _sample()
    data = _legacy_file(legacy_obj, storages) if fmt == "legacy" else _zip_file(zip_obj, storages)
    _assert_same(read_state_dict(data), expected)
    path = tmp_path / "x.pth"
    path.write_bytes(data)
    _assert_same(read_state_dict(str(path)), expected)


def test_checkpoint_dict_with_state_dict_key():
    expected, legacy_obj, _, storages = _sample()
    data = _legacy_file({"state_dict": legacy_obj, "best_prec1": 91.5}, storages)
    _assert_same(read_state_dict(data), expected)
    full = read_checkpoint(data)
    assert full["best_prec1"] == 91.5


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_malicious_pickle_is_refused_without_running(fmt, monkeypatch):
    payload = {"state_dict": _Boom()}   # pickles as posix.system("echo ...")
    if fmt == "legacy":
        data = _legacy_file(payload, {})
    else:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            zf.writestr("a/data.pkl", pickle.dumps(payload, protocol=2))
        data = out.getvalue()
    assert b"system" in data
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    monkeypatch.setattr(__import__(os.name), "system", lambda *a: calls.append(a))
    with pytest.raises(UnsafeCheckpointError, match=r"system.*refused"):
        read_state_dict(data)
    assert calls == []


def test_builtins_eval_refused():
    data = _legacy_file(_Call(_Global("builtins", "eval"), ("1 + 1",)), {})
    with pytest.raises(ValueError, match="builtins.eval"):
        read_checkpoint(data)


def test_out_of_bounds_view_rejected():
    base = np.arange(4, dtype=np.float32)
    pid = _Pid(("storage", _Global("torch", "FloatStorage"), "0", "cpu", 4, None))
    data = _legacy_file({"a": _tensor(pid, 2, (3,), (1,))}, {"0": ("FloatStorage", base)})
    with pytest.raises(ValueError, match="past its storage"):
        read_state_dict(data)


def test_truncated_and_foreign_files(tmp_path):
    expected, legacy_obj, zip_obj, storages = _sample()
    for data in (_legacy_file(legacy_obj, storages), _zip_file(zip_obj, storages)):
        with pytest.raises(ValueError):
            read_state_dict(data[: len(data) - 10])
        with pytest.raises(ValueError):
            read_state_dict(data[:40])
    with pytest.raises(ValueError, match="neither a zip nor a legacy"):
        read_state_dict(b"GIF89a not a checkpoint")
    with pytest.raises(ValueError, match="not found"):
        read_state_dict(str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="not a state dict|not a tensor"):
        read_state_dict(_legacy_file({"a": 3}, {}))


# ------------------------------------------------------------------ against torch
def _real_files():
    files = sorted(glob.glob(os.path.join(SHARED_MODELS, "*", "*.th")) + glob.glob(os.path.join(SHARED_MODELS, "*", "*.pth")))
    for v in (0, 1, 2):
        try:
            from jscore.backbones.efficientnet_lite import package_file

            files.append(package_file(v))
        except ValueError:
            pass
    return files


@pytest.mark.shared_data
@pytest.mark.parametrize("path", _real_files() or [None], ids=lambda p: os.path.basename(p) if p else "none")
def test_real_checkpoints_bit_identical_to_torch(path):
    torch = pytest.importorskip("torch")
    if path is None:
        pytest.skip("no real checkpoints beside the checkout")
    ref = torch.load(path, map_location="cpu", weights_only=True)
    ref = ref.get("state_dict", ref)
    ours = read_state_dict(path)
    assert list(ours) == list(ref)
    for k, t in ref.items():
        a = t.numpy()
        assert ours[k].dtype == a.dtype and ours[k].shape == a.shape, k
        assert ours[k].tobytes() == a.tobytes(), k


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_torch_save_roundtrip(legacy, tmp_path):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    obj = collections.OrderedDict([
        ("f32", base),
        ("f32_t", base.t()),                     # shares base's storage, strides (1, 8)
        ("f32_slice", base[1:5:2, 3::2]),        # offset + strides (16, 2)
        ("f16", torch.randn(3, 5, generator=g).half()),
        ("i64", torch.arange(-5, 7, dtype=torch.int64).reshape(3, 4)[:, 1:]),
        ("bf16", torch.randn(4, generator=g).bfloat16()),
        ("scalar", torch.tensor(12345678901, dtype=torch.int64)),
        ("param", torch.nn.Parameter(torch.randn(2, 2, generator=g))),
        ("empty", torch.zeros(0, 3)),
    ])
    path = tmp_path / "t.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    ours = read_state_dict(str(path))
    assert list(ours) == list(obj)
    for k, t in obj.items():
        t = t.detach()
        if t.dtype == torch.bfloat16:
            import ml_dtypes

            want = t.float().numpy().astype(ml_dtypes.bfloat16)
        else:
            want = t.contiguous().numpy()
        assert ours[k].dtype == want.dtype and ours[k].shape == want.shape, k
        assert ours[k].tobytes() == np.ascontiguousarray(want).tobytes(), k
