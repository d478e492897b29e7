"""Streamed scoring (jscore.streaming, jscore.moments): chunked inputs give the one-shot result
and the float64 oracles' values, for every chunking; errors name the problem."""

import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jscore
from jscore import moments as mom
from jscore.streaming import STREAMABLE, chunked
from tests.oracles import gbc as gbc_oracle, hscore as hscore_oracle, leep as leep_oracle, logme as logme_oracle
from tests.oracles import etran as etran_oracle, nce as nce_oracle, reg_hscore as reg_oracle, transrate as transrate_oracle
from tests.oracles.data import class_features, class_labels, source_probs
from tests.tolerances import SCORE_KIND, assert_close

N, D, C, CS = 300, 12, 4, 7
FEATURE_SCORES = ["hscore", "reg_hscore", "logme", "gbc", "transrate", "etran_lda"]
SOURCE_SCORES = ["nce", "leep"]
GBC_DIMS = 8


def _case(offset=50.0, seed=0):
    rng = np.random.default_rng(seed)
    y = class_labels(rng, N, C, imbalance=2.0)
    # A large common offset: raw sums of squares would lose the variance in float32.
    x = class_features(rng, y, D, C, separation=1.0, offset=offset).astype(np.float32)
    p = source_probs(rng, y, CS).astype(np.float32)
    return x, y, p


def _oracle(name, x, y, p):
    x64, p64 = x.astype(np.float64), p.astype(np.float64)
    if name == "hscore":
        return hscore_oracle.hscore(x64, y, C)
    if name == "reg_hscore":
        return reg_oracle.reg_hscore(x64, y, C)
    if name == "logme":
        return logme_oracle.logme(x64, y, C)
    if name == "gbc":
        return gbc_oracle.gbc(x64, y, C, dims=GBC_DIMS)
    if name == "transrate":
        return transrate_oracle.transrate(x64, y, C)
    if name == "etran_lda":
        return etran_oracle.etran_lda(x64, y)
    if name == "nce":
        return nce_oracle.nce(p64, y, C)
    return leep_oracle.leep(p64, y, C)


def _uneven(x, y, p, sizes):
    out, start = [], 0
    for s in sizes:
        out.append((x[start:start + s], y[start:start + s], p[start:start + s]))
        start += s
    assert start == len(y)
    return out


CHUNKINGS = {
    "single": lambda x, y, p: chunked(x, y, chunk_size=N, source_probs=p),
    "uneven_last": lambda x, y, p: chunked(x, y, chunk_size=64, source_probs=p),  # 4 x 64 + 44
    "one_row": lambda x, y, p: chunked(x, y, chunk_size=1, source_probs=p),
    "irregular": lambda x, y, p: _uneven(x, y, p, [5, 150, 1, 94, 50]),  # split and padded to 5 rows
}


@pytest.fixture(scope="module")
def case():
    x, y, p = _case()
    names = FEATURE_SCORES + SOURCE_SCORES
    one_shot = jscore.score(x, y, source_probs=p, scores=names, num_classes=C, gbc={"dims": GBC_DIMS})
    truth = {n: _oracle(n, x, y, p) for n in names}
    return x, y, p, one_shot, truth


@pytest.mark.parametrize("chunking", sorted(CHUNKINGS))
def test_every_chunking_equals_one_shot_and_oracle(case, chunking):
    x, y, p, one_shot, truth = case
    got = jscore.score(CHUNKINGS[chunking](x, y, p), num_classes=C, gbc={"dims": GBC_DIMS})
    assert list(got) == [n for n in jscore.REGISTRY if n in got]  # registry order
    assert set(got) == set(STREAMABLE)
    for name, value in got.items():
        assert_close(value, truth[name], np.float32, SCORE_KIND[name], err_msg=f"{name} vs oracle")
        assert_close(value, one_shot[name], np.float32, SCORE_KIND[name], err_msg=f"{name} vs one-shot")


def test_float64_stream_matches_the_oracles_tightly(case):
    x, y, p, _, truth = case
    got = jscore.score(chunked(x, y, chunk_size=37, source_probs=p), num_classes=C, float64=True,
                       gbc={"dims": GBC_DIMS})
    for name, value in got.items():
        assert_close(value, truth[name], np.float64, SCORE_KIND[name], err_msg=name)


