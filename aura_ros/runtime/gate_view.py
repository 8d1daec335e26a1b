"""The write gate as a picture: a strip chart of the last N steps above the frames it wrote.

Echoing `/aura/gate` scrolls one text status per step past faster than anyone reads it; this
draws what an engineer wants to see instead: the gate probability p against the threshold,
the surprise, a red mark at every write, and thumbnails of the last few written frames with
their step numbers. The node draws it for `~/gate_image` (aura_ros/ros/gate_topics.py) and
`python -m aura_ros gate-report BAG` for a whole recorded run (aura_ros/data/gate_bag.py), with
this same class. (aura_ros/ros/so101/timeline.py is the other gate figure: one SO-101
task annotated with its lamps and key frames, drawn with matplotlib for docs/results; it needs
the simulator's events, which a robot does not have. This one is task-agnostic and cheap enough
to draw live.)

Cost model: `record` runs on the inference worker once per step and only appends a tuple to a
ring buffer (and, on a write, a reference to the frame already in memory: no copy, no resize).
All drawing happens in `render`, on whichever thread calls it, with Pillow (a dependency
already: decoding of compressed frames) and its built-in font; nothing here imports ROS.
"""

from collections import deque
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .preprocess import ENCODINGS

# colours (RGB) of the picture; WRITE is what a test or a person looks for
BACKGROUND = (255, 255, 255)
PANEL = (244, 244, 244)
GRID = (215, 215, 215)
TEXT = (30, 30, 30)
P_LINE = (31, 119, 180)
THRESHOLD = (255, 127, 14)
SURPRISE = (44, 160, 44)
WRITE = (214, 39, 40)

LEFT, RIGHT = 46, 10                      # room for the y labels; right margin
HEADER = 38                               # title line, legend line, the write ticks
P_HEIGHT, SURPRISE_HEIGHT, GAP = 120, 44, 6
AXIS = 16                                 # the step numbers under the chart
LABEL = 13                                # a thumbnail's step number above it


class GateSample(NamedTuple):
    """One step of the gate, as the chart needs it."""

    step: int
    p: float
    threshold: float
    surprise: float
    wrote: bool
    writes: int


class WrittenFrame(NamedTuple):
    """The first frame of a run of consecutive writes (steps `step`..`last`), as the camera
    delivered it (any size, a ROS encoding). A cue seen for five frames is one thumbnail."""

    step: int
    pixels: np.ndarray
    encoding: str
    last: int


