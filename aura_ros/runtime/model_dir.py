"""The model directory: everything the runtime needs to run one policy, checked before it runs.

    <model_dir>/model.yaml          format: aura_ros.model/1, then the fields of ModelSpec
    <model_dir>/backbone.onnx       'image' float32 [batch,3,H,W] (normalised), 'joints' float32
                                    [batch,n_joints] -> 'features' float32 [batch,d_model]
    <model_dir>/memory.safetensors  the AuraMemLayer checkpoint; its config == spec.memory
    <model_dir>/MODEL_CARD.md       optional human text
    <model_dir>/memory_step.onnx    optional: the exported memory step (`aura_ros export`)

`load_model_dir` checks every file against the spec and raises `ModelDirError` naming the file
and the problem, so a wrong or stale model fails when the node starts, not mid-episode on a
robot. The checkpoint's `gate_threshold` is not compared: it is a run-time setting and the one in
model.yaml wins, as in `aura_ros.memory.load_checkpoint`.
"""

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from aura_ros.memory import (
    AuraMemLayer,
    CheckpointError,
    ConfigError,
    MemoryConfig,
    load_checkpoint,
    read_checkpoint,
)
from aura_ros.memory.checkpoint import config_differences

FORMAT = 'aura_ros.model/1'
SPEC_FILE = 'model.yaml'
BACKBONE_FILE = 'backbone.onnx'
MEMORY_FILE = 'memory.safetensors'
CARD_FILE = 'MODEL_CARD.md'
MEMORY_STEP_FILE = 'memory_step.onnx'
OPSET = 17
RUNTIME_FIELDS = ('gate_threshold',)   # may differ between checkpoint and spec


class ModelDirError(ValueError):
    """A model directory is incomplete or its files disagree with each other."""


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ModelDirError(f'{what} must be a list of names, got {value!r}')
    names = tuple(value)
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ModelDirError(f'{what} must be non-empty strings, got {bad!r}')
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelDirError(f'{what} must be unique; repeated: {", ".join(duplicates)}')
    if not names:
        raise ModelDirError(f'{what} must not be empty')
    return names


def _triple(value: Any, what: str, positive: bool) -> tuple[float, float, float]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ModelDirError(f'{what} must be 3 numbers (R, G, B), got {value!r}')
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or (positive and v <= 0):
            kind = 'positive finite' if positive else 'finite'
            raise ModelDirError(f'{what} must be 3 {kind} numbers, got {value!r}')
        out.append(float(v))
    return tuple(out)


