"""Write-gate policies: who decides g_t, the learned gate or a fixed baseline schedule.

Every policy maps (write probability p_t, surprise s_t, step index t) to a 0/1 float tensor of
shape [batch]. Swapping the policy on one `AuraMemLayer` gives the always-write, budget-matched
random/periodic and raw-surprise baselines with everything else (projections, head, training)
identical, which is what makes their comparison fair.
"""

from typing import Optional

import torch
from torch import Tensor, nn

from . import parallel


class GatePolicy:
    """Base class; `learned` says whether g_t follows the trained gate probability."""

    learned = False

    def __call__(self, p: Tensor, surprise: Tensor, t: int) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ', '.join(f'{k}={v!r}' for k, v in vars(self).items() if not k.startswith('_'))
        return f'{type(self).__name__}({args})'


class LearnedGate(GatePolicy):
    """g_t = 1[p_t > threshold]: AURA's own gate. The threshold may change at run time."""

    learned = True

    def __init__(self, threshold: float = 0.5):
        self.threshold = float(threshold)

    def __call__(self, p: Tensor, surprise: Tensor, t: int) -> Tensor:
        return (p > self.threshold).to(p.dtype)


class AlwaysWrite(GatePolicy):
    """g_t = 1: the dense delta-rule memory, the paper's best O(1) baseline."""

    def __call__(self, p: Tensor, surprise: Tensor, t: int) -> Tensor:
        return torch.ones_like(p)


class NeverWrite(GatePolicy):
    """g_t = 0: the memory stays at its initial state."""

    def __call__(self, p: Tensor, surprise: Tensor, t: int) -> Tensor:
        return torch.zeros_like(p)


class ForcedWrites(GatePolicy):
    """g_t = flags[:, t]: writes exactly on chosen frames (set `flags` [B, T] before each forward).

    The teacher of a hinted gate (`TrainingConfig.gate_target='hint'`) and the benches' oracle
    schedules. With a `queue` of per-episode flags [T], each step 0 takes the next one, so
    `evaluate` can run episodes in turn.
    """

    def __init__(self):
        self.flags, self.queue = None, []

    def __call__(self, p: Tensor, surprise: Tensor, t: int) -> Tensor:
        if t == 0 and self.queue:
            self.flags = self.queue.pop(0)[None]
        return self.flags[:, t].to(device=p.device, dtype=p.dtype)


class EitherWrites(GatePolicy):
    """g_t = 1 where any of `policies` writes, e.g. a learned gate and forced writes on chosen
    frames (bench/so101_heldout.py: would the read-out use a cue the gate skips?). Not
    `learned`: no straight-through gradient reaches the gate through writes it did not make."""

    def __init__(self, *policies: GatePolicy):
        self.policies = policies

    def __call__(self, p: Tensor, surprise: Tensor, t: int) -> Tensor:
        g = self.policies[0](p, surprise, t)
        for policy in self.policies[1:]:
            g = torch.maximum(g, policy(p, surprise, t))
        return g


class RandomSchedule(GatePolicy):
    """Write with probability `rate` at every step, independent of the input (budget-matched)."""

    def __init__(self, rate: float, seed: int = 0):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f'RandomSchedule.rate must be in [0, 1], got {rate}')
        self.rate = float(rate)
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, p: Tensor, surprise: Tensor, t: int) -> Tensor:
        # under torchrun: the draws of the global batch, this rank's rows (memory.parallel)
        B = p.shape[0] if p.dim() else 1
        draw = torch.rand((B * parallel.world(), *p.shape[1:]), generator=self._generator)
        draw = draw[parallel.rows(B)].reshape(p.shape)
        return (draw < self.rate).to(device=p.device, dtype=p.dtype)


class PeriodicSchedule(GatePolicy):
    """Write every `round(1 / rate)` steps (budget-matched, input-blind)."""

    def __init__(self, rate: float, phase: int = 0):
        if not 0.0 < rate <= 1.0:
            raise ValueError(f'PeriodicSchedule.rate must be in (0, 1], got {rate}')
        self.rate = float(rate)
        self.period = max(1, round(1.0 / rate))
        self.phase = int(phase)

    def __call__(self, p: Tensor, surprise: Tensor, t: int) -> Tensor:
        value = 1.0 if (t + self.phase) % self.period == 0 else 0.0
        return torch.full_like(p, value)


class SurpriseThreshold(GatePolicy):
    """g_t = 1[s_t > tau]: write on raw inner prediction error, no learned utility."""

    def __init__(self, tau: float):
        self.tau = float(tau)

    def __call__(self, p: Tensor, surprise: Tensor, t: int) -> Tensor:
        return (surprise > self.tau).to(p.dtype)

    @classmethod
    def matched_to_rate(cls, surprises: Tensor, rate: float) -> 'SurpriseThreshold':
        """The threshold under which a fraction `rate` of the observed surprises would write."""
        flat = surprises.detach().flatten().float()
        if rate <= 0.0:
            return cls(float('inf'))
        return cls(float(torch.quantile(flat, 1.0 - min(rate, 1.0))))


def has_learned_gate(model: nn.Module, gate: Optional[GatePolicy] = None) -> bool:
    """True for an AURA layer whose writes follow its trained gate (under `gate`, if given)."""
    policy = gate if gate is not None else getattr(model, 'gate_policy', None)
    return bool(policy is not None and policy.learned)


def set_threshold(model: nn.Module, threshold: float) -> None:
    """Deploy `threshold` on a learned gate: the policy and the config (saved with the model)."""
    model.set_threshold(threshold)
