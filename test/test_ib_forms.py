"""Do the two forms of the IB term agree? The decision that let one of them go.

The benchmarks used to score a write by an older form (`losses.write_utility` over a
`forward(counterfactual=True)`: the next `ib_horizon` contiguous steps, every step scored); the
shipped loop scores it by `objective.offset_utility` over chosen step offsets and the scored
steps. Before the old form was removed both were held to one definition, computed the slow way
from the layer's public per-step contract (`project`, `advance`, `write_vector`, `act`), and
agreed to float precision (max |du| 1.5e-7); the old form is that definition at offsets
1..ib_horizon, so the tests below keep pinning it through the definition:

    u_t = mean over valid offsets o of [ loss(a_{t+o} | state before t)
                                         - loss(a_{t+o} | state before t, then t written) ]

What is true: at offsets 1..ib_horizon with every step scored the old form is the shipped form
(same utilities, same skip losses, hence the same IB targets and the same loss); the shipped
form only adds longer offsets and a mask of scored steps, where the targets do differ.
"""

import pytest
import torch

from aura_ros.memory import AuraMemLayer, MemoryConfig, action_loss
from aura_ros.memory.batches import Batch
from aura_ros.memory.objective import gated_forward, objective, offset_utility
from aura_ros.memory.training import TrainingConfig

CONFIG = MemoryConfig(d_model=12, d_key=6, d_val=5, d_action=3, chunk=2, head_hidden=16,
                      gate_init_bias=0.0)
T = 30
IB_HORIZON = 4                     # the old form's default contiguous horizon


def reference_utility(layer: AuraMemLayer, z, target, offsets, mask=None):
    """u [B, T] and the skip loss [B, T] by the definition, one step and one offset at a time."""
    B = z.shape[0]
    proj = layer.project(z)
    state, before = layer.init_state(B), []
    for t in range(T):
        before.append(state)
        state, *_, e = layer.advance(state, {k: v[:, t] for k, v in proj.items()}, t)
        before[-1] = (before[-1], layer.write_vector(e, proj['v'][:, t]))
    utility, skip = torch.zeros(B, T), torch.zeros(B, T)
    for t in range(T):
        (s, u), proj_t = before[t], {k: v[:, t] for k, v in proj.items()}
        written = dict(zip(('W', 'b'), layer.written(s['W'], s['b'], proj_t['beta'], u,
                                                     proj_t['k'], proj_t), strict=True))
        gains, skips, count = 0.0, 0.0, torch.zeros(B)
        for o in offsets:
            f = t + o
            if f >= T:
                continue
            q, head_x = proj['q'][:, f], proj['head_x'][:, f]
            valid = torch.ones(B) if mask is None else mask[:, f].float()
            losses = [action_loss(layer.act(head_x, torch.einsum('bvk,bk->bv', m['W'], q)
                                            + m['b'])[:, None], target[:, f:f + 1])[:, 0]
                      for m in (s, written)]
            gains = gains + (losses[0] - losses[1]) * valid
            skips = skips + losses[0] * valid
            count = count + valid
        utility[:, t] = gains / count.clamp(min=1)
        skip[:, t] = skips / count.clamp(min=1)
    return utility, skip


@pytest.fixture(scope='module')
def case():
    torch.manual_seed(3)
    layer = AuraMemLayer(CONFIG)
    z = torch.randn(3, T, CONFIG.d_model)
    target = torch.randn(3, T, CONFIG.chunk, CONFIG.d_action)
    return layer, z, target


