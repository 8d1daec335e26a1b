"""Memory baselines with the same interface as `AuraMemLayer`.

Every model here has `init_state(batch, device)`, `step(z_t, state, t)`, `forward(z, state, t0)`
returning at least `action`, `g`, `p`, `surprise`, `state`, and `memory_bytes`. The gate-schedule
baselines (always-write, random, periodic, raw surprise) are `AuraMemLayer`s with another
`GatePolicy`; see `build_model`.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MemoryConfig
from .gates import (
    AlwaysWrite,
    GatePolicy,
    LearnedGate,
    NeverWrite,
    PeriodicSchedule,
    RandomSchedule,
    SurpriseThreshold,
)
from .gru import gru_sequence
from .input_map import add_input_map, input_mapped
from .layer import AuraMemLayer, State


class _HeadMixin(nn.Module):
    """x/read action head, the same shape as AURA's, for baselines with another memory."""

    def _init_head(self, config: MemoryConfig, read_width: int) -> None:
        self.config = config
        add_input_map(self, config.input_map, config.d_model)   # as AURA's, for a fair floor
        self.norm = nn.LayerNorm(config.d_model)
        self.head_x = nn.Linear(config.d_model, config.head_hidden)
        self.head_r = nn.Linear(read_width, config.head_hidden, bias=False)
        self.head_out = nn.Linear(config.head_hidden, config.chunk * config.d_action)

    def act(self, head_x: Tensor, read: Tensor) -> Tensor:
        out = self.head_out(F.gelu(head_x + self.head_r(read)))
        return out.reshape(*out.shape[:-1], self.config.chunk, self.config.d_action)

    @staticmethod
    def _gate_record(like: Tensor, wrote: float) -> dict:
        """g = p = `wrote` and no surprise: these memories have no gate."""
        full = torch.full_like(like, wrote)
        return {'g': full, 'p': full, 'surprise': torch.zeros_like(like)}


class NoMemory(_HeadMixin):
    """The head sees only the current features: the floor every memory must beat."""

    kind = 'no_memory'

    def __init__(self, config: MemoryConfig):
        super().__init__()
        self._init_head(config, 1)

    def init_state(self, batch_size: int, device=None) -> State:
        return {}

    def memory_bytes(self, batch_size: int = 1) -> int:
        return 0

    def step(self, z_t: Tensor, state: State, t: int = 0) -> dict:
        x = self.norm(input_mapped(self, z_t))
        read = torch.zeros_like(x[..., :1])
        return {'action': self.act(self.head_x(x), read), 'read': read, 'state': state,
                **self._gate_record(x[..., 0], 0.0)}

    def forward(self, z: Tensor, state: Optional[State] = None, t0: int = 0) -> dict:
        return self.step(z, state or {}, t0)


class DenseGRU(_HeadMixin):
    """A GRU that writes every step; by default its state has as many floats as AURA's (W, b).

    Trained through `gru.gru_sequence` (nn.GRU's weights and result, a backward that does the
    weight gradients in one product: about half the update time here, docs/results/
    train_scale.md); `sequence_backward = False` trains through nn.GRU's own autograd.
    """

    sequence_backward = True
    # the dtype of the per-step recurrent products while training on the CPU (gru.gru_sequence;
    # None: the weights' own); `train` sets it from TrainingConfig.recurrent_dtype
    product_dtype = None

    kind = 'gru'

    def __init__(self, config: MemoryConfig, hidden: Optional[int] = None):
        super().__init__()
        self.hidden = hidden or config.state_floats
        self._init_head(config, self.hidden)
        self.cell = nn.GRU(config.d_model, self.hidden, batch_first=True)

    def init_state(self, batch_size: int, device=None) -> State:
        return {'h': torch.zeros(batch_size, self.hidden, device=device)}

    def memory_bytes(self, batch_size: int = 1) -> int:
        return self.hidden * batch_size * 4

    def forward(self, z: Tensor, state: Optional[State] = None, t0: int = 0) -> dict:
        x = self.norm(input_mapped(self, z))
        h0 = (state or self.init_state(z.shape[0], z.device))['h']
        if self.sequence_backward:
            read, h = gru_sequence(self.cell, x, h0, self.product_dtype)
        else:
            read, h = self.cell(x, h0[None].contiguous())
            h = h[0]
        return {'action': self.act(self.head_x(x), read), 'read': read, 'state': {'h': h},
                **self._gate_record(x[..., 0], 1.0)}

    def step(self, z_t: Tensor, state: State, t: int = 0) -> dict:
        out = self.forward(z_t[:, None], state, t)
        return {k: (v[:, 0] if k != 'state' else v) for k, v in out.items()}


