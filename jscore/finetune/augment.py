"""Image augmentation and evaluation crops in JAX, run on the device inside the train step.

Inputs are uint8 `[B, R, R, 3]` squares (the host resizes once at load time); outputs float32
`[B, S, S, 3]` in [0, 1], normalised by the caller. The training recipe follows the paper
(torchvision's transforms): horizontal and vertical flips (p = 0.5 each), a random resized crop
(area scale in [0.75, 1], aspect ratio in [3/4, 4/3]), a rotation up to +-45 degrees (corners
filled with black) and a hue shift of up to +-0.2 of the colour circle. The crop and the
rotation are composed into one affine map sampled bilinearly, so each image is read once.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Every number of the training augmentation; the defaults are the paper's."""

    hflip: bool = True
    vflip: bool = True
    scale: tuple = (0.75, 1.0)
    ratio: tuple = (3.0 / 4.0, 4.0 / 3.0)
    max_rotation_deg: float = 45.0
    hue: float = 0.2


def center_crop(images, size: int):
    """uint8 or float `[B, R, R, C]` -> `[B, size, size, C]`, the centre square (evaluation)."""
    r_h, r_w = images.shape[1], images.shape[2]
    if size > min(r_h, r_w):
        raise ValueError(f"crop size {size} is larger than the stored images {r_h}x{r_w}")
    top, left = (r_h - size) // 2, (r_w - size) // 2
    return images[:, top : top + size, left : left + size, :]


def _rgb_to_hsv(rgb):
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = jnp.max(rgb, axis=-1)
    minc = jnp.min(rgb, axis=-1)
    delta = maxc - minc
    s = jnp.where(maxc > 0, delta / jnp.where(maxc > 0, maxc, 1.0), 0.0)
    safe = jnp.where(delta > 0, delta, 1.0)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = jnp.where(maxc == r, bc - gc, jnp.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = jnp.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    return h, s, maxc


def _hsv_to_rgb(h, s, v):
    # Branch-free form: channel n in (5, 3, 1) for (r, g, b), k = (n + 6h) mod 6,
    # value = v - v s clip(min(k, 4 - k), 0, 1). Cheaper than a six-way select.
    n = jnp.asarray([5.0, 3.0, 1.0], h.dtype)
    k = (n + 6.0 * h[..., None]) % 6.0
    return v[..., None] - (v * s)[..., None] * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def shift_hue(image, delta):
    """float `[H, W, 3]` in [0, 1], hue shift `delta` in turns -> the same image, hue rotated."""
    h, s, v = _rgb_to_hsv(image)
    return _hsv_to_rgb((h + delta) % 1.0, s, v)


def _affine_sample(image, size, center, half, theta):
    """Sample an `[size, size, C]` view of `image [R, R, C]`: the output square spans the box of
    half-sizes `half` (rows, cols) around `center`, rotated by `theta`; bilinear, zeros outside."""
    grid = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size * 2.0 - 1.0  # pixel centres in [-1, 1]
    v, u = jnp.meshgrid(grid, grid, indexing="ij")  # v: rows, u: cols
    dy, dx = v * half[0], u * half[1]
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    rows = center[0] + cos * dy - sin * dx - 0.5
    cols = center[1] + sin * dy + cos * dx - 0.5
    return _bilinear(image, rows, cols)


def _bilinear(image, rows, cols):
    """Bilinear read of `image [R, C, K]` at float pixel coordinates `rows`, `cols` `[S, S]`
    (pixel centres at integers); points outside the image read 0. Four gathers of all channels
    at once: cheaper to compile and run than `map_coordinates` channel by channel."""
    r_max, c_max = image.shape[0] - 1, image.shape[1] - 1
    r0, c0 = jnp.floor(rows), jnp.floor(cols)
    fr, fc = rows - r0, cols - c0
    out = 0.0
    for dr, wr in ((0, 1.0 - fr), (1, fr)):
        for dc, wc in ((0, 1.0 - fc), (1, fc)):
            r, c = r0 + dr, c0 + dc
            inside = (r >= 0) & (r <= r_max) & (c >= 0) & (c <= c_max)
            px = image[jnp.clip(r, 0, r_max).astype(jnp.int32), jnp.clip(c, 0, c_max).astype(jnp.int32)]
            out = out + px * (wr * wc * inside)[..., None]
    return out


def _augment_one(image, rng, size: int, cfg: AugmentConfig):
    r_h, r_w = image.shape[0], image.shape[1]
    k_flip_h, k_flip_v, k_scale, k_ratio, k_pos, k_rot, k_hue = jax.random.split(rng, 7)
    area = r_h * r_w * jax.random.uniform(k_scale, (), minval=cfg.scale[0], maxval=cfg.scale[1])
    log_ratio = jax.random.uniform(k_ratio, (), minval=math.log(cfg.ratio[0]), maxval=math.log(cfg.ratio[1]))
    ratio = jnp.exp(log_ratio)  # width / height
    # torchvision retries until the box fits; clipping to the image is the one-shot equivalent.
    crop_w = jnp.minimum(jnp.sqrt(area * ratio), r_w)
    crop_h = jnp.minimum(jnp.sqrt(area / ratio), r_h)
    pos = jax.random.uniform(k_pos, (2,))
    center = jnp.stack([crop_h / 2 + pos[0] * (r_h - crop_h), crop_w / 2 + pos[1] * (r_w - crop_w)])
    theta = jnp.deg2rad(jax.random.uniform(k_rot, (), minval=-cfg.max_rotation_deg, maxval=cfg.max_rotation_deg))
    out = _affine_sample(image, size, center, jnp.stack([crop_h / 2, crop_w / 2]), theta)
    if cfg.hflip:
        out = jnp.where(jax.random.bernoulli(k_flip_h), out[:, ::-1], out)
    if cfg.vflip:
        out = jnp.where(jax.random.bernoulli(k_flip_v), out[::-1], out)
    if cfg.hue > 0:
        out = shift_hue(jnp.clip(out, 0.0, 1.0), jax.random.uniform(k_hue, (), minval=-cfg.hue, maxval=cfg.hue))
    return out


def augment_batch(images, rng, size: int, cfg: AugmentConfig = AugmentConfig()):
    """Training view: uint8 `[B, R, R, 3]` -> float32 `[B, size, size, 3]` in [0, 1], each image
    with its own random flips, resized crop, rotation and hue shift drawn from `rng`."""
    x = images.astype(jnp.float32) / 255.0
    keys = jax.random.split(rng, x.shape[0])
    return jax.vmap(lambda im, k: _augment_one(im, k, size, cfg))(x, keys)


def eval_view(images, size: int):
    """Evaluation view: uint8 `[B, R, R, 3]` -> float32 `[B, size, size, 3]` in [0, 1], centre crop."""
    return center_crop(images, size).astype(jnp.float32) / 255.0