def _font(size: int):
    """Pillow's built-in font: a scalable one where Pillow has FreeType, else its bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):   # an old Pillow, or one without FreeType
        return ImageFont.load_default()


def to_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """[H, W, C] uint8 in a ROS encoding -> [H, W, 3] RGB (a view where it can be)."""
    channels, order = ENCODINGS.get(encoding, (3, (0, 1, 2)))
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if channels == 1:
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return pixels[:, :, list(order)] if order != (0, 1, 2) else pixels[:, :, :3]


class GateView:
    """Ring buffer of the last `steps` gate samples and the last `thumbnails` written frames,
    and the picture of them (`render`: [H, W, 3] uint8 RGB)."""

    def __init__(self, steps: int = 300, thumbnails: int = 4, width: int = 640):
        if steps < 2 or thumbnails < 0 or width < LEFT + RIGHT + 100:
            raise ValueError(f'GateView needs steps >= 2, thumbnails >= 0 and width >= '
                             f'{LEFT + RIGHT + 100}; got {steps}, {thumbnails}, {width}')
        self.steps, self.thumbnails, self.width = steps, thumbnails, width
        self.samples: deque = deque(maxlen=steps)
        self.written: deque = deque(maxlen=max(thumbnails, 1))
        self.renders = 0                      # pictures drawn so far (tests, /diagnostics)
        self.episode_starts: list[int] = []   # steps where a later episode began (offline)
        self._font = _font(11)
        self._thumb_cache: dict = {}          # (step, frame id) -> thumbnail of a frame shown
        self._base = None                     # the background, drawn at the first render

    # -- the worker's side: cheap --

    def record(self, step: int, p: float, threshold: float, surprise: float, wrote: bool,
               writes: int, frame: Optional[tuple] = None) -> None:
        """Append one step; `frame` = (pixels, encoding) of a written step is kept by reference
        (a write right after a write only extends that run's step range)."""
        self.samples.append(GateSample(step, p, threshold, surprise, wrote, writes))
        if not wrote or not self.thumbnails:
            return
        if self.written and self.written[-1].last == step - 1:
            self.written[-1] = self.written[-1]._replace(last=step)
        elif frame is not None:
            self.written.append(WrittenFrame(step, *frame, last=step))

    def clear(self) -> None:
        """A new episode (reset): its steps count from the start again."""
        self.samples.clear()
        self.written.clear()
        self._thumb_cache = {}

    # -- geometry, shared with whoever reads the picture back --

    @property
    def thumb_size(self) -> tuple[int, int]:
        """(width, height) of one thumbnail box."""
        count = max(self.thumbnails, 1)
        width = (self.width - LEFT - RIGHT - 6 * (count - 1)) // count
        return width, min(int(width * 0.75), 140)

    @property
    def height(self) -> int:
        chart = HEADER + P_HEIGHT + GAP + SURPRISE_HEIGHT + AXIS
        return chart + (LABEL + self.thumb_size[1] + 8 if self.thumbnails else 0)

    @property
    def p_rows(self) -> tuple[int, int]:
        """First and last pixel row of the gate probability panel."""
        return HEADER, HEADER + P_HEIGHT - 1

    def step_x(self, step: int, samples: Optional[list] = None) -> int:
        """The pixel column of `step` in the chart of `samples` (default: the current ones):
        the window ends at the newest step and is `steps` wide (or the samples' span, if that
        is longer: a whole run drawn offline)."""
        first, span = self._window(list(self.samples) if samples is None else samples)
        return LEFT + int(round((step - first) * (self.width - LEFT - RIGHT - 1) /
                                max(span - 1, 1)))

    def _window(self, samples: list) -> tuple[int, int]:
        """(first step, steps) of the chart's x axis."""
        if not samples:
            return 0, self.steps
        newest = samples[-1].step
        span = max(self.steps, newest - samples[0].step + 1)
        return newest - span + 1, span

    # -- the drawing --

    def render(self) -> np.ndarray:
        """The picture of the current buffers: [height, width, 3] uint8 RGB."""
        samples, written = list(self.samples), list(self.written)
        if self._base is None:
            self._base = self._background()
        image = self._base.copy()
        draw = ImageDraw.Draw(image)
        self._title(draw, samples)
        if samples:
            self._chart(draw, samples)
        if self.thumbnails:
            self._thumbs(image, draw, written[-self.thumbnails:])
        self.renders += 1
        return np.asarray(image)

    def _text(self, draw, xy, text: str, fill=TEXT, anchor: str = 'la') -> None:
        try:
            draw.text(xy, text, fill=fill, font=self._font, anchor=anchor)
        except ValueError:                    # the bitmap font knows no anchors
            draw.text(xy, text, fill=fill, font=self._font)

    def _rows(self) -> tuple[int, int, int, int]:
        """Top and bottom pixel rows of the p panel and of the surprise panel."""
        p_top, p_bottom = self.p_rows
        s_top = p_bottom + 1 + GAP
        return p_top, p_bottom, s_top, s_top + SURPRISE_HEIGHT - 1

    def _background(self):
        """What every picture shares: panels, grid, legend, fixed labels (drawn once)."""
        image = Image.new('RGB', (self.width, self.height), BACKGROUND)
        draw = ImageDraw.Draw(image)
        right = self.width - RIGHT - 1
        p_top, p_bottom, s_top, s_bottom = self._rows()
        for top, bottom in ((p_top, p_bottom), (s_top, s_bottom)):
            draw.rectangle((LEFT, top, right, bottom), fill=PANEL)
        for value in (0.25, 0.5, 0.75):
            y = p_bottom - value * (P_HEIGHT - 1)
            draw.line((LEFT, y, right, y), fill=GRID)
        for value, label in ((1.0, '1'), (0.5, '0.5'), (0.0, '0')):
            self._text(draw, (LEFT - 4, p_bottom - value * (P_HEIGHT - 1)), label, anchor='rm')
        self._text(draw, (LEFT - 4, s_bottom), '0', anchor='rb')
        self._text(draw, (4, (p_top + p_bottom) // 2), 'p', fill=P_LINE, anchor='lm')
        self._text(draw, (4, (s_top + s_bottom) // 2), 's', fill=SURPRISE, anchor='lm')
        x, y = LEFT, 17
        for colour, name in ((P_LINE, 'gate probability p'), (THRESHOLD, 'threshold'),
                             (SURPRISE, 'surprise s (lower panel)'), (WRITE, 'write')):
            draw.rectangle((x, y + 4, x + 10, y + 7), fill=colour)
            self._text(draw, (x + 14, y), name)
            x += 14 + int(draw.textlength(name, font=self._font)) + 16
        return image

    def _title(self, draw, samples: list) -> None:
        if samples:
            last = samples[-1]
            writes_in_view = sum(s.wrote for s in samples)
            title = (f'step {last.step}   writes {last.writes}   p {last.p:.3f}   '
                     f'threshold {last.threshold:.2f}   {writes_in_view} writes in the last '
                     f'{len(samples)} steps')
        else:
            title = 'AURA write gate: no steps yet'
        self._text(draw, (4, 2), title)

    def _chart(self, draw, samples: list) -> None:
        p_top, p_bottom, s_top, s_bottom = self._rows()
        columns = zip(*samples, strict=True)
        steps, p, threshold, surprise, wrote, _ = (np.asarray(c) for c in columns)
        first, span = self._window(samples)
        xs = LEFT + np.rint((steps - first) * ((self.width - LEFT - RIGHT - 1) /
                                               max(span - 1, 1)))
        for start in self.episode_starts:     # a reset, in a recorded run: a dark line
            if first <= start <= steps[-1]:
                x = self.step_x(start, samples) - 1
                draw.line((x, p_top, x, s_bottom), fill=TEXT, width=2)
        for x in xs[wrote.astype(bool)].tolist():   # writes first: the lines go over them
            draw.line((x, p_top, x, s_bottom), fill=WRITE)
            draw.polygon([(x - 4, p_top - 6), (x + 4, p_top - 6), (x, p_top - 1)], fill=WRITE)

        def line(values, bottom, height, colour, width=1):
            ys = bottom - np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * (height - 1)
            points = list(zip(xs.tolist(), ys.tolist(), strict=True))
            if len(points) > 1:
                draw.line(points, fill=colour, width=width)

        line(threshold, p_bottom, P_HEIGHT, THRESHOLD)
        line(p, p_bottom, P_HEIGHT, P_LINE, width=2)
        finite = surprise[np.isfinite(surprise)]
        top = max(float(finite.max()) if finite.size else 0.0, 1e-9)
        line(np.where(np.isfinite(surprise), surprise / top, 1.0), s_bottom, SURPRISE_HEIGHT,
             SURPRISE)
        self._text(draw, (LEFT - 4, s_top), f'{top:.3g}', anchor='rt')
        for step, anchor in ((max(first, 0), 'la'), (int(steps[-1]), 'ra')):
            self._text(draw, (self.step_x(step, samples), s_bottom + 3), f'step {step}',
                       anchor=anchor)

    def _thumbs(self, image, draw, written: list) -> None:
        width, height = self.thumb_size
        top = self._rows()[3] + 1 + AXIS
        if not written:
            self._text(draw, (LEFT, top + 2), 'no written frames in view yet')
            return
        cache = {}
        for i, frame in enumerate(written):
            x = LEFT + i * (width + 6)
            key = (frame.step, id(frame.pixels))    # steps restart after a reset
            thumb = self._thumb_cache.get(key)
            if thumb is None:
                thumb = self._thumbnail(frame, width, height - 4)
            cache[key] = thumb
            label = f'write at step {frame.step}' if frame.last == frame.step else \
                f'writes at steps {frame.step}-{frame.last}'
            self._text(draw, (x, top), label, fill=WRITE)
            draw.rectangle((x, top + LABEL, x + thumb.width + 3, top + LABEL + thumb.height + 3),
                           fill=WRITE)
            image.paste(thumb, (x + 2, top + LABEL + 2))
        self._thumb_cache = cache

    @staticmethod
    def _thumbnail(frame: WrittenFrame, width: int, height: int):
        """The frame scaled (nearest, aspect kept) to fit `width - 4` x `height`."""
        rgb = np.ascontiguousarray(to_rgb(frame.pixels, frame.encoding))
        h, w = rgb.shape[:2]
        scale = min((width - 4) / w, height / h)
        size = (max(int(w * scale), 1), max(int(h * scale), 1))
        return Image.fromarray(rgb).resize(size, Image.NEAREST)
