"""Tiny backbones and synthetic image datasets for the fine-tuning tests (a uniquely named
module: several test folders have a conftest.py, so `from conftest import` would be ambiguous)."""

import numpy as np


def tiny_backbone(width: int = 8, batch_norm: bool = True, conv_general_dilated=None):
    """A random-init conv net (conv-BN-relu x2, global mean pool) wrapped as a `Backbone`; its 3x3
    convolutions call `conv_general_dilated` when given (e.g. jscore's `pointwise` one)."""
    import flax.linen as nn
    import jax.numpy as jnp

    from jscore.backbones.base import Backbone, Preprocess

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            for i in range(2):
                conv = {} if conv_general_dilated is None else {"conv_general_dilated": conv_general_dilated}
                x = nn.Conv(width, (3, 3), strides=(2, 2) if i else (1, 1), **conv)(x)
                if batch_norm:
                    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
                x = nn.relu(x)
            return jnp.mean(x, axis=(1, 2))

    net = Net()

    def init(rng, images):
        return dict(net.init(rng, images, train=False))

    def apply(variables, images, *, train, rng):
        if train and "batch_stats" in variables:
            feats, mutated = net.apply(variables, images, train=True, mutable=["batch_stats"])
            return feats, None, dict(mutated)
        return net.apply(variables, images, train=False), None, {}

    pre = Preprocess(image_size=12, resize_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return Backbone("tiny-cnn", width, 0, pre, init, apply)


def synthetic_images(n: int, num_classes: int = 3, size: int = 16, seed: int = 0, classes=None):
    """uint8 `[n, size, size, 3]` images whose class sets the brightness of a centred blob and the
    spatial frequency of a ring pattern (both survive flips, rotation, crops and hue shifts),
    plus noise; labels balanced unless `classes` restricts them."""
    rng = np.random.default_rng(seed)
    classes = np.arange(num_classes) if classes is None else np.asarray(classes)
    labels = classes[np.arange(n) % len(classes)]
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    radius = np.sqrt(yy**2 + xx**2)
    images = np.empty((n, size, size, 3), np.uint8)
    for i, c in enumerate(labels):
        level = 0.25 + 0.5 * c / max(num_classes - 1, 1)
        rings = 0.5 + 0.5 * np.cos(radius * (0.6 + 0.5 * c) + rng.uniform(0, 2 * np.pi))
        base = level * (radius < size * 0.45) + 0.15 * rings
        colour = rng.uniform(0.6, 1.0, size=3)
        img = base[:, :, None] * colour + rng.normal(0, 0.08, size=(size, size, 3))
        images[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int32)
