"""The gradient utility of a write (`objective.gradient_utility`): -dL/d(write strength) at the
writes made, held to a finite difference of the layer's own per-step form (`advance`)."""

import pytest
import torch

from aura_ros.memory import AuraMemLayer, MemoryConfig
from aura_ros.memory.batches import Batch
from aura_ros.memory.gates import GatePolicy
from aura_ros.memory.losses import budget_ib_loss
from aura_ros.memory.objective import gated_forward, gradient_utility, head_loss, objective
from aura_ros.memory.training import TrainingConfig, TrainingError

CONFIG = MemoryConfig(d_model=10, d_key=5, d_val=4, d_action=3, chunk=2, head_hidden=12,
                      gate_init_bias=0.0)
T = 16


class Strengths(GatePolicy):
    """g_t = strengths[:, t], fractional allowed: the per-step reference's nudged writes."""

    def __init__(self, strengths: torch.Tensor):
        self.strengths = strengths

    def __call__(self, p, surprise, t):
        return self.strengths[:, t].to(p.dtype)


def empty(layer, z):
    return {k: v.to(z.dtype) for k, v in layer.init_state(z.shape[0]).items()}


@torch.enable_grad()
def window_loss(layer, z, target, strengths, mask, kind='mse'):
    """The window's summed head loss (`kind`) with write strengths `strengths`, step by step
    (with autograd on: without, `advance` skips a row whose strength is not above 0)."""
    proj = layer.project(z)
    state, policy, total = empty(layer, z), Strengths(strengths), 0
    for t in range(T):
        state, read, *_ = layer.advance(state, {k: v[:, t] for k, v in proj.items()}, t, policy)
        loss = head_loss(layer, proj['head_x'][:, t:t + 1], read[:, None], target[:, t:t + 1],
                         kind)
        total = total + (loss[:, 0] * mask[:, t]).sum()
    return total


@pytest.mark.parametrize('write_bias, kind, decay', [(True, 'mse', False), (False, 'mse', False),
                                                     (False, 'mixture', False),
                                                     (False, 'mixture', True)])
def test_gradient_utility_is_the_finite_difference_of_the_later_loss(write_bias, kind, decay):
    torch.manual_seed(3)
    layer = AuraMemLayer(CONFIG.replace(write_bias=write_bias, mixture=3,
                                        write_decay=decay)).double()
    z = torch.randn(2, T, CONFIG.d_model, dtype=torch.float64)
    target = torch.randn(2, T, CONFIG.chunk, CONFIG.d_action, dtype=torch.float64)
    mask = (torch.rand(2, T) > 0.3).double()
    g = (torch.rand(2, T) > 0.5).double()
    forced = Strengths(g)
    with torch.no_grad():
        out = gated_forward(layer, z, state=empty(layer, z), gate=forced)
        u = gradient_utility(layer, out, target, mask, kind)
        eps, numeric = 1e-6, torch.zeros(2, T, dtype=torch.float64)
        for b in range(2):
            for t in range(T):
                nudge = torch.zeros_like(g)
                nudge[b, t] = eps
                up = window_loss(layer, z, target, g + nudge, mask, kind)
                down = window_loss(layer, z, target, g - nudge, mask, kind)
                numeric[b, t] = -(up - down) / (2 * eps)
    assert u.shape == (2, T)
    assert torch.allclose(u, numeric, rtol=1e-5, atol=1e-8), (u - numeric).abs().max()
    assert u.abs().max() > 1e-3                  # not all zero: skipped steps score too
    assert (u[g == 0] != 0).any()


def budget_window(seed: int):
    """A layer, a batch of 3 random windows and the gradient utility's budget config."""
    torch.manual_seed(seed)
    layer = AuraMemLayer(CONFIG)
    z, target = torch.randn(3, T, CONFIG.d_model), torch.randn(3, T, CONFIG.chunk,
                                                                CONFIG.d_action)
    ones = torch.ones(3, T, dtype=torch.bool)
    return layer, Batch(z, target, ones, ones), TrainingConfig(utility='gradient',
                                                               write_budget=(0.2, 0.1))


def test_the_gradient_utility_trains_the_gate_towards_a_budget():
    layer, batch, config = budget_window(4)
    out = gated_forward(layer, batch.z)
    loss, record = objective(layer, out, batch, config, gated=True, budget=0.2)
    loss.backward()
    assert record['budget'] == 0.2 and record['ib'] > 0
    assert layer.gate_out.weight.grad.abs().sum() > 0


def test_a_gradient_utility_without_a_budget_is_named():
    with pytest.raises(TrainingError, match='utility .gradient. ranks writes'):
        TrainingConfig(utility='gradient')
    with pytest.raises(TrainingError, match='utility must be'):
        TrainingConfig(utility='oracle', write_budget=(0.1, 0.05))


def test_own_writes_score_each_write_against_the_gates_writes_not_random_ones():
    """`carry_utility_writes: gate`: the carried phase ranks writes under the memory the gate
    itself keeps (where a stale cue should make the next cue's write pay)."""
    layer, batch, config = budget_window(5)
    out = gated_forward(layer, batch.z, state=empty(layer, batch.z),
                        gate=Strengths((torch.rand(3, T) > 0.5).float()))
    own = budget_ib_loss(out['p'], gradient_utility(layer, out, batch.target, batch.mask), 0.2,
                         weight=batch.valid)
    _, record = objective(layer, out, batch, config, gated=True, budget=0.2, own_writes=True)
    assert record['ib'] == pytest.approx(own.item())
    _, record = objective(layer, out, batch, config, gated=True, budget=0.2)
    assert record['ib'] != pytest.approx(own.item())      # random reference writes instead
    with pytest.raises(TrainingError, match='carry_utility_writes must be'):
        TrainingConfig(carry_utility_writes='teacher')
