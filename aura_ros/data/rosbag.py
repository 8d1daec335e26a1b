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

from .align import (
    Commands,
    MergedCommands,
    RawRecording,
    SampledCommands,
    TrajectoryCommands,
)
from .config import DEFAULT_IMAGE_TOPICS, DataConfig
from .demonstrations import DataError
from .images import FrameSpool, Resizer, compressed_image, raw_image
from .urdf import urdf_joint_limits

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


def pick_action_topics(where: str, topics: dict, config: DataConfig) -> list[tuple[str, str]]:
    """The command topics and their types: the configured ones, else every JointTrajectory topic
    (one per controller), else the only JointState topic besides the joints topic."""
    if config.action_topics is not None:
        return [(t, _require(where, topics, t, COMMAND_TYPES, 'command'))
                for t in config.action_topics]
    found = sorted(t for t, info in topics.items()
                   if info.msgtype == TRAJECTORY and t != config.joints_topic)
    if found:
        return [(t, TRAJECTORY) for t in found]
    found = sorted(t for t, info in topics.items()
                   if info.msgtype == JOINT_STATE and t != config.joints_topic)
    if len(found) == 1:
        return [(found[0], JOINT_STATE)]
    if len(found) > 1:
        raise DataError(f'{where}: several {JOINT_STATE} topics could be the commands: '
                        f'{", ".join(found)}; set action_topic')
    raise DataError(f'{where}: no command topic: no JointTrajectory topic and no JointState topic '
                    f'other than {config.joints_topic}; set action_topic (std_msgs/'
                    f'Float64MultiArray needs it and action_names). Topics: {_topic_list(topics)}')


def with_bag_cameras(bag: Path, config: DataConfig) -> DataConfig:
    """`config`, with every camera topic of the bag (Image or CompressedImage, in name order)
    when image_topics is left at its default and the bag has no such topic: a rig's cameras
    are rarely on /camera/image_raw, and the user should not have to list what the bag says."""
    from dataclasses import replace

    if tuple(config.image_topics) != DEFAULT_IMAGE_TOPICS:
        return config
    from rosbags.highlevel import AnyReader

    try:
        with AnyReader([Path(bag)], default_typestore=_typestore()) as reader:
            topics = reader.topics
    except Exception:  # rosbags' own error classes: read_bag reports them with the bag's name
        return config
    found = sorted(t for t, info in topics.items() if info.msgtype in CAMERA_TYPES)
    if DEFAULT_IMAGE_TOPICS[0] in topics or not found:
        return config
    return replace(config, image_topics=tuple(found), camera_names=None)


def group_name(topic: str) -> str:
    """The output group of a command topic: its controller, e.g.
    '/arm_controller/joint_trajectory' -> 'arm_controller' (the last segment that is not a
    generic command word), as an identifier."""
    segments = [s for s in topic.split('/') if s]
    named = [s for s in segments if s.lower() not in _COMMAND_WORDS] or segments or ['commands']
    name = re.sub(r'[^a-z0-9_]+', '_', named[-1].lower()).strip('_') or 'commands'
    return name if name[0].isalpha() else f'group_{name}'


_COMMAND_WORDS = {'joint_trajectory', 'commands', 'command', 'joint_states', 'joint_command',
                  'joint_commands', 'trajectory', 'position_commands', 'cmd'}


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
             command_groups: Optional[tuple] = None, image_sizes: Optional[dict] = None,
             progress: bool = True) -> RawRecording:
    """One pass over a bag: camera frames decoded and resized into spools under `workdir`,
    joint states and commands as arrays. `joint_names`/`command_groups`/`image_sizes` (from an
    earlier bag of the same source) win over the first messages' names and sizes, so every
    episode has one column order and one input size per camera."""
    from rosbags.highlevel import AnyReader

    bag = Path(bag)
    try:
        reader = AnyReader([bag], default_typestore=_typestore())
        reader.open()
    except Exception as err:   # rosbags raises its own error classes per storage plugin
        raise DataError(f'{bag}: cannot open the bag: {err}') from err
    try:
        cam_types, commands = _check_topics(str(bag), reader.topics, config)
        if command_groups is None:
            joint_names, command_groups = _names_of(reader, config, commands, str(bag))
        streams = _Streams(bag, config, workdir, cam_types, dict(commands), joint_names,
                           command_groups, image_sizes)
        try:
            described = config.robot_description_topic in reader.topics
            wanted = {*config.image_topics, config.joints_topic, *streams.commands,
                      *([config.hint_topic] if config.hint_topic else []),
                      *([config.robot_description_topic] if described else [])}
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