def test_memmap_paths_and_arrays_with_chunk_size(case, tmp_path):
    x, y, p, one_shot, _ = case
    labels = np.array([3, 5, 9, 11])[y]  # remapped to 0..3 as the one-shot call does
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", labels)
    np.save(tmp_path / "p.npy", p)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    calls = [
        dict(features=mapped, labels=labels, source_probs=np.load(tmp_path / "p.npy", mmap_mode="r"), chunk_size=50),
        dict(features=str(tmp_path / "x.npy"), labels=str(tmp_path / "y.npy"), source_probs=str(tmp_path / "p.npy")),
        dict(features=x, labels=labels, source_probs=p, chunk_size=77),
    ]
    for kwargs in calls:
        got = jscore.score(scores=FEATURE_SCORES + SOURCE_SCORES, gbc={"dims": GBC_DIMS}, **kwargs)
        for name, value in got.items():
            assert_close(value, one_shot[name], np.float32, SCORE_KIND[name], err_msg=name)


def test_generator_is_read_once_and_leep_needs_a_second_pass(case):
    x, y, p, one_shot, _ = case
    gen = (c for c in chunked(x, y, chunk_size=100, source_probs=p))
    with pytest.warns(UserWarning, match="'etran_lda', 'leep'|leep"):
        got = jscore.score(gen, num_classes=C, gbc={"dims": GBC_DIMS})
    assert "leep" not in got and "etran_lda" not in got and "nce" in got
    assert_close(got["logme"], one_shot["logme"], np.float32, "iterative")
    with pytest.raises(ValueError, match="second pass"):
        jscore.score((c for c in chunked(x, y, source_probs=p)), num_classes=C, scores=["leep"])
    with pytest.raises(ValueError, match="published"):
        jscore.score(chunked(x, y), num_classes=C, scores=["etran_lda"], etran_lda={"form": "paper"})
    factory = lambda: iter(chunked(x, y, chunk_size=100, source_probs=p))  # noqa: E731
    assert_close(jscore.score(factory, num_classes=C, scores=["leep"])["leep"], one_shot["leep"], np.float32)


def test_source_only_and_dict_chunks(case):
    x, y, p, one_shot, _ = case
    logits = np.log(p)
    chunks = [{"labels": y[s:s + 60], "source_logits": logits[s:s + 60]} for s in range(0, N, 60)]
    got = jscore.score(chunks, num_classes=C)
    assert set(got) == set(SOURCE_SCORES)
    for name in SOURCE_SCORES:
        assert_close(got[name], one_shot[name], np.float32)


def test_errors_name_the_problem(case):
    x, y, p, _, _ = case
    chunks = chunked(x, y, chunk_size=100)
    with pytest.raises(ValueError, match=r"need all samples at once.*hscore"):
        jscore.score(chunks, num_classes=C, scores=["logme", "knn"])
    with pytest.raises(ValueError, match="num_classes"):
        jscore.score(chunks)
    with pytest.raises(ValueError, match="inside each chunk"):
        jscore.score(chunks, y, num_classes=C)
    bad = [c for c in chunks]
    bad[1] = (np.where(np.arange(D) == 3, np.nan, bad[1][0]), bad[1][1])
    with pytest.raises(ValueError, match="NaN"):
        jscore.score(bad, num_classes=C, scores=["hscore"])
    with pytest.raises(ValueError, match="width"):
        jscore.score([chunks[0], (x[100:, :5], y[100:])], num_classes=C, scores=["hscore"])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, num_classes=4\)"):
        jscore.score([(x, y + 1)], num_classes=C, scores=["hscore"])
    lone = y.copy()
    lone[lone == 2] = 3
    lone[0] = 2  # class 2 has one sample; GBC needs two per class
    with pytest.raises(ValueError, match="at least 2"):
        jscore.score(chunked(x, lone, chunk_size=100), num_classes=C, scores=["gbc"])
    with pytest.raises(ValueError, match="regression"):
        jscore.score(x, targets=y.astype(float), chunk_size=10)


