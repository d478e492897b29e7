"""A small simulated zoo for `jscore score --demo`: feature matrices of known quality.

Each simulated backbone sees the same labelled task. Its features mix class signal of a chosen
strength with noise (and a few redundant columns, as real features have), and its source head's
predictions agree with the labels in proportion to that strength. A good score ranks the
backbones in the order of `quality`.
"""

from __future__ import annotations

import numpy as np

# name, feature size, signal strength (the ground-truth quality), source classes
LATENT = 24  # latent factors behind every simulated backbone's features

DEMO_ZOO = (
    ("tiny-cnn", 256, 0.10, 100),
    ("small-cnn", 512, 0.20, 100),
    ("resnet-like", 512, 0.30, 1000),
    ("vit-like", 768, 0.45, 1000),
    ("large-vit-like", 768, 0.60, 1000),
)


def demo_zoo(num_samples: int = 600, num_classes: int = 4, seed: int = 0):
    """Returns (models, labels, quality): models {name: {"features", "source_logits"}}, labels
    [N], quality {name: signal strength}."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_samples) % num_classes)
    models, quality = {}, {}
    for name, dim, strength, num_source in DEMO_ZOO:
        # Real features have decaying spectra: a few dozen latent factors carry most variance.
        factors = strength * rng.normal(size=(num_classes, LATENT))[labels] + rng.normal(size=(num_samples, LATENT))
        mixing = rng.normal(size=(LATENT, dim)) / np.sqrt(LATENT)
        latent = factors @ mixing + 0.3 * rng.normal(size=(num_samples, dim))
        # Redundant columns: real backbones' features are rank-deficient.
        latent[:, -8:] = latent[:, :8]
        features = np.maximum(latent, 0) + 0.1 * latent  # leaky-ReLU-like outputs
        logits = rng.normal(size=(num_samples, num_source))
        target_source = rng.choice(num_source, size=num_classes, replace=False)
        logits[np.arange(num_samples), target_source[labels]] += 12 * strength
        models[name] = {"features": features.astype(np.float32), "source_logits": logits.astype(np.float32)}
        quality[name] = strength
    return models, labels, quality
