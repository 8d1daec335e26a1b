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

Time: each message is stamped with its header.stamp when it has a header and the stamp is not
zero, else with the time the bag received it. Header stamps are what the driver measured, so
they are preferred; Float64MultiArray has no header and always uses the receive time. Cameras,
joints and commands must therefore share one clock (all wall time, or all sim time).
"""

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


def _require(where: str, topics: dict, topic: str, types: tuple, role: str) -> str:
    if topic not in topics:
        raise DataError(f'{where}: {role} topic {topic} is not in the bag; it has: '
                        f'{_topic_list(topics)}')
    msgtype = topics[topic].msgtype
    if msgtype not in types:
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


def _stamp(msg, receive_ns: int) -> float:
    header = getattr(msg, 'header', None)
    if header is not None:
        ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        if ns != 0:
            return ns / 1e9
    return receive_ns / 1e9


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
    where = str(bag)
    joint_names = config.joint_names or joint_names
    action_names = config.action_names or action_names
    resize = Resizer(config.image_size)
    try:
        reader = AnyReader([bag], default_typestore=_typestore())
        reader.open()
    except Exception as err:   # rosbags raises its own error classes per storage plugin
        raise DataError(f'{where}: cannot open the bag: {err}') from err
    try:
        topics = reader.topics
        cam_types = [_require(where, topics, t, CAMERA_TYPES, 'camera')
                     for t in config.image_topics]
        _require(where, topics, config.joints_topic, (JOINT_STATE,), 'joints')
        action_topic, action_type = pick_action_topic(where, topics, config)
        if action_type == MULTI_ARRAY and config.action_names is None:
            raise DataError(f'{where}: commands on {action_topic} are std_msgs/'
                            'Float64MultiArray, which carries no joint names; set action_names')
        cam_index = {t: i for i, t in enumerate(config.image_topics)}
        stamps = [[] for _ in config.image_topics]
        sizes: list = [None] * len(config.image_topics)
        spools = [FrameSpool(Path(workdir) / f'{bag.name}.{c}.frames', config.image_size)
                  for c in config.camera_names]
        joint_t, joint_v, cmd_t, cmd_v, traj_points = [], [], [], [], []
        joint_conns = [c for c in reader.connections if c.topic == config.joints_topic]
        if joint_names is None:   # the joints' order names the columns, whatever comes first
            for conn, _, raw in reader.messages(connections=joint_conns):
                joint_names = _first_names(reader.deserialize(raw, conn.msgtype), where,
                                           conn.topic)
                break
        pick_joints = _ByName(joint_names, config.joints_topic, where) if joint_names else None
        pick_cmd = None
        wanted = {*config.image_topics, config.joints_topic, action_topic}
        connections = [c for c in reader.connections if c.topic in wanted]
        total = sum(c.msgcount for c in connections)
        messages = tqdm(reader.messages(connections=connections), total=total, leave=False,
                        desc=f'read {bag.name}', unit='msg', disable=not progress)
        for conn, receive_ns, raw in messages:
            msg = reader.deserialize(raw, conn.msgtype)
            t = _stamp(msg, receive_ns)
            if conn.topic in cam_index:
                i = cam_index[conn.topic]
                label = f'{where}: camera {conn.topic}'
                if cam_types[i] == IMAGE:
                    image, encoding = raw_image(msg, label)
                else:
                    image, encoding = compressed_image(msg, label), 'rgb8'
                if sizes[i] is None:
                    sizes[i] = image.shape[:2]
                elif sizes[i] != image.shape[:2]:
                    raise DataError(f'{label}: mixed image sizes: {sizes[i][1]}x{sizes[i][0]} '
                                    f'then {image.shape[1]}x{image.shape[0]} (width x height) at '
                                    f't={t:.3f} s; record one resolution per camera')
                spools[i].append(resize(image, encoding))
                stamps[i].append(t)
            elif conn.topic == config.joints_topic:
                if pick_joints is None:
                    joint_names = joint_names or _first_names(msg, where, conn.topic)
                    pick_joints = _ByName(joint_names, conn.topic, where)
                joint_v.append(pick_joints(msg.name, msg.position))
                joint_t.append(t)
            else:
                if pick_cmd is None and action_type != MULTI_ARRAY:
                    action_names = action_names or joint_names or _first_names(msg, where,
                                                                               conn.topic)
                    pick_cmd = _ByName(action_names, conn.topic, where)
                if action_type == JOINT_STATE:
                    cmd_v.append(pick_cmd(msg.name, msg.position))
                    cmd_t.append(t)
                elif action_type == TRAJECTORY:
                    traj_points.append(_trajectory(msg, t, pick_cmd))
                else:
                    values = np.asarray(msg.data, np.float64)
                    if len(values) != len(action_names):
                        raise DataError(f'{where}: {conn.topic} Float64MultiArray has '
                                        f'{len(values)} values, action_names has '
                                        f'{len(action_names)}')
                    cmd_v.append(values)
                    cmd_t.append(t)
    finally:
        reader.close()
    for topic, s in zip(config.image_topics, stamps, strict=False):
        if not s:
            raise DataError(f'{where}: camera topic {topic} has no messages')
    if not joint_t:
        raise DataError(f'{where}: joints topic {config.joints_topic} has no messages')
    if not cmd_t and not traj_points:
        raise DataError(f'{where}: command topic {action_topic} has no messages')
    if action_type == TRAJECTORY:
        traj_points = [p for p in traj_points if p is not None]
        if not traj_points:
            raise DataError(f'{where}: every JointTrajectory on {action_topic} has no points')
        commands: Commands = TrajectoryCommands(
            starts=np.array([p[0] for p in traj_points]), times=[p[1] for p in traj_points],
            positions=[p[2] for p in traj_points])
    else:
        commands = SampledCommands(np.array(cmd_t), np.stack(cmd_v))
    return RawRecording(name=bag.name, camera_stamps=[np.array(s) for s in stamps],
                        camera_frames=[s.array() for s in spools],
                        joint_stamps=np.array(joint_t), joint_values=np.stack(joint_v),
                        commands=commands,
                        joint_names=tuple(joint_names), action_names=tuple(action_names),
                        commands_from=f'{action_topic} ({action_type})')


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