def test_one_compiled_update_per_pass(case):
    x, y, _, _, _ = case
    jscore.score(chunked(x, y, chunk_size=64), num_classes=C, scores=["hscore"])  # warm
    before = mom.update._cache_size()
    jscore.score(chunked(x, y, chunk_size=64), num_classes=C, scores=["hscore"])  # short last chunk padded
    assert mom.update._cache_size() == before


def _np_moments(x, y):
    """float64 oracle of the accumulator: counts, class means, pooled within scatter, the total
    scatter, per-class scatters and sum |x_i - mu|^4."""
    x = x.astype(np.float64)
    mu = x.mean(0)
    means = np.stack([x[y == c].mean(0) for c in range(C)])
    dev = x - means[y]
    per_class = np.stack([dev[y == c].T @ dev[y == c] for c in range(C)])
    xc = x - mu
    return dict(counts=np.bincount(y, minlength=C), means=means, within=dev.T @ dev, total=xc.T @ xc,
                per_class=per_class, norm4=np.sum(np.sum(xc**2, 1) ** 2))


def _accumulate(x, y, sizes, scales=None):
    """Moments from chunks of `sizes` rows, each chunk accumulated in its own state (optionally at
    its own scale), then merged: exercises the merge of states of different units."""
    state = None
    start = 0
    for i, s in enumerate(sizes):
        xs, ys = jnp.asarray(x[start:start + s]), jnp.asarray(y[start:start + s])
        scale = jnp.float32(scales[i] if scales else 1.0)
        shift = jnp.mean(xs, axis=0) / scale  # each state its own reference point
        part = mom.chunk_moments(xs, ys, jnp.ones(s), num_classes=C, scale=scale, shift=shift,
                                 class_scatter=True, quartic=True)
        state = part if state is None else mom.merge(state, part)
        start += s
    return state


def test_accumulator_against_float64_sums():
    x, y, _ = _case(offset=1000.0, seed=1)
    ref = _np_moments(x, y)
    for scales in (None, [1.0, 4.0, 0.25, 2.0]):  # chunks in different units (other processes)
        st = _accumulate(x, y, [100, 3, 150, 47], scales)
        s = float(st.scale)
        np.testing.assert_allclose(np.asarray(st.counts), ref["counts"])
        np.testing.assert_allclose(np.asarray(mom.class_means(st)), ref["means"], rtol=1e-6)
        # Centred per chunk and merged (Chan): float32 keeps ~1e-5 of the scatter despite the offset
        # of 1000 (raw sums of squares would be ~1e6 times the variance: no digit left).
        scale_sq = np.abs(ref["within"]).max()
        np.testing.assert_allclose(np.asarray(st.within) * s**2, ref["within"], atol=1e-5 * scale_sq)
        np.testing.assert_allclose(np.asarray(st.class_within) * s**2, ref["per_class"], atol=1e-5 * scale_sq)
        _, total = mom.total_scatter(st)
        np.testing.assert_allclose(np.asarray(total) * s**2, ref["total"], atol=1e-5 * scale_sq)
        np.testing.assert_allclose(float(st.row_norm4) * s**4, ref["norm4"], rtol=1e-4)


def test_hand_checkable_merge():
    # Class 0: {0, 2} then {4}; class 1: {10} then {12}. Pooled within scatter:
    # class 0 about mean 2: 4 + 0 + 4 = 8; class 1 about 11: 1 + 1 = 2 -> 10.
    a = mom.chunk_moments(jnp.array([[0.0], [2.0], [10.0]]), jnp.array([0, 0, 1]), jnp.ones(3), num_classes=2,
                          scale=jnp.float32(1), quartic=True)
    b = mom.chunk_moments(jnp.array([[4.0], [12.0], [99.0]]), jnp.array([0, 1, 1]), jnp.array([1.0, 1.0, 0.0]),
                          num_classes=2, scale=jnp.float32(2), quartic=True)  # padded row masked out
    m = mom.merge(a, b)
    assert float(m.n) == 5
    np.testing.assert_allclose(np.asarray(mom.class_means(m))[:, 0], [2.0, 11.0])
    assert float(m.within[0, 0]) * float(m.scale) ** 2 == pytest.approx(10.0)
    # mean 5.6: deviations -5.6, -3.6, 4.4, -1.6, 6.4 -> sum of fourth powers
    dev = np.array([0, 2, 10, 4, 12]) - 5.6
    assert float(m.row_norm4) * float(m.scale) ** 4 == pytest.approx(np.sum(dev**4), rel=1e-5)


