"""Random joint tables for LEEP and NCE (cheap: one fixed shape, so one compilation each):
any labels (absent classes included) and any source distributions (ties, zeros, near-one-hot)."""

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import jscore
from tests.oracles import leep as leep_oracle
from tests.oracles import nce as nce_oracle
from tests.tolerances import assert_close

N, CS, C = 24, 5, 3

labels_st = arrays(np.int32, (N,), elements=st.integers(0, C - 1))
# Coarse grid of weights so that ties (NCE's first-index rule) and exact zeros occur often.
weights_st = arrays(np.float64, (N, CS), elements=st.sampled_from([0.0, 0.5, 1.0, 2.0, 30.0]))


def _probs(w):
    w = w.copy()
    w[w.sum(axis=1) == 0, 0] = 1.0  # a row of zeros is no distribution
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(labels_st, weights_st)
def test_leep_random_tables(y, w):
    p = _probs(w)
    got = jscore.REGISTRY["leep"].fn(jnp.asarray(p), jnp.asarray(y), num_classes=C)
    assert_close(got, leep_oracle.leep(p.astype(np.float64), y, C), np.float32, "direct")


@settings(max_examples=40, deadline=None)
@given(labels_st, weights_st)
def test_nce_random_tables(y, w):
    p = _probs(w)
    got = jscore.REGISTRY["nce"].fn(jnp.asarray(p), jnp.asarray(y), num_classes=C)
    assert_close(got, nce_oracle.nce(p.astype(np.float64), y, C), np.float32, "direct")
