"""The fast sequence form (scan.py) against the per-step reference (naive.py): the same outputs
and the same gradients, with gates open, closed and mixed, carried state, t0 and every policy."""

import pytest
import torch

from aura_ros.memory import (
    AlwaysWrite,
    AuraMemLayer,
    LearnedGate,
    MemoryConfig,
    NeverWrite,
    PeriodicSchedule,
    RandomSchedule,
    SurpriseThreshold,
)
from aura_ros.memory.batches import Batch
from aura_ros.memory.naive import naive_forward, naive_gated_forward
from aura_ros.memory.objective import gated_forward, objective
from aura_ros.memory.training import TrainingConfig

SMALL = MemoryConfig(d_model=24, d_key=8, d_val=6, d_action=3, chunk=2, gate_init_bias=0.0)
OUTPUTS = ('action', 'p', 'surprise', 'read')

POLICIES = {
    'mixed': lambda: LearnedGate(0.5),
    'open': lambda: LearnedGate(-1.0),
    'closed': lambda: LearnedGate(2.0),
    'always': AlwaysWrite,
    'never': NeverWrite,
    'random': lambda: RandomSchedule(0.4, seed=3),
    'periodic': lambda: PeriodicSchedule(0.25, phase=1),
    'surprise': lambda: SurpriseThreshold(0.5),
}


def _layer(policy: str, config: MemoryConfig = SMALL) -> AuraMemLayer:
    torch.manual_seed(0)
    return AuraMemLayer(config, POLICIES[policy]()).double()


def _start(batch: int, config: MemoryConfig = SMALL) -> dict:
    gen = torch.Generator().manual_seed(5)
    return {'W': torch.randn(batch, config.d_val, config.d_key, generator=gen,
                             dtype=torch.float64) * 0.3,
            'b': torch.randn(batch, config.d_val, generator=gen, dtype=torch.float64) * 0.3}


def _run(layer, forward, policy, z, start, t0):
    """Outputs, parameter grads and grads of the start state under a loss on every output."""
    gate = POLICIES[policy]()                        # a fresh random stream for each form
    layer.zero_grad(set_to_none=True)
    state = {k: v.clone().requires_grad_() for k, v in start.items()}
    out = forward(layer, z, state, t0, gate=gate)
    gen = torch.Generator().manual_seed(1)
    loss = sum((out[k] * torch.randn(out[k].shape, generator=gen, dtype=z.dtype)).sum()
               for k in OUTPUTS)
    loss = loss + (out['state']['W'] * 1.3).sum() - out['state']['b'].sum()
    loss.backward()
    grads = {n: p.grad for n, p in layer.named_parameters() if p.grad is not None}
    grads.update({f'state.{k}': v.grad for k, v in state.items()})
    return out, grads


def _fast(layer, z, state, t0, gate):
    return layer(z, state, t0, gate=gate)


RULES = {'delta': {}, 'add': dict(write_rule='add'), 'delta_no_bias': dict(write_bias=False),
         'add_no_bias': dict(write_rule='add', write_bias=False),
         'delta_decay': dict(write_decay=True),
         'delta_no_bias_decay': dict(write_bias=False, write_decay=True)}


@pytest.mark.parametrize('write_rule', sorted(RULES))
@pytest.mark.parametrize('policy', list(POLICIES))
def test_scan_matches_reference_outputs_and_gradients(policy, write_rule):
    layer = _layer(policy, SMALL.replace(**RULES[write_rule]))
    z = torch.randn(3, 23, SMALL.d_model, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2))
    start = _start(3)
    fast, g_fast = _run(layer, _fast, policy, z, start, t0=7)
    ref, g_ref = _run(layer, naive_forward, policy, z, start, t0=7)
    assert torch.equal(fast['g'], ref['g'])
    if policy == 'mixed':
        assert 0 < fast['g'].mean() < 1, 'the mixed case needs writes and skips'
    for key in OUTPUTS:
        torch.testing.assert_close(fast[key], ref[key], rtol=1e-10, atol=1e-10, msg=key)
    for key in ('W', 'b'):
        torch.testing.assert_close(fast['state'][key], ref['state'][key], rtol=1e-10,
                                   atol=1e-10)
    assert set(g_fast) == set(g_ref)
    for name in g_ref:
        torch.testing.assert_close(g_fast[name], g_ref[name], rtol=1e-9, atol=1e-10,
                                   msg=name)


