"""Properties every registry score must have, checked over `jscore.REGISTRY` (like sklearn's
metrics test_common): each property has a list of the scores it applies to, and
`test_every_registry_entry_is_classified` fails when a new score is not placed in every list
(or explicitly exempted with a reason)."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import monitoring

import jscore
from tests.scorers._engine import PROPERTY_HP as HP
from tests.scorers._engine import call, needs, nleep_oracle_same_seeding, property_inputs
from tests.tolerances import SCORE_KIND, tolerance

# Per-model entries; scores relative to a set of models (ETran, NCTI) are checked through their
# components here and in tests/scorers/test_relative_scores.py.
ALL = [n for n, s in jscore.REGISTRY.items() if not s.relative]
FEATURE_SCORES = [n for n in ALL if needs(n) == "features"]
SOURCE_SCORES = [n for n in ALL if needs(n) == "source"]

# k-means++ draws rows with jax.random.choice over the N rows: reordering or padding the rows
# changes which rows are drawn (and EM may reach another local optimum), so for N-LEEP the
# reordered or padded call is compared with the oracle started from the rows the engine draws
# for that layout (`nleep_oracle_same_seeding`): same guarantee (padding is neutral, order does
# not matter beyond the seeding), checked exactly.
def _reference(name, x, y, sample_mask=None):
    if name == "nleep":
        return nleep_oracle_same_seeding(x, y, 3, HP["nleep"]["components_per_class"],
                                         sample_mask=sample_mask)
    valid = np.ones(len(y), bool) if sample_mask is None else np.asarray(sample_mask) > 0
    return call(name, x[valid], y[valid], 3, **HP.get(name, {}))


# Property lists (a score may be left out only with a reason in EXEMPT).
SAMPLE_ORDER_INVARIANT = ALL
CLASS_RELABEL_INVARIANT = ALL
MASK_EQUALS_SLICING = ALL
FEATURE_PADDING_NEUTRAL = FEATURE_SCORES
SOURCE_PADDING_NEUTRAL = SOURCE_SCORES
SOURCE_PERMUTATION_INVARIANT = SOURCE_SCORES
VMAP_EQUALS_LOOP = ALL
JIT_EQUALS_EAGER = ALL
NO_RECOMPILE = ALL
INFORMATIVE_BEATS_NOISE = [n for n in ALL if n != "ncti_vc"]
PROPERTY_LISTS = {
    "sample_order": SAMPLE_ORDER_INVARIANT,
    "class_relabel": CLASS_RELABEL_INVARIANT,
    "mask_equals_slicing": MASK_EQUALS_SLICING,
    "padding_neutral": (FEATURE_PADDING_NEUTRAL, SOURCE_PADDING_NEUTRAL),
    "vmap_equals_loop": VMAP_EQUALS_LOOP,
    "jit_equals_eager": JIT_EQUALS_EAGER,
    "no_recompile": NO_RECOMPILE,
    "informative_beats_noise": INFORMATIVE_BEATS_NOISE,
}
EXEMPT = {  # (score, property) -> reason
    ("ncti_vc", "informative_beats_noise"): "NCTI's variability term alone is largest for confident "
    "(one-hot) posteriors, whose per-class nuclear norms are sqrt(n_c); only the combination ranks",
}


def test_every_registry_entry_is_classified():
    for name, spec in jscore.REGISTRY.items():
        if spec.relative:  # classified through its components
            assert spec.components and all(c in ALL for c in spec.components), name
            continue
        assert needs(name) in ("features", "source"), name
        for prop, lists in PROPERTY_LISTS.items():
            lists = lists if isinstance(lists, tuple) else (lists,)
            assert any(name in lst for lst in lists) or (name, prop) in EXEMPT, (
                f"registry entry {name!r} is not classified for property {prop!r}")


def _close(name, got, want, err_msg=""):
    rtol, atol = tolerance(np.float32, SCORE_KIND[name])
    np.testing.assert_allclose(float(got), float(want), rtol=rtol, atol=atol, err_msg=err_msg)


def _base(name, seed=0):
    # Classes well separated relative to the noise so the properties are not borderline.
    return property_inputs(name, seed)


@pytest.mark.parametrize("name", SAMPLE_ORDER_INVARIANT)
def test_sample_order_invariance(name):
    x, y = _base(name)
    perm = np.random.default_rng(1).permutation(len(y))
    got = call(name, x[perm], y[perm], 3, **HP.get(name, {}))
    if name == "nleep":  # the oracle from the engine's seeding of the permuted rows
        _close(name, got, _reference(name, x[perm], y[perm]))
    else:
        _close(name, got, call(name, x, y, 3))


@pytest.mark.parametrize("name", CLASS_RELABEL_INVARIANT)
def test_class_relabel_invariance(name):
    x, y = _base(name)
    relabel = np.array([2, 0, 1])
    _close(name, call(name, x, relabel[y], 3, **HP.get(name, {})),
           call(name, x, y, 3, **HP.get(name, {})))


@pytest.mark.parametrize("name", MASK_EQUALS_SLICING)
def test_masked_rows_equal_removed_rows(name):
    x, y = _base(name)
    rng = np.random.default_rng(2)
    extra = 7
    junk_x = _base(name, seed=9)[0][:extra] * 3  # large, so a leak would show
    xp = np.concatenate([x, junk_x])
    yp = np.concatenate([y, rng.integers(0, 3, extra).astype(y.dtype)])
    order = rng.permutation(len(yp))  # padded rows interleaved, not only at the end
    mask = np.r_[np.ones(len(y)), np.zeros(extra)].astype(np.float32)
    got = call(name, xp[order], yp[order], 3, sample_mask=mask[order], **HP.get(name, {}))
    _close(name, got, _reference(name, xp[order], yp[order], sample_mask=mask[order]))


@pytest.mark.parametrize("name", MASK_EQUALS_SLICING)
def test_rows_padded_at_the_end_equal_unpadded(name):
    # The layout of batches and chunks: padding rows appended at the end with mask 0 give the
    # unpadded value directly, N-LEEP included (k-means++ draws by inverting the cumulative
    # weights, which trailing zero weights leave unchanged).
    x, y = _base(name)
    extra = 7
    xp = np.concatenate([x, _base(name, seed=9)[0][:extra] * 3])
    yp = np.concatenate([y, np.arange(extra, dtype=y.dtype) % 3])
    mask = np.r_[np.ones(len(y)), np.zeros(extra)].astype(np.float32)
    hp = HP.get(name, {})
    _close(name, call(name, xp, yp, 3, sample_mask=mask, **hp), call(name, x, y, 3, **hp))


@pytest.mark.parametrize("name", FEATURE_PADDING_NEUTRAL)
def test_zero_padded_feature_columns_with_mask(name):
    x, y = _base(name)
    pad = 5
    xp = np.concatenate([x, np.zeros((len(y), pad), x.dtype)], axis=1)
    fmask = np.r_[np.ones(x.shape[1]), np.zeros(pad)].astype(np.float32)
    got = call(name, xp, y, 3, feature_mask=fmask, **HP.get(name, {}))
    _close(name, got, call(name, x, y, 3, **HP.get(name, {})))


@pytest.mark.parametrize("name", SOURCE_PADDING_NEUTRAL)
def test_zero_padded_source_classes_with_mask(name):
    p, y = _base(name)
    pad = 4
    pp = np.concatenate([p, np.zeros((len(y), pad), p.dtype)], axis=1)
    smask = np.r_[np.ones(p.shape[1]), np.zeros(pad)].astype(np.float32)
    _close(name, call(name, pp, y, 3, source_mask=smask), call(name, p, y, 3))


@pytest.mark.parametrize("name", SOURCE_PERMUTATION_INVARIANT)
def test_source_class_permutation_invariance(name):
    p, y = _base(name)
    perm = np.random.default_rng(3).permutation(p.shape[1])
    _close(name, call(name, p[:, perm], y, 3), call(name, p, y, 3))


@pytest.mark.parametrize("name", VMAP_EQUALS_LOOP)
def test_vmap_equals_loop(name):
    xs, ys = zip(*[_base(name, seed=s) for s in range(3)])
    hp = HP.get(name, {})
    batched = jax.vmap(lambda x, y: call(name, x, y, 3, **hp))(jnp.stack(xs), jnp.stack(ys))
    assert batched.shape == (3,)
    for i in range(3):
        _close(name, batched[i], call(name, xs[i], ys[i], 3, **hp), err_msg=f"member {i}")


@pytest.mark.parametrize("name", JIT_EQUALS_EAGER)
def test_jit_equals_eager(name):
    x, y = _base(name)
    hp = HP.get(name, {})
    jitted = call(name, x, y, 3, **hp)
    with jax.disable_jit():
        eager = call(name, x, y, 3, **hp)
    _close(name, jitted, eager)


@contextlib.contextmanager
def counted_compiles():
    """Collects one entry per backend compilation inside the block."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("name", NO_RECOMPILE)
