"""Compressed frames: JPEG and PNG decode to what the preprocessor takes; bad data is refused."""

import io

import numpy as np
import pytest
from PIL import Image

from aura_ros.runtime import InputError
from aura_ros.runtime.decode import decode, frame_pixel_limit

RNG = np.random.default_rng(0)


def smooth(h=48, w=64):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype(np.uint8)


def encoded(pixels, fmt, **kw):
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **kw)
    return out.getvalue()


def test_png_is_lossless_rgb8_and_mono8():
    pixels = RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    array, encoding = decode(encoded(pixels, 'PNG'))
    assert encoding == 'rgb8' and np.array_equal(array, pixels)
    grey = pixels[:, :, 0]
    array, encoding = decode(encoded(grey, 'PNG'))
    assert encoding == 'mono8' and np.array_equal(array[:, :, 0], grey)


def test_jpeg_is_close_to_the_original_and_keeps_rgb_order():
    pixels = smooth()
    array, encoding = decode(encoded(pixels, 'JPEG', quality=95))
    assert encoding == 'rgb8' and array.shape == pixels.shape
    assert np.abs(array.astype(int) - pixels).mean() < 3


def test_jpeg_min_size_decodes_smaller_but_not_below_it():
    pixels = np.repeat(np.repeat(smooth(), 10, 0), 10, 1)          # 480 x 640
    array, _ = decode(encoded(pixels, 'JPEG'), min_size=(96, 96))
    assert array.shape[0] >= 96 and array.shape[1] >= 96 and array.shape[0] < 480


@pytest.mark.parametrize('data,reason', [
    (b'GIF89a....', 'compressed_format'), (b'', 'compressed_format'),
    (None, 'decode_failed'),                              # a truncated JPEG, built below
])
def test_bad_data_is_refused_by_reason(data, reason):
    if data is None:
        data = encoded(smooth(), 'JPEG')[:200]
    with pytest.raises(InputError) as err:
        decode(data)
    assert err.value.reason == reason


def test_oversized_frames_are_refused_before_decoding():
    with pytest.raises(InputError) as err:
        decode(encoded(smooth(), 'PNG'), max_pixels=100)
    assert err.value.reason == 'too_large'


def test_sixteen_bit_png_is_refused_as_an_encoding():
    depth = Image.fromarray(RNG.integers(0, 65535, (8, 8), dtype=np.uint16))
    out = io.BytesIO()
    depth.save(out, 'PNG')
    with pytest.raises(InputError) as err:
        decode(out.getvalue())
    assert err.value.reason == 'encoding'


def _claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0) changed to claim width x height."""
    data = bytearray(jpeg)
    at = data.find(b'\xff\xc0')
    data[at + 5:at + 7] = height.to_bytes(2, 'big')
    data[at + 7:at + 9] = width.to_bytes(2, 'big')
    return bytes(data)


@pytest.mark.parametrize('kind', ['jpeg_claims_more', 'jpeg_cut', 'png_cut', 'png_cut_iend'])
def test_truncated_or_corrupt_frames_are_refused_not_filled_grey(kind):
    """Issue 23 row 6: Pillow fills what a JPEG lacks with grey; such a frame is refused."""
    jpeg, png = encoded(smooth(), 'JPEG'), encoded(smooth(), 'PNG')
    data = {'jpeg_claims_more': _claiming(jpeg, 512, 512), 'jpeg_cut': jpeg[:len(jpeg) // 2],
            'png_cut': png[:len(png) // 2],
            'png_cut_iend': png[:len(png) // 2] + png[-12:]}[kind]
    with pytest.raises(InputError) as err:
        decode(data)
    assert err.value.reason == 'decode_failed'


@pytest.mark.parametrize('options', [{'quality': 95}, {'quality': 95, 'progressive': True},
                                     {'quality': 10, 'optimize': True, 'progressive': True}])
def test_complete_jpegs_of_any_content_pass_the_coded_size_check(options):
    for pixels in (np.zeros((48, 64, 3), np.uint8), RNG.integers(0, 256, (48, 64, 3),
                                                                 dtype=np.uint8)):
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, 'JPEG', **options)
        assert decode(out.getvalue())[0].shape == (48, 64, 3)


@pytest.mark.parametrize('fmt', ['PNG', 'JPEG'])
def test_a_small_file_declaring_a_huge_image_is_too_large_before_decoding(fmt):
    """Issue 23 rows 5, 8: refused by declared pixels (not bytes), counted as too_large."""
    out = io.BytesIO()
    Image.fromarray(np.zeros((4096, 4096), np.uint8)).save(out, fmt)
    data = out.getvalue()
    assert len(data) < 300_000
    for bomb in (data, data[:len(data) // 2]):   # cut: refused before any pixel is decoded
        with pytest.raises(InputError) as err:
            decode(bomb, max_pixels=1920 * 1080)
        assert err.value.reason == 'too_large' and '4096x4096' in str(err.value)


def test_pillows_own_bomb_limit_counts_as_too_large(monkeypatch):
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)
    with pytest.raises(InputError) as err:
        decode(encoded(smooth(), 'PNG'))
    assert err.value.reason == 'too_large'


def test_the_auto_pixel_limit_follows_the_models_input():
    assert frame_pixel_limit(0, 32, 24) == 1920 * 1080            # a small model: the floor
    assert frame_pixel_limit(0, 640, 480) == 64 * 640 * 480        # a large one: 64 x its input
    assert frame_pixel_limit(5000, 640, 480) == 5000               # set by hand