def test_gate_phase_objective_gradients_match_in_float32():
    torch.manual_seed(0)
    layer = AuraMemLayer(SMALL.replace(chunk=1))
    z = torch.randn(4, 40, SMALL.d_model)
    target = torch.randint(SMALL.d_action, (4, 40))
    ones = torch.ones(4, 40, dtype=torch.bool)
    config = TrainingConfig(loss='ce', offsets=(1, 2, 3, 8, 24))
    grads = []
    for forward in (gated_forward, naive_gated_forward):
        layer.zero_grad(set_to_none=True)
        out = forward(layer, z)
        objective(layer, out, Batch(z, target, ones, ones), config, gated=True)[0].backward()
        grads.append({n: p.grad.clone() for n, p in layer.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6,
                                   msg=name)


@pytest.mark.parametrize('write_rule', sorted(RULES))
@pytest.mark.parametrize('policy', ['mixed', 'open', 'closed'])
def test_trainer_gated_objective_matches_reference(policy, write_rule):
    """The trainer's gate-phase loss (action + IB over far offsets + sparsity) from the scan,
    against the per-step loop it replaced: same states kept, same loss, same gradients."""
    layer = _layer(policy, SMALL.replace(**RULES[write_rule]))
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(3, 30, SMALL.d_model, dtype=torch.float64, generator=gen)
    target = torch.randn(3, 30, SMALL.chunk, SMALL.d_action, dtype=torch.float64, generator=gen)
    mask = torch.rand(3, 30, generator=gen) < 0.7
    batch = Batch(z, target, mask, torch.ones(3, 30, dtype=torch.bool), t0=5)
    config = TrainingConfig(offsets=(1, 3, 8, 20))
    results = []
    for forward in (gated_forward, naive_gated_forward):
        layer.zero_grad(set_to_none=True)
        state = {k: v.clone() for k, v in _start(3).items()}
        out = forward(layer, z, state, 5)
        loss, record = objective(layer, out, batch, config, gated=True)
        loss.backward()
        results.append((out, loss, record,
                        {n: q.grad.clone() for n, q in layer.named_parameters()
                         if q.grad is not None}))
    (fast, loss_f, rec_f, g_f), (ref, loss_r, rec_r, g_r) = results
    assert torch.equal(fast['g'], ref['g'])
    if policy == 'mixed':
        assert 0 < fast['g'].mean() < 1, 'the mixed case needs writes and skips'
    for key in ('action', 'p', 'W', 'b', 'u'):
        torch.testing.assert_close(fast[key], ref[key], rtol=1e-10, atol=1e-10, msg=key)
    torch.testing.assert_close(loss_f, loss_r, rtol=1e-10, atol=1e-12)
    assert rec_f['ib'] > 0 or policy == 'closed'
    assert set(g_f) == set(g_r)
    for name in g_r:
        torch.testing.assert_close(g_f[name], g_r[name], rtol=1e-8, atol=1e-10, msg=name)


@torch.no_grad()
@pytest.mark.parametrize('keep_states', [False, True])
def test_inference_forms_match_and_carry_state(keep_states):
    layer = _layer('mixed').float()
    z = torch.randn(2, 60, SMALL.d_model)
    start = {k: v.float() for k, v in _start(2).items()}
    whole = layer(z, start, 3, keep_states)
    ref = naive_forward(layer, z, start, 3)
    first = layer(z[:, :25], start, 3, keep_states)
    second = layer(z[:, 25:], first['state'], 28, keep_states)
    assert torch.equal(whole['g'], ref['g'])
    assert torch.equal(whole['g'], torch.cat([first['g'], second['g']], 1))
    for key in ('action', 'p', 'read'):
        torch.testing.assert_close(whole[key], ref[key], rtol=1e-5, atol=1e-5)
    for key in ('W', 'b'):
        torch.testing.assert_close(whole['state'][key], second['state'][key])


@pytest.mark.parametrize('grad', [False, True])
def test_closed_gate_leaves_state_bit_identical(grad):
    layer = _layer('closed').float()
    start = {k: v.float() for k, v in _start(3).items()}
    with torch.set_grad_enabled(grad):
        out = layer(torch.randn(3, 50, SMALL.d_model) * 10, start, 0, True)
    assert not out['g'].any()
    for key in start:
        assert torch.equal(out['state'][key], start[key])


def test_ten_thousand_steps_in_inference_keep_the_state_small():
    layer = _layer('open').float()
    with torch.no_grad():
        out = layer(torch.randn(1, 10_000, SMALL.d_model))
    assert out['state']['W'].shape == (1, SMALL.d_val, SMALL.d_key)
    assert torch.isfinite(out['action']).all()
