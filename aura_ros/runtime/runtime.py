"""AuraRuntime: one observation in, one action chunk out, with the AURA memory state on the device.

    image(s) + encoding --preprocess--> [1,3,H,W] per camera --backbone.onnx--> features
        [1,d_model] (device) --memory engine (state W, b on the device, updated in place)-->
        chunk --action contract--> absolute joint targets per output group

A features-in model (no cameras) takes the features from outside (`step_features`) instead of
running a backbone. Joints are normalised with the model's joint_stats before the backbone; the
chunk is de-normalised with action_stats and made absolute per group (aura_ros.runtime.actions).

Every check of the observation (encoding, shape, size, joints, finite features) happens before
the memory step, so a rejected observation never touches the state. The step itself is computed
without committing the new state: a step whose action, targets or gate probability are not finite
(finite but huge inputs overflow inside the model) is refused as 'nonfinite_step' with the state
untouched, so no NaN ever reaches a controller. A step whose new state alone would hold NaN or
Inf is discarded (the state stays the last good one, bit for bit); it is reported in
`GateRecord.discarded` and counted in `discarded`. All methods take
one lock: a reset or threshold change from another thread waits for at most the step in progress.
"""

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .actions import ActionContract
from .backbone import Backbone
from .engines import OnnxEngine, TorchEngine
from .errors import InputError
from .export import memory_step_path
from .model_dir import (
    BACKBONE_FILE,
    MEMORY_FILE,
    RUNTIME_FIELDS,
    ModelDirError,
    ModelSpec,
    load_memory,
    load_model_dir,
)
from .preprocess import Preprocessor

ENGINES = ('torch', 'onnx')


@dataclass(frozen=True)
class GateRecord:
    """The write decision of one step; `step` is 1-based within the episode.

    discarded: the gate opened but the new state was not finite, so the write was thrown away
    (wrote is False, the state is unchanged).
    """

    wrote: bool
    p: float
    surprise: float
    step: int
    writes: int
    discarded: bool = False


@dataclass(frozen=True)
class StepResult:
    action: np.ndarray           # [chunk, d_action] float32, de-normalised, as the model means it
    gate: GateRecord
    timings: dict                # seconds: 'preprocess', 'backbone', 'memory', 'total'
    targets: dict                # group name -> [chunk, n_group] float32 absolute, clipped targets
    clipped: int = 0             # target values clipped to joint_limits in this step