def test_second_call_same_shapes_does_not_recompile(name):
    hp = HP.get(name, {})
    x, y = _base(name)
    call(name, x, y, 3, **hp).block_until_ready()  # compiles (or hits the cache)
    x2, y2 = _base(name, seed=5)  # new values, same shapes and dtypes
    if needs(name) == "features":
        x2 = x * 1.5 + 0.25  # same spectrum shape, so N-LEEP's host-side PCA bucket is unchanged
    with counted_compiles() as compiles:
        call(name, x2, y2, 3, **hp).block_until_ready()
    assert not compiles, f"{name} recompiled {len(compiles)} program(s) for the same shapes"


def test_compile_listener_sees_compilations():
    # Guards the previous test: the listener must fire when something does compile.
    with counted_compiles() as compiles:
        jax.jit(lambda a: a * 3 + 1)(jnp.arange(7.0)).block_until_ready()
    assert compiles


@pytest.mark.parametrize("name", INFORMATIVE_BEATS_NOISE)
def test_informative_inputs_score_higher_than_noise(name):
    x, y = _base(name)
    rng = np.random.default_rng(4)
    if needs(name) == "features":
        noise = rng.normal(size=x.shape).astype(x.dtype)
    else:  # random distributions unrelated to the labels
        noise = rng.dirichlet(np.ones(x.shape[1]), size=len(y)).astype(x.dtype)
    hp = HP.get(name, {})
    good, bad = float(call(name, x, y, 3, **hp)), float(call(name, noise, y, 3, **hp))
    assert good > bad, (name, good, bad)


@pytest.mark.parametrize("name", ALL)
def test_bfloat16_inputs_are_upcast_to_float32(name):
    # bf16 inputs compute in float32: same value as float32 inputs holding the bf16-rounded data.
    x, y = _base(name)
    xb = jnp.asarray(x, jnp.bfloat16)
    if needs(name) == "source":  # rounding breaks the rows' sums; renormalise, then round
        xb = jnp.asarray(np.asarray(xb, np.float32) / np.asarray(xb, np.float32).sum(1, keepdims=True),
                         jnp.bfloat16)
    got = call(name, xb, y, 3, **HP.get(name, {}))
    assert got.dtype == jnp.float32
    _close(name, got, call(name, np.asarray(xb, np.float32), y, 3, **HP.get(name, {})))