def _check_topics(where: str, topics: dict, config: DataConfig) -> tuple[list, list]:
    """Camera types and (command topic, type) pairs, or DataError naming what is wrong."""
    cam_types = [_require(where, topics, t, CAMERA_TYPES, 'camera') for t in config.image_topics]
    _require(where, topics, config.joints_topic, (JOINT_STATE,), 'joints')
    commands = pick_action_topics(where, topics, config)
    if config.hint_topic:
        _require(where, topics, config.hint_topic, None, 'hint')
    arrays = [t for t, kind in commands if kind == MULTI_ARRAY]
    if arrays and config.action_names is None:
        raise DataError(f'{where}: commands on {arrays[0]} are std_msgs/'
                        'Float64MultiArray, which carries no joint names; set action_names')
    if len(arrays) > 1:
        raise DataError(f'{where}: several Float64MultiArray command topics ({", ".join(arrays)})'
                        ': they carry no joint names, so at most one can take the action_names '
                        'the other command topics do not name')
    return cam_types, commands


def _first_names_on(reader, topic: str, where: str) -> Optional[tuple]:
    """The joints the first message on `topic` names (None when it has no message)."""
    conns = [c for c in reader.connections if c.topic == topic]
    for conn, _, raw in reader.messages(connections=conns):
        return _first_names(reader.deserialize(raw, conn.msgtype), where, conn.topic)
    return None          # no messages at all: reported by _Streams.recording


def _names_of(reader, config: DataConfig, commands: list, where: str) -> tuple[tuple, tuple]:
    """(joint names, ((command topic, its action names), ...)) by the defaults of DataConfig:
    actions are what the command topics name (in joint order; of joint_names only, when set),
    joints the commanded joints that joints_topic names plus extra_joints."""
    state = _first_names_on(reader, config.joints_topic, where) or ()
    order = list(config.joint_names or state)
    named = {t: _first_names_on(reader, t, where) or () for t, kind in commands
             if kind != MULTI_ARRAY}
    groups = []
    for topic, kind in commands:
        if config.action_names is not None and len(commands) == 1:
            names = config.action_names
        elif config.action_names is not None and kind == MULTI_ARRAY:
            taken = {n for names in named.values() for n in names}
            names = tuple(n for n in config.action_names if n not in taken)
        elif config.action_names is not None:
            names = tuple(n for n in config.action_names if n in named[topic])
        else:       # what the topic names, in joint order (only joint_names, when set)
            names = tuple(sorted(named[topic], key=lambda n: (
                order.index(n) if n in order else len(order), named[topic].index(n))))
            if config.joint_names is not None:
                names = tuple(n for n in names if n in config.joint_names) or names
        if not names:
            what = 'has no messages' if kind != MULTI_ARRAY and not named[topic] else \
                'commands none of the action_names'
            raise DataError(f'{where}: command topic {topic} {what}')
        groups.append((topic, names))
    seen: dict = {}
    for topic, names in groups:
        for n in names:
            if n in seen:
                raise DataError(f'{where}: joint {n} is commanded on both {seen[n]} and {topic}; '
                                'each joint needs one command topic')
            seen[n] = topic
    actions = [n for _, names in groups for n in names]
    joints = config.joint_names
    if joints is None:
        joints = tuple(n for n in state if n in actions) or tuple(state)
        joints += tuple(n for n in config.extra_joints if n not in joints)
    return tuple(joints), tuple(groups)


class _CommandStream:
    """One command topic's messages: its action names' positions over time."""

    def __init__(self, topic: str, kind: str, names: tuple, where: str):
        self.topic, self.kind, self.names, self.where = topic, kind, names, where
        self.pick = _ByName(names, topic, where)
        self.t, self.v, self.trajectories = [], [], []

    def add(self, msg, t: float) -> None:
        if self.kind == TRAJECTORY:
            self.trajectories.append(_trajectory(msg, t, self.pick))
            return
        if self.kind == JOINT_STATE:
            values = self.pick(msg.name, msg.position)
        else:
            values = np.asarray(msg.data, np.float64)
            if len(values) != len(self.names):
                raise DataError(f'{self.where}: {self.topic} Float64MultiArray has '
                                f'{len(values)} values, action_names has {len(self.names)}')
        self.v.append(values)
        self.t.append(t)

    def commands(self) -> Commands:
        trajectories = [p for p in self.trajectories if p is not None]
        if not self.t and not trajectories:
            what = 'has no messages' if not self.trajectories else \
                'has only JointTrajectory messages without points'
            raise DataError(f'{self.where}: command topic {self.topic} {what}')
        if self.kind == TRAJECTORY:
            return TrajectoryCommands(starts=np.array([p[0] for p in trajectories]),
                                      times=[p[1] for p in trajectories],
                                      positions=[p[2] for p in trajectories])
        return SampledCommands(np.array(self.t), np.stack(self.v))


