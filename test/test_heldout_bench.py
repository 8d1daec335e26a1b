"""bench/so101_heldout.py's frame kinds and its feature probe: what tells a user whether one
frame's features can tell a cue from a flash (docs/training.md, "Which frames a gate can tell
apart")."""

import sys
from pathlib import Path

import numpy as np
import torch

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
