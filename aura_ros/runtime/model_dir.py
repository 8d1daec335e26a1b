"""The model directory: everything the runtime needs to run one policy, checked before it runs.

    <model_dir>/model.yaml          format: aura_ros.model/2, then the fields of ModelSpec
    <model_dir>/backbone.onnx       one float32 [batch,3,H,W] input per camera, named after the
                                    camera (normalised pixels), 'joints' float32 [batch,n_joints]
                                    (normalised with joint_stats) -> 'features' [batch,d_model].
                                    Absent for a features-in model (no cameras).
    <model_dir>/memory.safetensors  the AuraMemLayer checkpoint; its config == spec.memory
    <model_dir>/MODEL_CARD.md       optional human text
    <model_dir>/memory_step.onnx    optional: the exported memory step (`aura_ros export`)

What the actions mean is part of the spec (docs/model_format.md): the head's outputs,
de-normalised with `action_stats`, are joint positions in `action_names` order; each output group
is `absolute` (point i is the target at observation time + (i+1) action periods) or `delta`
(point i is the increment over point i-1, point -1 being the joint state the step used). The
runtime turns every group into absolute targets, clipped to `joint_limits`.

Format 1 (`aura_ros.model/1`: one `image` mapping, no statistics, no groups) still loads: it
means one camera named 'image' and delta actions, which is what every format-1 model was.

`load_model_dir` checks every file against the spec and raises `ModelDirError` naming the file
and the field, so a wrong or stale model fails when the node starts, not mid-episode on a robot.
The checkpoint's `gate_threshold` is not compared: it is a run-time setting and the one in
model.yaml wins, as in `aura_ros.memory.load_checkpoint`.
"""

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from aura_ros.checks import is_int, is_num, need
from aura_ros.memory import (
    AuraMemLayer,
    CheckpointError,
    ConfigError,
    MemoryConfig,
    load_checkpoint,
    read_checkpoint,
)
from aura_ros.memory.checkpoint import config_differences

FORMAT = 'aura_ros.model/2'
FORMAT_V1 = 'aura_ros.model/1'
SPEC_FILE = 'model.yaml'
BACKBONE_FILE = 'backbone.onnx'
MEMORY_FILE = 'memory.safetensors'
CARD_FILE = 'MODEL_CARD.md'
MEMORY_STEP_FILE = 'memory_step.onnx'
OPSET = 17
RUNTIME_FIELDS = ('gate_threshold',)   # may differ between checkpoint and spec
#: Checkpoint kinds a model directory may hold: AURA, and the trained baselines the runtime's
#: torch engine runs (always-write is an AuraMemLayer; run it with gate threshold 0).
MEMORY_KINDS = ('aura', 'always_write', 'gru', 'no_memory')
ACTION_MODES = ('absolute', 'delta')
TRANSPORTS = ('raw', 'compressed')     # how a camera's frames arrive (image_transport names)
DEFAULT_GROUP = 'action_chunk'         # the one group of a model without output_groups
IDENTIFIER = re.compile(r'[a-z][a-z0-9_]*')
JOINTS_INPUT = 'joints'


class ModelDirError(ValueError):
    """A model directory is incomplete or its files disagree with each other."""


def _names(value: Any, what: str, may_be_empty: bool = False) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ModelDirError(f'{what} must be a list of names, got {value!r}')
    names = tuple(value)
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ModelDirError(f'{what} must be non-empty strings, got {bad!r}')
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelDirError(f'{what} must be unique; repeated: {", ".join(duplicates)}')
    if not names and not may_be_empty:
        raise ModelDirError(f'{what} must not be empty')
    return names


