"""Alignment on the camera clock, checked against numbers computed by hand."""

import numpy as np
import pytest

from aura_ros.data import DataError
from aura_ros.data.align import (
    SampledCommands,
    TrajectoryCommands,
    align_episode,
    match_cameras,
    median_period,
    split_by_gap,
)


def test_sampled_commands_interpolate_linearly_and_last_sample_per_stamp_wins():
    cmd = SampledCommands(np.array([1.0, 0.0, 2.0, 2.0]), np.array([[10.0], [0.0], [5.0], [7.0]]))
    assert cmd.start == 0.0 and cmd.end == 2.0
    # 0 -> 10 over [0, 1], 10 -> 7 over [1, 2] (the later of the two samples at 2.0 wins)
    np.testing.assert_allclose(cmd.at(np.array([0.25, 1.5, 2.0]))[:, 0], [2.5, 8.5, 7.0])


def test_trajectory_commands_latest_started_trajectory_rules():
    # trajectory A starts at 0: points at 0 (0) and 1 (10); trajectory B starts at 0.5: points
    # at 0.5 (20) and 1.5 (40). At 0.25 A: 2.5. At 0.75 B: 20 + 0.25 * 20 = 25. At 2.0 B holds 40.
    cmd = TrajectoryCommands(starts=np.array([0.5, 0.0]),
                             times=[np.array([0.5, 1.5]), np.array([0.0, 1.0])],
                             positions=[np.array([[20.0], [40.0]]),
                                        np.array([[0.0], [10.0]])])
    assert cmd.start == 0.0 and cmd.end == 1.5
    np.testing.assert_allclose(cmd.at(np.array([0.25, 0.75, 2.0]))[:, 0], [2.5, 25.0, 40.0])


def test_align_rule_on_hand_computed_numbers():
    # frames every 0.1 s from 0.0 to 1.0; joints at 0.05, 0.15, ... value = 100 * stamp;
    # commands at 0.2 .. 0.9 with value = 10 * stamp (linear), chunk 2, period 0.1.
    frames = np.round(np.arange(11) * 0.1, 10)
    js = np.round(np.arange(10) * 0.1 + 0.05, 10)
    jv = np.stack([100 * js, -js], axis=1)
    cs = np.round(np.arange(2, 10) * 0.1, 10)
    cmd = SampledCommands(cs, np.stack([10 * cs], axis=1))
    out = align_episode([frames], js, jv, cmd, chunk=2, action_period_s=0.1,
                        joint_tolerance_s=0.06)
    # frame 0.0: no joint state yet; frames 0.1: joints 0.05 (age 0.05) ok but before commands;
    # kept: 0.2 .. 0.7 (0.7 + 0.2 = 0.9 = last command); 0.8, 0.9, 1.0: after the last command
    np.testing.assert_allclose(out.stamps, [0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert out.frame_rows[:, 0].tolist() == [2, 3, 4, 5, 6, 7]
    np.testing.assert_allclose(out.joints[:, 0], [15, 25, 35, 45, 55, 65], rtol=1e-6)
    np.testing.assert_allclose(out.joints[:, 1], [-0.15, -0.25, -0.35, -0.45, -0.55, -0.65],
                               rtol=1e-6)
    np.testing.assert_allclose(out.actions[:, :, 0], [[3, 4], [4, 5], [5, 6], [6, 7], [7, 8],
                                                      [8, 9]], rtol=1e-6)
    assert out.dropped == {'duplicate_stamp': 0, 'camera_unmatched': 0, 'no_joint_state': 1,
                           'stale_joints': 0, 'before_first_command': 1,
                           'after_last_command': 3}
    assert out.actions.dtype == np.float32 and out.joints.dtype == np.float32


def test_interpolation_between_commands_and_stale_joints():
    frames = np.array([1.0, 1.3, 2.0])
    js = np.array([0.95, 1.1])                # frame 2.0's latest joint state is 0.9 s old
    jv = np.array([[1.0], [2.0]])
    cmd = SampledCommands(np.array([0.0, 4.0]), np.array([[0.0], [8.0]]))   # 2 per second
    out = align_episode([frames], js, jv, cmd, chunk=3, action_period_s=0.25,
                        joint_tolerance_s=0.25)
    # frame 1.0: joints 1.0 (0.95); targets at 1.25, 1.5, 1.75 -> 2.5, 3.0, 3.5
    # frame 1.3: joints 2.0 (1.1, age 0.2); targets at 1.55, 1.8, 2.05 -> 3.1, 3.6, 4.1
    np.testing.assert_allclose(out.joints[:, 0], [1.0, 2.0])
    np.testing.assert_allclose(out.actions[:, :, 0], [[2.5, 3.0, 3.5], [3.1, 3.6, 4.1]],
                               rtol=1e-6)
    assert out.dropped['stale_joints'] == 1


def test_several_cameras_nearest_within_skew():
    a = np.array([0.0, 0.1, 0.2, 0.3])
    b = np.array([0.21, 0.012, 0.09, 0.5])     # unsorted on purpose; nothing near 0.3
    rows, unmatched = match_cameras([a, b], skew_s=0.02)
    assert rows.tolist() == [[0, 1], [1, 2], [2, 0]]
    assert unmatched == 1


def test_duplicate_and_unsorted_frames_are_ordered_and_counted():
    frames = np.array([0.2, 0.1, 0.1, 0.3])
    cmd = SampledCommands(np.array([0.0, 1.0]), np.array([[0.0], [1.0]]))
    out = align_episode([frames], np.array([0.0]), np.array([[7.0]]), cmd, chunk=1,
                        action_period_s=0.1, joint_tolerance_s=1.0)
    assert out.frame_rows[:, 0].tolist() == [1, 0, 3]
    assert out.dropped['duplicate_stamp'] == 1
    np.testing.assert_allclose(out.actions[:, 0, 0], [0.2, 0.3, 0.4], rtol=1e-6)


def test_episode_of_one_frame_and_of_none():
    cmd = SampledCommands(np.array([0.0, 1.0]), np.array([[0.0], [1.0]]))
    one = align_episode([np.array([0.5])], np.array([0.5]), np.array([[1.0]]), cmd, chunk=4,
                        action_period_s=0.1, joint_tolerance_s=0.0)
    assert len(one.stamps) == 1
    none = align_episode([np.array([0.9])], np.array([0.5]), np.array([[1.0]]), cmd, chunk=4,
                         action_period_s=0.1, joint_tolerance_s=1.0)
    assert len(none.stamps) == 0 and none.actions.shape == (0, 4, 1)
    assert none.joints.shape == (0, 1)


def test_split_by_gap_and_median_period():
    s = np.array([0.0, 0.1, 0.2, 1.0, 1.1, 5.0])
    assert split_by_gap(s, 0.5) == [(0, 3), (3, 5), (5, 6)]
    assert split_by_gap(s, None) == [(0, 6)]
    assert median_period([np.array([0.0, 0.1, 0.2, 0.4]), np.array([3.0, 3.1])]) == \
        pytest.approx(0.1)
    with pytest.raises(DataError, match='action_period_s'):
        median_period([np.array([1.0])])