def test_score_zoo_streams_each_model(case, tmp_path):
    x, y, p, _, _ = case
    x2 = x[:, :7] * 3 + 1
    ref = jscore.score_zoo({"a": {"features": x, "source_probs": p}, "b": {"features": x2}}, y,
                           scores=["hscore", "logme", "nce"], num_classes=C)
    np.save(tmp_path / "b.npy", x2)
    got = jscore.score_zoo({"a": {"features": chunked(x, y, chunk_size=70, source_probs=p)},
                            "b": {"features": str(tmp_path / "b.npy")}}, y,
                           scores=["hscore", "logme", "nce"], num_classes=C)
    assert set(got["b"]) == {"hscore", "logme"}  # b has no source probabilities
    for m in ref:
        for name, value in got[m].items():
            assert_close(value, ref[m][name], np.float32, SCORE_KIND[name], err_msg=f"{m} {name}")


WORKER = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_platforms", "cpu")
    pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
    import numpy as np
    import jscore
    from jscore.streaming import chunked
    data = np.load(sys.argv[4])
    x, y, p = data["x"], data["y"], data["p"]
    # Uneven halves, in chunks of different sizes.
    mine = slice(0, 130) if pid == 0 else slice(130, None)
    r = jscore.score(chunked(x[mine], y[mine], chunk_size=40 + 7 * pid, source_probs=p[mine]), num_classes=int(data["c"]),
                     across_processes=True, gbc={"dims": 8})
    json.dump(r, open(out, "w"))
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_reduce_to_the_single_process_result(case, tmp_path):
    x, y, p, _, _ = case
    # Reorder so that the two processes' first chunks differ in spread (different scales).
    order = np.argsort(np.abs(x - x.mean(0)).max(1))
    x, y, p = x[order], y[order], p[order]
    single = jscore.score(chunked(x, y, chunk_size=64, source_probs=p), num_classes=C, gbc={"dims": 8})
    np.savez(tmp_path / "data.npz", x=x, y=y, p=p, c=C)
    (tmp_path / "worker.py").write_text(WORKER)
    port = str(_free_port())
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), ".."), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(i), port,
                               str(tmp_path / f"r{i}.json"), str(tmp_path / "data.npz")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    try:
        logs = [proc.communicate(timeout=90)[0].decode(errors="replace") for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    import json

    for i, proc in enumerate(procs):
        assert proc.returncode == 0, logs[i][-3000:]
    results = [json.load(open(tmp_path / f"r{i}.json")) for i in range(2)]
    assert results[0] == results[1]  # every process gets the same values
    for name, value in results[0].items():
        assert_close(value, single[name], np.float32, SCORE_KIND[name], err_msg=name)


def test_cli_streams_npy_memmaps_and_npz_with_chunk_size(case, tmp_path, capsys):
    import json

    from jscore.cli import main

    x, y, p, one_shot, _ = case
    np.save(tmp_path / "feats.npy", x)
    np.save(tmp_path / "labels.npy", y)
    assert main(["score", str(tmp_path / "feats.npy"), "--labels", str(tmp_path / "labels.npy"),
                 "--chunk-size", "64", "--json", "--scores", "hscore,logme"]) == 0
    printed = json.loads(capsys.readouterr().out)
    np.savez(tmp_path / "m.npz", features=x, labels=y, source_probs=p)
    assert main(["score", str(tmp_path / "m.npz"), "--chunk-size", "90", "--json", "--scores", "hscore,leep"]) == 0
    printed_npz = json.loads(capsys.readouterr().out)
    for got in (printed, printed_npz):
        for name, value in got.items():
            assert_close(value, one_shot[name], np.float32, SCORE_KIND[name], err_msg=name)
    assert main(["score", str(tmp_path / "feats.npy")]) == 2  # no --labels: a clear error
    assert "--labels" in capsys.readouterr().err
