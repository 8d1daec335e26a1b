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

import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aura_ros.checks import is_num, need

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
    need(is_num(value, 0.0, 1.0), ValueError,
         f'gate threshold must be a number in [0, 1], got {value!r}')
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


@dataclass
class RowCounters:
    """One robot's episode: steps taken, writes made, non-finite writes thrown away."""

    steps: int = 0
    writes: int = 0
    discarded: int = 0


class AuraRuntime:
    """Backbone + AURA memory for `robots` robots (one row each), one episode per row.

    With one robot (the default) `step`, `step_frames` and `step_features` take the
    observation and raise InputError for a bad one. With several, `step_rows` takes the new
    observations of any subset of robots and steps them in one batched backbone call and one
    batched memory step; the single-robot methods are that call with row 0 alone.
    """

    def __init__(self, model_dir: str | Path, spec: ModelSpec, device: torch.device,
                 engine: str = 'torch', gate_threshold: float | None = None,
                 cuda_graph: bool = False, threads: int | None = None, resize: str = 'area',
                 robots: int = 1):
        if engine not in ENGINES:
            raise ValueError(f'engine must be one of {ENGINES}, got {engine!r}')
        if isinstance(robots, bool) or not isinstance(robots, int) or robots < 1:
            raise ValueError(f'robots must be a whole number >= 1, got {robots!r}')
        model_dir = Path(model_dir)
        self.model_dir = model_dir
        self.spec, self.engine = spec, engine
        self.robots = robots
        self.device = str(device)
        self.gate_threshold = check_threshold(
            spec.memory.gate_threshold if gate_threshold is None else gate_threshold)
        self.cameras = tuple(c.name for c in spec.cameras)
        self.preprocess = {c.name: Preprocessor(c, mode=resize) for c in spec.cameras}
        self._images = [np.zeros((robots, 3, c.height, c.width), np.float32)
                        for c in spec.cameras]
        self._joints = np.zeros((robots, spec.n_joints), np.float32)
        stats = spec.joint_stats
        self._joint_mean = np.asarray(stats.mean if stats else 0.0, np.float32)
        self._joint_std = np.asarray(stats.std if stats else 1.0, np.float32)
        self.contract = ActionContract(spec)
        if spec.features_in:
            self.backbone = None
            self.provider = 'none (features in)'
            with torch.inference_mode():
                features = torch.zeros(robots, spec.memory.d_model, device=device)
        else:
            self.backbone = Backbone(model_dir / BACKBONE_FILE, spec.memory.d_model, device,
                                     threads, cameras=self.cameras, rows=robots)
            self.provider = self.backbone.provider
            features = self.backbone.features
        self.features = features                   # [robots, d_model]: the engine reads it
        layer = _load_memory_model(model_dir, spec, engine)
        if engine == 'torch':
            self.memory = TorchEngine(layer, features, self.gate_threshold,
                                      cuda_graph=cuda_graph)
        else:
            if cuda_graph:
                raise ValueError('cuda_graph applies to the torch engine only')
            self.memory = OnnxEngine(memory_step_path(model_dir, layer), spec.memory,
                                     features, self.gate_threshold, threads)
        self.counters = [RowCounters() for _ in range(robots)]
        self._lock = threading.RLock()

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, device: str = 'auto', engine: str = 'torch',
                       gate_threshold: float | None = None, **options) -> 'AuraRuntime':
        """Load and check a model directory (ModelDirError names what is wrong) and start.

        options: cuda_graph (torch engine on CUDA), threads (ONNX Runtime intra-op threads),
        resize ('area' or 'nearest'), robots (rows of the batched memory state, default 1).
        """
        spec = load_model_dir(model_dir)
        return cls(model_dir, spec, resolve_device(device), engine, gate_threshold, **options)

    # -- the one robot's counters (row 0) ---------------------------------------------------

    @property
    def steps(self) -> int:
        return self._single().steps

    @property
    def writes(self) -> int:
        return self._single().writes

    @property
    def discarded(self) -> int:
        """Non-finite writes thrown away, this episode."""
        return self._single().discarded

    def _single(self) -> RowCounters:
        if self.robots != 1:
            raise ValueError(f'this runtime serves {self.robots} robots: read counters[row]')
        return self.counters[0]

    # -- inputs -----------------------------------------------------------------------------

    def _check_joints(self, joint_positions, row: int) -> np.ndarray:
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
            self._joints[row] = (raw - self._joint_mean) / self._joint_std
        return raw

    def _take_frames(self, row: int, frames) -> None:
        if self.backbone is None or not isinstance(frames, dict) \
                or set(frames) != set(self.cameras):
            got = sorted(frames) if isinstance(frames, dict) else type(frames).__name__
            raise InputError('cameras', f'expected one frame from each camera '
                                        f'{list(self.cameras)}, got {got}')
        for name, buffer in zip(self.cameras, self._images, strict=True):
            image, encoding = frames[name]
            self.preprocess[name](image, encoding, out=buffer[row:row + 1])

    def _take_features(self, row: int, features) -> None:
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
        with torch.inference_mode():
            self.features[row].copy_(torch.from_numpy(values))

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
        if self.backbone is None:
            self._take_frames(0, frames)           # says what this model reads instead
        return self._one(frames, joint_positions)

    def step_features(self, features, joint_positions=()) -> StepResult:
        """Features-in model: features [d_model] from an external backbone -> action chunk."""
        if self.backbone is not None:
            self._take_features(0, features)       # says what this model reads instead
        return self._one(features, joint_positions)

    def _one(self, inputs, joint_positions) -> StepResult:
        self._single()
        result = self.step_rows({0: (inputs, joint_positions)})[0]
        if isinstance(result, InputError):
            raise result
        return result

    def step_rows(self, observations: dict) -> dict:
        """{row: (inputs, joint positions)} -> {row: StepResult, or the InputError that refused
        that row}; inputs are {camera: (image, encoding)} (a camera model) or the features
        [d_model] (a features-in model). One batched backbone call and one batched memory step
        for the rows whose observation passed every check; a row refused, or not in
        `observations`, keeps its state bit for bit."""
        for row in observations:
            if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < self.robots:
                raise ValueError(f'row must be an index in [0, {self.robots}), got {row!r}')
        with self._lock:
            t0 = time.perf_counter()
            results: dict = {}
            raw: dict[int, np.ndarray] = {}
            for row, (inputs, joint_positions) in observations.items():
                try:
                    if self.spec.features_in:
                        self._take_features(row, inputs)
                    else:
                        self._take_frames(row, inputs)
                    raw[row] = self._check_joints(joint_positions, row)
                except InputError as err:
                    results[row] = err
            rows = list(raw)
            t1 = time.perf_counter()
            if self.backbone is not None and rows:
                self.backbone.run(*self._gather(rows), rows)
                with torch.inference_mode():
                    finite = torch.isfinite(self.features[self._index(rows)]).all(1).tolist()
                for row, ok in zip(list(rows), finite, strict=True):
                    if not ok:
                        rows.remove(row)
                        results[row] = InputError(
                            'nonfinite_features',
                            'the backbone produced non-finite features for this observation')
            t2 = time.perf_counter()
            if rows:
                results.update(self._memory_step(rows, raw))
            t3 = time.perf_counter()
            timings = {'preprocess': t1 - t0, 'backbone': t2 - t1, 'memory': t3 - t2,
                       'total': t3 - t0}
            for row in rows:
                if isinstance(results[row], StepResult):
                    results[row] = dataclasses.replace(results[row], timings=timings)
            return results

    def _index(self, rows: list[int]) -> torch.Tensor:
        return torch.tensor(rows, dtype=torch.long, device=self.features.device)

    def _gather(self, rows: list[int]) -> tuple[list[np.ndarray], np.ndarray]:
        """The backbone inputs of `rows`: views when they are consecutive (one robot: row 0)."""
        start = rows[0]
        if rows == list(range(start, start + len(rows))):
            span = slice(start, start + len(rows))
            return [images[span] for images in self._images], self._joints[span]
        return [images[rows] for images in self._images], self._joints[rows]

    def _memory_step(self, rows: list[int], joints: dict) -> dict:
        """The memory step of `rows` on their features, then the action contract per row; a
        row's new state is committed only when everything its step gives out is finite."""
        steps = self.memory.compute_rows(rows, [self.counters[row].steps for row in rows])
        results, commit = {}, []
        for row, out in zip(rows, steps, strict=True):
            with np.errstate(over='ignore', invalid='ignore'):
                action = self.contract.denormalise(out.action)
                targets, clipped = self.contract.targets(action, joints[row])
            try:
                check_finite_outputs(action, targets, out.p, out.surprise)
            except InputError as err:
                results[row] = err
                continue
            if not out.discarded:
                commit.append(row)
            count = self.counters[row]
            count.steps += 1
            count.writes += int(out.wrote)
            count.discarded += int(out.discarded)
            surprise = SURPRISE_OVERFLOW if out.surprise == math.inf else out.surprise
            gate = GateRecord(wrote=out.wrote, p=out.p, surprise=surprise, step=count.steps,
                              writes=count.writes, discarded=out.discarded)
            results[row] = StepResult(action=action, gate=gate, targets=targets,
                                      clipped=clipped, timings={})
        self.memory.commit(commit)
        return results

    def warm_up(self) -> None:
        """One step of every row on blank inputs (first-call allocations, CUDA graph capture),
        then a reset: the first real observation pays no set-up cost and meets a fresh state.
        A model that cannot step raises here, its error unchanged."""
        spec = self.spec
        joints = np.zeros(spec.n_joints, np.float32)
        if spec.features_in:
            inputs = np.zeros(spec.memory.d_model, np.float32)
        else:
            inputs = {c.name: (np.zeros((c.height, c.width, 3), np.uint8), 'rgb8')
                      for c in spec.cameras}
        results = self.step_rows({row: (inputs, joints) for row in range(self.robots)})
        for result in results.values():
            if isinstance(result, Exception):
                raise result
        self.reset()

    # -- episode and state ------------------------------------------------------------------

    def reset(self, row: int | None = None) -> EpisodeSummary:
        """Zero the memory and counters of `row` (default: every row); the summary is of the
        episode that just ended (of all rows together when no row is given)."""
        with self._lock:
            rows = range(self.robots) if row is None else [self._row(row)]
            summary = EpisodeSummary(steps=sum(self.counters[r].steps for r in rows),
                                     writes=sum(self.counters[r].writes for r in rows))
            self.memory.reset(None if row is None else [row])
            for r in rows:
                self.counters[r] = RowCounters()
            return summary

    def _row(self, row) -> int:
        if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < self.robots:
            raise ValueError(f'row must be an index in [0, {self.robots}), got {row!r}')
        return row

    def state_dict(self, row: int | None = None) -> dict[str, np.ndarray]:
        """Host copies of the memory state: 'W' [robots,d_val,d_key], 'b' [robots,d_val]
        float32; one row ([1, ...]) when `row` is given."""
        with self._lock:
            return self.memory.state_dict(None if row is None else self._row(row))

    def load_state(self, state: dict, row: int | None = None) -> None:
        """Replace the memory state, or one row of it (counters unchanged); all checked before
        anything is copied."""
        rows = self.robots if row is None else 1
        if row is not None:
            self._row(row)
        shapes = {k: (rows, *v.shape[1:]) for k, v in self.memory.state.items()}
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
            self.memory.load_state(state, row)

    def resume(self, state: dict, steps: int, writes: int, row: int | None = None) -> None:
        """Continue a saved episode: its memory state (of `row`, or the one robot's) and its
        step and write counters, all checked before anything changes (InputError)."""
        for name, value in (('steps', steps), ('writes', writes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError('state', f'{name} must be a whole number >= 0, got {value!r}')
        if writes > steps:
            raise InputError('state', f'writes ({writes}) cannot exceed steps ({steps})')
        if row is None:
            self._single()
        with self._lock:
            self.load_state(state, row)
            self.counters[0 if row is None else row] = RowCounters(steps, writes)

    def set_gate_threshold(self, value: float) -> None:
        """Write when p > value from the next step on; no re-export or re-capture needed."""
        value = check_threshold(value)
        with self._lock:
            self.memory.set_threshold(value)
            self.gate_threshold = value

    def memory_bytes(self) -> int:
        """Bytes of the live memory state (W and b) of every row: constant for the episode,
        `robots` times one robot's."""
        return self.memory.state_bytes()
