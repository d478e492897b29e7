"""Preprocessing: grey to RGB, short-side resize + centre crop, normalisation (float64 oracle)."""

import numpy as np
import pytest

from jscore.backbones.base import Preprocess
from jscore.data import normalize, preprocess, resize_crop, to_rgb


def test_to_rgb_repeats_grey_and_drops_alpha():
    g = np.arange(6, dtype=np.uint8).reshape(2, 3)
    rgb = to_rgb(g)
    assert rgb.shape == (2, 3, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], g)
    rgba = np.random.default_rng(0).integers(0, 256, (4, 5, 4), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb(rgba), rgba[..., :3])
    with pytest.raises(ValueError, match="uint8"):
        to_rgb(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="shape"):
        to_rgb(np.zeros((2, 2, 2), np.uint8))


def test_centre_crop_without_resize_is_the_middle_window():
    # Short side already equals resize_size: no resampling, the crop is an exact slice.
    img = np.random.default_rng(1).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    out = resize_crop(img, Preprocess(image_size=32, resize_size=40))
    np.testing.assert_array_equal(out, img[4:36, 10:42])


def test_resize_short_side_then_crop_geometry():
    # A wide image whose left half is 0 and right half 200: after resize 32 (short side) and
    # crop 32 the centre column splits the halves, so each side keeps its value.
    img = np.zeros((64, 128, 1), np.uint8)
    img[:, 64:] = 200
    out = resize_crop(img, Preprocess(image_size=32, resize_size=32))
    assert out.shape == (32, 32, 3)
    assert np.all(out[:, :14] == 0) and np.all(out[:, 18:] == 200)
    # Constant images stay constant whatever the resampling.
    const = np.full((50, 30, 3), 77, np.uint8)
    np.testing.assert_array_equal(resize_crop(const, Preprocess(24, 28)), np.full((24, 24, 3), 77, np.uint8))


def test_resize_smaller_than_crop_is_rejected():
    with pytest.raises(ValueError, match="smaller"):
        resize_crop(np.zeros((8, 8, 3), np.uint8), Preprocess(image_size=32, resize_size=16))


def test_normalize_matches_float64_oracle_and_channels_first():
    rng = np.random.default_rng(2)
    batch = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    preset = Preprocess(image_size=8, resize_size=8, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    oracle = (batch.astype(np.float64) / 255.0 - np.array([0.1, 0.2, 0.3])) / np.array([0.5, 0.25, 2.0])
    got = normalize(batch, preset)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, oracle, rtol=1e-6, atol=1e-6)
    cf = normalize(batch, Preprocess(8, 8, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0), channels_first=True))
    np.testing.assert_allclose(cf, oracle.transpose(0, 3, 1, 2), rtol=1e-6, atol=1e-6)


def test_preprocess_list_of_sizes_and_grey():
    preset = Preprocess(image_size=16, resize_size=16)
    images = [np.full((16, 16, 1), 255, np.uint8), np.zeros((20, 16, 3), np.uint8)]
    out = preprocess(images, preset)
    assert out.shape == (2, 16, 16, 3)
    mean, std = np.array(preset.mean), np.array(preset.std)
    np.testing.assert_allclose(out[0], np.broadcast_to((1.0 - mean) / std, (16, 16, 3)), rtol=1e-6)
    np.testing.assert_allclose(out[1], np.broadcast_to((0.0 - mean) / std, (16, 16, 3)), rtol=1e-6)


def test_bicubic_interpolation_matches_pil_and_differs_from_bilinear():
    from PIL import Image

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(50, 40, 3), dtype=np.uint8)
    cubic = resize_crop(img, Preprocess(image_size=32, resize_size=36, interpolation="bicubic"))
    want = np.asarray(Image.fromarray(img).resize((36, 45), Image.BICUBIC))[6:38, 2:34]
    np.testing.assert_array_equal(cubic, want)
    linear = resize_crop(img, Preprocess(image_size=32, resize_size=36))
    assert np.abs(cubic.astype(int) - linear.astype(int)).max() > 0


def test_unknown_interpolation_is_a_value_error():
    img = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(ValueError, match="interpolation"):
        resize_crop(img, Preprocess(image_size=32, resize_size=36, interpolation="lanczos"))
