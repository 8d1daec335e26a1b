"""The memory training API on a task whose cue is shown long before it matters.

Each episode shows one of K cue classes on a few early steps; 50+ steps later a GO signal asks for
the action that the cue named. Only the GO steps are scored (mask). A 4-step IB horizon would
score every cue write as useless; the API's long offsets must keep the gate writing on cues.
"""

import copy
import warnings

import numpy as np
import pytest
import torch

from aura_ros.memory import AlwaysWrite, MemoryConfig, action_loss, build_model
from aura_ros.memory.training import (
    FeatureEpisode,
    GateCollapseWarning,
    TrainingConfig,
    TrainingError,
    evaluate,
    select_threshold,
    train,
)

K, D, T = 4, 16, 72


def cue_episodes(n: int, seed: int, classes: bool = False) -> list[FeatureEpisode]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        z = rng.normal(0.0, 0.1, (T, D)).astype(np.float32)
        cue, at, go = int(rng.integers(K)), int(rng.integers(0, 6)), int(rng.integers(56, 64))
        z[at:at + 2, cue] += 3.0              # the cue, two steps
        z[go:, K] += 3.0                      # GO from here on
        mask = np.zeros(T, bool)
        mask[go:] = True
        if classes:
            targets = np.full(T, 0, np.int64)
            targets[go:] = cue
        else:
            targets = np.zeros((T, 1, K), np.float32)
            targets[go:, 0, cue] = 1.0
        out.append(FeatureEpisode(z, targets, mask, name=f'cue{i}'))
    return out


def config_for(loss='mse') -> MemoryConfig:
    return MemoryConfig(d_model=D, d_key=8, d_val=8, d_action=K, chunk=1, head_hidden=32)


FAST = TrainingConfig(window=T, batch=16, warmup_iters=120, gate_iters=120, carry_iters=10,
                      lr=5e-3, start_at_episode_start=1.0)


@pytest.fixture(scope='module')
def data():
    torch.set_num_threads(1)
    return cue_episodes(256, 0), cue_episodes(24, 1)


@pytest.fixture(scope='module')
def warmed(data):
    torch.manual_seed(0)
    model = build_model('aura', config_for())
    history = train(model, data[0], FAST, phases=('warmup',))
    return model, history


