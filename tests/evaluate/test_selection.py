"""Top-1 regret, rel@k and recall@k against a sorting-based NumPy oracle and hand cases."""

import jax
import numpy as np
import pytest

from jscore.evaluate import selection as S


def _oracle(x, y, k):
    n = len(x)
    # Pick order: score descending, ties against the score (lower truth first), then position.
    order = sorted(range(n), key=lambda i: (-x[i], y[i], i))
    top = order[:k]
    regret = y.max() - y[order[0]]
    rel = y[top].max() / y.max()
    kth = np.sort(y)[::-1][min(k, n) - 1]  # k-th best truth; ties at k-th place count
    recall = sum(y[i] >= kth for i in top) / min(k, n)
    return regret, rel, recall


def test_hand_cases():
    x = np.array([3.0, 1, 2])
    y = np.array([0.7, 0.9, 0.8])
    assert float(S.top1_regret(x, y)) == pytest.approx(0.2)
    assert float(S.rel_at_k(x, y, k=1)) == pytest.approx(0.7 / 0.9)
    assert float(S.rel_at_k(x, y, k=3)) == pytest.approx(1.0)
    # top-2 by score = {0, 2}; true top-2 = {1, 2}: one hit of two.
    assert float(S.recall_at_k(x, y, k=2)) == pytest.approx(0.5)
    # A constant score picks the worst model: regret = best - worst.
    assert float(S.top1_regret(np.ones(3), y)) == pytest.approx(0.2)
    # Perfect score.
    assert float(S.top1_regret(y, y)) == 0.0
    assert float(S.recall_at_k(y, y, k=2)) == 1.0


def test_against_oracle_with_ties_and_padding():
    rng = np.random.default_rng(0)
    width = 10
    cases = []
    for t in range(30):
        n = int(rng.integers(2, width + 1))
        x = rng.integers(0, 3, n).astype(float) if t % 2 else rng.normal(size=n)
        y = rng.integers(5, 9, n) / 10.0 if t % 3 == 0 else rng.uniform(0.5, 1.0, n)
        cases.append((x, y))
    X = rng.normal(size=(len(cases), width)) * 10  # junk in padded slots
    Y = rng.uniform(2, 3, size=(len(cases), width))  # larger than any real truth: must be ignored
    M = np.zeros((len(cases), width), bool)
    for i, (x, y) in enumerate(cases):
        X[i, : len(x)], Y[i, : len(x)], M[i, : len(x)] = x, y, True
    for k in (1, 3):
        regret = np.asarray(jax.vmap(S.top1_regret)(X, Y, M))
        rel = np.asarray(jax.vmap(lambda a, b, m: S.rel_at_k(a, b, m, k=k))(X, Y, M))
        rec = np.asarray(jax.vmap(lambda a, b, m: S.recall_at_k(a, b, m, k=k))(X, Y, M))
        for i, (x, y) in enumerate(cases):
            want = _oracle(x, y, k)
            np.testing.assert_allclose([regret[i], rel[i], rec[i]], want, rtol=1e-5, atol=1e-6, err_msg=f"{x} {y} k={k}")
