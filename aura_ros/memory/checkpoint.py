"""Checkpoints: safetensors for the tensors, the config as JSON in the file's metadata. No pickle.

Loading checks the format, the config, the tensor names and the shapes, and refuses a mismatch with
a message that says exactly what differs, so a wrong file fails at start, not mid-episode.
"""

import json
from pathlib import Path
from typing import Optional

from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .config import ConfigError, MemoryConfig

FORMAT = 'aura_ros.memory/1'


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or does not fit the model it is loaded into."""


def save_checkpoint(model: nn.Module, path: str | Path, metadata: Optional[dict] = None) -> None:
    """Write the model's tensors and config to `path` (.safetensors)."""
    meta = {'format': FORMAT, 'kind': getattr(model, 'kind', type(model).__name__),
            'config': json.dumps(model.config.to_dict(), sort_keys=True)}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)


def read_checkpoint(path: str | Path):
    """(config, kind, tensors, metadata) from a checkpoint file, with the format checked."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such checkpoint file')
    try:
        with safe_open(str(path), framework='pt') as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f'{path}: not a readable safetensors file ({err})') from err
    if meta.get('format') != FORMAT:
        raise CheckpointError(f'{path}: format is {meta.get("format")!r}, expected {FORMAT!r}')
    try:
        config = MemoryConfig.from_dict(json.loads(meta['config']))
    except (KeyError, json.JSONDecodeError, ConfigError) as err:
        raise CheckpointError(f'{path}: bad or missing config in metadata ({err})') from err
    return config, meta.get('kind', ''), tensors, meta


def config_differences(saved: MemoryConfig, expected: MemoryConfig) -> list[str]:
    """'field: saved X, expected Y' for every field that differs."""
    a, b = saved.to_dict(), expected.to_dict()
    return [f'{k}: checkpoint {a[k]!r}, expected {b[k]!r}' for k in a if a[k] != b[k]]


def load_checkpoint(path: str | Path, model: Optional[nn.Module] = None,
                    config: Optional[MemoryConfig] = None,
                    ignore: tuple[str, ...] = ('gate_threshold',)) -> nn.Module:
    """Load a checkpoint into `model` (or a new model of the saved kind) after checking it fits.

    `config` (default: the model's) must match the saved one except for the `ignore`d run-time
    fields; tensor names and shapes must match the model's exactly.
    """
    saved_config, kind, tensors, _ = read_checkpoint(path)
    if model is None:
        from .baselines import build_model
        try:
            model = build_model(kind, config or saved_config)
        except ValueError as err:
            raise CheckpointError(
                f'{path}: cannot rebuild a model of kind {kind!r}: {err}') from err
    expected = config or model.config
    diffs = [d for d in config_differences(saved_config, expected)
             if d.split(':')[0] not in ignore]
    if diffs:
        raise CheckpointError(f'{path}: config differs: ' + '; '.join(diffs))
    own = model.state_dict()
    problems = [f'missing tensor {k!r}' for k in sorted(set(own) - set(tensors))]
    problems += [f'unexpected tensor {k!r}' for k in sorted(set(tensors) - set(own))]
    problems += [f'tensor {k!r} has shape {tuple(tensors[k].shape)}, '
                 f'expected {tuple(own[k].shape)}'
                 for k in sorted(set(own) & set(tensors)) if tensors[k].shape != own[k].shape]
    if problems:
        raise CheckpointError(f'{path}: ' + '; '.join(problems))
    model.load_state_dict(tensors)
    return model
