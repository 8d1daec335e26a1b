"""Small synthetic demonstration sets, written in the real formats (rosbag2, LeRobot v3.0).

Tests and quick end-to-end runs need data whose every number is known. Each episode is a
cue-then-reach task that needs memory: a coloured square (the cue, one of CUE_COLOURS) is shown
in the frames of CUE_WINDOW_S, then the arm holds still, then during MOVE_WINDOW_S the command
moves linearly from REST to TARGETS[cue]. When the move starts the cue is long gone from the
images, so a policy must remember it.

Known pattern (t = seconds since the episode's first frame):
    commanded(t, cue)          REST -> TARGETS[cue] linearly over MOVE_WINDOW_S, plus wrist_roll
                               drifting by DRIFT * t (so targets are never constant)
    joint state at t           == commanded(t) (perfect tracking), in JOINT_NAMES order, or with
                               shuffle_joints in the SHUFFLED order with an extra joint
                               'base_yaw' (0.25) that is not in JOINT_NAMES
    frame k at t = k / fps     uniform grey level frame_level(k) = (5 * k) % 256 everywhere,
                               except, in CUE_WINDOW_S, a centred square (half the height and
                               width) of CUE_COLOURS[cue]
All kinks of commanded(t) lie on the command sample grid, so linear interpolation between
commands reproduces commanded(t) exactly.
"""

import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from aura_ros.urdf import limits_urdf

JOINT_NAMES = ('shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll',
               'gripper')
SHUFFLED = ('gripper', 'base_yaw', 'elbow_flex', 'shoulder_pan', 'wrist_roll', 'wrist_flex',
            'shoulder_lift')
REST = np.array([0.0, -0.5, 0.5, 0.0, 0.0, 0.2])
TARGETS = np.array([[0.6, -0.2, 0.3, 0.1, 0.0, 0.8],
                    [-0.6, -0.2, 0.3, 0.1, 0.0, 0.8],
                    [0.0, 0.3, -0.2, 0.4, 0.0, 0.0]])
CUE_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
CUE_WINDOW_S = (0.2, 0.5)
MOVE_WINDOW_S = (1.0, 2.0)
DRIFT = 0.1              # rad/s on wrist_roll
WRIST_ROLL = JOINT_NAMES.index('wrist_roll')
START_S = 1_700_000_000  # wall-clock-like start of the first episode (integer seconds)
COMMAND_TOPICS = {'trajectory': '/arm_controller/joint_trajectory',
                  'joint_state': '/leader/joint_states',
                  'float64': '/arm_controller/commands'}


def commanded(t, cue: int) -> np.ndarray:
    """[len(t), 6] commanded positions at episode times t (seconds)."""
    t = np.atleast_1d(np.asarray(t, np.float64))
    a, b = MOVE_WINDOW_S
    s = np.clip((t - a) / (b - a), 0.0, 1.0)[:, None]
    out = REST[None, :] + s * (TARGETS[cue] - REST)[None, :]
    out[:, WRIST_ROLL] += DRIFT * t
    return out


def frame_level(k: int) -> int:
    return (5 * k) % 256