@pytest.fixture(scope='module')
def trained(data, warmed):
    model, history = copy.deepcopy(warmed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        train(model, data[0], FAST, phases=('gate', 'carry'), history=history)
    return model, history, caught


def test_loss_terms_fall(trained):
    _, history, _ = trained
    warm = [r['action'] for r in history.phases['warmup']]
    assert np.mean(warm[-10:]) < 0.95 * np.mean(warm[:10])
    gate = history.phases['gate']
    assert {'action', 'ib', 'sparse', 'write_rate', 'total'} <= set(gate[0])
    for term in ('ib', 'sparse', 'total', 'action'):
        assert np.mean([r[term] for r in gate[-20:]]) < np.mean([r[term] for r in gate[:20]])
    assert len(history.phases['carry']) == FAST.carry_iters


def test_gate_keeps_writing_on_a_cue_long_before_it_matters(trained, data):
    model, history, caught = trained
    _, held_out = data
    assert not history.collapses and not [w for w in caught
                                          if issubclass(w.category, GateCollapseWarning)]
    aura = evaluate(model, held_out)
    assert 0 < aura['writes_per_episode'] < T / 2       # writes, and sparsely
    torch.manual_seed(0)
    none = build_model('no_memory', config_for())
    train(none, data[0], FAST)
    floor = evaluate(none, held_out)
    assert aura['action_error'] < 0.8 * floor['action_error']   # the memory is used
    assert floor['writes_per_episode'] == 0


def test_a_short_ib_horizon_closes_the_gate_and_the_guard_says_so(warmed, data):
    """The trap the long offsets avoid: scored 1-4 steps ahead, a cue write looks useless."""
    model, history = copy.deepcopy(warmed)
    short = TrainingConfig(**{**FAST.to_dict(), 'offsets': (1, 2, 3, 4)})
    with pytest.warns(GateCollapseWarning, match='offsets reach.*now up to 4'):
        train(model, data[0], short, phases=('gate',), history=history)
    assert history.collapses[0]['kind'] == 'closed'
    assert evaluate(model, data[1])['writes_per_episode'] < 0.1


def test_select_threshold_picks_fewest_writes_within_tolerance(trained, data):
    model, _, _ = trained
    threshold, table = select_threshold(model, data[1], thresholds=(0.2, 0.5, 0.8),
                                        tolerance=0.1, apply=False)
    best = min(r['action_error'] for r in table)
    chosen = next(r for r in table if r['threshold'] == threshold)
    assert chosen['action_error'] <= best * 1.1 + 1e-12
    assert all(r['writes_per_episode'] >= chosen['writes_per_episode'] for r in table
               if r['action_error'] <= best * 1.1)
    assert model.gate_policy.threshold == FAST.threshold       # apply=False leaves it
    select_threshold(model, data[1], thresholds=(threshold,))
    assert model.gate_policy.threshold == threshold == model.config.gate_threshold


def test_mask_decides_which_steps_count(data):
    """Unscored steps carry junk targets: with the mask they are ignored, without it learnt."""
    junk = [FeatureEpisode(ep.features, torch.where(ep.mask[:, None, None], ep.targets,
                                                    torch.full_like(ep.targets, 5.0)), ep.mask)
            for ep in data[0][:32]]
    cfg = TrainingConfig(window=T, batch=8, warmup_iters=40, gate_iters=0, carry_iters=0,
                         lr=5e-3)
    masked = build_model('no_memory', config_for())
    unmasked = build_model('no_memory', config_for())
    train(masked, junk, cfg)
    train(unmasked, [FeatureEpisode(e.features, e.targets) for e in junk], cfg)
    probe = [FeatureEpisode(e.features, e.targets, ~e.mask) for e in junk[:8]]
    assert evaluate(masked, probe)['action_error'] > 2 * evaluate(unmasked, probe)['action_error']


@pytest.mark.parametrize('method', ['always_write', 'gru', 'kv_cache', 'no_memory',
                                    'random_budget', 'periodic_budget'])
def test_every_baseline_through_the_same_call(method, data):
    cfg = TrainingConfig(window=32, batch=4, warmup_iters=3, gate_iters=3, carry_iters=3)
    model = build_model(method, config_for(), rate=0.2)
    history = train(model, data[0][:8], cfg)
    assert [len(history.phases[p]) for p in ('warmup', 'gate', 'carry')] == [3, 3, 3]
    assert 'ib' not in history.phases['gate'][0]     # no learned gate: action loss only
    result = evaluate(model, data[1][:4])
    assert np.isfinite(result['action_error'])


def test_class_targets_with_the_ce_loss():
    eps = cue_episodes(8, 3, classes=True)
    cfg = TrainingConfig(window=T, batch=4, warmup_iters=2, gate_iters=2, carry_iters=2,
                         loss='ce')
    model = build_model('aura', config_for())
    history = train(model, eps, cfg)
    assert 'ib' in history.phases['gate'][0]
    assert 0.0 <= evaluate(model, eps, loss='ce')['accuracy'] <= 1.0


def test_wrong_targets_are_named(data):
    model = build_model('aura', config_for())
    classes = cue_episodes(2, 3, classes=True)
    with pytest.raises(TrainingError, match="class indices.*'mse'.*loss='ce'"):
        train(model, classes, TrainingConfig())
    with pytest.raises(TrainingError, match=r'targets have shape \[72, 2, 4\].*\[72, 1, 4\]'):
        train(model, [(torch.zeros(T, D), torch.zeros(T, 2, K))], TrainingConfig())
    with pytest.raises(TrainingError, match="'ce' loss needs \\[T\\] integer"):
        train(model, data[0][:2], TrainingConfig(loss='ce'))
    with pytest.raises(TrainingError, match='features are 8 wide.*d_model = 16'):
        train(model, [(torch.zeros(T, 8), torch.zeros(T, 1, K))], TrainingConfig())
    with pytest.raises(TrainingError, match=r'mask must be \[T\]'):
        FeatureEpisode(torch.zeros(T, D), torch.zeros(T, 1, K), torch.ones(3, dtype=torch.bool))
    with pytest.raises(TrainingError, match='TrainingConfig.offsets'):
        TrainingConfig(offsets=(0, 4))
    with pytest.raises(TrainingError, match="loss must be 'mse' or 'ce'"):
        TrainingConfig(loss='l1')


def test_forced_gate_collapse_warns_and_is_recorded(data):
    model = build_model('aura', config_for())
    cfg = TrainingConfig(window=32, batch=4, warmup_iters=0, gate_iters=12, carry_iters=0,
                         w_sparse=1000.0, w_ib=0.0, lr=0.05, collapse_patience=3)
    with torch.no_grad():
        model.gate_out.bias.fill_(-30.0)      # starts shut: p ~ 1e-13
    with pytest.warns(GateCollapseWarning, match=r'closed.*lower w_sparse \(now 1000.0\)'):
        history = train(model, data[0][:8], cfg)
    assert history.collapses[0]['kind'] == 'closed'
    assert history.collapses[0]['phase'] == 'gate'


def test_bootstrap_interval_brackets_the_mean_and_weights_blocks_by_steps():
    from aura_ros.memory.training import bootstrap_interval

    same = bootstrap_interval([2.0, 4.0, 6.0], [1, 2, 3])          # every block's mean is 2
    assert same == pytest.approx([2.0, 2.0])
    sums, counts = [1.0, 9.0, 2.0, 8.0, 5.0], [1, 3, 1, 2, 1]       # block means 1, 3, 2, 4, 5
    low, high = bootstrap_interval(sums, counts)
    assert 1.0 <= low < sum(sums) / sum(counts) < high <= 5.0
    assert all(np.isnan(bootstrap_interval([], [])))


def test_ib_best_offset_wants_every_write_the_mean_wants_and_more(data):
    """'best' asks: does the write beat the margin at SOME offset; 'mean': on average. Every
    step the mean calls useful, the best offset does too; a cue that serves one offset of many
    is only seen by 'best' (here every step is scored, so most offsets of a cue land before GO,
    where the memory does not matter)."""
    from aura_ros.memory.batches import Windows
    from aura_ros.memory.objective import gated_forward, offset_utility

    torch.manual_seed(0)
    model = build_model('aura', config_for())
    train(model, data[0], TrainingConfig(**{**FAST.to_dict(), 'gate_iters': 0,
                                            'carry_iters': 0}))
    batch = Windows(data[1], T, 1.0, 0).sample(8)
    with torch.no_grad():
        out = gated_forward(model, batch.z)
    offsets, margin = (1, 2, 4, 8, 16, 32, 48, 60), 0.2
    wanted = {}
    for reduce in ('mean', 'best'):
        u, skip = offset_utility(model, out, batch.target, offsets, None, 'mse', reduce, margin)
        wanted[reduce] = u > margin * skip.clamp(min=1e-6)
    assert not (wanted['mean'] & ~wanted['best']).any()
    assert (wanted['best'] & ~wanted['mean']).any()
    with pytest.raises(TrainingError, match='ib_reduce'):
        TrainingConfig(ib_reduce='max')


def hinted(episodes: list[FeatureEpisode]) -> list[FeatureEpisode]:
    """The same episodes with their cue steps marked as the frames worth remembering."""
    return [FeatureEpisode(ep.features, ep.targets, ep.mask, name=ep.name,
                           hint=(ep.features[:, :K] > 1.5).any(-1)) for ep in episodes]


def test_a_hinted_gate_learns_the_hint_frames_and_its_writes_are_used(data):
    """gate_target 'hint': warm-up writes on the hints, the gate learns them, the carried phase
    trains the rest under the gate's own writes and leaves the gate as it was taught."""
    train_eps, held_out = hinted(data[0]), hinted(data[1])
    config = TrainingConfig(**{**FAST.to_dict(), 'gate_target': 'hint', 'gate_iters': 500,
                               'carry_iters': 20})
    torch.manual_seed(0)
    model = build_model('aura', config_for())
    history = train(model, train_eps, config, phases=('warmup', 'gate'))
    gate = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith('gate_')}
    train(model, train_eps, config, phases=('carry',), history=history)
    assert all(torch.equal(p, gate[n]) for n, p in model.named_parameters() if n in gate)
    fits = [r['hint'] for r in history.phases['gate']]
    assert np.mean(fits[-10:]) < 0.5 * np.mean(fits[:10])
    assert not history.collapses
    with torch.no_grad():
        g = torch.stack([model(ep.features[None])['g'][0] > 0 for ep in held_out])
    hint = torch.stack([ep.hint for ep in held_out])
    assert (g & hint).sum() >= 0.9 * hint.sum()           # writes the cue steps
    assert (g & ~hint).sum() <= 0.5 * hint.sum()          # and little else
    torch.manual_seed(0)
    none = build_model('no_memory', config_for())
    train(none, data[0], FAST)
    assert evaluate(model, held_out)['action_error'] < \
        0.8 * evaluate(none, held_out)['action_error']


