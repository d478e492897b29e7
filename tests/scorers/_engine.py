"""Helpers shared by the engine tests: how to call each registry entry on synthetic inputs."""

import jax
import numpy as np

from tests.oracles.data import class_features, class_labels, source_probs


def needs(name):
    import jscore

    return jscore.REGISTRY[name].needs


def call(name, x, labels, num_classes, **kw):
    """Call registry entry `name` on arrays (features or source probabilities first)."""
    import jscore

    fn = jscore.REGISTRY[name].fn
    if name == "nleep":
        kw.setdefault("key", jax.random.PRNGKey(0))
    return fn(x, labels, num_classes=num_classes, **kw)


def inputs(name, seed=0, n=60, d=8, c=3, imbalance=1.0, separation=1.5, dtype=np.float32):
    """(x, labels) for registry entry `name`: features [n, d] or source probabilities [n, 2c+1]."""
    rng = np.random.default_rng(seed)
    y = class_labels(rng, n, c, imbalance)
    if needs(name) == "source":
        x = source_probs(rng, y, 2 * c + 1)
    else:
        x = class_features(rng, y, d, c, separation=separation)
    return x.astype(dtype), y.astype(np.int32)


def mixed_clusters(seed=0, n=60, d=8, c=3, per_class=1, purity=0.7, dtype=np.float32):
    """Features [n, d] from c * per_class tight, far-apart clusters whose labels are only
    `purity` pure (the rest drawn at random): a mixture fit finds the clusters whatever its
    seeding, while N-LEEP stays well below its maximum 0 (the labels are not separable)."""
    rng = np.random.default_rng(seed)
    k = c * per_class
    cluster = rng.permutation(np.arange(n) % k)
    centers = rng.normal(0.0, 6.0, size=(k, d))
    x = centers[cluster] + 0.5 * rng.normal(size=(n, d))
    y = np.where(rng.random(n) < purity, cluster // per_class, rng.integers(0, c, n))
    return x.astype(dtype), y.astype(np.int32)


_KMEANS_PP = []


def jitted_kmeans_plus_plus(x, num_components, key, sample_mask=None):
    """The engine's k-means++ seeding under one jit (eagerly, every primitive compiles apart)."""
    if not _KMEANS_PP:
        from jscore.scorers.nleep import kmeans_plus_plus

        _KMEANS_PP.append(jax.jit(kmeans_plus_plus, static_argnums=1))
    return _KMEANS_PP[0](x, num_components, key, sample_mask)


def nleep_oracle_same_seeding(x, y, num_classes, components_per_class, sample_mask=None,
                              key=None):
    """The N-LEEP oracle on the valid rows of (x, y), started from the rows the engine's k-means++
    draws for this row layout and mask.

    k-means++ is random, so reordering or padding rows changes the draws; this is how a masked or
    permuted call is still checked exactly: the oracle recomputes the PCA on the valid rows only,
    the engine's `kmeans_plus_plus` picks rows from that projection (distances do not depend on
    the signs of principal directions), and the oracle runs the rest.
    """
    import jax.numpy as jnp

    from tests.oracles import nleep as nleep_oracle

    key = jax.random.PRNGKey(0) if key is None else key
    mask = np.ones(len(y)) if sample_mask is None else np.asarray(sample_mask)
    valid = mask > 0
    z, k = nleep_oracle.pca_reduce(np.asarray(x, np.float64)[valid], 0.8)
    zp = np.zeros((len(y), k))
    zp[valid] = z
    dtype = jnp.asarray(x).dtype
    means = np.asarray(jitted_kmeans_plus_plus(jnp.asarray(zp, dtype),
                                               components_per_class * num_classes, key,
                                               jnp.asarray(mask, dtype)))
    idx = [int(np.argmin(np.sum((z - m) ** 2, axis=1))) for m in means]
    return nleep_oracle.nleep(np.asarray(x, np.float64)[valid], np.asarray(y)[valid],
                              num_classes, z[idx])


# Hyper-parameters for the property and bound tests: N-LEEP with one component per class (its
# inputs are `mixed_clusters`, one tight cluster per component), so that EM is cheap.
PROPERTY_HP = {"nleep": {"components_per_class": 1}}


def property_inputs(name, seed=0, separation=3.0, purity=0.7):
    """The small inputs the registry-wide tests share (one shape per score: one compilation)."""
    if name == "nleep":
        return mixed_clusters(seed, purity=purity)
    return inputs(name, seed=seed, n=60, d=8, c=3, separation=separation)