@dataclass(frozen=True)
class ImageSpec:
    """Model input image: resize to height x width, then (pixel/255 - mean)/std per RGB channel."""

    width: int
    height: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def __post_init__(self) -> None:
        for name in ('width', 'height'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelDirError(f'ImageSpec.{name} must be a positive integer, got {value!r}')
        object.__setattr__(self, 'mean', _triple(self.mean, 'ImageSpec.mean', positive=False))
        object.__setattr__(self, 'std', _triple(self.std, 'ImageSpec.std', positive=True))

    def to_dict(self) -> dict:
        return {'width': self.width, 'height': self.height, 'mean': list(self.mean),
                'std': list(self.std)}


@dataclass(frozen=True)
class ModelSpec:
    """What a model directory promises: input image, joint order, action names, memory sizes."""

    name: str
    image: ImageSpec
    joint_names: tuple[str, ...]
    action_names: tuple[str, ...]
    action_period_s: float
    memory: MemoryConfig

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ModelDirError(f'ModelSpec.name must be a non-empty string, got {self.name!r}')
        if not isinstance(self.image, ImageSpec):
            raise ModelDirError(f'ModelSpec.image must be an ImageSpec, got {self.image!r}')
        if not isinstance(self.memory, MemoryConfig):
            raise ModelDirError(f'ModelSpec.memory must be a MemoryConfig, got {self.memory!r}')
        object.__setattr__(self, 'joint_names', _names(self.joint_names, 'ModelSpec.joint_names'))
        object.__setattr__(self, 'action_names',
                           _names(self.action_names, 'ModelSpec.action_names'))
        if len(self.action_names) != self.memory.d_action:
            raise ModelDirError(
                f'ModelSpec.action_names has {len(self.action_names)} names but memory.d_action '
                f'is {self.memory.d_action}')
        period = self.action_period_s
        if isinstance(period, bool) or not isinstance(period, (int, float)) \
                or not math.isfinite(period) or period <= 0:
            raise ModelDirError(
                f'ModelSpec.action_period_s must be a positive number of seconds, got {period!r}')
        object.__setattr__(self, 'action_period_s', float(period))

    @property
    def chunk(self) -> int:
        """Action chunk length (steps per predicted chunk)."""
        return self.memory.chunk

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    def to_dict(self) -> dict:
        return {'format': FORMAT, 'name': self.name, 'image': self.image.to_dict(),
                'joint_names': list(self.joint_names), 'action_names': list(self.action_names),
                'action_period_s': self.action_period_s, 'memory': self.memory.to_dict()}

    @classmethod
    def from_dict(cls, data: Any, where: str = SPEC_FILE) -> 'ModelSpec':
        """Parse model.yaml's mapping; errors name `where` and the field."""
        if not isinstance(data, dict):
            raise ModelDirError(f'{where}: expected a mapping, got {type(data).__name__}')
        if data.get('format') != FORMAT:
            raise ModelDirError(f'{where}: format is {data.get("format")!r}, expected {FORMAT!r}')
        fields = ('name', 'image', 'joint_names', 'action_names', 'action_period_s', 'memory')
        missing = [f for f in fields if f not in data]
        if missing:
            raise ModelDirError(f'{where}: missing field(s): {", ".join(missing)}')
        unknown = sorted(set(data) - set(fields) - {'format'})
        if unknown:
            raise ModelDirError(f'{where}: unknown field(s): {", ".join(unknown)}')
        try:
            image = data['image']
            if not isinstance(image, dict):
                raise ModelDirError(f'image must be a mapping, got {image!r}')
            extra = sorted(set(image) - {'width', 'height', 'mean', 'std'})
            if extra:
                raise ModelDirError(f'unknown image field(s): {", ".join(extra)}')
            return cls(name=data['name'], image=ImageSpec(**image),
                       joint_names=data['joint_names'], action_names=data['action_names'],
                       action_period_s=data['action_period_s'],
                       memory=MemoryConfig.from_dict(data['memory']))
        except ModelDirError as err:
            raise ModelDirError(f'{where}: {err}') from err
        except (ConfigError, TypeError) as err:
            raise ModelDirError(f'{where}: {err}') from err


def export_backbone(backbone, spec: ModelSpec, path: str | Path) -> None:
    """Export the backbone module to ONNX (opset 17, dynamic batch) with the agreed names.

    Uses the TorchScript exporter (dynamo=False): the torch.export-based one needs onnxscript,
    which is not a dependency, and this graph has no control flow that would need it.
    """
    import torch

    image = torch.zeros(1, 3, spec.image.height, spec.image.width)
    joints = torch.zeros(1, spec.n_joints)
    was_training = backbone.training
    backbone.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter('ignore', DeprecationWarning)
            torch.onnx.export(
                backbone, (image, joints), str(path), input_names=['image', 'joints'],
                output_names=['features'], opset_version=OPSET, dynamo=False,
                dynamic_axes={'image': {0: 'batch'}, 'joints': {0: 'batch'},
                              'features': {0: 'batch'}})
    finally:
        backbone.train(was_training)


def save_model_dir(out_dir: str | Path, spec: ModelSpec, backbone, memory: AuraMemLayer,
                   card: Optional[str] = None) -> Path:
    """Write a complete model directory (created if needed; its model files are replaced).

    The result is checked with `load_model_dir` before returning, so a directory this function
    wrote always loads.
    """
    from aura_ros.memory import save_checkpoint

    diffs = [d for d in config_differences(memory.config, spec.memory)
             if d.split(':')[0] not in RUNTIME_FIELDS]
    if diffs:
        raise ModelDirError('memory layer config differs from spec.memory: ' + '; '.join(diffs))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export_backbone(backbone, spec, out / BACKBONE_FILE)
    save_checkpoint(memory, out / MEMORY_FILE, metadata={'model': spec.name})
    (out / SPEC_FILE).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    if card is not None:
        (out / CARD_FILE).write_text(card if card.endswith('\n') else card + '\n')
    stale = out / MEMORY_STEP_FILE
    if stale.exists():          # exported from an older checkpoint: would no longer match
        stale.unlink()
    load_model_dir(out)
    return out


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
    expected_in = {'image': [3, spec.image.height, spec.image.width],
                   'joints': [spec.n_joints]}
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
                'image': np.zeros([1, *expected_in['image']], np.float32),
                'joints': np.zeros([1, spec.n_joints], np.float32)})
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
    if kind != AuraMemLayer.kind:
        raise ModelDirError(
            f'{path}: checkpoint is a {kind!r} model, expected {AuraMemLayer.kind!r}')
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
    for name in (SPEC_FILE, BACKBONE_FILE, MEMORY_FILE):
        if not (root / name).is_file():
            raise ModelDirError(f'{root / name}: missing ({name} is required in a model '
                                f'directory)')
    spec_path = root / SPEC_FILE
    try:
        data = yaml.safe_load(spec_path.read_text())
    except yaml.YAMLError as err:
        raise ModelDirError(f'{spec_path}: not valid YAML ({err})') from err
    spec = ModelSpec.from_dict(data, where=str(spec_path))
    _check_backbone(root / BACKBONE_FILE, spec)
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