@dataclass(frozen=True)
class EpisodeSummary:
    steps: int
    writes: int


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when torch sees a GPU, else cpu; an unusable explicit choice is an error."""
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f'device must be auto, cpu or cuda[:N], got {device!r}') from err
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f'device {device!r} requested but torch sees no CUDA device')
        dev = torch.device('cuda', dev.index if dev.index is not None else 0)
    elif dev.type != 'cpu':
        raise ValueError(f'device must be auto, cpu or cuda[:N], got {device!r}')
    return dev


#: the surprise reported when ||e||^2 overflowed float32 (a discarded write): never inf
SURPRISE_OVERFLOW = float(np.finfo(np.float32).max)


def check_finite_outputs(action: np.ndarray, targets: dict, p: float, surprise: float) -> None:
    """InputError('nonfinite_step') unless the step's action, targets and gate probability are
    finite (surprise may be +inf: an overflow, reported as SURPRISE_OVERFLOW). Finite but huge
    inputs (features of 1e20, a joint of 1e25) overflow inside the model; such a step must
    never reach a controller nor the memory state."""
    bad = [name for name, values in (('action', action), ('gate probability', p),
                                     *((f'targets of {g}', t) for g, t in targets.items()))
           if not np.isfinite(values).all()]
    if math.isnan(surprise):
        bad.append('surprise')
    if bad:
        raise InputError('nonfinite_step', f'the step gave non-finite {", ".join(bad)} (inputs '
                                           'too large for the model?); refused, the memory '
                                           'state is untouched')


def check_threshold(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f'gate threshold must be a number in [0, 1], got {value!r}')
    return float(value)


#: Fixed-size memory baselines (aura_ros.memory.baselines) the torch engine runs as they are.
STEP_BASELINES = ('gru', 'no_memory')


def _load_memory_model(model_dir: Path, spec: ModelSpec, engine: str) -> torch.nn.Module:
    """The AuraMemLayer of the directory or, if memory.safetensors holds a GRU or no-memory
    baseline (its 'kind'), that model: so the baselines run through the same node."""
    from aura_ros.memory.checkpoint import CheckpointError, load_checkpoint, read_checkpoint

    path = model_dir / MEMORY_FILE
    try:
        kind = read_checkpoint(path)[1]
    except CheckpointError:
        kind = ''                                  # load_memory names the problem
    if kind not in STEP_BASELINES:
        return load_memory(model_dir, spec)
    if engine != 'torch':
        raise ModelDirError(f'{path}: a {kind!r} baseline runs on the torch engine only')
    try:
        return load_checkpoint(path, config=spec.memory, ignore=RUNTIME_FIELDS).eval()
    except CheckpointError as err:
        raise ModelDirError(str(err)) from err


class AuraRuntime:
    """Backbone + AURA memory for one robot, one episode at a time."""

    def __init__(self, model_dir: str | Path, spec: ModelSpec, device: torch.device,
                 engine: str = 'torch', gate_threshold: float | None = None,
                 cuda_graph: bool = False, threads: int | None = None, resize: str = 'area'):
        if engine not in ENGINES:
            raise ValueError(f'engine must be one of {ENGINES}, got {engine!r}')
        model_dir = Path(model_dir)
        self.model_dir = model_dir
        self.spec, self.engine = spec, engine
        self.device = str(device)
        self.gate_threshold = check_threshold(
            spec.memory.gate_threshold if gate_threshold is None else gate_threshold)
        self.cameras = tuple(c.name for c in spec.cameras)
        self.preprocess = {c.name: Preprocessor(c, mode=resize) for c in spec.cameras}
        self._images = [np.zeros((1, 3, c.height, c.width), np.float32) for c in spec.cameras]
        self._joints = np.zeros((1, spec.n_joints), np.float32)
        stats = spec.joint_stats
        self._joint_mean = np.asarray(stats.mean if stats else 0.0, np.float32)
        self._joint_std = np.asarray(stats.std if stats else 1.0, np.float32)
        self.contract = ActionContract(spec)
        if spec.features_in:
            self.backbone = None
            self.provider = 'none (features in)'
            with torch.inference_mode():
                features = torch.zeros(1, spec.memory.d_model, device=device)
        else:
            self.backbone = Backbone(model_dir / BACKBONE_FILE, spec.memory.d_model, device,
                                     threads, cameras=self.cameras)
            self.provider = self.backbone.provider
            features = self.backbone.features
        self.features = features                   # the memory engine reads this tensor
        layer = _load_memory_model(model_dir, spec, engine)
        if engine == 'torch':
            self.memory = TorchEngine(layer, features, self.gate_threshold,
                                      cuda_graph=cuda_graph)
        else:
            if cuda_graph:
                raise ValueError('cuda_graph applies to the torch engine only')
            self.memory = OnnxEngine(memory_step_path(model_dir, layer), spec.memory,
                                     features, self.gate_threshold, threads)
        self.steps = 0
        self.writes = 0
        self.discarded = 0                         # non-finite writes thrown away, this episode
        self._lock = threading.RLock()

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, device: str = 'auto', engine: str = 'torch',
                       gate_threshold: float | None = None, **options) -> 'AuraRuntime':
        """Load and check a model directory (ModelDirError names what is wrong) and start.

        options: cuda_graph (torch engine on CUDA), threads (ONNX Runtime intra-op threads),
        resize ('area' or 'nearest').
        """
        spec = load_model_dir(model_dir)
        return cls(model_dir, spec, resolve_device(device), engine, gate_threshold, **options)

    # -- inputs -----------------------------------------------------------------------------

    def _check_joints(self, joint_positions) -> np.ndarray:
        try:
            joints = np.asarray(joint_positions, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise InputError('joint_count', f'joint positions are not numbers ({err})') from err
        n = self.spec.n_joints
        if joints.ndim != 1 or joints.shape[0] != n:
            raise InputError('joint_count', f'expected {n} joint positions '
                                            f'({", ".join(self.spec.joint_names)}), '
                                            f'got shape {list(joints.shape)}')
        with np.errstate(over='ignore'):
            raw = joints.astype(np.float32)        # float32: a finite 1e300 becomes inf here
        if not np.isfinite(raw).all():
            bad = [self.spec.joint_names[i] for i in np.flatnonzero(~np.isfinite(raw))]
            raise InputError('nonfinite_joints', f'non-finite joint position(s): {", ".join(bad)}')
        with np.errstate(over='ignore', invalid='ignore'):
            self._joints[0] = (raw - self._joint_mean) / self._joint_std
        return raw

    # -- the step ---------------------------------------------------------------------------

    def step(self, image: np.ndarray, encoding: str, joint_positions) -> StepResult:
        """One observation of a single-camera model -> action chunk; InputError (state
        untouched) for a bad one."""
        if len(self.cameras) != 1:
            raise InputError('cameras', f'this model has {len(self.cameras)} cameras '
                                        f'({", ".join(self.cameras) or "features in"}); use '
                                        f'step_frames or step_features')
        return self.step_frames({self.cameras[0]: (image, encoding)}, joint_positions)

    def step_frames(self, frames: dict, joint_positions) -> StepResult:
        """{camera name: (image, encoding)} for every camera of the model -> action chunk."""
        with self._lock:
            t0 = time.perf_counter()
            if self.backbone is None or not isinstance(frames, dict) \
                    or set(frames) != set(self.cameras):
                got = sorted(frames) if isinstance(frames, dict) else type(frames).__name__
                raise InputError('cameras', f'expected one frame from each camera '
                                            f'{list(self.cameras)}, got {got}')
            for name, buffer in zip(self.cameras, self._images, strict=True):
                image, encoding = frames[name]
                self.preprocess[name](image, encoding, out=buffer)
            joints = self._check_joints(joint_positions)
            t1 = time.perf_counter()
            features = self.backbone.run(self._images, self._joints)
            if not bool(torch.isfinite(features).all()):
                raise InputError('nonfinite_features',
                                 'the backbone produced non-finite features for this observation')
            return self._memory_step(joints, t0, t1)

    def step_features(self, features, joint_positions=()) -> StepResult:
        """Features-in model: features [d_model] from an external backbone -> action chunk."""
        with self._lock:
            t0 = time.perf_counter()
            if self.backbone is not None:
                raise InputError('features', f'this model reads cameras {list(self.cameras)}, '
                                             f'not features')
            d = self.spec.memory.d_model
            try:
                values = np.asarray(features, dtype=np.float32)
            except (TypeError, ValueError) as err:
                raise InputError('features', f'features are not numbers ({err})') from err
            if values.shape != (d,):
                raise InputError('features', f'expected {d} features (memory.d_model), got '
                                             f'shape {list(values.shape)}')
            if not np.isfinite(values).all():
                raise InputError('nonfinite_features', 'features contain NaN or Inf')
            joints = self._check_joints(joint_positions)
            with torch.inference_mode():
                self.features.copy_(torch.from_numpy(values)[None])
            t1 = time.perf_counter()
            return self._memory_step(joints, t0, t1)

    def _memory_step(self, joints: np.ndarray, t0: float, t1: float) -> StepResult:
        """The memory step on the features in place, then the action contract; the new state
        is committed only when everything the step gives out is finite."""
        t2 = time.perf_counter()
        out, wrote, p, surprise, discarded = self.memory.compute(self.steps)
        with np.errstate(over='ignore', invalid='ignore'):
            action = self.contract.denormalise(out)
            targets, clipped = self.contract.targets(action, joints)
        check_finite_outputs(action, targets, p, surprise)
        if surprise == math.inf:
            surprise = SURPRISE_OVERFLOW
        if not discarded:
            self.memory.commit()
        t3 = time.perf_counter()
        self.steps += 1
        self.writes += int(wrote)
        self.discarded += int(discarded)
        gate = GateRecord(wrote=wrote, p=p, surprise=surprise, step=self.steps,
                          writes=self.writes, discarded=discarded)
        return StepResult(action=action, gate=gate, targets=targets, clipped=clipped, timings={
            'preprocess': t1 - t0, 'backbone': t2 - t1, 'memory': t3 - t2, 'total': t3 - t0})

    # -- episode and state ------------------------------------------------------------------

    def reset(self) -> EpisodeSummary:
        """Zero the memory and counters; the summary is of the episode that just ended."""
        with self._lock:
            summary = EpisodeSummary(steps=self.steps, writes=self.writes)
            self.memory.reset()
            self.steps = self.writes = self.discarded = 0
            return summary

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of the memory state: 'W' [1,d_val,d_key], 'b' [1,d_val] float32."""
        with self._lock:
            return self.memory.state_dict()

    def load_state(self, state: dict) -> None:
        """Replace the memory state (counters unchanged); all checked before anything is copied."""
        shapes = {k: tuple(v.shape) for k, v in self.memory.state.items()}
        if not isinstance(state, dict) or set(state) != set(shapes):
            raise InputError('state', f'state must have exactly the keys {sorted(shapes)}')
        for name, shape in shapes.items():
            value = state[name]
            if not isinstance(value, np.ndarray) or value.shape != shape \
                    or value.dtype != np.float32:
                raise InputError('state', f'state[{name!r}] must be a float32 array of shape '
                                          f'{list(shape)}')
            if not np.isfinite(value).all():
                raise InputError('state', f'state[{name!r}] has non-finite values')
        with self._lock:
            self.memory.load_state(state)

    def set_gate_threshold(self, value: float) -> None:
        """Write when p > value from the next step on; no re-export or re-capture needed."""
        value = check_threshold(value)
        with self._lock:
            self.memory.set_threshold(value)
            self.gate_threshold = value

    def memory_bytes(self) -> int:
        """Bytes of the live memory state (W and b): constant for the whole episode."""
        return self.memory.state_bytes()
