"""rosbag2 recordings (mcap or sqlite3) -> raw per-bag streams, without a ROS install.

Sources: one bag directory (with metadata.yaml), one .mcap or .db3 file, or a folder holding
several of either (each bag is one episode, unless `episode_gap_s` splits it; hidden folders
such as the decode cache are skipped). Read with `rosbags.highlevel.AnyReader`, which handles
both storage formats and carries the message definitions of the recording.

Streams read (topic names from DataConfig):
  cameras   sensor_msgs/msg/Image (rgb8, bgr8, rgba8, bgra8, mono8) or
            sensor_msgs/msg/CompressedImage (jpeg, png; decoded with Pillow)
  joints    sensor_msgs/msg/JointState, positions looked up BY NAME (order may differ per message)
  commands  trajectory_msgs/msg/JointTrajectory (points at header.stamp + time_from_start),
            sensor_msgs/msg/JointState (a leader arm), or std_msgs/msg/Float64MultiArray
            (positions in `action_names` order; it has no names of its own)
  hints     any type on `hint_topic` (optional; `hint_match` filters by text): frames worth
            remembering, e.g. an instruction or a marker button (see DataConfig)

Time: each message is stamped with its header.stamp when it has a header and the stamp is not
zero, else with the time the bag received it. Header stamps are what the driver measured, so
they are preferred; Float64MultiArray has no header and always uses the receive time. Cameras,
joints and commands must therefore share one clock (all wall time, or all sim time).
"""

import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from tqdm import tqdm

from .align import Commands, RawRecording, SampledCommands, TrajectoryCommands
from .config import DataConfig
from .demonstrations import DataError
from .images import FrameSpool, Resizer, compressed_image, raw_image

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
JOINT_STATE = 'sensor_msgs/msg/JointState'
TRAJECTORY = 'trajectory_msgs/msg/JointTrajectory'
MULTI_ARRAY = 'std_msgs/msg/Float64MultiArray'
CAMERA_TYPES = (IMAGE, COMPRESSED)
COMMAND_TYPES = (TRAJECTORY, JOINT_STATE, MULTI_ARRAY)
BAG_SUFFIXES = ('.mcap', '.db3')


def is_bag(path: Path) -> bool:
    """A bag directory (metadata.yaml) or a single .mcap/.db3 file."""
    path = Path(path)
    return (path.is_dir() and (path / 'metadata.yaml').is_file()) or \
        (path.is_file() and path.suffix in BAG_SUFFIXES)


def find_bags(path) -> list[Path]:
    """The bags of a source, sorted by name; DataError when there are none."""
    path = Path(path)
    if not path.exists():
        raise DataError(f'{path}: no such file or directory')
    if is_bag(path):
        return [path]
    if path.is_dir():
        bags = sorted(p for p in path.iterdir() if not p.name.startswith('.') and is_bag(p))
        if bags:
            return bags
    raise DataError(f'{path}: not a rosbag2 bag (a directory with metadata.yaml, a .mcap or .db3 '
                    'file) nor a folder of bags')


def bag_files(bag: Path) -> list[Path]:
    """The files whose size and mtime identify a bag's content (for the cache key)."""
    bag = Path(bag)
    if bag.is_file():
        return [bag]
    return sorted(p for p in bag.iterdir() if p.is_file() and
                  (p.suffix in BAG_SUFFIXES or p.name == 'metadata.yaml'))


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def _topic_list(topics: dict) -> str:
    return ', '.join(f'{t} ({info.msgtype})' for t, info in sorted(topics.items())) or 'none'


def _require(where: str, topics: dict, topic: str, types: Optional[tuple], role: str) -> str:
    """The topic's type; DataError when the bag lacks it or it has none of `types` (None: any)."""
    if topic not in topics:
        raise DataError(f'{where}: {role} topic {topic} is not in the bag; it has: '
                        f'{_topic_list(topics)}')
    msgtype = topics[topic].msgtype
    if types is not None and msgtype not in types:
        raise DataError(f'{where}: {role} topic {topic} has type {msgtype}; a {role} topic must '
                        f'be {" or ".join(types)}')
    return msgtype


