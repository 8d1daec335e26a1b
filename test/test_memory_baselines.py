"""Baselines share the layer interface; the KV-cache really grows and AURA's state does not."""

import pytest
import torch

from aura_ros.memory import (
    METHODS,
    KVCacheMemory,
    MemoryConfig,
    PeriodicSchedule,
    RandomSchedule,
    SurpriseThreshold,
    build_model,
    state_bytes,
)

CARD = MemoryConfig(d_model=4096, d_key=32, d_val=32, d_action=7)
SMALL = MemoryConfig(d_model=24, d_key=8, d_val=8, d_action=3, chunk=2)


@torch.no_grad()
@pytest.mark.parametrize('method', METHODS)
def test_every_method_has_the_same_interface(method):
    torch.manual_seed(0)
    model = build_model(method, SMALL, rate=0.25, tau=1.0, seed=0)
    z = torch.randn(2, 9, SMALL.d_model)
    out = model(z)
    assert out['action'].shape == (2, 9, SMALL.chunk, SMALL.d_action)
    for key in ('g', 'p', 'surprise'):
        assert out[key].shape == (2, 9), key
    step = model.step(z[:, 0], model.init_state(2), 0)
    assert step['action'].shape == (2, SMALL.chunk, SMALL.d_action)
    if method != 'random_budget':   # the random schedule draws a fresh stream per call
        torch.testing.assert_close(step['action'], out['action'][:, 0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_kv_cache_grows_256_bytes_per_write_and_dwarfs_aura():
    model = KVCacheMemory(CARD).eval()
    state = model.init_state(1)
    z = torch.randn(1, CARD.d_model)
    for t in range(1, 201):
        state = model.step(z, state, t)['state']
        assert state_bytes(state) == 256 * t
    assert model.memory_bytes(1, writes=200) == state_bytes(state)
    kv_bytes = model.memory_bytes(1, writes=100_000)
    aura_bytes = build_model('aura', CARD).memory_bytes(1)
    assert kv_bytes == 25_600_000
    assert aura_bytes == 4224
    assert round(kv_bytes / aura_bytes) == 6061


def test_budget_schedules_realise_their_rate():
    p = torch.zeros(1000)
    writes = sum(float(RandomSchedule(0.1, seed=3)(p, p, t).mean()) for t in range(1))
    assert 0.07 < writes < 0.13
    periodic = PeriodicSchedule(0.125)
    assert sum(float(periodic(p[:1], p[:1], t)) for t in range(800)) == 100


def test_surprise_threshold_matched_to_a_rate():
    surprises = torch.rand(10_000)
    gate = SurpriseThreshold.matched_to_rate(surprises, 0.2)
    rate = float(gate(surprises, surprises, 0).mean())
    assert abs(rate - 0.2) < 0.01


def test_unknown_method_and_missing_rate_are_named():
    with pytest.raises(ValueError, match='unknown method'):
        build_model('lstm', SMALL)
    with pytest.raises(ValueError, match='random_budget needs'):
        build_model('random_budget', SMALL)


def test_gru_sequence_backward_is_nn_grus_to_rounding_and_keeps_its_weights():
    """The state-matched GRU trains through gru.gru_sequence (weight gradients in one product):
    outputs, carried state and every gradient equal nn.GRU's autograd (float64, so rounding
    is ~1e-16), with nn.GRU's own parameter names (older checkpoints load) and the state size
    of AURA's (W, b)."""
    torch.manual_seed(0)
    config = MemoryConfig(d_model=6, d_key=3, d_val=2, d_action=2, chunk=2)
    fused = build_model('gru', config).double()
    reference = build_model('gru', config).double()
    reference.load_state_dict(fused.state_dict())
    reference.sequence_backward = False
    assert fused.sequence_backward and fused.hidden == config.state_floats
    assert {'cell.weight_ih_l0', 'cell.weight_hh_l0', 'cell.bias_ih_l0',
            'cell.bias_hh_l0'} <= set(fused.state_dict())
    z = torch.randn(3, 11, config.d_model, dtype=torch.float64)
    h0 = torch.randn(3, fused.hidden, dtype=torch.float64)
    results = []
    for model in (fused, reference):
        zz, hh = z.clone().requires_grad_(), h0.clone().requires_grad_()
        out = model(zz, state={'h': hh})
        loss = (out['action'] ** 2).sum() + (out['state']['h'] * torch.arange(
            fused.hidden, dtype=torch.float64)).sum()
        loss.backward()
        results.append([out['action'], out['state']['h'], zz.grad, hh.grad,
                        *[p.grad for p in model.parameters()]])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert build_model('gru', MemoryConfig()).memory_bytes(1) == 4224


def test_gru_bfloat16_products_stay_within_bfloat16_rounding_of_float32():
    """`recurrent_dtype: bfloat16` (mixed precision) changes only the per-step recurrent
    products: outputs and every gradient stay within bfloat16's rounding (8 bits of mantissa,
    ~0.4%) of the float32 path, and they do differ from it, so the bfloat16 path is the one
    that ran. Weights and gradients stay float32."""
    torch.manual_seed(0)
    config = MemoryConfig(d_model=16, d_key=8, d_val=8, d_action=3, chunk=2)
    z = torch.randn(4, 40, config.d_model)
    results = []
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(1)
        model = build_model('gru', config)
        model.product_dtype = dtype
        out = model(z)
        (out['action'] ** 2).mean().backward()
        results.append([out['action'].detach(), *[p.grad for p in model.parameters()]])
    for exact, low in zip(*results, strict=True):
        assert low.dtype == torch.float32
        scale = exact.abs().max()
        assert (low - exact).abs().max() <= 0.02 * scale
    assert any(not torch.equal(a, b) for a, b in zip(*results, strict=True))


def test_training_config_sets_the_grus_product_dtype_and_names_a_bad_one():
    from aura_ros.memory.training import TrainingConfig, TrainingError, train
    config = MemoryConfig(d_model=8, d_key=4, d_val=4, d_action=2, chunk=2)
    model = build_model('gru', config)
    episodes = [(torch.randn(30, 8), torch.randn(30, 2, 2))]
    train(model, episodes, TrainingConfig(warmup_iters=1, gate_iters=0, carry_iters=0, batch=2,
                                          window=16, recurrent_dtype='bfloat16'))
    assert model.product_dtype == torch.bfloat16
    with pytest.raises(TrainingError, match='recurrent_dtype'):
        TrainingConfig(recurrent_dtype='float16')