class _Streams:
    """Collects one bag's messages per role as they stream past."""

    def __init__(self, bag: Path, config: DataConfig, workdir: Path, cam_types: list,
                 command_types: dict, joint_names, command_groups, image_sizes=None):
        self.where, self.config = str(bag), config
        self.name = bag.name
        self.cam_types = cam_types
        self.cam_index = {t: i for i, t in enumerate(config.image_topics)}
        self.workdir = Path(workdir)
        # per camera: the model's input size (from an earlier bag, else from the first frame),
        # its resizer and spool (made at the first frame, when the recorded size is known)
        self.image_sizes = dict(image_sizes or {})
        self.resizers: list = [None] * len(config.image_topics)
        self.spools: list = [None] * len(config.image_topics)
        self.stamps: list = [[] for _ in config.image_topics]
        self.sizes: list = [None] * len(config.image_topics)
        self.joint_names = tuple(joint_names or ())
        self.pick_joints = _ByName(self.joint_names, config.joints_topic, self.where)
        self.commands = {topic: _CommandStream(topic, command_types[topic], tuple(names),
                                               self.where)
                         for topic, names in command_groups}
        self.command_groups = tuple((t, tuple(n)) for t, n in command_groups)
        self.joint_t, self.joint_v = [], []
        self.received: list = []       # receive times of the first camera's frames
        self.hints: list = []          # (own stamp or None, receive time) of matching hints
        self.hint_match = re.compile(config.hint_match) if config.hint_match else None
        self.joint_limits: dict = {}

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
        elif topic in self.commands:
            self.commands[topic].add(msg, t)
        elif topic == self.config.robot_description_topic and isinstance(
                getattr(msg, 'data', None), str):
            self.joint_limits = urdf_joint_limits(msg.data, f'{self.where}: {topic}')

    def camera(self, i: int, topic: str, msg, t: float) -> None:
        label = f'{self.where}: camera {topic}'
        if self.cam_types[i] == IMAGE:
            image, encoding = raw_image(msg, label)
        else:
            image, encoding = compressed_image(msg, label), 'rgb8'
        if self.sizes[i] is None:
            self.sizes[i] = image.shape[:2]
            camera = self.config.camera_names[i]
            size = self.image_sizes.setdefault(camera, self.config.size_for(camera,
                                                                            image.shape[:2]))
            self.resizers[i] = Resizer(size)
            self.spools[i] = FrameSpool(self.workdir / f'{self.name}.{camera}.frames', size)
        elif self.sizes[i] != image.shape[:2]:
            (h0, w0), (h, w) = self.sizes[i], image.shape[:2]
            raise DataError(f'{label}: mixed image sizes: {w0}x{h0} then {w}x{h} (width x '
                            f'height) at t={t:.3f} s; record one resolution per camera')
        self.spools[i].append(self.resizers[i](image, encoding))
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
            if spool is not None:
                spool.close()

    def recording(self) -> RawRecording:
        for topic, stamps in zip(self.config.image_topics, self.stamps, strict=True):
            if not stamps:
                raise DataError(f'{self.where}: camera topic {topic} has no messages')
        if not self.joint_t:
            raise DataError(f'{self.where}: joints topic {self.config.joints_topic} has no '
                            'messages')
        parts = [stream.commands() for stream in self.commands.values()]
        commands: Commands = parts[0] if len(parts) == 1 else MergedCommands(tuple(parts))
        return RawRecording(
            name=self.name, camera_stamps=[np.array(s) for s in self.stamps],
            camera_frames=[s.array() for s in self.spools], joint_stamps=np.array(self.joint_t),
            joint_values=np.stack(self.joint_v), commands=commands,
            joint_names=self.joint_names,
            action_names=tuple(n for _, names in self.command_groups for n in names),
            commands_from=', '.join(f'{s.topic} ({s.kind})' for s in self.commands.values()),
            hint_stamps=self.hint_stamps(), command_groups=self.command_groups,
            camera_transports=tuple('compressed' if k == COMPRESSED else 'raw'
                                    for k in self.cam_types),
            joint_limits=self.joint_limits,
            image_sizes={c: self.image_sizes[c] for c in self.config.camera_names})


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
