"""The stamping rule: points keep their meant times, only those still ahead are published."""

import numpy as np
import pytest

pytest.importorskip('trajectory_msgs', reason='ROS messages not installed (pip install .[ros])')

from aura_ros.ros.trajectory import (  # noqa: E402
    NS,
    answers,
    group_trajectories,
    plan,
    time_ns,
)

PERIOD = 1 / 30


def absolute_times(msg):
    start = time_ns(msg.header.stamp)
    return [start + p.time_from_start.sec * NS + p.time_from_start.nanosec for p in msg.points]


def test_points_keep_the_times_the_model_meant():
    obs = 1_795_579_189_196_139_984              # a real stamp: beyond float64's exact integers
    timing = plan(obs, obs + int(0.010 * NS), PERIOD, 4, min_lead_s=0.005)
    assert timing.first_point == 0 and len(timing.offsets_ns) == 4
    targets = {'arm': np.arange(12, dtype=np.float32).reshape(4, 3),
               'gripper': np.ones((4, 1), np.float32)}
    msgs = group_trajectories(targets, {'arm': ['a', 'b', 'c'], 'gripper': ['g']}, timing, 'base')
    assert set(msgs) == {'arm', 'gripper'}
    assert msgs['arm'].joint_names == ['a', 'b', 'c'] and msgs['gripper'].joint_names == ['g']
    assert time_ns(msgs['arm'].header.stamp) == obs + int(0.010 * NS)
    assert msgs['arm'].header.frame_id == 'base'
    want = [obs + round((i + 1) * PERIOD * NS) for i in range(4)]
    assert absolute_times(msgs['arm']) == want == absolute_times(msgs['gripper'])
    assert [list(p.positions) for p in msgs['arm'].points] == targets['arm'].tolist()


def test_points_already_past_or_too_close_are_dropped():
    obs = 5 * NS
    latency = int(0.050 * NS)                  # later than point 0 (33 ms) and close to point 1
    timing = plan(obs, obs + latency, PERIOD, 4, min_lead_s=0.020)
    assert timing.first_point == 2 and timing.dropped == 2
    assert all(dt >= 0.020 * NS for dt in timing.offsets_ns)
    targets = {'action_chunk': np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)}
    (msg,) = group_trajectories(targets, {'action_chunk': ['j']}, timing).values()
    assert [p.positions[0] for p in msg.points] == [2.0, 3.0]
    assert absolute_times(msg) == [obs + round(3 * PERIOD * NS), obs + round(4 * PERIOD * NS)]


def test_a_chunk_entirely_in_the_past_gives_no_message():
    timing = plan(0, 2 * NS, PERIOD, 4, min_lead_s=0.0)
    assert timing.first_point == 4 and timing.offsets_ns == ()
    assert group_trajectories({'g': np.zeros((4, 1))}, {'g': ['j']}, timing) == {}


def test_a_chunk_tells_which_observation_it_answers():
    obs = 1_795_579_189_196_139_984
    timing = plan(obs, obs + int(0.05 * NS), PERIOD, 4, min_lead_s=0.0)   # point 0 left out
    (msg,) = group_trajectories({'g': np.zeros((4, 1))}, {'g': ['j']}, timing).values()
    assert answers(msg, obs, PERIOD) == 1
    assert answers(msg, obs + 1000, PERIOD) is None                  # another frame's stamp
    assert answers(msg, obs + round(PERIOD * NS), PERIOD) == 0       # shifted by a period
