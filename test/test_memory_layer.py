"""The AURA layer against its own contract: step form = sequence form, gate 0 = untouched state,
constant state bytes, gradients into the gate, and a short training run that lowers every term."""

import pytest
import torch

from aura_ros.memory import AlwaysWrite, AuraMemLayer, LearnedGate, MemoryConfig, state_bytes
from aura_ros.memory.batches import Batch
from aura_ros.memory.objective import gated_forward, objective
from aura_ros.memory.training import TrainingConfig

SMALL = MemoryConfig(d_model=48, d_key=16, d_val=12, d_action=5, chunk=3)


def _steps(layer, z, state=None):
    """Run `layer.step` over z [B, T, d] and stack the outputs like the sequence form."""
    state = state if state is not None else layer.init_state(z.shape[0])
    outs = []
    for t in range(z.shape[1]):
        out = layer.step(z[:, t], state, t)
        state = out['state']
        outs.append(out)
    stacked = {k: torch.stack([o[k] for o in outs], 1) for k in ('action', 'g', 'p', 'surprise')}
    return stacked, state


@torch.no_grad()
@pytest.mark.parametrize('threshold', [0.45, 0.55])
def test_step_form_equals_sequence_form(threshold):
    torch.manual_seed(0)
    layer = AuraMemLayer(SMALL.replace(gate_threshold=threshold, gate_init_bias=0.0)).eval()
    z = torch.randn(4, 300, SMALL.d_model)
    seq = layer(z)
    steps, state = _steps(layer, z)
    assert torch.equal(seq['g'], steps['g'])
    assert 0 < seq['g'].sum() < seq['g'].numel(), 'the test needs both writes and skips'
    for key in ('action', 'p', 'surprise'):
        torch.testing.assert_close(seq[key], steps[key], rtol=1e-5, atol=1e-5)
    for key in ('W', 'b'):
        torch.testing.assert_close(seq['state'][key], state[key], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_shapes_of_the_sequence_form():
    layer = AuraMemLayer(SMALL)
    out = layer(torch.randn(2, 7, SMALL.d_model))
    assert out['action'].shape == (2, 7, SMALL.chunk, SMALL.d_action)
    for key in ('g', 'p', 'surprise'):
        assert out[key].shape == (2, 7)
    assert set(out['g'].unique().tolist()) <= {0.0, 1.0}
    assert out['state']['W'].shape == (2, SMALL.d_val, SMALL.d_key)


@torch.no_grad()
def test_threshold_above_one_never_writes_and_leaves_state_bit_identical():
    torch.manual_seed(1)
    layer = AuraMemLayer(SMALL.replace(gate_threshold=1.5))
    start = layer.init_state(3)
    start['W'].normal_()
    start['b'].normal_()
    state = {k: v.clone() for k, v in start.items()}
    for t in range(500):
        out = layer.step(torch.randn(3, SMALL.d_model) * 10, state, t)
        state = out['state']
        assert not out['g'].any()
    for key in start:
        assert torch.equal(state[key], start[key])
    seq = layer(torch.randn(3, 200, SMALL.d_model), {k: v.clone() for k, v in start.items()})
    for key in start:
        assert torch.equal(seq['state'][key], start[key])


@torch.no_grad()
def test_threshold_below_zero_writes_every_step():
    layer = AuraMemLayer(SMALL.replace(gate_threshold=-0.1))
    out = layer(torch.randn(2, 100, SMALL.d_model))
    assert bool((out['g'] == 1).all())
    assert not torch.equal(out['state']['W'], torch.zeros_like(out['state']['W']))


def test_runtime_threshold_change_takes_effect():
    layer = AuraMemLayer(SMALL)
    z = torch.randn(1, 50, SMALL.d_model)
    with torch.no_grad():
        assert layer(z, gate=LearnedGate(2.0))['g'].sum() == 0
        assert layer(z, gate=LearnedGate(-1.0))['g'].sum() == 50
        layer.set_threshold(2.0)                  # deployed: the policy and the saved config
        assert layer(z)['g'].sum() == 0 and layer.config.gate_threshold == 2.0


@torch.no_grad()
def test_the_gate_is_an_argument_of_each_call_and_leaves_the_layer_alone():
    torch.manual_seed(0)
    layer = AuraMemLayer(SMALL.replace(gate_threshold=2.0))
    own = layer.gate_policy
    z = torch.randn(2, 12, SMALL.d_model)
    out = layer(z, gate=AlwaysWrite())
    assert out['g'].sum() == 24 and layer.gate_policy is own
    state = layer.init_state(2)
    for t in range(12):
        step = layer.step(z[:, t], state, t, gate=AlwaysWrite())
        state = step['state']
    torch.testing.assert_close(step['action'], out['action'][:, -1], rtol=1e-5, atol=1e-5)
    assert layer(z)['g'].sum() == 0 and layer.gate_policy is own


@torch.no_grad()
@pytest.mark.parametrize('d_key,d_val,batch', [(32, 32, 1), (16, 8, 3), (64, 32, 2)])
def test_memory_bytes_match_the_state_after_many_steps(d_key, d_val, batch):
    config = MemoryConfig(d_model=32, d_key=d_key, d_val=d_val, d_action=2,
                          gate_threshold=-1.0)
    layer = AuraMemLayer(config)
    state = layer.init_state(batch)
    expected = (d_key * d_val + d_val) * batch * 4
    assert layer.memory_bytes(batch) == expected == state_bytes(state)
    z = torch.randn(batch, config.d_model)
    for t in range(10_000):
        state = layer.step(z, state, t)['state']
    assert state_bytes(state) == expected


def test_card_example_state_is_4224_bytes():
    layer = AuraMemLayer(MemoryConfig(d_model=4096, d_key=32, d_val=32, d_action=7))
    assert layer.memory_bytes(1) == 4224 == state_bytes(layer.init_state(1))
    with torch.no_grad():
        out = layer.step(torch.randn(1, 4096), layer.init_state(1))
    assert out['action'].shape == (1, 1, 7)
    assert state_bytes(out['state']) == 4224


def test_gradients_reach_the_gate():
    torch.manual_seed(0)
    layer = AuraMemLayer(SMALL)
    z = torch.randn(2, 20, SMALL.d_model)
    out = gated_forward(layer, z)
    target = torch.randn_like(out['action'])
    ones = torch.ones(2, 20, dtype=torch.bool)
    batch = Batch(z, target, ones, ones)
    action, _ = objective(layer, out, batch, TrainingConfig(), gated=False)
    action.backward(retain_graph=True)            # through the straight-through gate alone
    assert layer.gate_out.weight.grad.abs().sum() > 0
    assert layer.gate_in.weight.grad.abs().sum() > 0
    layer.zero_grad()
    only_ib = TrainingConfig(offsets=(1, 2, 4, 8), margin=0.0, w_sparse=0.0)
    total, _ = objective(layer, out, batch, only_ib, gated=True)
    (total - action).backward()                   # the IB term alone
    assert layer.gate_out.weight.grad.abs().sum() > 0


def _toy_batch(generator, batch=32, steps=24, width=32, classes=4):
    """Events carry a class; filler is noise; the target is the class of the latest event."""
    codes = torch.randn(classes, width, generator=torch.Generator().manual_seed(7)) * 3
    z = torch.randn(batch, steps, width, generator=generator) * 0.3
    label = torch.zeros(batch, steps, dtype=torch.long)
    current = torch.randint(classes, (batch,), generator=generator)
    for t in range(steps):
        is_event = torch.rand(batch, generator=generator) < 0.15
        if t == 0:
            is_event[:] = True
        new = torch.randint(classes, (batch,), generator=generator)
        current = torch.where(is_event, new, current)
        z[is_event, t] += codes[new[is_event]]
        label[:, t] = current
    return z, label


def test_short_training_run_lowers_every_loss_term():
    torch.manual_seed(0)
    config = MemoryConfig(d_model=32, d_key=16, d_val=16, d_action=4)
    layer = AuraMemLayer(config)
    optimizer = torch.optim.Adam(layer.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    eval_z, eval_y = _toy_batch(torch.Generator().manual_seed(123), batch=64)
    recipe = TrainingConfig(loss='ce', offsets=(1, 2, 3), w_sparse=0.2)

    def terms(z, y):
        ones = torch.ones(y.shape, dtype=torch.bool)
        return objective(layer, gated_forward(layer, z), Batch(z, y, ones, ones), recipe, True)

    def evaluate():
        with torch.no_grad():
            record = terms(eval_z, eval_y)[1]
        return {k: record[k] for k in ('action', 'ib', 'sparse')}

    before = evaluate()
    for _ in range(150):
        loss, _ = terms(*_toy_batch(generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = evaluate()
    for key in before:
        assert after[key] < before[key], f'{key}: {before[key]:.3f} -> {after[key]:.3f}'
