"""Preprocessing: every encoding, any size, checked against plain reference arithmetic."""

import numpy as np
import pytest

from aura_ros.runtime import ImageSpec, InputError
from aura_ros.runtime.preprocess import Preprocessor

SPEC = ImageSpec(width=8, height=6, mean=(0.1, 0.5, 0.9), std=(0.2, 0.3, 0.4))


def normalise(rgb):
    """Reference: [H, W, 3] float pixel values -> [1, 3, H, W] normalised."""
    mean, std = np.array(SPEC.mean), np.array(SPEC.std)
    return ((rgb / 255.0 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)


def reference_area(img, H, W):
    """Box average with a Python loop, the slow obvious way."""
    h, w = img.shape[:2]
    out = np.zeros((H, W, img.shape[2]))
    for i in range(H):
        y0, y1 = i * h // H, max((i + 1) * h // H, i * h // H + 1)
        for j in range(W):
            x0, x1 = j * w // W, max((j + 1) * w // W, j * w // W + 1)
            out[i, j] = img[y0:y1, x0:x1].reshape(-1, img.shape[2]).mean(0)
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_model_size_is_identity_then_normalise(rng):
    img = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    np.testing.assert_allclose(Preprocessor(SPEC)(img, 'rgb8'), normalise(img.astype(float)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('size', [(6, 8), (12, 16), (13, 29), (480, 640), (7, 9), (3, 4)])
def test_area_resize_matches_reference(rng, size):
    img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    got = Preprocessor(SPEC)(img, 'rgb8')
    assert got.shape == (1, 3, 6, 8) and got.dtype == np.float32
    np.testing.assert_allclose(got, normalise(reference_area(img, 6, 8)), rtol=1e-5, atol=1e-4)


def test_integer_downsample_is_block_mean(rng):
    img = rng.integers(0, 256, (18, 24, 3), dtype=np.uint8)
    block = img.reshape(6, 3, 8, 3, 3).astype(float).mean(axis=(1, 3))
    np.testing.assert_allclose(Preprocessor(SPEC)(img, 'rgb8'), normalise(block), atol=1e-4)


def test_nearest_mode(rng):
    img = rng.integers(0, 256, (60, 40, 3), dtype=np.uint8)
    rows = [(2 * i + 1) * 60 // 12 for i in range(6)]
    cols = [(2 * j + 1) * 40 // 16 for j in range(8)]
    expected = normalise(img[np.ix_(rows, cols)].astype(float))
    np.testing.assert_allclose(Preprocessor(SPEC, mode='nearest')(img, 'rgb8'), expected,
                               atol=1e-5)


@pytest.mark.parametrize('size', [(6, 8), (31, 17)])
def test_every_encoding_matches_rgb(rng, size):
    pre = Preprocessor(SPEC)
    rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (*size, 1), dtype=np.uint8)
    expected = pre(rgb, 'rgb8').copy()
    assert np.array_equal(pre(rgb[:, :, ::-1], 'bgr8'), expected)
    assert np.array_equal(pre(np.concatenate([rgb, alpha], 2), 'rgba8'), expected)
    assert np.array_equal(pre(np.concatenate([rgb[:, :, ::-1], alpha], 2), 'bgra8'), expected)
    # The swap matters: bgr8 of the same array is not the rgb8 result.
    assert not np.array_equal(pre(rgb, 'bgr8'), expected)


def test_mono_is_grey_replicated(rng):
    pre = Preprocessor(SPEC)
    grey = rng.integers(0, 256, (11, 13), dtype=np.uint8)
    expected = pre(np.repeat(grey[:, :, None], 3, axis=2), 'rgb8').copy()
    assert np.array_equal(pre(grey, 'mono8'), expected)
    assert np.array_equal(pre(grey[:, :, None], 'mono8'), expected)


def test_output_buffer_reused(rng):
    pre = Preprocessor(SPEC)
    out = np.zeros((1, 3, 6, 8), np.float32)
    img = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    assert pre(img, 'rgb8', out=out) is out
    assert np.array_equal(out, pre(img, 'rgb8'))


def test_strided_view_accepted(rng):
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    pre = Preprocessor(SPEC)
    assert np.array_equal(pre(img[::-1], 'rgb8'), pre(np.ascontiguousarray(img[::-1]), 'rgb8'))


@pytest.mark.parametrize('image, encoding, reason', [
    (np.zeros((4, 4, 3), np.uint8), 'yuv422', 'encoding'),
    (np.zeros((4, 4, 3), np.uint8), '', 'encoding'),
    (np.zeros((4, 4, 4), np.uint8), 'rgb8', 'shape'),
    (np.zeros((4, 4, 3), np.uint8), 'rgba8', 'shape'),
    (np.zeros((4, 4, 3), np.uint8), 'mono8', 'shape'),
    (np.zeros((4, 4), np.uint8), 'rgb8', 'shape'),
    (np.zeros((4, 4, 3, 1), np.uint8), 'rgb8', 'shape'),
    ([[1, 2, 3]], 'rgb8', 'shape'),
    (np.zeros((0, 4, 3), np.uint8), 'rgb8', 'empty'),
    (np.zeros((4, 0), np.uint8), 'mono8', 'empty'),
    (np.zeros((4, 4, 3), np.float32), 'rgb8', 'dtype'),
])
def test_bad_images_refused(image, encoding, reason):
    with pytest.raises(InputError) as info:
        Preprocessor(SPEC)(image, encoding)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def test_unknown_mode_refused():
    with pytest.raises(ValueError, match='resize mode'):
        Preprocessor(SPEC, mode='bicubic')