def test_old_horizon_form_is_the_shipped_form_at_offsets_one_to_horizon(case):
    layer, z, target = case
    horizon = tuple(range(1, IB_HORIZON + 1))
    with torch.no_grad():
        ref_u, ref_skip = reference_utility(layer, z, target, horizon)
        u, skip = offset_utility(layer, gated_forward(layer, z), target, horizon)
    torch.testing.assert_close(u, ref_u, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(skip, ref_skip, atol=1e-5, rtol=1e-4)


def test_same_targets_and_same_loss_at_the_old_horizon(case):
    """The shipped objective at offsets 1..H, every step scored, is the old objective's total:
    action + w_ib * BCE(p, 1[u > margin * skip]) + w_sparse * mean p (margin 0 here: on an
    untrained layer few writes beat a positive margin)."""
    layer, z, target = case
    horizon = tuple(range(1, IB_HORIZON + 1))
    config = TrainingConfig(offsets=horizon, margin=0.0, w_ib=1.0, w_sparse=0.1)
    ones = torch.ones(z.shape[:2], dtype=torch.bool)
    out = gated_forward(layer, z)
    loss, record = objective(layer, out, Batch(z, target, ones, ones), config, gated=True)
    with torch.no_grad():
        ref_u, ref_skip = reference_utility(layer, z, target, horizon)
    wanted = (ref_u > 0.0).float()
    p = out['p'].clamp(1e-6, 1 - 1e-6)
    ib = torch.nn.functional.binary_cross_entropy(p, wanted)
    old_total = action_loss(out['action'], target).mean() + ib + 0.1 * out['p'].mean()
    assert 0 < wanted.mean() < 1                       # both kinds of target occur
    assert record['ib'] == pytest.approx(float(ib.detach()), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(float(old_total.detach()), rel=1e-5)


def test_the_forms_differ_only_by_longer_offsets_and_the_scored_mask(case):
    """Past the old horizon (a cue that matters later) and with unscored steps the shipped
    targets are the definition's, which the old form could not express: they differ from it."""
    layer, z, target = case
    horizon = tuple(range(1, IB_HORIZON + 1))
    longer = (1, 2, 3, 4, 6, 8, 12, 16, 24)
    mask = torch.zeros(z.shape[:2], dtype=torch.bool)
    mask[:, 20:] = True
    with torch.no_grad():
        out = gated_forward(layer, z)
        old_u, old_skip = offset_utility(layer, out, target, horizon)
        for offsets, m in ((longer, None), (horizon, mask)):
            u, skip = offset_utility(layer, out, target, offsets, m)
            ref_u, ref_skip = reference_utility(layer, z, target, offsets, m)
            torch.testing.assert_close(u, ref_u, atol=1e-5, rtol=1e-4)
            old_wants = old_u > 0
            assert (old_wants != (u > 0)).any()



@pytest.mark.parametrize('reduce', ['mean', 'best'])
def test_offsets_past_the_window_change_nothing(case, reduce):
    """They are skipped (most of the IB's cost on windows shorter than the longest offset)."""
    layer, z, target = case
    mask = torch.rand(z.shape[:2], generator=torch.Generator().manual_seed(1)) < 0.6
    every = TrainingConfig().offsets
    with torch.no_grad():
        out = gated_forward(layer, z)
        full = offset_utility(layer, out, target, every, mask, 'mse', reduce, 0.1)
        inside = offset_utility(layer, out, target, [o for o in every if o < T], mask, 'mse',
                                reduce, 0.1)
        nothing = offset_utility(layer, out, target, (T, 2 * T), mask, 'mse', reduce, 0.1)
    for a, b in zip(full, inside, strict=True):
        assert torch.equal(a, b)
    assert not nothing[0].any() and not nothing[1].any()


def test_a_decaying_write_is_scored_with_its_fade():
    """With `write_decay` a write at t also scales the state before it by 1 - beta gamma: the
    shipped utility counts that, as the definition does (one step at a time through `written`)."""
    torch.manual_seed(4)
    layer = AuraMemLayer(CONFIG.replace(write_decay=True))
    with torch.no_grad():
        layer.to_decay.bias.fill_(0.5)                 # a fade that matters (gamma ~ 0.6)
    z = torch.randn(3, T, CONFIG.d_model)
    target = torch.randn(3, T, CONFIG.chunk, CONFIG.d_action)
    offsets = (1, 2, 3, 6, 12)
    with torch.no_grad():
        ref_u, ref_skip = reference_utility(layer, z, target, offsets)
        u, skip = offset_utility(layer, gated_forward(layer, z), target, offsets)
        plain = AuraMemLayer(CONFIG)
        plain.load_state_dict(layer.state_dict(), strict=False)
        no_fade, _ = offset_utility(plain, gated_forward(plain, z), target, offsets)
    torch.testing.assert_close(u, ref_u, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(skip, ref_skip, atol=1e-5, rtol=1e-4)
    assert (u - no_fade).abs().max() > 1e-3            # the fade changes what a write is worth
