"""Validated configuration of the AURA memory layer and its baselines.

A `MemoryConfig` is checked when it is created, so a wrong value fails where it is written, with
the field named, instead of as a shape error deep inside a forward pass.
"""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from aura_ros.checks import is_int, is_num, need

WRITE_RULES = ('delta', 'add')
INPUT_MAPS = ('none', 'center', 'whiten')


class ConfigError(ValueError):
    """A configuration value is missing, unknown, or out of range."""


# Fields older saved models carry that no longer mean anything; they load and are dropped.
# ib_horizon: the contiguous IB horizon of the retired counterfactual forward (the IB term is
# scored over `TrainingConfig.offsets` now).
RETIRED = frozenset({'ib_horizon'})


@dataclass(frozen=True)
class MemoryConfig:
    """Sizes and inference settings of one AURA memory layer.

    The inference state is `d_key * d_val + d_val` floats per batch row, whatever the episode
    length. The variants (`write_rule`, `time_features`, `input_map`, `write_bias`,
    `write_decay`) add no state: the time features are computed from the step index t that every
    step receives anyway, the input map and the decay's projection are parts of the model. Their
    defaults are the original layer, so older checkpoints load unchanged.
    """

    d_model: int = 4096          # width of the backbone feature z_t
    d_key: int = 32              # key/query width of the fast-weight matrix W (d_val x d_key)
    d_val: int = 32              # value width, also the read width
    d_action: int = 7            # action dimensions per chunk step
    chunk: int = 1               # action chunk length
    gate_proj: int = 16          # width of proj(x_t) fed to the gate next to the surprise
    gate_hidden: int = 32        # hidden width of the gate MLP
    head_hidden: int = 256       # hidden width of the action head
    gate_threshold: float = 0.5  # inference threshold on the write probability p_t
    gate_init_bias: float = 2.0  # the gate starts open (p ~ 0.88) so the memory gets used early
    beta_init_bias: float = 1.0  # inner learning rate starts near sigmoid(1) ~ 0.73
    write_rule: str = 'delta'    # 'delta': W -= beta e k^T (erase + write); 'add': W += beta v k^T
    time_features: int = 0       # sin/cos harmonics of the step counter fed to k and q (0: off)
    time_period: int = 0         # period in steps of the first harmonic (0: d_key)
    # what the layer does to z before its LayerNorm, fitted on the training features and kept
    # in the checkpoint (buffers input_mean, input_map): 'none', 'center' (z - mean) or 'whiten'
    # ((z - mean) @ map, map the ZCA whitening of the training features' covariance)
    input_map: str = 'none'
    # does a write also move the bias b (read with a constant 1 by every key)? With True (the
    # original layer) even an orthogonal key's read moves with every write; with False b is
    # never written (it stays 0) and only W k carries what was stored
    write_bias: bool = True
    # does a write also fade what is stored? With True each write first scales the whole state by
    # 1 - beta_t g_t gamma_t, gamma_t = sigmoid(w_gamma . x_t + b_gamma) learned (the forgetting
    # of a gated delta rule, on writes only: a closed gate still leaves the state bit-identical),
    # so a cue written in a new task can push out the last task's writes that its key alone
    # does not erase. Adds one projection, no state
    write_decay: bool = False
    # components of a training-only mixture head over the action chunk (0: none): what the
    # label-free gate's target can score writes by (TrainingConfig.utility_loss 'mixture'),
    # where the MSE head's mean hides a cue whose answer is the average action. Never run at
    # inference, not exported; it adds no state
    mixture: int = 0

    def __post_init__(self) -> None:
        if self.write_rule not in WRITE_RULES:
            raise ConfigError(f'MemoryConfig.write_rule must be one of {WRITE_RULES}, '
                              f'got {self.write_rule!r}')
        if self.input_map not in INPUT_MAPS:
            raise ConfigError(f'MemoryConfig.input_map must be one of {INPUT_MAPS}, '
                              f'got {self.input_map!r}')
        for name in ('write_bias', 'write_decay'):
            value = getattr(self, name)
            need(isinstance(value, bool), ConfigError,
                 f'MemoryConfig.{name} must be true or false, got {value!r}')
        positive = ('d_model', 'd_key', 'd_val', 'd_action', 'chunk', 'gate_proj', 'gate_hidden',
                    'head_hidden')
        for name in positive:
            value = getattr(self, name)
            need(is_int(value, 1), ConfigError,
                 f'MemoryConfig.{name} must be a positive integer, got {value!r}')
        for name in ('time_features', 'time_period', 'mixture'):
            value = getattr(self, name)
            need(is_int(value, 0), ConfigError,
                 f'MemoryConfig.{name} must be an integer >= 0, got {value!r}')
        for name in ('gate_threshold', 'gate_init_bias', 'beta_init_bias'):
            value = getattr(self, name)
            need(is_num(value), ConfigError,
                 f'MemoryConfig.{name} must be a finite number, got {value!r}')
            object.__setattr__(self, name, float(value))

    @property
    def period(self) -> int:
        """Steps after which the time features repeat (`time_period`, or d_key when 0)."""
        return self.time_period or self.d_key

    @property
    def state_floats(self) -> int:
        """Floats of inference state per batch row: W (d_val x d_key) plus b (d_val)."""
        return self.d_key * self.d_val + self.d_val

    def memory_bytes(self, batch_size: int = 1) -> int:
        """Bytes of fp32 inference state for `batch_size` rows, for any episode length."""
        return self.state_floats * batch_size * 4

    def replace(self, **changes: Any) -> 'MemoryConfig':
        """A copy with some fields changed (validated again)."""
        return MemoryConfig(**{**asdict(self), **changes})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> 'MemoryConfig':
        if not isinstance(data, dict):
            raise ConfigError(f'a memory config must be a mapping, got {type(data).__name__}')
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k not in RETIRED}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f'unknown MemoryConfig field(s): {", ".join(unknown)}; '
                              f'known: {", ".join(sorted(known))}')
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write as YAML (.yaml/.yml) or JSON (anything else)."""
        path = Path(path)
        if path.suffix in ('.yaml', '.yml'):
            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            path.write_text(json.dumps(self.to_dict(), indent=2) + '\n')

    @classmethod
    def load(cls, path: str | Path) -> 'MemoryConfig':
        path = Path(path)
        text = path.read_text()
        try:
            data = yaml.safe_load(text) if path.suffix in ('.yaml', '.yml') else json.loads(text)
        except (yaml.YAMLError, json.JSONDecodeError) as err:
            raise ConfigError(f'{path}: not valid {path.suffix or "JSON"}: {err}') from err
        return cls.from_dict(data)
