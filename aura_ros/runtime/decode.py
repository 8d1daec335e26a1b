"""Compressed camera frames (JPEG, PNG) -> the [H, W, C] uint8 array the preprocessor takes.

What image_transport's `compressed` plugin sends (sensor_msgs/CompressedImage) is a complete JPEG
or PNG file; its `format` string ('jpeg', 'rgb8; jpeg compressed bgr8', ...) only describes how it
was made, so the container is recognised by its magic bytes and the format string is not trusted.
A JPEG or PNG file holds its pixels in RGB order whatever the camera's encoding was, so colour
frames come out 'rgb8' and grey ones 'mono8'.

Decoding uses Pillow (libjpeg-turbo, zlib). For JPEG, `min_size` lets libjpeg decode at 1/2, 1/4
or 1/8 scale directly from the DCT coefficients when the model needs a much smaller image (the
largest reduction that still covers min_size); the area resize then does the rest. The image
size is read from the header before any pixel is decoded, so an oversized ("decompression bomb")
file is refused without allocating it.

Every refusal is an InputError whose reason the node counts: 'compressed_format' (neither JPEG
nor PNG), 'decode_failed' (corrupt or truncated data), 'too_large', 'encoding' (a pixel format
the model cannot take, e.g. 16-bit PNG depth).
"""

import io
import warnings
from typing import Optional

import numpy as np
from PIL import Image

from .errors import InputError

JPEG_MAGIC = b'\xff\xd8\xff'
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
MAX_PIXELS = 4096 * 4096                 # bigger than any robot camera; refuses bombs early
MODES = {'RGB': 'rgb8', 'L': 'mono8', 'RGBA': 'rgba8'}
CONVERT = {'P': 'RGB', 'LA': 'RGBA', 'CMYK': 'RGB', 'YCbCr': 'RGB', '1': 'L'}


def container(data: bytes) -> str:
    """'jpeg' or 'png' by magic bytes, else InputError('compressed_format')."""
    head = bytes(data[:8])
    if head.startswith(JPEG_MAGIC):
        return 'jpeg'
    if head.startswith(PNG_MAGIC):
        return 'png'
    raise InputError('compressed_format', f'compressed frame is neither JPEG nor PNG (first '
                                          f'bytes {head[:4].hex() or "none"})')


def decode(data, min_size: Optional[tuple[int, int]] = None,
           max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """JPEG/PNG bytes -> ([H, W, C] uint8, ROS encoding); InputError names what is wrong.

    min_size (width, height): a JPEG may be decoded at a reduced scale no smaller than this.
    """
    kind = container(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind.upper()])
            width, height = image.size
            if width * height > max_pixels:
                raise InputError('too_large', f'compressed frame is {width}x{height}, more '
                                              f'than {max_pixels} pixels')
            if kind == 'jpeg' and min_size is not None and image.mode in ('RGB', 'L'):
                image.draft(image.mode, min_size)
            image.load()
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as err:
        raise InputError('decode_failed', f'could not decode the {kind.upper()} frame '
                                          f'({err})') from err
    if image.mode in CONVERT:
        image = image.convert(CONVERT[image.mode])
    encoding = MODES.get(image.mode)
    if encoding is None:
        raise InputError('encoding', f'{kind.upper()} frame has pixel mode {image.mode!r}; '
                                     f'supported: 8-bit grey, RGB, RGBA')
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels, encoding