def pick_action_topic(where: str, topics: dict, config: DataConfig) -> tuple[str, str]:
    """The command topic: the configured one, else the only JointTrajectory topic, else the only
    JointState topic besides the joints topic."""
    if config.action_topic is not None:
        return config.action_topic, _require(where, topics, config.action_topic, COMMAND_TYPES,
                                             'command')
    for msgtype in (TRAJECTORY, JOINT_STATE):
        found = sorted(t for t, info in topics.items()
                       if info.msgtype == msgtype and t != config.joints_topic)
        if len(found) == 1:
            return found[0], msgtype
        if len(found) > 1:
            raise DataError(f'{where}: several {msgtype} topics could be the commands: '
                            f'{", ".join(found)}; set action_topic')
    raise DataError(f'{where}: no command topic: no JointTrajectory topic and no JointState topic '
                    f'other than {config.joints_topic}; set action_topic (std_msgs/'
                    f'Float64MultiArray needs it and action_names). Topics: {_topic_list(topics)}')


def _header_stamp(msg) -> Optional[float]:
    """The message's own stamp (a header's, or a std_msgs/Header's), None when it has none."""
    header = getattr(msg, 'header', None)
    if header is None and hasattr(msg, 'stamp') and hasattr(msg, 'frame_id'):
        header = msg
    if header is not None:
        ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        if ns != 0:
            return ns / 1e9
    return None


def _stamp(msg, receive_ns: int) -> float:
    stamp = _header_stamp(msg)
    return receive_ns / 1e9 if stamp is None else stamp


class _ByName:
    """Positions picked by name from messages whose name order may change: index cached."""

    def __init__(self, wanted: tuple, topic: str, where: str):
        self.wanted, self.topic, self.where = wanted, topic, where
        self._cache: dict[tuple, np.ndarray] = {}

    def __call__(self, names, values) -> np.ndarray:
        key = tuple(names)
        index = self._cache.get(key)
        if index is None:
            missing = [n for n in self.wanted if n not in key]
            if missing:
                raise DataError(f'{self.where}: {self.topic} has no joint(s) named '
                                f'{", ".join(missing)}; its messages name: '
                                f'{", ".join(key) or "nothing"}')
            index = self._cache[key] = np.array([key.index(n) for n in self.wanted])
        values = np.asarray(values, np.float64)
        if len(values) != len(key):
            raise DataError(f'{self.where}: {self.topic} message has {len(key)} names but '
                            f'{len(values)} positions')
        return values[index]


def read_bag(bag: Path, config: DataConfig, workdir: Path, *, joint_names: Optional[tuple] = None,
             action_names: Optional[tuple] = None, progress: bool = True) -> RawRecording:
    """One pass over a bag: camera frames decoded and resized into spools under `workdir`,
    joint states and commands as arrays. `joint_names`/`action_names` (from an earlier bag of the
    same source) win over the first message's order, so every episode has one column order."""
    from rosbags.highlevel import AnyReader

    bag = Path(bag)
    try:
        reader = AnyReader([bag], default_typestore=_typestore())
        reader.open()
    except Exception as err:   # rosbags raises its own error classes per storage plugin
        raise DataError(f'{bag}: cannot open the bag: {err}') from err
    try:
        cam_types, action_topic, action_type = _check_topics(str(bag), reader.topics, config)
        joint_names = config.joint_names or joint_names or _first_joint_names(reader, config,
                                                                              str(bag))
        streams = _Streams(bag, config, workdir, cam_types, action_topic, action_type,
                           joint_names, config.action_names or action_names or joint_names)
        try:
            wanted = {*config.image_topics, config.joints_topic, action_topic,
                      *([config.hint_topic] if config.hint_topic else [])}
            connections = [c for c in reader.connections if c.topic in wanted]
            messages = tqdm(reader.messages(connections=connections), leave=False,
                            total=sum(c.msgcount for c in connections), desc=f'read {bag.name}',
                            unit='msg', disable=not progress)
            for conn, receive_ns, raw in messages:
                msg = reader.deserialize(raw, conn.msgtype)
                streams.add(conn.topic, msg, _stamp(msg, receive_ns), receive_ns / 1e9)
        finally:
            streams.close()
    finally:
        reader.close()
    return streams.recording()


