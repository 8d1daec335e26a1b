"""DataConfig: which topics hold what, and how to turn them into model-sized training rows.

One config serves every source kind. For rosbag2 sources the topic fields select the streams;
for a LeRobot dataset the cameras are its video/image features, the joints 'observation.state'
and the commands 'action', so only the name, size and timing fields apply (`image_topics` may
name the camera feature keys, e.g. 'observation.images.front', to pick and order them).

Everything is checked here, on creation, so a typo in a YAML file fails before hours of decoding.
"""

import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional, Union

from aura_ros.checks import is_int, is_num, need

from .demonstrations import DataError

CAMERA_NAME = re.compile(r'[a-z][a-z0-9_]*')
DEFAULT_IMAGE_TOPICS = ('/camera/image_raw',)
# Last topic segments that say "an image" rather than which camera it is.
_GENERIC_SEGMENTS = {'image_raw', 'image', 'compressed', 'image_rect', 'image_color',
                     'image_rect_color', 'color', 'rgb', 'raw', 'camera', 'observation', 'images'}


SIZE_MULTIPLE = 8     # the backbone's three stride-2 convolutions: sides divisible by 8


def aspect_size(recorded: tuple[int, int], short_side: int) -> tuple[int, int]:
    """(h, w) with the recorded aspect, `short_side` (at most the recorded one) on the short side,
    each side rounded to a multiple of SIZE_MULTIPLE: 96x128 at 96 -> 96x128, 480x640 -> 96x128,
    64x64 -> 64x64 (never enlarged)."""
    h, w = recorded
    scale = min(short_side, h, w) / min(h, w)

    def side(v):
        return max(SIZE_MULTIPLE, int(round(v * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE)
    return side(h), side(w)


def _size(value: Any, what: str) -> tuple[int, int]:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_int(v, 1) for v in value):
        return int(value[0]), int(value[1])
    raise DataConfigError(f'DataConfig.{what} must be (height, width) positive integers, got '
                          f'{value!r}')


class DataConfigError(DataError):
    """A DataConfig field has a bad value; the message names the field."""


def _names(value: Any, what: str) -> Optional[tuple[str, ...]]:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise DataConfigError(f'DataConfig.{what} must be a list of names, got {value!r}')
    names = tuple(value)
    if not names or any(not isinstance(n, str) or not n.strip() for n in names):
        raise DataConfigError(f'DataConfig.{what} must be non-empty strings, got {list(names)!r}')
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataConfigError(f'DataConfig.{what} must be unique; repeated: {", ".join(repeated)}')
    return names


def _seconds(value: Any, what: str, optional: bool, zero_ok: bool = False) -> Optional[float]:
    if value is None and optional:
        return None
    kind = 'a non-negative' if zero_ok else 'a positive'
    need(is_num(value, 0.0) and (zero_ok or value > 0), DataConfigError,
         f'DataConfig.{what} must be {kind} number of seconds, got {value!r}')
    return float(value)


def camera_names_from_topics(topics: tuple[str, ...]) -> tuple[str, ...]:
    """'image' for one camera; else the distinguishing topic segment, e.g. '/front/image_raw'
    -> 'front', 'observation.images.wrist' -> 'wrist' (more segments are joined when the last
    ones are not unique)."""
    if len(topics) == 1:
        return ('image',)
    split = []
    for topic in topics:
        segments = [s for s in re.split(r'[/.]', topic) if s]
        split.append([s for s in segments if s.lower() not in _GENERIC_SEGMENTS]
                     or segments[:1] or [''])
    for depth in range(1, max(len(s) for s in split) + 1):
        names = tuple(_identifier('_'.join(s[-depth:]), i) for i, s in enumerate(split))
        if len(set(names)) == len(names):
            return names
    return tuple(f'camera{i}' for i in range(len(topics)))


def _identifier(text: str, index: int) -> str:
    name = re.sub(r'[^a-z0-9_]+', '_', text.lower()).strip('_')
    if not name:
        return f'camera{index}'
    if not name[0].isalpha():
        name = 'cam_' + name
    return 'camera' if name == 'joints' else name


def fields_of(cls, data: Any, where: str, error: type) -> dict:
    """`data` (a YAML mapping; None is empty) as keyword arguments of the dataclass `cls`:
    anything else, or a key that is not a field, raises `error` naming `where`, the unknown keys
    and the known ones."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f'{where}: expected a mapping, got {type(data).__name__}')
    known = {f.name for f in fields(cls)}
    unknown = sorted(map(str, set(data) - known))
    if unknown:
        raise error(f'{where}: unknown key(s): {", ".join(unknown)}; known: '
                    f'{", ".join(sorted(known))}')
    return dict(data)


@dataclass(frozen=True)
class DataConfig:
    """How to read demonstrations. Every field has a default that suits a one-camera arm."""

    image_topics: tuple[str, ...] = DEFAULT_IMAGE_TOPICS
    camera_names: Optional[tuple[str, ...]] = None     # default: camera_names_from_topics
    joints_topic: str = '/joint_states'
    # one command topic, or several (one per controller: each becomes an output group of the
    # model, named after its controller); default: every JointTrajectory topic, else the only
    # JointState topic besides joints_topic
    action_topic: Optional[Union[str, tuple[str, ...]]] = None
    joint_names: Optional[tuple[str, ...]] = None      # default: the commanded joints that
    #                                                    joints_topic names, + extra_joints
    action_names: Optional[tuple[str, ...]] = None     # default: the joints the command topics
    #                                                    name (required for Float64MultiArray)
    extra_joints: tuple[str, ...] = ()        # joints the model reads besides the commanded ones
    robot_description_topic: str = '/robot_description'   # std_msgs/String URDF: joint limits
    # (height, width) of the model input: one pair for every camera, or {camera: [h, w]};
    # default (and cameras a mapping leaves out): the camera's aspect, image_short_side pixels on
    # its short side (never more than recorded), each side a multiple of SIZE_MULTIPLE
    image_size: Optional[Union[tuple[int, int], dict]] = None
    image_short_side: int = 96
    chunk: int = 8
    action_period_s: Optional[float] = None   # default: median camera frame period
    joint_tolerance_s: float = 0.1            # frames whose latest joint state is older: dropped
    camera_skew_s: float = 0.05               # several cameras: max |t_cam - t_first_cam|
    episode_gap_s: Optional[float] = None     # split an episode at camera gaps larger than this
    cache_dir: Optional[str] = None           # default: <source>/.aura_cache or ~/.cache/aura_ros
    # hints (rosbag2): frames worth remembering, marked by messages on this topic (any type)
    hint_topic: Optional[str] = None
    hint_match: Optional[str] = None          # only messages whose text matches this regex
    hint_frames: int = 1                      # frames marked from each hint on

    def __post_init__(self) -> None:
        topics = _names(self.image_topics, 'image_topics')
        if topics is None:
            raise DataConfigError('DataConfig.image_topics must name at least one camera topic')
        set_ = object.__setattr__
        set_(self, 'image_topics', topics)
        cameras = _names(self.camera_names, 'camera_names')
        if cameras is None:
            cameras = camera_names_from_topics(topics)
        if len(cameras) != len(topics):
            raise DataConfigError(f'DataConfig.camera_names has {len(cameras)} names for '
                                  f'{len(topics)} image_topics')
        bad = [c for c in cameras if not CAMERA_NAME.fullmatch(c) or c == 'joints']
        if bad:
            raise DataConfigError(f'DataConfig.camera_names must match [a-z][a-z0-9_]* and not '
                                  f'be "joints"; bad: {", ".join(bad)}')
        set_(self, 'camera_names', cameras)
        for what in ('joints_topic', 'robot_description_topic'):
            value = getattr(self, what)
            if not isinstance(value, str) or not value.strip():
                raise DataConfigError(f'DataConfig.{what} must be a topic name, got {value!r}')
        action = self.action_topic
        if isinstance(action, (list, tuple)):
            action = _names(action, 'action_topic')
            set_(self, 'action_topic', action[0] if len(action) == 1 else action)
        elif action is not None and (not isinstance(action, str) or not action.strip()):
            raise DataConfigError(f'DataConfig.action_topic must be a topic name or a list of '
                                  f'them, got {action!r}')
        if self.joints_topic in (self.action_topics or ()):
            raise DataConfigError('DataConfig.action_topic must differ from joints_topic '
                                  f'({self.joints_topic}): commands are what the robot was told, '
                                  'not where it was')
        set_(self, 'extra_joints', _names(self.extra_joints, 'extra_joints')
             if self.extra_joints else ())
        set_(self, 'joint_names', _names(self.joint_names, 'joint_names'))
        set_(self, 'action_names', _names(self.action_names, 'action_names'))
        size = self.image_size
        if isinstance(size, dict):
            unknown = sorted(set(map(str, size)) - set(cameras))
            if unknown:
                raise DataConfigError(f'DataConfig.image_size names camera(s) '
                                      f'{", ".join(unknown)}; the cameras are '
                                      f'{", ".join(cameras)}')
            set_(self, 'image_size', {c: _size(v, f'image_size.{c}') for c, v in size.items()})
        elif size is not None:
            set_(self, 'image_size', _size(size, 'image_size'))
        short = self.image_short_side
        need(is_int(short, SIZE_MULTIPLE), DataConfigError,
             f'DataConfig.image_short_side must be an integer >= {SIZE_MULTIPLE}, got {short!r}')
        need(is_int(self.chunk, 1), DataConfigError,
             f'DataConfig.chunk must be a positive integer, got {self.chunk!r}')
        set_(self, 'action_period_s', _seconds(self.action_period_s, 'action_period_s', True))
        set_(self, 'joint_tolerance_s',
             _seconds(self.joint_tolerance_s, 'joint_tolerance_s', False, zero_ok=True))
        set_(self, 'camera_skew_s',
             _seconds(self.camera_skew_s, 'camera_skew_s', False, zero_ok=True))
        set_(self, 'episode_gap_s', _seconds(self.episode_gap_s, 'episode_gap_s', True))
        if self.hint_topic is not None and (not isinstance(self.hint_topic, str)
                                            or not self.hint_topic.strip()):
            raise DataConfigError(f'DataConfig.hint_topic must be a topic name, got '
                                  f'{self.hint_topic!r}')
        if self.hint_match is not None:
            try:
                re.compile(self.hint_match)
            except (re.error, TypeError) as err:
                raise DataConfigError(f'DataConfig.hint_match must be a regular expression, got '
                                      f'{self.hint_match!r}: {err}') from err
        need(is_int(self.hint_frames, 1), DataConfigError,
             f'DataConfig.hint_frames must be a positive integer, got {self.hint_frames!r}')
        if self.cache_dir is not None and (not isinstance(self.cache_dir, str)
                                           or not self.cache_dir.strip()):
            raise DataConfigError(f'DataConfig.cache_dir must be a path, got {self.cache_dir!r}')

    def size_for(self, camera: str, recorded: tuple[int, int]) -> tuple[int, int]:
        """(height, width) the model sees of `camera`, recorded at `recorded` (h, w)."""
        if isinstance(self.image_size, tuple):
            return self.image_size
        if isinstance(self.image_size, dict) and camera in self.image_size:
            return self.image_size[camera]
        return aspect_size(recorded, self.image_short_side)

    @property
    def action_topics(self) -> Optional[tuple[str, ...]]:
        """The configured command topics (None: found in the bag)."""
        if self.action_topic is None:
            return None
        return (self.action_topic,) if isinstance(self.action_topic, str) else self.action_topic

    @classmethod
    def from_dict(cls, data: Any, where: str = 'data config') -> 'DataConfig':
        """From a YAML mapping; unknown keys are named, lists become tuples."""
        data = fields_of(cls, data, where, DataConfigError)
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**values)
        except DataConfigError as err:
            raise DataConfigError(f'{where}: {err}') from err

    def to_dict(self) -> dict:
        """Plain YAML/JSON-able mapping (tuples as lists)."""
        def plain(v):
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return list(v) if isinstance(v, tuple) else v
        return {k: plain(v) for k, v in asdict(self).items()}

    def cache_fields(self) -> dict:
        """The fields that change what the cache holds (where it lives does not)."""
        values = self.to_dict()
        values.pop('cache_dir')
        if self.hint_topic is None:     # caches made before hints existed stay valid
            for key in ('hint_topic', 'hint_match', 'hint_frames'):
                values.pop(key)
        return values
