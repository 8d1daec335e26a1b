"""ROS messages <-> numpy, with every check a malformed message needs before it reaches the model.

Each check raises `InputError` with a short `reason` slug; the node counts rejections by that slug.
Strings a peer controls (encodings, joint names) go into messages cut by `peer_text`: another node
must not be able to write megabytes into our log.
"""

from collections import Counter
from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from aura_ros.runtime import InputError

CHANNELS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}
PEER_TEXT_CHARS = 64


def peer_text(value, limit: int = PEER_TEXT_CHARS) -> str:
    """repr() of a peer-supplied value, cut to `limit` characters with the full length said."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f'{text[:limit]}... ({len(text)} chars)'


def stamp_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def checked_stamp_seconds(stamp: Time) -> float:
    """stamp_seconds of a well-formed stamp: nanosec must be below 10^9."""
    if stamp.nanosec >= 1_000_000_000:
        raise InputError('malformed_stamp', f'stamp nanosec {stamp.nanosec} is not below 10^9')
    return stamp_seconds(stamp)


def image_to_array(msg: Image) -> np.ndarray:
    """A zero-copy uint8 view [H, W, C] of the image's pixels (row padding dropped)."""
    channels = CHANNELS.get(msg.encoding)
    if channels is None:
        raise InputError('encoding', f'unsupported image encoding {peer_text(msg.encoding)}; '
                         f'supported: {", ".join(CHANNELS)}')
    if msg.height == 0 or msg.width == 0 or len(msg.data) == 0:
        raise InputError('empty', f'empty image ({msg.width}x{msg.height}, '
                         f'{len(msg.data)} bytes)')
    row = msg.width * channels
    if msg.step < row or len(msg.data) != msg.step * msg.height:
        raise InputError('size', f'image data does not match its size: '
                         f'{msg.width}x{msg.height} {msg.encoding} with step {msg.step} needs '
                         f'{msg.step * msg.height} bytes (step >= {row}), got {len(msg.data)}')
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    return rows[:, :row].reshape(msg.height, msg.width, channels)


def joints_to_array(msg: JointState, names: Sequence[str]) -> np.ndarray:
    """Positions of `names`, in that order; extra joints are ignored, missing ones are an error.

    A name given twice is malformed: which of its values is meant cannot be known.
    """
    if len(msg.position) != len(msg.name):
        raise InputError('malformed_joints', f'joint state has {len(msg.name)} names but '
                         f'{len(msg.position)} positions')
    index = {name: i for i, name in enumerate(msg.name)}
    if len(index) != len(msg.name):
        twice = sorted(name for name, count in Counter(msg.name).items() if count > 1)
        raise InputError('malformed_joints', f'joint state names {peer_text(twice)} more '
                         'than once')
    missing = [name for name in names if name not in index]
    if missing:
        raise InputError('missing_joints', f'joint state lacks {", ".join(missing)} '
                         f'(has: {peer_text(list(msg.name))})')
    positions = np.asarray(msg.position, dtype=np.float64)[[index[n] for n in names]]
    if not np.isfinite(positions).all():
        raise InputError('nonfinite_joints', f'joint positions are not finite: '
                         f'{dict(zip(names, positions.tolist(), strict=True))}')
    return positions.astype(np.float32)


def action_chunk_msg(action: np.ndarray, names: Sequence[str], stamp: Time,
                     period_s: float, frame_id: str = '') -> JointTrajectory:
    """One trajectory point per chunk step, at (i + 1) * period_s after the image stamp."""
    msg = JointTrajectory()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.joint_names = list(names)
    for i, row in enumerate(action):
        offset = (i + 1) * period_s
        point = JointTrajectoryPoint(positions=row.astype(float).tolist())
        point.time_from_start = Duration(sec=int(offset), nanosec=int(round(offset % 1 * 1e9)))
        msg.points.append(point)
    return msg


def status(name: str, message: str, values: dict, level=DiagnosticStatus.OK,
           hardware_id: str = '') -> DiagnosticStatus:
    """A DiagnosticStatus whose key-values are `values`, formatted for `ros2 topic echo`."""
    def text(value):
        if isinstance(value, bool):
            return str(int(value))
        if isinstance(value, float):
            return f'{value:.6g}'
        return str(value)
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=text(v)) for k, v in values.items()])
