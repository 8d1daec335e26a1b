"""The memory step as one ONNX graph, and `python -m aura_ros export`.

    (z [R,d_model], W [R,d_val,d_key], b [R,d_val], threshold [1][, t [1]])
        -> (action [R,chunk,d_action], W_new, b_new, g [R], p [R], surprise [R])

R (`rows`) is a free dimension: the same graph steps one robot or a fleet's rows in one call
(each row its own state; the threshold and `t` are shared by the rows of a call).

`t` (the step index in the episode) is an input only for layers with time features
(`MemoryConfig.time_features > 0`); every other variant runs from the same four inputs.

The graph is the AuraMemLayer's own `project` / `advance` / `act`, traced with the write gate
reading its threshold from an input tensor: g = (p > threshold) and the update selected with
torch.where, so the gate is arithmetic in the graph (no branch, no baked-in threshold) and the
threshold can change at run time without a new export. The same `ThresholdGate` drives the torch
engine, so the two engines run the same formula.

Each exported file records the SHA-256 of the checkpoint it came from; a stale
memory_step.onnx (checkpoint retrained since) is never used.
"""

import argparse
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from aura_ros.memory import AuraMemLayer, GatePolicy

from .model_dir import MEMORY_FILE, MEMORY_STEP_FILE, OPSET, ModelDirError, ModelSpec

FORMAT = 'aura_ros.memory_step/2'    # /1 had a batch of one: re-exported when met
INPUTS = ('z', 'W', 'b', 'threshold')
OUTPUTS = ('action', 'W_new', 'b_new', 'g', 'p', 'surprise')
ROWS = ('z', 'W', 'b', 'action', 'W_new', 'b_new', 'g', 'p', 'surprise')   # dim 0: the rows


def step_inputs(config) -> tuple[str, ...]:
    """The graph's inputs: INPUTS, plus the step counter `t` [1] (float32, the engines feed it
    modulo the period) when the layer's keys and queries use time features."""
    return INPUTS + ('t',) if config.time_features else INPUTS


class ThresholdGate(GatePolicy):
    """LearnedGate whose threshold is a tensor: CUDA graphs and ONNX see changes to its value."""

    learned = True

    def __init__(self, threshold: Tensor):
        self.threshold = threshold

    def __call__(self, p: Tensor, surprise: Tensor, t: int) -> Tensor:
        return (p > self.threshold).to(p.dtype)


class MemoryStep(nn.Module):
    """One inference step of an AuraMemLayer with the state and threshold as plain inputs."""

    def __init__(self, layer: AuraMemLayer):
        super().__init__()
        self.layer = layer

    def forward(self, z: Tensor, W: Tensor, b: Tensor, threshold: Tensor,
                t: Tensor | None = None):
        layer = self.layer
        proj = layer.project(z, 0 if t is None else t)
        state, read, p, g, surprise, _ = layer.advance({'W': W, 'b': b}, proj, 0,
                                                       ThresholdGate(threshold))
        return layer.act(proj['head_x'], read), state['W'], state['b'], g, p, surprise


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def export_memory_step(layer: AuraMemLayer, path: str | Path, checkpoint_sha256: str = '') -> Path:
    """Trace `MemoryStep(layer)` under no_grad (the inference branch of `advance`) to ONNX."""
    import onnx

    c = layer.config
    example = (torch.zeros(1, c.d_model), torch.zeros(1, c.d_val, c.d_key),
               torch.zeros(1, c.d_val), torch.tensor([c.gate_threshold]))
    names = step_inputs(c)
    if 't' in names:
        example += (torch.tensor([1.0]),)
    step = MemoryStep(layer).eval()
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore', DeprecationWarning)   # the TorchScript exporter: see
        torch.onnx.export(step, example, str(path), input_names=list(names),    # model_dir.py
                          output_names=list(OUTPUTS), opset_version=OPSET, dynamo=False,
                          dynamic_axes={name: {0: 'rows'} for name in ROWS})
    model = onnx.load(str(path))
    meta = {'format': FORMAT, 'memory_sha256': checkpoint_sha256,
            'config': json.dumps(c.to_dict(), sort_keys=True)}
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def step_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    try:
        return {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    except Exception:  # unreadable: treat as not ours, it will be re-exported elsewhere
        return {}


def cache_dir() -> Path:
    """$AURA_ROS_CACHE, else $XDG_CACHE_HOME/aura_ros, else ~/.cache/aura_ros."""
    if os.environ.get('AURA_ROS_CACHE'):
        return Path(os.environ['AURA_ROS_CACHE'])
    base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(base) / 'aura_ros'


def is_current(path: Path, sha: str) -> bool:
    """Whether `path` is an exported step of the checkpoint `sha` in this FORMAT."""
    meta = step_metadata(path) if path.is_file() else {}
    return meta.get('memory_sha256') == sha and meta.get('format') == FORMAT


def memory_step_path(model_dir: str | Path, layer: AuraMemLayer) -> Path:
    """An exported step that matches the directory's checkpoint, exporting it if there is none
    (or only one of an older FORMAT).

    Prefers <model_dir>/memory_step.onnx when it was exported from this checkpoint; otherwise
    uses (or writes, atomically) <cache>/memory_step-<sha>.onnx, falling back to a temporary
    directory when the cache is not writable.
    """
    model_dir = Path(model_dir)
    sha = file_sha256(model_dir / MEMORY_FILE)
    own = model_dir / MEMORY_STEP_FILE
    if is_current(own, sha):
        return own
    name = f'memory_step-{sha[:32]}.onnx'
    for folder in (cache_dir(), Path(tempfile.gettempdir()) / f'aura_ros-{os.getuid()}'):
        target = folder / name
        if is_current(target, sha):
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix='.onnx', dir=folder)
            os.close(fd)
        except OSError:
            continue
        try:
            export_memory_step(layer, tmp, sha)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target
    raise OSError(f'no writable cache directory for the exported memory step of {model_dir}')


def main(args: argparse.Namespace) -> int:
    """`python -m aura_ros export`: export, then check one random step against torch."""
    import numpy as np
    import onnxruntime as ort

    from .model_dir import load_memory, load_model_dir

    model_dir = Path(args.model_dir)
    try:
        spec: ModelSpec = load_model_dir(model_dir)
        layer = load_memory(model_dir, spec)
    except ModelDirError as err:
        print(f'error: {err}')
        return 2
    path = model_dir / MEMORY_STEP_FILE
    export_memory_step(layer, path, file_sha256(model_dir / MEMORY_FILE))
    c = spec.memory
    gen = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, c.d_model, generator=gen),
              torch.randn(1, c.d_val, c.d_key, generator=gen) * 0.1,
              torch.randn(1, c.d_val, generator=gen) * 0.1, torch.tensor([c.gate_threshold]))
    names = step_inputs(c)
    if 't' in names:
        inputs += (torch.tensor([3.0]),)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    got = session.run(list(OUTPUTS), {k: v.numpy() for k, v in zip(names, inputs, strict=True)})
    with torch.no_grad():
        want = MemoryStep(layer)(*inputs)
    worst = max(float(np.abs(a - w.numpy()).max()) for a, w in zip(got, want, strict=True))
    print(f'wrote {path} (one random step: ONNX Runtime vs torch max |diff| {worst:.2e})')
    return 0 if worst < 1e-4 else 1
