"""What aura_node subscribes, per model: camera topics (raw or compressed) or a features topic.

Topic names (all relative, so a namespace and remaps apply):

    one camera              image                  (sensor_msgs/Image)
                            image/compressed       (sensor_msgs/CompressedImage, transport
                                                    'compressed', as image_transport names it)
    several cameras         <camera>/image         (and <camera>/image/compressed)
    no camera (features in) features               (sensor_msgs/Image, 32FC1, height 1,
                                                    width d_model: a standard, stamped message
                                                    any backbone process can fill)

`TopicWatch` notices, at each health tick, what silently gives zero frames: a publisher of
another type on the topic (DDS never matches it), or publishers but no message for
`input_timeout_s`.
"""

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from aura_ros.ros.conversions import image_to_array
from aura_ros.runtime import InputError
from aura_ros.runtime.decode import MAX_PIXELS, decode

TRANSPORTS = ('raw', 'compressed')
FEATURES_TOPIC = 'features'
FEATURES_ENCODING = '32FC1'
IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'


def camera_topics(cameras: Sequence[str], transport) -> dict[str, str]:
    """{camera: relative topic}: 'image' for one camera, '<camera>/image' for several, each with
    '/compressed' where its transport (one for all, or {camera: transport}) is compressed."""
    per = transport if isinstance(transport, dict) else dict.fromkeys(cameras, transport)
    bad = {c: t for c, t in per.items() if t not in TRANSPORTS}
    if bad:
        raise ValueError(f'transport must be one of {TRANSPORTS}, got {bad!r}')

    def suffix(name):
        return '/compressed' if per[name] == 'compressed' else ''
    if len(cameras) == 1:
        return {cameras[0]: 'image' + suffix(cameras[0])}
    return {name: f'{name}/image{suffix(name)}' for name in cameras}


def parse_transports(text: str) -> dict[str, str]:
    """The image_transport parameter: '' (as trained: {}), 'raw' or 'compressed' (every camera:
    {'*': t}), or 'front:raw,wrist:compressed' (those cameras). ValueError naming the bad part."""
    text = text.strip()
    if not text:
        return {}
    if text in TRANSPORTS:
        return {'*': text}
    out = {}
    for part in text.split(','):
        camera, _, transport = part.strip().partition(':')
        if not camera or transport not in TRANSPORTS:
            raise ValueError(f'{part.strip()!r} is not <camera>:<{"|".join(TRANSPORTS)}>')
        out[camera] = transport
    return out


def camera_transports(cameras, text: str) -> dict[str, str]:
    """{camera: transport} of the model's camera specs (each as trained) with the image_transport
    parameter over it; ValueError when it names a camera the model does not have."""
    wanted = parse_transports(text)
    names = [c.name for c in cameras]
    unknown = sorted(set(wanted) - set(names) - {'*'})
    if unknown:
        raise ValueError(f'image_transport names camera(s) {", ".join(unknown)}; the model has '
                         f'{", ".join(names)}')
    return {c.name: wanted.get(c.name, wanted.get('*', c.transport)) for c in cameras}


def message_type(transport: str):
    return CompressedImage if transport == 'compressed' else Image


def frame_to_array(msg, min_size: Optional[tuple[int, int]] = None,
                   max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """An Image (zero-copy view) or CompressedImage (decoded) -> (pixels, ROS encoding).

    A frame of more than `max_pixels` is refused ('too_large'): a compressed one by the size
    its header declares, before any pixel is decoded.
    """
    if isinstance(msg, CompressedImage):
        return decode(msg.data, min_size=min_size, max_pixels=max_pixels)
    pixels = image_to_array(msg)                  # a malformed one: encoding, empty, size
    if msg.width * msg.height > max_pixels:
        raise InputError('too_large', f'image is {msg.width}x{msg.height}, more than '
                                      f'{max_pixels} pixels (max_frame_pixels)')
    return pixels, msg.encoding


def features_to_array(msg: Image, d_model: int) -> np.ndarray:
    """A features message (32FC1, 1 x d_model) -> float32 [d_model]; InputError otherwise."""
    if msg.encoding != FEATURES_ENCODING:
        raise InputError('features_encoding', f'features must be {FEATURES_ENCODING}, got '
                                              f'{msg.encoding[:32]!r}')
    if msg.height != 1 or msg.width != d_model:
        raise InputError('features_size', f'features must be height 1, width {d_model} '
                                          f'(memory.d_model), got {msg.height}x{msg.width}')
    if msg.step != 4 * d_model or len(msg.data) != 4 * d_model:
        raise InputError('features_size', f'features data must be {4 * d_model} bytes with step '
                                          f'{4 * d_model}, got {len(msg.data)} bytes, step '
                                          f'{msg.step}')
    dtype = '>f4' if msg.is_bigendian else '<f4'
    return np.frombuffer(msg.data, dtype=dtype).astype(np.float32)


@dataclass
class TopicWatch:
    """One input topic: the type the node reads and when a message last came."""

    topic: str                       # fully resolved
    type_name: str                   # e.g. 'sensor_msgs/msg/Image'
    timeout_s: float
    last_heard: Optional[float] = None
    since: float = 0.0

    def __post_init__(self) -> None:
        self.since = time.monotonic()

    def heard(self) -> None:
        self.last_heard = time.monotonic()

    def restart(self) -> None:
        """Forget the silence so far (on activation: a paused node heard nothing on purpose)."""
        self.since = time.monotonic()
        self.last_heard = None

    def problems(self, publisher_types: list[str]) -> list[tuple[str, str]]:
        """[(kind, text)] from the types of the topic's publishers (one entry each): 'wrong_type'
        and/or 'no_messages' (publishers, but silence for timeout_s)."""
        found = []
        publishers = len(publisher_types)
        types = sorted({t for t in publisher_types if t != self.type_name})
        if types:
            found.append(('wrong_type', f'{self.topic} carries {", ".join(types)}; this node '
                                        f'reads {self.type_name} there (image_transport '
                                        'parameter, or a remap to the wrong topic?)'))
        silent = time.monotonic() - (self.last_heard or self.since)
        if publishers and silent > self.timeout_s:
            found.append(('no_messages', f'no message on {self.topic} for {silent:.1f} s while '
                                         f'{publishers} publisher(s) exist (QoS or transport '
                                         'mismatch, or a stalled camera?)'))
        return found
