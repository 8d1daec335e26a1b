"""Compressed camera frames (JPEG, PNG) -> the [H, W, C] uint8 array the preprocessor takes.

What image_transport's `compressed` plugin sends (sensor_msgs/CompressedImage) is a complete JPEG
or PNG file; its `format` string ('jpeg', 'rgb8; jpeg compressed bgr8', ...) only describes how it
was made, so the container is recognised by its magic bytes and the format string is not trusted.
A JPEG or PNG file holds its pixels in RGB order whatever the camera's encoding was, so colour
frames come out 'rgb8' and grey ones 'mono8'.

Decoding uses Pillow (libjpeg-turbo, zlib). For JPEG, `min_size` lets libjpeg decode at 1/2, 1/4
or 1/8 scale directly from the DCT coefficients when the model needs a much smaller image (the
largest reduction that still covers min_size); the area resize then does the rest. The image
size is read from the header before any pixel is decoded, so a file declaring more than
`max_pixels` (a "decompression bomb": a small PNG may declare 4096x4096) is refused without
decoding or allocating it, whatever its size in bytes; the node ties the limit to the model's
input size (parameter max_frame_pixels).

A truncated or corrupt file is refused, never stepped: Pillow (and libjpeg) would fill the
missing part of a JPEG with grey, so a JPEG must end with its end-of-image marker and a PNG with
its IEND chunk, and Pillow's decoder errors are errors.

Every refusal is an InputError whose reason the node counts: 'compressed_format' (neither JPEG
nor PNG), 'decode_failed' (corrupt or truncated data), 'too_large' (more pixels than allowed,
Pillow's own bomb limit included), 'encoding' (a pixel format the model cannot take, e.g.
16-bit PNG depth).
"""

import io
import re
import warnings
from typing import Optional

import numpy as np
from PIL import Image

from .errors import InputError

JPEG_MAGIC = b'\xff\xd8\xff'
JPEG_END = b'\xff\xd9'
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
PNG_END = b'\x00\x00\x00\x00IEND\xaeB`\x82'
MAX_PIXELS = 4096 * 4096                 # bigger than any robot camera; refuses bombs early
AUTO_MIN_FRAME_PIXELS = 1920 * 1080      # frame_pixel_limit(0, ...): at least this...
AUTO_FRAME_SCALE = 64                    # ...or this many times the model's input
MODES = {'RGB': 'rgb8', 'L': 'mono8', 'RGBA': 'rgba8'}
CONVERT = {'P': 'RGB', 'LA': 'RGBA', 'CMYK': 'RGB', 'YCbCr': 'RGB', '1': 'L'}


def frame_pixel_limit(setting: int, width: int, height: int) -> int:
    """The most pixels a frame for a model input of `width` x `height` may have: `setting`, or
    for 0, 64 x the input and at least 1920 x 1080 (decoding many more pixels than the model
    takes only to average them away costs time and memory, and is what a bomb exploits)."""
    return setting or max(AUTO_MIN_FRAME_PIXELS, AUTO_FRAME_SCALE * width * height)


def container(data: bytes) -> str:
    """'jpeg' or 'png' by magic bytes, else InputError('compressed_format')."""
    head = bytes(data[:8])
    if head.startswith(JPEG_MAGIC):
        return 'jpeg'
    if head.startswith(PNG_MAGIC):
        return 'png'
    raise InputError('compressed_format', f'compressed frame is neither JPEG nor PNG (first '
                                          f'bytes {head[:4].hex() or "none"})')


def check_complete(data: bytes, kind: str) -> None:
    """InputError('decode_failed') for a file cut short: a JPEG without its end-of-image marker
    (trailing zero padding allowed), a PNG without its IEND chunk."""
    tail = bytes(data[-64:]).rstrip(b'\x00') if kind == 'jpeg' else bytes(data[-len(PNG_END):])
    end = JPEG_END if kind == 'jpeg' else PNG_END
    if not tail.endswith(end):
        marker = 'end-of-image marker' if kind == 'jpeg' else 'IEND chunk'
        raise InputError('decode_failed', f'{kind.upper()} frame is truncated (no {marker} at '
                                          f'its end, {len(data)} bytes)')


SOF_HUFFMAN = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7}   # frame headers, Huffman coding
SOF_ARITHMETIC = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
SCAN_END = re.compile(rb'\xff+[^\x00\xd0-\xd7\xff]')        # the marker after coded data


def jpeg_too_short(data: bytes) -> str:
    """Why a JPEG's coded data cannot hold the image its header declares, else ''.

    Huffman coding spends at least one bit on every 8x8 block's DC coefficient (baseline and
    progressive alike), so a scan's coded bytes are at least its blocks / 8. A header claiming
    512x512 over the data of a 32x24 image passes Pillow, which fills the rest with grey.
    Arithmetic-coded files (rare) are not checked; malformed markers are left to Pillow.
    """
    data, i, blocks, coded = bytes(data), 2, 0, 0
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:                              # fill byte
            i += 1
            continue
        if marker == 0xD9:                              # end of image
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:    # markers without a length
            i += 2
            continue
        if marker in SOF_ARITHMETIC:
            return ''
        if marker in SOF_HUFFMAN and i + 10 <= len(data):
            height = int.from_bytes(data[i + 5:i + 7], 'big')
            width = int.from_bytes(data[i + 7:i + 9], 'big')
            sampling = [(b >> 4, b & 15) for b in data[i + 11:i + 10 + 3 * data[i + 9]:3]]
            hmax = max([h for h, _ in sampling] + [1])
            vmax = max([v for _, v in sampling] + [1])
            blocks = sum(-(-width * h // (8 * hmax)) * -(-height * v // (8 * vmax))
                         for h, v in sampling)
        i += 2 + int.from_bytes(data[i + 2:i + 4], 'big')
        if marker == 0xDA:                              # start of scan: coded data follows
            end = SCAN_END.search(data, i)
            coded += (end.start() if end else len(data)) - i
            i = end.start() if end else len(data)
    if blocks and coded * 8 < blocks:
        return (f'its header declares {blocks} blocks of 8x8 but it carries only {coded} bytes '
                'of coded data, less than one bit per block')
    return ''


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
            check_complete(data, kind)
            short = jpeg_too_short(data) if kind == 'jpeg' else ''
            if short:
                raise InputError('decode_failed', f'JPEG frame is truncated or corrupt: {short}')
            if kind == 'jpeg' and min_size is not None and image.mode in ('RGB', 'L'):
                image.draft(image.mode, min_size)
            image.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InputError('too_large', f'compressed frame is too large ({err})') from err
    except (OSError, ValueError, SyntaxError) as err:
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
