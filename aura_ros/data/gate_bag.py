"""`python -m aura_ros gate-report BAG`: the gate picture of a whole recorded run, as a PNG.

Reads aura_node's `~/gate` topic (diagnostic_msgs/DiagnosticArray, one status per step) from a
rosbag2 bag with the project's reader set-up (aura_ros/data/rosbag.py: `rosbags`, no ROS
install) and draws it with the renderer the node uses live (aura_ros/runtime/gate_view.py),
its window stretched to the whole run. Thumbnails: when the bag also holds the camera
(sensor_msgs/Image or CompressedImage), the frames of up to `thumbnails` writes spread over the
run (the first frame of each run of consecutive writes), found by stamp: the gate is stamped
with its observation's stamp.

Record a run with `ros2 bag record /aura/gate /aura/gate_values /image` (README "Debugging").
"""

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from aura_ros.runtime.gate_view import GateView

from .demonstrations import DataError
from .images import compressed_image, raw_image
from .rosbag import CAMERA_TYPES, COMPRESSED, _header_stamp, _topic_list, _typestore, is_bag

GATE_TYPE = 'diagnostic_msgs/msg/DiagnosticArray'
DEFAULT_THRESHOLD = 0.5          # for bags from nodes whose gate status has no gate_threshold


def _open(bag: Path):
    from rosbags.highlevel import AnyReader

    if not is_bag(bag):
        raise DataError(f'{bag}: not a rosbag2 bag (a directory with metadata.yaml, a .mcap or '
                        '.db3 file)')
    try:
        reader = AnyReader([bag], default_typestore=_typestore())
        reader.open()
    except Exception as err:   # rosbags raises its own error classes per storage plugin
        raise DataError(f'{bag}: cannot open the bag: {err}') from err
    return reader


def _gate_statuses(reader, topic: str) -> list[tuple[Optional[float], dict]]:
    """(stamp, values) of every gate status on `topic`, in bag order."""
    found = []
    connections = [c for c in reader.connections if c.topic == topic]
    for conn, _, raw in reader.messages(connections=connections):
        msg = reader.deserialize(raw, conn.msgtype)
        for status in msg.status:
            if status.name == 'aura/gate':
                found.append((_header_stamp(msg), {kv.key: kv.value for kv in status.values}))
    return found


def _camera_topic(where: str, topics: dict, wanted: Optional[str]) -> Optional[str]:
    if wanted:
        if wanted not in topics or topics[wanted].msgtype not in CAMERA_TYPES:
            raise DataError(f'{where}: camera topic {wanted} is not an image topic of the bag; '
                            f'it has: {_topic_list(topics)}')
        return wanted
    cameras = sorted(t for t, info in topics.items() if info.msgtype in CAMERA_TYPES
                     and not t.endswith('gate_image'))
    return cameras[0] if len(cameras) == 1 else None


def spread(items: list, count: int) -> list:
    """`count` items evenly spread over `items` (all of them when there are no more)."""
    if len(items) <= count:
        return list(items)
    return [items[int(round(i))] for i in np.linspace(0, len(items) - 1, count)]


def read_gate_view(bag, gate_topic: str = '/aura/gate', camera_topic: Optional[str] = None,
                   thumbnails: int = 6, width: int = 1200) -> GateView:
    """A GateView holding every step of the bag's run (and the chosen written frames). After a
    reset (~/reset: the step count starts again) the steps go on counting across episodes, so
    the run stays one timeline; `view.episode_starts` lists where each later episode began."""
    bag = Path(bag)
    reader = _open(bag)
    try:
        topics = reader.topics
        if gate_topic not in topics or topics[gate_topic].msgtype != GATE_TYPE:
            raise DataError(f'{bag}: no gate topic {gate_topic} ({GATE_TYPE}) in the bag; it '
                            f'has: {_topic_list(topics)}')
        statuses = _gate_statuses(reader, gate_topic)
        if len(statuses) < 2:
            raise DataError(f'{bag}: {gate_topic} holds {len(statuses)} gate step(s); a '
                            'timeline needs at least 2')
        camera = _camera_topic(str(bag), topics, camera_topic) if thumbnails else None
        wrote = [v.get('wrote') == '1' for _, v in statuses]
        starts = [stamp for i, (stamp, _) in enumerate(statuses)   # of runs of writes
                  if wrote[i] and not (i and wrote[i - 1]) and stamp is not None]
        shown = set(spread(starts, thumbnails)) if camera else set()
        frames = _frames(reader, camera, shown) if shown else {}
    finally:
        reader.close()
    view = GateView(steps=max(len(statuses), 2), thumbnails=thumbnails, width=width)
    offset, last = 0, None
    for stamp, values in statuses:
        try:
            step = int(values['step'])
            if last is not None and step + offset <= last:    # a reset: steps count anew
                offset = last
                view.episode_starts.append(last + 1)
            last = step + offset
            view.record(last, float(values['p']),
                        float(values.get('gate_threshold', DEFAULT_THRESHOLD)),
                        float(values['surprise']), values['wrote'] == '1',
                        int(values['writes']), frames.get(stamp))
        except (KeyError, ValueError) as err:
            raise DataError(f'{bag}: a {gate_topic} status lacks or garbles {err}: is it '
                            "aura_node's gate topic?") from err
    return view


def _frames(reader, topic: str, stamps: set) -> dict:
    """stamp -> (pixels, encoding) of the camera frames whose stamp is in `stamps`."""
    found = {}
    connections = [c for c in reader.connections if c.topic == topic]
    for conn, _, raw in reader.messages(connections=connections):
        msg = reader.deserialize(raw, conn.msgtype)
        stamp = _header_stamp(msg)
        if stamp in stamps:
            where = f'{topic} at {stamp:.3f}'
            found[stamp] = (compressed_image(msg, where), 'rgb8') if conn.msgtype == COMPRESSED \
                else raw_image(msg, where)
    return found


def main(args: argparse.Namespace) -> int:
    try:
        view = read_gate_view(args.bag, args.gate_topic, args.camera_topic, args.thumbnails,
                              args.width)
    except DataError as err:
        print(f'gate-report: {err}', file=sys.stderr)
        return 2
    from PIL import Image

    out = Path(args.out or Path(args.bag).with_suffix('').name + '_gate.png')
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(view.render()).save(out)
    samples = list(view.samples)
    resets = (f'; {len(view.episode_starts)} reset(s), steps counted across episodes (later '
              f'episodes start at steps {", ".join(map(str, view.episode_starts))})'
              if view.episode_starts else '')
    print(f'gate-report: {len(samples)} steps, {sum(s.wrote for s in samples)} writes, '
          f'{len(view.written)} thumbnails -> {out}{resets}')
    return 0