def test_hint_target_without_hints_and_bad_hints_are_named(data):
    model = build_model('aura', config_for())
    with pytest.raises(TrainingError, match="gate_target 'hint' needs episodes with hint"):
        train(model, data[0][:4], TrainingConfig(gate_target='hint', warmup_iters=1))
    with pytest.raises(TrainingError, match='hint must be'):
        FeatureEpisode(data[0][0].features, data[0][0].targets, hint=np.ones(3, bool))
    with pytest.raises(TrainingError, match="gate_target must be 'ib' or 'hint'"):
        TrainingConfig(gate_target='labels')


def test_non_finite_losses_skip_the_update_and_many_stop_the_phase(data, monkeypatch):
    """A batch whose loss is NaN (a carried state that overflowed) makes no step, so the weights
    stay finite; a phase where that keeps happening stops with an error naming it."""
    from aura_ros.memory import training as tr

    train_eps, _ = data
    real = tr.objective
    calls = {'n': 0}

    def every_third_nan(*args, **kwargs):
        loss, rec = real(*args, **kwargs)
        calls['n'] += 1
        return (loss * float('nan'), rec) if calls['n'] % 3 == 0 else (loss, rec)

    monkeypatch.setattr(tr, 'objective', every_third_nan)
    model = build_model('always_write', config_for())
    few = TrainingConfig(window=T, batch=8, warmup_iters=12, gate_iters=0, carry_iters=12)
    with pytest.warns(UserWarning, match='always_write: 4 of 12 warmup updates skipped'):
        train(model, train_eps, few, phases=('warmup',), name='always_write')
    assert all(torch.isfinite(p).all() for p in model.parameters())

    monkeypatch.setattr(tr, 'objective', lambda *a, **k: (real(*a, **k)[0] * float('nan'),
                                                          real(*a, **k)[1]))
    with pytest.raises(TrainingError, match='the carry phase diverged.*lower carry_lr'):
        train(model, train_eps, few, phases=('carry',), name='always_write')
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_gate_phase_writes_with_the_gate(data):
    """A shut gate (p ~ 0): the gate phase's action loss is the empty memory's, the logged write
    rate 0, whatever the warm-up's rate (here 1: every step)."""
    episode = data[0][0]
    model = build_model('aura', config_for())
    with torch.no_grad():
        model.gate_out.bias.fill_(-30.0)
    cfg = TrainingConfig(window=T, batch=2, warmup_iters=0, gate_iters=1, carry_iters=0,
                         lr=0.0, start_at_episode_start=1.0, warmup_write_rate=1.0,
                         utility='gradient', write_budget=(0.05, 0.05))
    record = train(model, [episode], cfg).last('gate')
    with torch.no_grad():
        action = model(episode.features[None])['action']
        written = model(episode.features[None], gate=AlwaysWrite())['action']
        target = episode.targets[None]
        expected = action_loss(action, target)[0][episode.mask].mean()
        always = action_loss(written, target)[0][episode.mask].mean()
    assert record['action'] == pytest.approx(float(expected), rel=1e-5)
    assert record['action'] != pytest.approx(float(always), rel=1e-3)
    assert record['write_rate'] == 0.0
