"""Camera image (any size, ROS encoding) -> the backbone's normalised [1, 3, H, W] float32 input.

Resizing is an area average: each output pixel is the mean of the input pixels its box covers,
for any ratio, computed with `np.add.reduceat` over rows then columns (one pass over the frame,
no loop over pixels; 640x480 -> 64x64 in ~2 ms here). The boxes tile the input exactly, so
reduceat's segments are the boxes; when upsampling a box shrinks to one input pixel and it
becomes nearest-neighbour; at the model's own size it is the identity. 'nearest' is there
for speed on very large frames. Channels are reordered to RGB after resizing, on the small image.

`normalise` is the one image normalisation of training and serving: the trainer feeds the
backbone it trains through it too.

The index tables depend only on the input size, so they are cached per size: a camera that keeps
its resolution pays for them once.
"""

import numpy as np

from .errors import InputError
from .model_dir import ImageSpec

# encoding -> (channels of the input array, channel indices that give R, G, B)
ENCODINGS = {
    'rgb8': (3, (0, 1, 2)),
    'bgr8': (3, (2, 1, 0)),
    'rgba8': (4, (0, 1, 2)),
    'bgra8': (4, (2, 1, 0)),
    'mono8': (1, (0, 0, 0)),
}
MODES = ('area', 'nearest')


def check_image(image, encoding: str) -> np.ndarray:
    """The image as a [H, W, C] uint8 array, or InputError saying what is wrong with it."""
    if encoding not in ENCODINGS:
        raise InputError('encoding', f'unsupported image encoding {encoding!r}; '
                                     f'supported: {", ".join(ENCODINGS)}')
    if not isinstance(image, np.ndarray):
        raise InputError('shape', f'image must be a numpy array, got {type(image).__name__}')
    if image.dtype != np.uint8:
        raise InputError('dtype', f'image must be uint8 ({encoding}), got {image.dtype}')
    channels = ENCODINGS[encoding][0]
    if image.ndim == 2 and channels == 1:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] != channels:
        want = '[H, W] or [H, W, 1]' if channels == 1 else f'[H, W, {channels}]'
        raise InputError('shape', f'{encoding} image must be {want}, got {list(image.shape)}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError('empty', f'image is empty ({list(image.shape)})')
    return image


def _area_bounds(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Start/end (exclusive) input index of each output pixel's box; at least one pixel wide.

    A box ends where the next begins (or is one pixel when they coincide), which is exactly the
    segment `np.add.reduceat` sums for these starts.
    """
    edges = (np.arange(n_out + 1) * n_in) // n_out
    start, end = edges[:-1], edges[1:]
    end = np.maximum(end, start + 1)
    return start, end


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Input index at each output pixel's centre."""
    return np.minimum(((np.arange(n_out) * 2 + 1) * n_in) // (2 * n_out), n_in - 1)


def normalise(pixels: np.ndarray, mean, std, out: np.ndarray | None = None) -> np.ndarray:
    """[..., H, W, 3] pixel values (0..255, uint8 or float) -> [..., 3, H, W] float32,
    (pixel/255 - mean)/std per RGB channel, into `out` when given."""
    chw = np.moveaxis(np.asarray(pixels), -1, -3)
    if out is None:        # laid out as the pixels are (channels last), seen channels first
        out = np.moveaxis(np.empty(np.shape(pixels), np.float32), -1, -3)
    np.divide(chw, np.float32(255.0), out=out, dtype=np.float32)
    out -= np.asarray(mean, np.float32)[:, None, None]
    out /= np.asarray(std, np.float32)[:, None, None]
    return out


class Preprocessor:
    """Callable: (image, encoding) -> [1, 3, height, width] float32, (pixel/255 - mean)/std."""

    def __init__(self, image: ImageSpec, mode: str = 'area'):
        if mode not in MODES:
            raise ValueError(f'resize mode must be one of {MODES}, got {mode!r}')
        self.spec, self.mode = image, mode
        self._tables: dict[tuple[int, int], tuple] = {}

    def _table(self, h: int, w: int):
        key = (h, w)
        if key not in self._tables:
            H, W = self.spec.height, self.spec.width
            if (h, w) == (H, W):
                table = None
            elif self.mode == 'nearest':
                table = (_nearest_index(h, H), _nearest_index(w, W))
            else:
                y0, y1 = _area_bounds(h, H)
                x0, x1 = _area_bounds(w, W)
                area = ((y1 - y0)[:, None] * (x1 - x0)[None, :]).astype(np.float32)
                table = (y0, x0, area[:, :, None])
            if len(self._tables) > 8:     # a camera changing size all the time: keep it bounded
                self._tables.clear()
            self._tables[key] = table
        return self._tables[key]

    def resize(self, image: np.ndarray) -> np.ndarray:
        """[h, w, C] uint8 -> [H, W, C] float32 pixel values (0..255), area or nearest."""
        table = self._table(image.shape[0], image.shape[1])
        if table is None:
            return image.astype(np.float32)
        if self.mode == 'nearest':
            rows, cols = table
            return image[rows[:, None], cols[None, :]].astype(np.float32)
        y0, x0, area = table
        # uint32 sums are exact for boxes up to 16 Mpixel; rows first shrinks the data most
        rows = np.add.reduceat(image, y0, axis=0, dtype=np.uint32)
        return np.add.reduceat(rows, x0, axis=1).astype(np.float32) / area

    def __call__(self, image, encoding: str, out: np.ndarray | None = None) -> np.ndarray:
        image = check_image(image, encoding)
        channels, order = ENCODINGS[encoding]
        if channels == 4:
            image = image[:, :, :3]                    # drop alpha: a view, nothing copied
        pixels = self.resize(image)                    # [H, W, 1 or 3], small from here on
        if channels != 1 and order != (0, 1, 2):
            pixels = pixels[:, :, list(order)]
        rgb = np.broadcast_to(pixels, (self.spec.height, self.spec.width, 3))
        if out is None:
            out = np.empty((1, 3, self.spec.height, self.spec.width), np.float32)
        normalise(rgb, self.spec.mean, self.spec.std, out=out[0])
        return out