def frame_image(k: int, t: float, cue: int, size: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8 RGB frame k (pattern in the module docstring)."""
    h, w = size
    image = np.full((h, w, 3), frame_level(k), np.uint8)
    if CUE_WINDOW_S[0] <= t < CUE_WINDOW_S[1]:
        image[h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2] = CUE_COLOURS[cue]
    return image


# --------------------------------------------------------------------------------------- rosbag2


class BagBuilder:
    """Writes one rosbag2 bag with rosbags' Writer; each method takes the receive time in ns and
    an optional header stamp in ns (0 = a zero stamp). Use as a context manager."""

    def __init__(self, path, storage: str = 'mcap'):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        plugins = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise ValueError(f'storage must be mcap or sqlite3, got {storage!r}')
        self.ts = get_typestore(Stores.ROS2_HUMBLE)
        self.types = self.ts.types
        self.writer = Writer(Path(path), version=9, storage_plugin=plugins[storage])
        self._conns: dict = {}

    def __enter__(self) -> 'BagBuilder':
        self.writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self.writer.close()

    def _header(self, stamp_ns: int, frame_id: str = ''):
        t = self.types
        return t['std_msgs/msg/Header'](
            stamp=t['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9,
                                                  nanosec=stamp_ns % 10**9), frame_id=frame_id)

    def write(self, topic: str, msg, receive_ns: int) -> None:
        msgtype = msg.__msgtype__
        if topic not in self._conns:
            self._conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.ts)
        self.writer.write(self._conns[topic], receive_ns, self.ts.serialize_cdr(msg, msgtype))

    def image(self, topic, receive_ns, stamp_ns, rgb: np.ndarray, encoding='rgb8') -> None:
        """rgb [H, W, 3] uint8, stored in `encoding` (any other string: stored as 3 bytes)."""
        pixels = {'rgb8': rgb, 'bgr8': rgb[:, :, ::-1],
                  'rgba8': np.concatenate([rgb, np.full_like(rgb[:, :, :1], 255)], 2),
                  'bgra8': np.concatenate([rgb[:, :, ::-1], np.full_like(rgb[:, :, :1], 9)], 2),
                  'mono8': rgb[:, :, :1]}.get(encoding, rgb)
        h, w, c = pixels.shape
        msg = self.types['sensor_msgs/msg/Image'](
            header=self._header(stamp_ns), height=h, width=w, encoding=encoding, is_bigendian=0,
            step=w * c, data=np.ascontiguousarray(pixels).reshape(-1))
        self.write(topic, msg, receive_ns)

    def compressed(self, topic, receive_ns, stamp_ns, rgb: np.ndarray, fmt='jpeg') -> None:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format='PNG' if fmt == 'png' else 'JPEG', quality=95)
        msg = self.types['sensor_msgs/msg/CompressedImage'](
            header=self._header(stamp_ns), format=fmt,
            data=np.frombuffer(buffer.getvalue(), np.uint8))
        self.write(topic, msg, receive_ns)

    def joint_state(self, topic, receive_ns, stamp_ns, names, positions) -> None:
        msg = self.types['sensor_msgs/msg/JointState'](
            header=self._header(stamp_ns), name=list(names),
            position=np.asarray(positions, np.float64), velocity=np.empty(0),
            effort=np.empty(0))
        self.write(topic, msg, receive_ns)

    def trajectory(self, topic, receive_ns, stamp_ns, names, offsets_s, positions) -> None:
        t = self.types
        points = [t['trajectory_msgs/msg/JointTrajectoryPoint'](
            positions=np.ascontiguousarray(p, np.float64), velocities=np.empty(0),
            accelerations=np.empty(0), effort=np.empty(0),
            time_from_start=t['builtin_interfaces/msg/Duration'](
                sec=int(o // 1), nanosec=int(round((o % 1) * 1e9))))
            for o, p in zip(offsets_s, positions, strict=False)]
        msg = t['trajectory_msgs/msg/JointTrajectory'](
            header=self._header(stamp_ns), joint_names=list(names), points=points)
        self.write(topic, msg, receive_ns)

    def string(self, topic, receive_ns, text: str) -> None:
        self.write(topic, self.types['std_msgs/msg/String'](data=text), receive_ns)

    def header(self, topic, receive_ns, stamp_ns, frame_id: str) -> None:
        """A bare std_msgs/Header: a marker with a stamp of its own."""
        self.write(topic, self._header(stamp_ns, frame_id), receive_ns)

    def multiarray(self, topic, receive_ns, values) -> None:
        t = self.types
        msg = t['std_msgs/msg/Float64MultiArray'](
            layout=t['std_msgs/msg/MultiArrayLayout'](dim=[], data_offset=0),
            data=np.asarray(values, np.float64))
        self.write(topic, msg, receive_ns)


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def write_bag(path, storage: str = 'mcap', *, cue: int = 0, seconds: float = 3.0,
              fps: float = 30.0, joint_rate: float = 100.0, command: str = 'trajectory',
              command_rate: float = 50.0, image_size: tuple[int, int] = (48, 64),
              encoding: str = 'rgb8', compressed: Optional[str] = None,
              header_stamps: bool = True, start_s: float = START_S,
              image_topic: str = '/camera/image_raw', joints_topic: str = '/joint_states',
              command_topic: Optional[str] = None, wrist_topic: Optional[str] = None,
              pause_s: Optional[tuple[float, float]] = None,
              shuffle_joints: bool = False, hints: bool = False) -> Path:
    """Write one cue-then-reach episode as a rosbag2 bag; returns the bag's path.

    path: bag directory to create (must not exist). storage: 'mcap' or 'sqlite3'.
    cue: index into CUE_COLOURS / TARGETS. seconds: episode length; frames at k / fps.
    command: 'trajectory' (JointTrajectory at 10 Hz, 6 points 0.1 s apart, the first at the
    stamp), 'joint_state' (a leader arm's JointState at command_rate, shuffled names) or
    'float64' (Float64MultiArray at command_rate, JOINT_NAMES order, receive time only).
    image_size: (height, width). encoding: Image encoding (rgb8, bgr8, rgba8, bgra8, mono8;
    anything else is written as 3 bytes a pixel, for error tests). compressed: 'jpeg' or 'png'
    to write CompressedImage instead. header_stamps: True stamps headers with the true time and
    receives 5 ms (camera) / 2 ms (joints) later; False leaves stamps zero and receives at the
    true time, so either way the reader's clock is the true time. wrist_topic: a second camera
    4 ms after the first showing 255 - level. pause_s: (from, to) episode seconds in which no
    camera frame is written (to test episode_gap_s). mono8 frames show the red channel.
    shuffle_joints: joint states (and a leader's) in SHUFFLED order with the extra 'base_yaw'
    (then set joint_names=JOINT_NAMES when reading). Trajectories name joints in reverse order.
    hints: also write what could mark the cue as worth remembering: on /task_events a
    std_msgs/String '{"event": "cue", ...}' received just before the cue's first frame and
    '{"event": "go"}' at 2 s (both without a stamp), and on /marker a std_msgs/Header stamped
    with the cue's first frame time (frame_id 'cue').
    """
    if command not in COMMAND_TOPICS:
        raise ValueError(f'command must be one of {sorted(COMMAND_TOPICS)}, got {command!r}')
    topic = command_topic or COMMAND_TOPICS[command]
    t0 = _ns(start_s)
    path = Path(path)
    names = SHUFFLED if shuffle_joints else JOINT_NAMES
    with BagBuilder(path, storage) as bag:
        def stamp(t_ns):
            return t_ns if header_stamps else 0

        def late(t_ns, ms):
            return t_ns + (ms * 1_000_000 if header_stamps else 0)

        for k in range(int(math.floor(seconds * fps + 1e-9)) + 1):
            t = k / fps
            if pause_s and pause_s[0] <= t < pause_s[1]:
                continue
            rgb = frame_image(k, t, cue, image_size)
            tn = t0 + _ns(t)
            if compressed:
                bag.compressed(image_topic, late(tn, 5), stamp(tn), rgb, compressed)
            else:
                bag.image(image_topic, late(tn, 5), stamp(tn), rgb, encoding)
            if wrist_topic:
                tw = tn + 4_000_000
                bag.image(wrist_topic, late(tw, 5), stamp(tw), 255 - rgb)
        if hints:
            cue_ns = t0 + _ns(math.ceil(CUE_WINDOW_S[0] * fps - 1e-9) / fps)
            bag.string('/task_events', late(cue_ns, 1), f'{{"event": "cue", "goal": {cue}}}')
            bag.string('/task_events', late(t0 + _ns(2.0), 1), '{"event": "go"}')
            bag.header('/marker', late(cue_ns, 1), cue_ns, 'cue')
        for k in range(int(math.floor(seconds * joint_rate + 1e-9)) + 1):
            t = k / joint_rate
            q = dict(zip(JOINT_NAMES, commanded(t, cue)[0], strict=False))
            tn = t0 + _ns(t)
            bag.joint_state(joints_topic, late(tn, 2), stamp(tn), names,
                            [q.get(n, 0.25) for n in names])
        if command == 'trajectory':
            for k in range(int(math.floor(seconds * 10 + 1e-9)) + 1):
                t = k / 10
                offsets = np.arange(6) * 0.1
                tn = t0 + _ns(t)
                bag.trajectory(topic, tn, stamp(tn), JOINT_NAMES[::-1], offsets,
                               commanded(t + offsets, cue)[:, ::-1])
        else:
            for k in range(int(math.floor(seconds * command_rate + 1e-9)) + 1):
                t = k / command_rate
                q = commanded(t, cue)[0]
                tn = t0 + _ns(t)
                if command == 'joint_state':
                    named = dict(zip(JOINT_NAMES, q, strict=False))
                    bag.joint_state(topic, tn, stamp(tn), names,
                                    [named.get(n, -1.0) for n in names])
                else:
                    bag.multiarray(topic, tn, q)
    return path


# A ros2_control rig (not the SO-101): an arm controller and a gripper controller, joint states
# naming two joints nobody commands, a raw front camera and a JPEG wrist camera of other sizes,
# and the URDF on /robot_description.
RIG_GROUPS = {'arm_controller': JOINT_NAMES[:5], 'gripper_controller': JOINT_NAMES[5:]}
RIG_EXTRA_JOINTS = ('j_extra', 'base_yaw')
RIG_CAMERAS = {'/front/image_raw': ('raw', (96, 128)),
               '/wrist/image_raw/compressed': ('jpeg', (64, 64))}
RIG_LIMITS = {'shoulder_pan': (-0.5, 0.5), 'shoulder_lift': (-1.0, 1.0),
              'elbow_flex': (-1.0, 1.0), 'wrist_flex': (-1.0, 1.0), 'gripper': (0.0, 0.7)}
#                                          wrist_roll: continuous (no limit)


def rig_urdf() -> str:
    """The rig's URDF: RIG_LIMITS, wrist_roll continuous, the extra joints fixed."""
    return limits_urdf('rig', (*JOINT_NAMES, *RIG_EXTRA_JOINTS), RIG_LIMITS, RIG_EXTRA_JOINTS)


def write_rig_bag(path, *, cue: int = 0, seconds: float = 2.5, fps: float = 30.0,
                  start_s: float = START_S, gripper: str = 'trajectory') -> Path:
    """One cue-then-reach episode as such a rig records it (mcap): RIG_GROUPS commanded as
    JointTrajectory on /<controller>/joint_trajectory (10 Hz, 6 points 0.1 s apart), joint
    states of JOINT_NAMES + RIG_EXTRA_JOINTS at 100 Hz, RIG_CAMERAS (the wrist shows
    255 - the front's pattern), and rig_urdf() once on /robot_description. gripper: 'float64'
    commands the gripper as Float64MultiArray on /gripper_controller/commands, 'joint_state' as
    a leader's JointState on /gripper_leader/joint_states (both at 50 Hz) instead."""
    t0 = _ns(start_s)
    names = (*JOINT_NAMES, *RIG_EXTRA_JOINTS)
    with BagBuilder(Path(path), 'mcap') as bag:
        bag.string('/robot_description', t0, rig_urdf())
        for k in range(int(math.floor(seconds * fps + 1e-9)) + 1):
            tn = t0 + _ns(k / fps)
            for i, (topic, (kind, size)) in enumerate(RIG_CAMERAS.items()):
                rgb = frame_image(k, k / fps, cue, size)
                rgb = rgb if i == 0 else 255 - rgb
                if kind == 'raw':
                    bag.image(topic, tn + 5_000_000, tn, rgb)
                else:
                    bag.compressed(topic, tn + 5_000_000, tn, rgb, kind)
        for k in range(int(math.floor(seconds * 100 + 1e-9)) + 1):
            tn = t0 + _ns(k / 100)
            q = [*commanded(k / 100, cue)[0], 0.3, 0.25]
            bag.joint_state('/joint_states', tn + 2_000_000, tn, names, q)
        for k in range(int(math.floor(seconds * 10 + 1e-9)) + 1):
            t, tn = k / 10, t0 + _ns(k / 10)
            offsets = np.arange(6) * 0.1
            targets = dict(zip(JOINT_NAMES, commanded(t + offsets, cue).T, strict=True))
            for controller, joints in RIG_GROUPS.items():
                if controller == 'arm_controller' or gripper == 'trajectory':
                    bag.trajectory(f'/{controller}/joint_trajectory', tn, tn, joints, offsets,
                                   np.stack([targets[j] for j in joints], axis=1))
        for k in range(int(math.floor(seconds * 50 + 1e-9)) + 1 if gripper != 'trajectory'
                       else 0):
            tn = t0 + _ns(k / 50)
            value = commanded(k / 50, cue)[0, JOINT_NAMES.index('gripper')]
            if gripper == 'float64':
                bag.multiarray('/gripper_controller/commands', tn, [value])
            else:
                bag.joint_state('/gripper_leader/joint_states', tn, tn, ['gripper'], [value])
    return Path(path)


def write_bags(folder, cues: Sequence[int] = (0, 1, 2), storage: str = 'mcap', **kwargs) -> Path:
    """A folder of bags 'episode_000'..., one per cue, each starting 10 s after the previous;
    other keyword arguments go to write_bag. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    start = kwargs.pop('start_s', START_S)
    for i, cue in enumerate(cues):
        write_bag(folder / f'episode_{i:03d}', storage, cue=cue, start_s=start + 10 * i, **kwargs)
    return folder


# ------------------------------------------------------------------------------- LeRobot v3.0


def write_lerobot_dataset(path, *, cues: Sequence[int] = (0, 1, 2), fps: int = 30,
                          seconds: float = 3.0, image_size: tuple[int, int] = (64, 64),
                          codec: str = 'h264', cameras: Sequence[str] = ('front',),
                          video: bool = True, task: str = 'reach the cued target',
                          version: str = 'v3.0') -> Path:
    """Write a LeRobot v3.0 dataset (the layout lerobot's own writer produces) of one episode
    per cue; returns its root.

    Every episode is in data/chunk-000/file-000.parquet and every camera's frames of all episodes
    in one videos/observation.images.<camera>/chunk-000/file-000.mp4, episode e's from/to
    timestamps in meta/episodes/chunk-000/file-000.parquet. Rows: observation.state = commanded(t)
    (perfect tracking), action = commanded(t), t = frame_index / fps, frames as frame_image (the
    second camera shows 255 - level). codec: 'h264' (libx264) or 'av1' (libsvtav1, lerobot's
    default), pix_fmt yuv420p, so pixel values are near, not equal, to the pattern ('mpeg4' too,
    a codec lerobot does not write, for error tests). video=False
    stores PNG images in the parquet ('image' features) instead. version='v2.1' writes the older
    layout instead: one data/chunk-000/episode_XXXXXX.parquet and one
    videos/chunk-000/<key>/episode_XXXXXX.mp4 per episode, meta/episodes.jsonl, tasks.jsonl.
    """
    if version not in ('v3.0', 'v2.1'):
        raise ValueError(f'version must be v3.0 or v2.1, got {version!r}')
    import pyarrow as pa

    root = Path(path)
    (root / 'meta').mkdir(parents=True, exist_ok=False)
    h, w = image_size
    n = int(round(seconds * fps)) + 1
    keys = [f'observation.images.{c}' for c in cameras]
    names = list(JOINT_NAMES)
    rows: dict[str, list] = {k: [] for k in ('timestamp', 'frame_index', 'episode_index',
                                             'index', 'task_index')}
    rows.update({'observation.state': [], 'action': []})
    images = {k: [] for k in keys}
    episodes = []
    for e, cue in enumerate(cues):
        t = np.arange(n) / fps
        q = commanded(t, cue).astype(np.float32)
        rows['observation.state'] += list(q)
        rows['action'] += list(q)
        rows['timestamp'] += list(t.astype(np.float32))
        rows['frame_index'] += list(range(n))
        rows['episode_index'] += [e] * n
        rows['index'] += list(range(e * n, (e + 1) * n))
        rows['task_index'] += [0] * n
        for c, key in enumerate(keys):
            frames = [frame_image(k, k / fps, cue, image_size) for k in range(n)]
            images[key].append([255 - f if c else f for f in frames])
        episodes.append({'episode_index': e, 'tasks': [task], 'length': n,
                         'data/chunk_index': 0, 'data/file_index': 0,
                         'dataset_from_index': e * n, 'dataset_to_index': (e + 1) * n,
                         'meta/episodes/chunk_index': 0, 'meta/episodes/file_index': 0})
    features = {}
    for key in keys:
        features[key] = {'dtype': 'video' if video else 'image', 'shape': [h, w, 3],
                         'names': ['height', 'width', 'channels']}
    for key in ('observation.state', 'action'):
        features[key] = {'dtype': 'float32', 'shape': [len(names)], 'names': names}
    for key, dtype in (('timestamp', 'float32'), ('frame_index', 'int64'),
                       ('episode_index', 'int64'), ('index', 'int64'), ('task_index', 'int64')):
        features[key] = {'dtype': dtype, 'shape': [1], 'names': None}

    columns = {}
    for key in ('observation.state', 'action'):
        flat = pa.array(np.stack(rows[key]).reshape(-1), pa.float32())
        columns[key] = pa.FixedSizeListArray.from_arrays(flat, len(names))
    if not video:
        for key in keys:
            columns[key] = pa.array([{'bytes': _png(f), 'path': None}
                                     for ep in images[key] for f in ep],
                                    pa.struct([('bytes', pa.binary()), ('path', pa.string())]))
    columns['timestamp'] = pa.array(rows['timestamp'], pa.float32())
    for key in ('frame_index', 'episode_index', 'index', 'task_index'):
        columns[key] = pa.array(rows[key], pa.int64())
    table = pa.table(columns)
    if version == 'v2.1':
        return _write_v21(root, table, images, episodes, features, fps, codec, video, task, n)
    _write_parquet(table, root / 'data/chunk-000/file-000.parquet')

    if video:
        for key in keys:
            out = root / f'videos/{key}/chunk-000/file-000.mp4'
            bounds = _write_video(out, images[key], fps, codec)
            for ep, (start, end) in zip(episodes, bounds, strict=False):
                ep.update({f'videos/{key}/chunk_index': 0, f'videos/{key}/file_index': 0,
                           f'videos/{key}/from_timestamp': start,
                           f'videos/{key}/to_timestamp': end})
            features[key]['info'] = _video_info(out, fps)
    stats = _stats(rows, images, names)
    for ep in episodes:
        e = ep['episode_index']
        sl = slice(e * n, (e + 1) * n)
        ep_stats = _stats({k: v[sl] for k, v in rows.items()},
                          {k: [v[e]] for k, v in images.items()}, names)
        for key, values in ep_stats.items():
            for stat, value in values.items():
                ep[f'stats/{key}/{stat}'] = np.asarray(value, np.float64).reshape(-1).tolist()
    _write_parquet(pa.Table.from_pylist(episodes),
                   root / 'meta/episodes/chunk-000/file-000.parquet')
    _write_tasks(root / 'meta/tasks.parquet', [task])
    info = {
        'codebase_version': 'v3.0', 'robot_type': 'so101_follower', 'total_episodes': len(cues),
        'total_frames': n * len(cues), 'total_tasks': 1, 'chunks_size': 1000,
        'data_files_size_in_mb': 100, 'video_files_size_in_mb': 200, 'fps': fps,
        'splits': {'train': f'0:{len(cues)}'},
        'data_path': 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet',
        'video_path': 'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4'
        if video else None,
        'features': features,
    }
    (root / 'meta/info.json').write_text(json.dumps(info, indent=4))
    (root / 'meta/stats.json').write_text(json.dumps(stats, indent=4))
    return root


def _write_v21(root: Path, table, images: dict, episodes: list, features: dict, fps: int,
               codec: str, video: bool, task: str, n: int) -> Path:
    """The v2.1 layout: a parquet and an mp4 per episode, metadata as JSON lines."""
    for ep in episodes:
        e = ep['episode_index']
        _write_parquet(table.slice(e * n, n), root / f'data/chunk-000/episode_{e:06d}.parquet')
        for key in images if video else ():
            out = root / f'videos/chunk-000/{key}/episode_{e:06d}.mp4'
            _write_video(out, [images[key][e]], fps, codec)
            features[key]['info'] = _video_info(out, fps)
    lines = [json.dumps({'episode_index': ep['episode_index'], 'tasks': ep['tasks'],
                         'length': ep['length']}) for ep in episodes]
    (root / 'meta/episodes.jsonl').write_text('\n'.join(lines) + '\n')
    (root / 'meta/tasks.jsonl').write_text(json.dumps({'task_index': 0, 'task': task}) + '\n')
    info = {
        'codebase_version': 'v2.1', 'robot_type': 'so101_follower',
        'total_episodes': len(episodes), 'total_frames': n * len(episodes), 'total_tasks': 1,
        'total_videos': len(episodes) * len(images) if video else 0, 'total_chunks': 1,
        'chunks_size': 1000, 'fps': fps, 'splits': {'train': f'0:{len(episodes)}'},
        'data_path': 'data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet',
        'video_path': 'videos/chunk-{episode_chunk:03d}/{video_key}/'
                      'episode_{episode_index:06d}.mp4' if video else None,
        'features': features,
    }
    (root / 'meta/info.json').write_text(json.dumps(info, indent=4))
    return root


def _png(rgb: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format='PNG')
    return buffer.getvalue()


def _write_parquet(table, path: Path) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression='snappy')


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """tasks.parquet as pandas writes it (lerobot reads it with pandas): the task string is the
    index, recorded in the 'pandas' schema metadata, and task_index the one column."""
    import pyarrow as pa

    table = pa.table({'task_index': pa.array(range(len(tasks)), pa.int64()),
                      'task': pa.array(tasks, pa.string())})
    meta = {'index_columns': ['task'], 'column_indexes': [
        {'name': None, 'field_name': None, 'pandas_type': 'unicode', 'numpy_type': 'object',
         'metadata': {'encoding': 'UTF-8'}}],
        'columns': [{'name': 'task_index', 'field_name': 'task_index', 'pandas_type': 'int64',
                     'numpy_type': 'int64', 'metadata': None},
                    {'name': 'task', 'field_name': 'task', 'pandas_type': 'unicode',
                     'numpy_type': 'object', 'metadata': None}],
        'creator': {'library': 'pyarrow', 'version': pa.__version__},
        'pandas_version': '2.2.3'}
    table = table.replace_schema_metadata({b'pandas': json.dumps(meta).encode()})
    _write_parquet(table, path)


def _write_video(path: Path, episodes: list, fps: int, codec: str) -> list[tuple[float, float]]:
    """All episodes' frames in one mp4 (as lerobot concatenates them); per-episode from/to s."""
    import av

    encoders = {'h264': ('libx264', {'g': '2', 'crf': '18', 'preset': 'ultrafast'}),
                'av1': ('libsvtav1', {'g': '2', 'crf': '30', 'preset': '12'}),
                'mpeg4': ('mpeg4', {'g': '2'})}
    if codec not in encoders:
        raise ValueError(f'codec must be one of {sorted(encoders)}, got {codec!r}')
    name, options = encoders[codec]
    path.parent.mkdir(parents=True, exist_ok=True)
    bounds, frame_index = [], 0
    with av.open(str(path), 'w') as container:
        stream = container.add_stream(name, rate=fps, options=options)
        h, w = episodes[0][0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = w, h, 'yuv420p'
        stream.time_base = Fraction(1, fps)
        for frames in episodes:
            start = frame_index / fps
            for rgb in frames:
                frame = av.VideoFrame.from_ndarray(rgb, format='rgb24')
                frame.pts = frame_index
                frame.time_base = Fraction(1, fps)
                for packet in stream.encode(frame):
                    container.mux(packet)
                frame_index += 1
            bounds.append((start, frame_index / fps))
        for packet in stream.encode():
            container.mux(packet)
    return bounds


def _video_info(path: Path, fps: int) -> dict:
    import av

    with av.open(str(path)) as container:
        s = container.streams.video[0]
        return {'video.height': s.height, 'video.width': s.width,
                'video.codec': s.codec_context.codec.canonical_name if s.codec_context else '',
                'video.pix_fmt': s.pix_fmt, 'video.fps': fps, 'video.channels': 3,
                'has_audio': False, 'is_depth_map': False}


def _stats(rows: dict, images: dict, names: list) -> dict:
    """lerobot's stats.json shape: min/max/mean/std/count per feature; images per channel
    [3, 1, 1] in 0..1."""
    out = {}
    for key in ('observation.state', 'action', 'timestamp', 'frame_index', 'episode_index',
                'index', 'task_index'):
        values = np.asarray(rows[key], np.float64).reshape(len(rows[key]), -1)
        out[key] = {'min': values.min(0).tolist(), 'max': values.max(0).tolist(),
                    'mean': values.mean(0).tolist(), 'std': values.std(0).tolist(),
                    'count': [len(values)]}
    for key, episodes in images.items():
        pixels = np.concatenate([np.stack(ep) for ep in episodes]).reshape(-1, 3) / 255.0
        out[key] = {stat: getattr(np, stat)(pixels, 0).reshape(3, 1, 1).tolist()
                    for stat in ('min', 'max', 'mean', 'std')}
        out[key]['count'] = [sum(len(ep) for ep in episodes)]
    return out