def _check_topics(where: str, topics: dict, config: DataConfig) -> tuple[list, str, str]:
    """Camera types, command topic and command type, or DataError naming what is wrong."""
    cam_types = [_require(where, topics, t, CAMERA_TYPES, 'camera') for t in config.image_topics]
    _require(where, topics, config.joints_topic, (JOINT_STATE,), 'joints')
    action_topic, action_type = pick_action_topic(where, topics, config)
    if config.hint_topic:
        _require(where, topics, config.hint_topic, None, 'hint')
    if action_type == MULTI_ARRAY and config.action_names is None:
        raise DataError(f'{where}: commands on {action_topic} are std_msgs/'
                        'Float64MultiArray, which carries no joint names; set action_names')
    return cam_types, action_topic, action_type


def _first_joint_names(reader, config: DataConfig, where: str) -> Optional[tuple]:
    """The first JointState's names: they name the columns, whatever message comes first."""
    conns = [c for c in reader.connections if c.topic == config.joints_topic]
    for conn, _, raw in reader.messages(connections=conns):
        return _first_names(reader.deserialize(raw, conn.msgtype), where, conn.topic)
    return None          # no joint states at all: reported by _Streams.recording


class _Streams:
    """Collects one bag's messages per role as they stream past."""

    def __init__(self, bag: Path, config: DataConfig, workdir: Path, cam_types: list,
                 action_topic: str, action_type: str, joint_names, action_names):
        self.where, self.config = str(bag), config
        self.name = bag.name
        self.cam_types, self.action_topic, self.action_type = cam_types, action_topic, action_type
        self.cam_index = {t: i for i, t in enumerate(config.image_topics)}
        self.resize = Resizer(config.image_size)
        self.spools = [FrameSpool(Path(workdir) / f'{bag.name}.{c}.frames', config.image_size)
                       for c in config.camera_names]
        self.stamps: list = [[] for _ in config.image_topics]
        self.sizes: list = [None] * len(config.image_topics)
        self.joint_names = tuple(joint_names or ())
        self.action_names = tuple(action_names or ())
        self.pick_joints = _ByName(self.joint_names, config.joints_topic, self.where)
        self.pick_cmd = _ByName(self.action_names, action_topic, self.where)
        self.joint_t, self.joint_v, self.cmd_t, self.cmd_v, self.trajectories = [], [], [], [], []
        self.received: list = []       # receive times of the first camera's frames
        self.hints: list = []          # (own stamp or None, receive time) of matching hints
        self.hint_match = re.compile(config.hint_match) if config.hint_match else None

    def add(self, topic: str, msg, t: float, received: float) -> None:
        if topic == self.config.hint_topic:
            if self.hint_match is None or self.hint_match.search(_text(msg)):
                self.hints.append((_header_stamp(msg), received))
        elif topic in self.cam_index:
            if self.cam_index[topic] == 0:
                self.received.append(received)
            self.camera(self.cam_index[topic], topic, msg, t)
        elif topic == self.config.joints_topic:
            self.joint_v.append(self.pick_joints(msg.name, msg.position))
            self.joint_t.append(t)
        elif self.action_type == TRAJECTORY:
            self.trajectories.append(_trajectory(msg, t, self.pick_cmd))
        elif self.action_type == JOINT_STATE:
            self.cmd_v.append(self.pick_cmd(msg.name, msg.position))
            self.cmd_t.append(t)
        else:
            values = np.asarray(msg.data, np.float64)
            if len(values) != len(self.action_names):
                raise DataError(f'{self.where}: {topic} Float64MultiArray has {len(values)} '
                                f'values, action_names has {len(self.action_names)}')
            self.cmd_v.append(values)
            self.cmd_t.append(t)

    def camera(self, i: int, topic: str, msg, t: float) -> None:
        label = f'{self.where}: camera {topic}'
        if self.cam_types[i] == IMAGE:
            image, encoding = raw_image(msg, label)
        else:
            image, encoding = compressed_image(msg, label), 'rgb8'
        if self.sizes[i] is None:
            self.sizes[i] = image.shape[:2]
        elif self.sizes[i] != image.shape[:2]:
            (h0, w0), (h, w) = self.sizes[i], image.shape[:2]
            raise DataError(f'{label}: mixed image sizes: {w0}x{h0} then {w}x{h} (width x '
                            f'height) at t={t:.3f} s; record one resolution per camera')
        self.spools[i].append(self.resize(image, encoding))
        self.stamps[i].append(t)

    def hint_stamps(self) -> Optional[np.ndarray]:
        """Hint times on the first camera's clock: a hint's own stamp, else (no header, e.g.
        std_msgs/String) the stamp of the first frame the bag received at or after it."""
        if not self.config.hint_topic:
            return None
        stamps, received = np.array(self.stamps[0]), np.array(self.received)
        order = np.argsort(received, kind='stable')
        out = []
        for own, at in self.hints:
            if own is not None:
                out.append(own)
                continue
            i = int(np.searchsorted(received[order], at))
            if i < len(order):
                out.append(float(stamps[order[i]]))
        return np.array(sorted(out), np.float64)

    def close(self) -> None:
        for spool in self.spools:
            spool.close()

    def recording(self) -> RawRecording:
        for topic, stamps in zip(self.config.image_topics, self.stamps, strict=True):
            if not stamps:
                raise DataError(f'{self.where}: camera topic {topic} has no messages')
        if not self.joint_t:
            raise DataError(f'{self.where}: joints topic {self.config.joints_topic} has no '
                            'messages')
        trajectories = [p for p in self.trajectories if p is not None]
        if not self.cmd_t and not trajectories:
            what = 'has no messages' if not self.trajectories else \
                'has only JointTrajectory messages without points'
            raise DataError(f'{self.where}: command topic {self.action_topic} {what}')
        if self.action_type == TRAJECTORY:
            commands: Commands = TrajectoryCommands(
                starts=np.array([p[0] for p in trajectories]),
                times=[p[1] for p in trajectories], positions=[p[2] for p in trajectories])
        else:
            commands = SampledCommands(np.array(self.cmd_t), np.stack(self.cmd_v))
        return RawRecording(
            name=self.name, camera_stamps=[np.array(s) for s in self.stamps],
            camera_frames=[s.array() for s in self.spools], joint_stamps=np.array(self.joint_t),
            joint_values=np.stack(self.joint_v), commands=commands,
            joint_names=self.joint_names, action_names=self.action_names,
            commands_from=f'{self.action_topic} ({self.action_type})',
            hint_stamps=self.hint_stamps())


def _text(msg) -> str:
    """What `hint_match` searches: a string message's data, a header's frame_id, else repr."""
    data = getattr(msg, 'data', None)
    if isinstance(data, str):
        return data
    header = getattr(msg, 'header', msg)
    frame_id = getattr(header, 'frame_id', None)
    return frame_id if isinstance(frame_id, str) else repr(msg)


def _first_names(msg, where: str, topic: str) -> tuple:
    names = tuple(getattr(msg, 'name', None) or getattr(msg, 'joint_names', ()))
    if not names:
        raise DataError(f'{where}: the first message on {topic} names no joints; set joint_names')
    return names


def _trajectory(msg, start: float, pick: Callable) -> Optional[tuple]:
    """(start, absolute point times, positions [P, n]) of a JointTrajectory; None if empty."""
    points = [p for p in msg.points if len(p.positions)]
    if not points:
        return None
    offsets = np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in points])
    positions = np.stack([pick(msg.joint_names, p.positions) for p in points])
    order = np.argsort(offsets, kind='stable')
    return start, start + offsets[order], positions[order]