class KVCacheMemory(_HeadMixin):
    """Softmax attention over every (k, v) written so far: the same width as AURA, but it grows.

    Each step appends one key and one value, so the state grows by (d_key + d_val) * 4 bytes per
    row and step (256 bytes at 32/32) and a step costs O(steps so far).
    """

    kind = 'kv_cache'

    def __init__(self, config: MemoryConfig):
        super().__init__()
        self._init_head(config, config.d_val)
        self.to_k = nn.Linear(config.d_model, config.d_key, bias=False)
        self.to_q = nn.Linear(config.d_model, config.d_key, bias=False)
        self.to_v = nn.Linear(config.d_model, config.d_val, bias=False)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(8.0)))

    def init_state(self, batch_size: int, device=None) -> State:
        c = self.config
        return {'keys': torch.zeros(batch_size, 0, c.d_key, device=device),
                'values': torch.zeros(batch_size, 0, c.d_val, device=device)}

    def memory_bytes(self, batch_size: int = 1, writes: int = 0) -> int:
        return (self.config.d_key + self.config.d_val) * 4 * batch_size * writes

    def forward(self, z: Tensor, state: Optional[State] = None, t0: int = 0) -> dict:
        B, T, _ = z.shape
        state = state or self.init_state(B, z.device)
        x = self.norm(input_mapped(self, z))
        keys = torch.cat([state['keys'], F.normalize(self.to_k(x), dim=-1)], 1)
        values = torch.cat([state['values'], self.to_v(x)], 1)
        q = F.normalize(self.to_q(x), dim=-1)
        past = state['keys'].shape[1]
        visible = torch.ones(T, past + T, dtype=torch.bool, device=z.device).tril(past)
        scores = torch.einsum('btk,bnk->btn', q, keys) * self.log_temperature.exp()
        weights = scores.masked_fill(~visible, float('-inf')).softmax(-1)
        read = torch.einsum('btn,bnv->btv', weights, values)
        return {'action': self.act(self.head_x(x), read), 'read': read,
                'state': {'keys': keys, 'values': values}, **self._gate_record(x[..., 0], 1.0)}

    def step(self, z_t: Tensor, state: State, t: int = 0) -> dict:
        out = self.forward(z_t[:, None], state, t)
        return {k: (v[:, 0] if k != 'state' else v) for k, v in out.items()}


METHODS = ('aura', 'always_write', 'random_budget', 'periodic_budget', 'surprise_budget', 'gru',
           'kv_cache', 'no_memory')


def build_model(method: str, config: MemoryConfig, rate: Optional[float] = None,
                tau: Optional[float] = None, seed: int = 0) -> nn.Module:
    """One model per benchmark method name; budget-matched methods need the `rate` (or `tau`)."""
    policies: dict[str, GatePolicy] = {}
    if method == 'aura':
        policies[method] = LearnedGate(config.gate_threshold)
    elif method == 'always_write':
        policies[method] = AlwaysWrite()
    elif method == 'never_write':
        policies[method] = NeverWrite()
    elif method in ('random_budget', 'periodic_budget', 'surprise_budget'):
        if method == 'surprise_budget':
            if tau is None:
                raise ValueError('surprise_budget needs tau (SurpriseThreshold.matched_to_rate)')
            policies[method] = SurpriseThreshold(tau)
        elif rate is None:
            raise ValueError(f'{method} needs the write rate it is matched to')
        elif method == 'random_budget':
            policies[method] = RandomSchedule(rate, seed)
        else:
            policies[method] = PeriodicSchedule(rate)
    elif method == 'gru':
        return DenseGRU(config)
    elif method == 'kv_cache':
        return KVCacheMemory(config)
    elif method == 'no_memory':
        return NoMemory(config)
    else:
        raise ValueError(f'unknown method {method!r}; known: {", ".join(METHODS)}, never_write')
    model = AuraMemLayer(config, policies[method])
    model.kind = method
    return model
