"""bench/so101_heldout.py's frame kinds, its feature probe and its target by kind of frame: what
tells a user whether one frame's features can tell a cue from a flash (docs/training.md, "Which
frames a gate can tell apart") and whether the gate's target asks for a cue at all."""

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from aura_ros.memory import AuraMemLayer, MemoryConfig
from aura_ros.memory.episodes import FeatureEpisode
from aura_ros.memory.training import TrainingConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'bench'))

import so101_heldout as heldout  # noqa: E402


def test_flashes_and_cues_are_told_apart_by_the_worlds_own_field():
    assert heldout.sub_kind({'event': 'distractor', 'lamp': 'cue', 'colour': 'white'}) == \
        'lamp cue'
    assert heldout.sub_kind({'event': 'distractor', 'kind': 'target'}) == 'kind target'
    assert heldout.sub_kind({'event': 'distractor'}) is None
    assert heldout.sub_kind({'event': 'cue', 'goal': 1, 'colour': 'blue'}) == 'goal 1'
    stamps = np.arange(20) * 0.1
    events = [{'event': 'cue', 'goal': 1, 'stamp': 0.0},
              {'event': 'cue', 'goal': 2, 'stamp': 1.6},
              {'event': 'distractor', 'lamp': 'cue', 'stamp': 0.5},
              {'event': 'distractor', 'lamp': 'decoy', 'stamp': 1.2}]
    cue_lamp = heldout.cue_frames(stamps, events, 3, kinds=('distractor',), sub='lamp cue')
    assert np.flatnonzero(cue_lamp).tolist() == [5, 6, 7]
    both = heldout.cue_frames(stamps, events, 3, kinds=('distractor',))
    assert np.flatnonzero(both).tolist() == [5, 6, 7, 12, 13, 14]
    goal_2 = heldout.cue_frames(stamps, events, 3, sub='goal 2')
    assert np.flatnonzero(goal_2).tolist() == [16, 17, 18]


def _frames(n, shift, generator):
    """n frames of 8 features, half cues; the cues' first feature moved by `shift`."""
    z = torch.randn(n, 8, generator=generator)
    cue = torch.arange(n) % 2 == 0
    z[cue, 0] += shift
    return z, {'cue': cue, 'flash': ~cue}


def test_the_probe_finds_a_feature_that_tells_cues_apart_and_none_where_there_is_none():
    g = torch.Generator().manual_seed(0)
    apart = heldout.feature_probe(_frames(400, 6.0, g), _frames(400, 6.0, g), {'x': 'flash'})
    alike = heldout.feature_probe(_frames(400, 0.0, g), _frames(400, 0.0, g), {'x': 'flash'})
    assert apart['x'] > 0.99
    assert 0.35 < alike['x'] < 0.65
    # no flash frame held out: nothing to score, said so rather than guessed
    z, flags = _frames(10, 1.0, g)
    none = {'cue': flags['cue'], 'flash': torch.zeros(10, dtype=torch.bool)}
    assert heldout.feature_probe(_frames(40, 1.0, g), (z, none), {'x': 'flash'}) == {'x': None}


@pytest.mark.parametrize('utility, changes', [
    ('counterfactual', {}), ('gradient', {}), ('gradient', {'carry_utility_writes': 'gate'}),
    ('gradient', {'utility_loss': 'mixture'})])
def test_the_target_by_kind_of_frame_follows_the_runs_utility(utility, changes):
    """`ib_utility`: what a gate's IB target asks for per kind of frame, the margin's share only
    where there is a margin target (counterfactual), the budgets' shares either way; under the
    gate's own writes or by the mixture head's NLL when the run's TrainingConfig says so."""
    torch.manual_seed(0)
    config = MemoryConfig(d_model=8, d_key=4, d_val=4, d_action=2, chunk=1, head_hidden=8,
                          mixture=2)
    layer = AuraMemLayer(config)
    episodes = [FeatureEpisode(torch.randn(40, 8), torch.randn(40, 1, 2)) for _ in range(2)]
    flags = {'cue': [torch.arange(40) % 10 == 0 for _ in episodes]}
    tcfg = TrainingConfig(window=16, offsets=(1, 2, 4), utility=utility,
                          write_budget=(0.1, 0.1), **changes)
    result = heldout.ib_utility(layer, episodes, flags, tcfg, budgets=(0.1, 0.5))
    if changes:                        # another target than the run's default scores otherwise
        plain = heldout.ib_utility(layer, episodes, flags, replace(
            tcfg, carry_utility_writes='reference', utility_loss='action'), budgets=(0.1, 0.5))
        assert result['other']['mean_utility'] != plain['other']['mean_utility']
    assert result['cue']['frames'] == 8 and result['other']['frames'] == 72
    for kind in ('cue', 'other'):
        r = result[kind]
        assert isinstance(r['mean_utility'], float) and 0 <= r['positive_share'] <= 1
        assert (r['ib_target_share'] is None) == (utility == 'gradient')
        shares = r['budget_target_share']
        assert 0 <= shares['0.1'] <= shares['0.5'] <= 1
    assert 0 <= result['auc']['cue vs other'] <= 1


def test_the_error_by_goal_with_the_cue_frames_written_besides_the_gates_own():
    """`error_by_goal`: each goal's frames scored apart; with cue flags the shut gate's memory
    gets exactly those writes (no flags: the gate's own error), so the error moves."""
    torch.manual_seed(0)
    config = MemoryConfig(d_model=8, d_key=4, d_val=4, d_action=2, chunk=1, head_hidden=8)
    layer = AuraMemLayer(config)
    with torch.no_grad():
        layer.gate_out.bias.fill_(-30.0)               # the gate never writes
    episodes = [FeatureEpisode(torch.randn(30, 8), torch.randn(30, 1, 2)) for _ in range(2)]
    steps = torch.arange(30)
    go_by_goal = {0: [steps >= 20, steps >= 25], 1: [(steps >= 10) & (steps < 20)] * 2}
    own = heldout.error_by_goal(layer, episodes, go_by_goal, chained=False)
    none = heldout.error_by_goal(layer, episodes, go_by_goal, False, [steps < 0] * 2)
    cues = heldout.error_by_goal(layer, episodes, go_by_goal, False, [steps % 7 == 0] * 2)
    for goal in go_by_goal:
        assert own[goal]['writes_per_episode'] == none[goal]['writes_per_episode'] == 0
        assert none[goal]['action_error'] == pytest.approx(own[goal]['action_error'])
        assert cues[goal]['writes_per_episode'] == 5
        assert cues[goal]['action_error'] != pytest.approx(own[goal]['action_error'])
    assert own[0]['action_error'] != pytest.approx(own[1]['action_error'])
