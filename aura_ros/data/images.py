"""Camera frames -> model-sized uint8 RGB, decoded once and spooled to disk.

The resize is the runtime's own area average (aura_ros.runtime.preprocess.Preprocessor.resize),
so the model trains on the pixels it will see on the robot (up to rounding to uint8). Frames are
appended to a spool file as they are decoded, so an hour of video never has to fit in memory.
"""

import io
from pathlib import Path
from typing import NamedTuple

import numpy as np

from aura_ros.runtime.preprocess import ENCODINGS, Preprocessor

from .demonstrations import DataError

COMPRESSED_FORMATS = ('jpeg', 'jpg', 'png')


class _Size(NamedTuple):
    """What Preprocessor needs of an image spec: only the size matters for resize()."""

    height: int
    width: int
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)


class Resizer:
    """[h, w, C] uint8 in `encoding` -> [H, W, 3] uint8 RGB at the model size."""

    def __init__(self, size: tuple[int, int]):
        self.size = size
        self._pre = Preprocessor(_Size(*size), mode='area')

    def __call__(self, image: np.ndarray, encoding: str = 'rgb8') -> np.ndarray:
        channels, order = ENCODINGS[encoding]
        if image.ndim == 2:
            image = image[:, :, None]
        if channels == 4:
            image = image[:, :, :3]
        small = np.rint(self._pre.resize(image)).astype(np.uint8)
        if channels == 1:
            return np.repeat(small[:, :, :1], 3, axis=2)
        return small[:, :, list(order)] if order != (0, 1, 2) else small


def raw_image(msg, where: str) -> tuple[np.ndarray, str]:
    """A sensor_msgs/Image as an [h, w, C] uint8 view and its encoding, or DataError."""
    encoding = msg.encoding.lower()
    if encoding not in ENCODINGS:
        raise DataError(f'{where}: unsupported image encoding {msg.encoding!r}; supported: '
                        f'{", ".join(ENCODINGS)}')
    channels = ENCODINGS[encoding][0]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(msg.data, np.uint8) if not isinstance(msg.data, np.ndarray) \
        else msg.data.view(np.uint8)
    if h == 0 or w == 0 or step < w * channels or len(data) < h * step:
        raise DataError(f'{where}: image data ({len(data)} bytes) does not fit {h}x{w} '
                        f'{encoding} with step {step}')
    rows = data[: h * step].reshape(h, step)[:, : w * channels]
    return rows.reshape(h, w, channels), encoding


def compressed_image(msg, where: str) -> np.ndarray:
    """A sensor_msgs/CompressedImage (jpeg or png) as [h, w, 3] uint8 RGB, or DataError."""
    from PIL import Image, UnidentifiedImageError

    fmt = msg.format.lower()
    if not any(f in fmt for f in COMPRESSED_FORMATS):
        raise DataError(f'{where}: unsupported compressed image format {msg.format!r}; '
                        'supported: jpeg, png')
    try:
        with Image.open(io.BytesIO(bytes(msg.data))) as img:
            return np.asarray(img.convert('RGB'))
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f'{where}: cannot decode {msg.format!r} image: {err}') from err


class FrameSpool:
    """Append-only file of [H, W, 3] uint8 frames; `array()` maps what was written."""

    def __init__(self, path: Path, size: tuple[int, int]):
        self.path, self.shape = Path(path), (*size, 3)
        self.count = 0
        self._file = open(self.path, 'wb')

    def append(self, frame: np.ndarray) -> None:
        assert frame.shape == self.shape and frame.dtype == np.uint8, frame.shape
        self._file.write(np.ascontiguousarray(frame).data)
        self.count += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def array(self) -> np.ndarray:
        self.close()
        if self.count == 0:
            return np.empty((0, *self.shape), np.uint8)
        return np.memmap(self.path, np.uint8, 'r', shape=(self.count, *self.shape))
