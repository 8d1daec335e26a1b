"""FrameMatcher: sets of one frame per camera within the skew, in time order, losses counted."""

import pytest

from aura_ros.runtime.frame_sync import FrameMatcher


def stamps(result):
    return None if result is None else {c: f.stamp for c, f in result.items()}


def test_one_camera_passes_every_frame_through():
    m = FrameMatcher(['image'], 0.01)
    assert stamps(m.add('image', 1.0, 'a')) == {'image': 1.0}
    assert m.add('image', 1.1, 'b')['image'].item == 'b'
    assert m.matched == 2 and not m.unmatched


def test_two_cameras_match_within_the_skew_and_each_frame_is_used_once():
    m = FrameMatcher(['left', 'right'], 0.015)
    assert m.add('left', 0.000, 'L0') is None                 # right has nothing yet
    assert stamps(m.add('right', 0.010, 'R0')) == {'left': 0.0, 'right': 0.010}
    assert m.add('left', 0.033, 'L1') is None                 # R0 was used
    assert stamps(m.add('right', 0.043, 'R1')) == {'left': 0.033, 'right': 0.043}
    assert m.matched == 2 and not m.unmatched and m.pending() == {'left': 0, 'right': 0}


def test_frames_too_far_apart_never_make_a_set_and_are_counted():
    m = FrameMatcher(['left', 'right'], 0.005, depth=2)
    for i in range(5):                                         # right lags 20 ms: never matches
        assert m.add('left', i * 0.033, i) is None
        assert m.add('right', i * 0.033 + 0.020, i) is None
    assert m.matched == 0
    assert m.unmatched == {'left': 3, 'right': 3}              # evicted beyond depth 2
    assert m.pending() == {'left': 2, 'right': 2}


def test_a_completed_set_drops_older_frames_of_every_camera_as_unmatched():
    m = FrameMatcher(['a', 'b'], 0.01)
    m.add('a', 0.0, None)
    m.add('a', 0.1, None)
    m.add('a', 0.2, None)
    assert stamps(m.add('b', 0.205, None)) == {'a': 0.2, 'b': 0.205}
    assert m.unmatched == {'a': 2}


def test_a_stalled_camera_counts_the_other_ones_frames():
    m = FrameMatcher(['a', 'b', 'c'], 0.01, depth=3)
    for i in range(10):
        m.add('a', i * 0.033, None)
        m.add('b', i * 0.033 + 0.001, None)
    assert m.matched == 0 and m.unmatched == {'a': 7, 'b': 7}
    assert stamps(m.add('c', 9 * 0.033 + 0.002, None)) is not None   # c comes back: a set


def test_repeated_or_out_of_order_stamps_are_counted_not_used():
    m = FrameMatcher(['a', 'b'], 0.01)
    m.add('a', 1.0, None)
    assert m.add('a', 1.0, None) is None
    assert m.add('a', 0.5, None) is None          # goes back: 1.0 is dropped, 0.5 waits
    assert m.unmatched == {'a': 2} and m.pending() == {'a': 1, 'b': 0}


@pytest.mark.parametrize('first', [3600.0, 1.5])   # an hour ahead; a camera that restarts
def test_a_camera_whose_stamps_go_back_starts_over_and_matches_again(first):
    """Issue 23 row 4: one frame stamped later than every later one blinded the matcher."""
    m = FrameMatcher(['a', 'b'], 0.01)
    m.add('a', first, 'bad')
    for i in range(5):
        t = 1.0 + i * 0.033
        m.add('a', t, i)
        got = m.add('b', t + 0.001, i)
        assert got is not None and got['a'].item == i
    assert m.matched == 5 and m.restarts == {'a': 1} and m.unmatched == {'a': 1}


def test_bad_arguments():
    with pytest.raises(ValueError, match='distinct'):
        FrameMatcher(['a', 'a'], 0.01)
    with pytest.raises(ValueError, match='max_skew_s'):
        FrameMatcher(['a'], -1)
    with pytest.raises(KeyError, match='unknown camera'):
        FrameMatcher(['a'], 0.01).add('b', 0.0, None)