def _identifier(value: Any, what: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        raise ModelDirError(f'{what} must match [a-z][a-z0-9_]*, got {value!r}')
    return value


def _numbers(value: Any, what: str, count: int, positive: bool = False) -> tuple[float, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) != count:
        raise ModelDirError(f'{what} must be a list of {count} numbers, got {value!r}')
    kind = 'positive finite' if positive else 'finite'
    need(all(is_num(v) and (not positive or v > 0) for v in value), ModelDirError,
         f'{what} must be {count} {kind} numbers, got {value!r}')
    return tuple(float(v) for v in value)


def _triple(value: Any, what: str, positive: bool) -> tuple[float, float, float]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ModelDirError(f'{what} must be 3 numbers (R, G, B), got {value!r}')
    return _numbers(value, what, 3, positive)


def _mapping(value: Any, what: str, allowed: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise ModelDirError(f'{what} must be a mapping, got {value!r}')
    extra = sorted(set(value) - set(allowed))
    if extra:
        raise ModelDirError(f'unknown {what} field(s): {", ".join(map(str, extra))} '
                            f'(known: {", ".join(allowed)})')
    return value


# The normalisation a camera gets unless the model says otherwise (the trainer's own backbone).
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class ImageSpec:
    """One camera: resize to height x width, then (pixel/255 - mean)/std per RGB channel.

    `name` is the backbone's ONNX input for this camera (and, with several cameras, its topic).
    `transport` is how the camera was recorded for training, which the node subscribes to by
    default: raw sensor_msgs/Image, or compressed (sensor_msgs/CompressedImage on
    <topic>/compressed). Absent in model.yaml means raw.
    """

    width: int
    height: int
    mean: tuple[float, float, float] = IMAGE_MEAN
    std: tuple[float, float, float] = IMAGE_STD
    name: str = 'image'
    transport: str = 'raw'

    def __post_init__(self) -> None:
        for key in ('width', 'height'):
            value = getattr(self, key)
            need(is_int(value, 1), ModelDirError,
                 f'camera.{key} must be a positive integer, got {value!r}')
        object.__setattr__(self, 'mean', _triple(self.mean, 'camera.mean', positive=False))
        object.__setattr__(self, 'std', _triple(self.std, 'camera.std', positive=True))
        _identifier(self.name, 'camera.name')
        if self.name == JOINTS_INPUT:
            raise ModelDirError(f'camera.name must not be {JOINTS_INPUT!r} (the joints input)')
        if self.transport not in TRANSPORTS:
            raise ModelDirError(f'camera.transport must be one of {", ".join(TRANSPORTS)}, got '
                                f'{self.transport!r}')

    def to_dict(self) -> dict:
        out = {'name': self.name, 'width': self.width, 'height': self.height,
               'mean': list(self.mean), 'std': list(self.std)}
        if self.transport != 'raw':          # raw is the default: older files stay as they were
            out['transport'] = self.transport
        return out

    @classmethod
    def from_dict(cls, data: Any, what: str = 'camera') -> 'ImageSpec':
        data = _mapping(data, what, ('name', 'width', 'height', 'mean', 'std', 'transport'))
        return cls(**data)


CameraSpec = ImageSpec     # one camera of a model; the name says what it is in a list


@dataclass(frozen=True)
class Stats:
    """Normalisation of a vector: the network sees (x - mean) / std."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def check(self, what: str, count: int) -> 'Stats':
        return Stats(_numbers(self.mean, f'{what}.mean', count),
                     _numbers(self.std, f'{what}.std', count, positive=True))

    def to_dict(self) -> dict:
        return {'mean': list(self.mean), 'std': list(self.std)}

    @classmethod
    def from_dict(cls, data: Any, what: str) -> 'Stats':
        data = _mapping(data, what, ('mean', 'std'))
        missing = [k for k in ('mean', 'std') if k not in data]
        if missing:
            raise ModelDirError(f'{what} is missing {", ".join(missing)}')
        return cls(mean=data['mean'], std=data['std'])


@dataclass(frozen=True)
class OutputGroup:
    """Action names published together on one JointTrajectory topic (one controller's joints)."""

    name: str
    joints: tuple[str, ...]
    mode: Optional[str] = None        # None: the model's action_mode

    def to_dict(self) -> dict:
        out = {'name': self.name, 'joints': list(self.joints)}
        if self.mode is not None:
            out['mode'] = self.mode
        return out

    @classmethod
    def from_dict(cls, data: Any, what: str) -> 'OutputGroup':
        data = _mapping(data, what, ('name', 'joints', 'mode'))
        missing = [k for k in ('name', 'joints') if k not in data]
        if missing:
            raise ModelDirError(f'{what} is missing {", ".join(missing)}')
        return cls(name=data['name'], joints=data['joints'], mode=data.get('mode'))


def _limits(value: Any, action_names: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    if not isinstance(value, dict):
        raise ModelDirError(f'joint_limits must be a mapping name -> [lower, upper], got '
                            f'{value!r}')
    out = {}
    for name, bounds in value.items():
        if name not in action_names:
            raise ModelDirError(f'joint_limits names {name!r}, which is not one of '
                                f'action_names ({", ".join(action_names)})')
        lo, hi = _numbers(bounds, f'joint_limits.{name}', 2)
        if not lo < hi:
            raise ModelDirError(f'joint_limits.{name} must be [lower, upper] with lower < '
                                f'upper, got {list(bounds)}')
        out[name] = (lo, hi)
    return out


@dataclass(frozen=True)
class ModelSpec:
    """What a model directory promises: inputs, joint and action names and meaning, memory."""

    name: str
    cameras: tuple[ImageSpec, ...]     # a single ImageSpec is accepted; () = features in
    joint_names: tuple[str, ...]
    action_names: tuple[str, ...]
    action_period_s: float
    memory: MemoryConfig
    joint_stats: Optional[Stats] = None
    action_stats: Optional[Stats] = None
    action_mode: str = 'absolute'
    output_groups: tuple[OutputGroup, ...] = ()
    joint_limits: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ModelDirError(f'ModelSpec.name must be a non-empty string, got {self.name!r}')
        if not isinstance(self.memory, MemoryConfig):
            raise ModelDirError(f'ModelSpec.memory must be a MemoryConfig, got {self.memory!r}')
        cameras = (self.cameras,) if isinstance(self.cameras, ImageSpec) else self.cameras
        if not isinstance(cameras, (list, tuple)) \
                or not all(isinstance(c, ImageSpec) for c in cameras):
            raise ModelDirError(f'cameras must be a list of camera specs, got {cameras!r}')
        cameras = tuple(cameras)
        if cameras:
            _names([c.name for c in cameras], 'camera names')
        object.__setattr__(self, 'cameras', cameras)
        object.__setattr__(self, 'action_names', _names(self.action_names, 'action_names'))
        may_be_empty = not cameras          # a features-in model need not read joints
        object.__setattr__(self, 'joint_names',
                           _names(self.joint_names, 'joint_names', may_be_empty))
        if len(self.action_names) != self.memory.d_action:
            raise ModelDirError(
                f'action_names has {len(self.action_names)} names but memory.d_action '
                f'is {self.memory.d_action}')
        period = self.action_period_s
        need(is_num(period) and period > 0, ModelDirError,
             f'action_period_s must be a positive number of seconds, got {period!r}')
        object.__setattr__(self, 'action_period_s', float(period))
        for key, count in (('joint_stats', len(self.joint_names)),
                           ('action_stats', len(self.action_names))):
            stats = getattr(self, key)
            if stats is not None:
                if not isinstance(stats, Stats):
                    raise ModelDirError(f'{key} must be a Stats, got {stats!r}')
                object.__setattr__(self, key, stats.check(key, count))
        if self.action_mode not in ACTION_MODES:
            raise ModelDirError(f'action_mode must be one of {", ".join(ACTION_MODES)}, got '
                                f'{self.action_mode!r}')
        object.__setattr__(self, 'output_groups', self._check_groups())
        object.__setattr__(self, 'joint_limits', _limits(self.joint_limits, self.action_names))
        _ = self.groups                      # a delta group must name joints the node reads

    def _check_groups(self) -> tuple[OutputGroup, ...]:
        groups = tuple(self.output_groups)
        if not groups:
            return ()
        seen: dict[str, str] = {}
        for i, group in enumerate(groups):
            if not isinstance(group, OutputGroup):
                raise ModelDirError(f'output_groups[{i}] must be an OutputGroup, got {group!r}')
            _identifier(group.name, f'output_groups[{i}].name')
            joints = _names(group.joints, f'output_groups.{group.name}.joints')
            object.__setattr__(group, 'joints', joints)
            if group.mode is not None and group.mode not in ACTION_MODES:
                raise ModelDirError(f'output_groups.{group.name}.mode must be one of '
                                    f'{", ".join(ACTION_MODES)}, got {group.mode!r}')
            for joint in joints:
                if joint not in self.action_names:
                    raise ModelDirError(f'output_groups.{group.name} names {joint!r}, which is '
                                        f'not one of action_names')
                if joint in seen:
                    raise ModelDirError(f'{joint!r} is in output groups {seen[joint]!r} and '
                                        f'{group.name!r}: each action belongs to one group')
                seen[joint] = group.name
        _names([g.name for g in groups], 'output group names')
        missing = [a for a in self.action_names if a not in seen]
        if missing:
            raise ModelDirError(f'action(s) {", ".join(missing)} are in no output group: the '
                                f'groups must cover every action name')
        return groups

    @property
    def groups(self) -> tuple[OutputGroup, ...]:
        """The output groups with their modes resolved (one default group without groups)."""
        groups = self.output_groups or (OutputGroup(DEFAULT_GROUP, self.action_names),)
        resolved = tuple(OutputGroup(g.name, g.joints, g.mode or self.action_mode)
                         for g in groups)
        for group in resolved:
            unknown = [j for j in group.joints if j not in self.joint_names]
            if group.mode == 'delta' and unknown:
                raise ModelDirError(f'output group {group.name!r} is delta but '
                                    f'{", ".join(unknown)} not in joint_names: a delta is '
                                    f'integrated from the joint state')
        return resolved

    @property
    def image(self) -> ImageSpec:
        """The camera of a single-camera model."""
        if len(self.cameras) != 1:
            raise ModelDirError(f'model {self.name!r} has {len(self.cameras)} cameras, not one')
        return self.cameras[0]

    @property
    def features_in(self) -> bool:
        """True for a model without cameras: features come from outside, no backbone."""
        return not self.cameras

    @property
    def chunk(self) -> int:
        """Action chunk length (steps per predicted chunk)."""
        return self.memory.chunk

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    def to_dict(self) -> dict:
        out = {'format': FORMAT, 'name': self.name,
               'cameras': [c.to_dict() for c in self.cameras],
               'joint_names': list(self.joint_names)}
        if self.joint_stats is not None:
            out['joint_stats'] = self.joint_stats.to_dict()
        out['action_names'] = list(self.action_names)
        if self.action_stats is not None:
            out['action_stats'] = self.action_stats.to_dict()
        out['action_mode'] = self.action_mode
        if self.output_groups:
            out['output_groups'] = [g.to_dict() for g in self.output_groups]
        if self.joint_limits:
            out['joint_limits'] = {k: list(v) for k, v in self.joint_limits.items()}
        out['action_period_s'] = self.action_period_s
        out['memory'] = self.memory.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = SPEC_FILE) -> 'ModelSpec':
        """Parse model.yaml's mapping (format 2 or 1); errors name `where` and the field."""
        if not isinstance(data, dict):
            raise ModelDirError(f'{where}: expected a mapping, got {type(data).__name__}')
        if data.get('format') == FORMAT_V1:
            data = upgrade_v1(data, where)
        elif data.get('format') != FORMAT:
            raise ModelDirError(f'{where}: format is {data.get("format")!r}, expected {FORMAT!r} '
                                f'(or {FORMAT_V1!r})')
        required = ('name', 'cameras', 'joint_names', 'action_names', 'action_period_s',
                    'memory')
        optional = ('joint_stats', 'action_stats', 'action_mode', 'output_groups',
                    'joint_limits')
        missing = [f for f in required if f not in data]
        if missing:
            raise ModelDirError(f'{where}: missing field(s): {", ".join(missing)}')
        unknown = sorted(set(data) - set(required) - set(optional) - {'format'})
        if unknown:
            raise ModelDirError(f'{where}: unknown field(s): {", ".join(map(str, unknown))}')
        try:
            cameras = data['cameras']
            if not isinstance(cameras, list):
                raise ModelDirError(f'cameras must be a list, got {cameras!r}')
            groups = data.get('output_groups') or []
            if not isinstance(groups, list):
                raise ModelDirError(f'output_groups must be a list, got {groups!r}')
            stats = {key: Stats.from_dict(data[key], key)
                     for key in ('joint_stats', 'action_stats') if data.get(key) is not None}
            return cls(name=data['name'],
                       cameras=tuple(ImageSpec.from_dict(c, f'cameras[{i}]')
                                     for i, c in enumerate(cameras)),
                       joint_names=data['joint_names'], action_names=data['action_names'],
                       action_period_s=data['action_period_s'],
                       memory=MemoryConfig.from_dict(data['memory']),
                       action_mode=data.get('action_mode', 'absolute'),
                       output_groups=tuple(OutputGroup.from_dict(g, f'output_groups[{i}]')
                                           for i, g in enumerate(groups)),
                       joint_limits=data.get('joint_limits') or {}, **stats)
        except ModelDirError as err:
            raise ModelDirError(f'{where}: {err}') from err
        except (ConfigError, TypeError) as err:
            raise ModelDirError(f'{where}: {err}') from err


def upgrade_v1(data: dict, where: str = SPEC_FILE) -> dict:
    """A format-1 mapping as format 2: its `image` is the camera 'image'; actions are deltas."""
    data = dict(data)
    if 'image' not in data:
        raise ModelDirError(f'{where}: missing field(s): image')
    image = data.pop('image')
    if not isinstance(image, dict):
        raise ModelDirError(f'{where}: image must be a mapping, got {image!r}')
    extra = sorted(set(image) - {'width', 'height', 'mean', 'std'})
    if extra:
        raise ModelDirError(f'{where}: unknown image field(s): {", ".join(map(str, extra))}')
    data.update(format=FORMAT, cameras=[{**image, 'name': 'image'}], action_mode='delta')
    actions, joints = data.get('action_names'), data.get('joint_names')
    if isinstance(actions, list) and isinstance(joints, list):
        not_joints = [a for a in actions if a not in joints]
        if not_joints:
            raise ModelDirError(
                f'{where}: a format-1 model means delta actions, integrated from the joint '
                f'state, but action(s) {", ".join(map(str, not_joints))} are not joint names. '
                f'Migrate it to {FORMAT}: replace "format" by {FORMAT!r}, "image: {{...}}" by '
                f'"cameras: [{{name: image, ...}}]", and add "action_mode: absolute" (or '
                f'"delta" with actions named after joints)')
    return data


def export_backbone(backbone, spec: ModelSpec, path: str | Path) -> None:
    """Export the backbone module to ONNX (opset 17, dynamic batch) with the agreed names.

    The module is called as backbone(*images, joints), images in `spec.cameras` order. Uses the
    TorchScript exporter (dynamo=False): the torch.export-based one needs onnxscript, which is
    not a dependency, and this graph has no control flow that would need it.
    """
    import torch

    images = tuple(torch.zeros(1, 3, c.height, c.width) for c in spec.cameras)
    joints = torch.zeros(1, spec.n_joints)
    names = [c.name for c in spec.cameras] + [JOINTS_INPUT]
    was_training = backbone.training
    backbone.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter('ignore', DeprecationWarning)
            torch.onnx.export(
                backbone, (*images, joints), str(path), input_names=names,
                output_names=['features'], opset_version=OPSET, dynamo=False,
                dynamic_axes={**{n: {0: 'batch'} for n in names}, 'features': {0: 'batch'}})
    finally:
        backbone.train(was_training)


def save_model_dir(out_dir: str | Path, spec: ModelSpec, backbone, memory: AuraMemLayer,
                   card: Optional[str] = None) -> Path:
    """Write a complete model directory (created if needed; its model files are replaced).

    `backbone` is a torch module (exported here), the path of a ready backbone ONNX file (copied),
    or None for a features-in model. The result is checked with `load_model_dir` before
    returning, so a directory this function wrote always loads.
    """
    from aura_ros.memory import save_checkpoint

    diffs = [d for d in config_differences(memory.config, spec.memory)
             if d.split(':')[0] not in RUNTIME_FIELDS]
    if diffs:
        raise ModelDirError('memory layer config differs from spec.memory: ' + '; '.join(diffs))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / BACKBONE_FILE
    if spec.features_in:
        if backbone is not None:
            raise ModelDirError('a features-in model (no cameras) has no backbone; got one')
        target.unlink(missing_ok=True)
    elif backbone is None:
        raise ModelDirError(f'model {spec.name!r} has cameras, so it needs a backbone')
    elif isinstance(backbone, (str, Path)):
        if Path(backbone).resolve() != target.resolve():
            target.write_bytes(Path(backbone).read_bytes())
    else:
        export_backbone(backbone, spec, target)
    save_checkpoint(memory, out / MEMORY_FILE, metadata={'model': spec.name})
    (out / SPEC_FILE).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    match_sibling_mode(out / MEMORY_FILE, out / SPEC_FILE)
    if card is not None:
        (out / CARD_FILE).write_text(card if card.endswith('\n') else card + '\n')
    stale = out / MEMORY_STEP_FILE
    if stale.exists():          # exported from an older checkpoint: would no longer match
        stale.unlink()
    load_model_dir(out)
    return out


def match_sibling_mode(path: Path, sibling: Path) -> None:
    """Give `path` the permission bits of `sibling`.

    safetensors writes its files 0600 whatever the umask, so a model directory shared with the
    robot's user would be unreadable there in one file only; model.yaml has the umask's mode.
    """
    path.chmod(sibling.stat().st_mode & 0o777)


def _dims(value_info) -> list:
    """Shape of an ONNX graph input/output: ints, dim_param strings, or None if unknown."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField('shape'):
        return []
    return [d.dim_value if d.HasField('dim_value') else (d.dim_param or None)
            for d in tensor.shape.dim]


def _check_backbone(path: Path, spec: ModelSpec) -> None:
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as err:  # onnx raises DecodeError and friends for corrupt files
        raise ModelDirError(f'{path}: not a readable ONNX model ({err})') from err
    expected_in = {c.name: [3, c.height, c.width] for c in spec.cameras}
    expected_in[JOINTS_INPUT] = [spec.n_joints]
    expected_out = {'features': [spec.memory.d_model]}
    initializers = {i.name for i in model.graph.initializer}
    inputs = {v.name: v for v in model.graph.input if v.name not in initializers}
    outputs = {v.name: v for v in model.graph.output}
    for kind, have, want in (('input', inputs, expected_in), ('output', outputs, expected_out)):
        if set(have) != set(want):
            raise ModelDirError(f'{path}: {kind}s are {sorted(have)}, expected {sorted(want)}')
    unknown = []
    for name, want in {**expected_in, **expected_out}.items():
        info = inputs.get(name) or outputs[name]
        if info.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ModelDirError(f'{path}: {name!r} is not float32')
        dims = _dims(info)
        if len(dims) != len(want) + 1:
            raise ModelDirError(f'{path}: {name!r} has shape {dims}, expected '
                                f'[batch, {", ".join(map(str, want))}]')
        for got, exp in zip(dims[1:], want, strict=True):
            if isinstance(got, int) and got != exp:
                raise ModelDirError(f'{path}: {name!r} has shape {dims}, expected '
                                    f'[batch, {", ".join(map(str, want))}]'
                                    + (' (memory.d_model)' if name == 'features' else ''))
            if not isinstance(got, int):
                unknown.append(name)
    if unknown:   # symbolic sizes in the graph: run it once to see the real output shape
        import numpy as np
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        try:
            (features,) = session.run(['features'], {
                name: np.zeros([1, *shape], np.float32) for name, shape in expected_in.items()})
        except Exception as err:  # onnxruntime's errors carry the node that failed
            raise ModelDirError(f"{path}: fails on an input of the spec's shape ({err})") from err
        if features.shape != (1, spec.memory.d_model):
            raise ModelDirError(f"{path}: 'features' has shape {list(features.shape)}, "
                                f'expected [batch, {spec.memory.d_model}] (memory.d_model)')


def _check_memory(path: Path, spec: ModelSpec) -> None:
    try:
        config, kind, _, _ = read_checkpoint(path)
    except CheckpointError as err:
        raise ModelDirError(str(err)) from err
    if kind not in MEMORY_KINDS:
        raise ModelDirError(f'{path}: checkpoint is a {kind!r} model, expected one of '
                            f'{", ".join(MEMORY_KINDS)}')
    diffs = [d for d in config_differences(config, spec.memory)
             if d.split(':')[0] not in RUNTIME_FIELDS]
    if diffs:
        raise ModelDirError(f'{path}: config differs from {SPEC_FILE} memory: ' + '; '.join(
            d.replace('expected', SPEC_FILE) for d in diffs))


def load_model_dir(model_dir: str | Path) -> ModelSpec:
    """Read and check a model directory; `ModelDirError` names the file and the problem."""
    root = Path(model_dir)
    if not root.is_dir():
        raise ModelDirError(f'{root}: no such model directory')
    for name in (SPEC_FILE, MEMORY_FILE):
        if not (root / name).is_file():
            raise ModelDirError(f'{root / name}: missing ({name} is required in a model '
                                f'directory)')
    spec_path = root / SPEC_FILE
    try:
        data = yaml.safe_load(spec_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ModelDirError(f'{spec_path}: not valid YAML ({err})') from err
    spec = ModelSpec.from_dict(data, where=str(spec_path))
    backbone = root / BACKBONE_FILE
    if spec.features_in:
        if backbone.exists():
            raise ModelDirError(f'{backbone}: present, but {SPEC_FILE} declares no cameras (a '
                                f'features-in model); add the cameras or remove the file')
    elif not backbone.is_file():
        raise ModelDirError(f'{backbone}: missing ({BACKBONE_FILE} is required for a model '
                            f'with cameras)')
    else:
        _check_backbone(backbone, spec)
    _check_memory(root / MEMORY_FILE, spec)
    return spec


def load_memory(model_dir: str | Path, spec: ModelSpec) -> AuraMemLayer:
    """The directory's AuraMemLayer with its weights and the spec's gate threshold, eval mode."""
    path = Path(model_dir) / MEMORY_FILE
    layer = AuraMemLayer(spec.memory)
    try:
        load_checkpoint(path, layer, config=spec.memory, ignore=RUNTIME_FIELDS)
    except CheckpointError as err:
        raise ModelDirError(str(err)) from err
    return layer.eval()
