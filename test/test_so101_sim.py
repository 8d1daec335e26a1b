"""The SO-101 simulator node: joint_trajectory_controller semantics, over real DDS."""

import json
import time

import numpy as np
import pytest

pytest.importorskip('aura_ros.tasks.so101')
from aura_ros.ros.joint_trajectory import TrajectoryError, TrajectoryFollower  # noqa: E402

TIMEOUT = 30.0
NAMES = ('a', 'b', 'c')


# -- the follower, on its own --------------------------------------------------------------


def test_follower_interpolates_and_holds_the_last_point():
    f = TrajectoryFollower(NAMES, [0.0, 1.0, 2.0], now=0.0)
    f.set_trajectory(['a'], [1.0, 2.0], [[1.0], [3.0]], now=0.0)
    assert f.sample(0.5)[0] == pytest.approx(0.5)       # from the target at receipt
    assert f.sample(1.5)[0] == pytest.approx(2.0)
    assert f.sample(9.0)[0] == pytest.approx(3.0)
    assert list(f.sample(1.5)[1:]) == [1.0, 2.0]        # unnamed joints keep their targets


def test_follower_drops_past_points_and_rejects_all_past():
    f = TrajectoryFollower(NAMES, [0.0, 0.0, 0.0], now=10.0)
    kept = f.set_trajectory(['a', 'b'], [9.0, 11.0], [[5.0, 5.0], [1.0, 2.0]], now=10.0)
    assert kept == 1
    assert f.sample(10.5)[:2] == pytest.approx([0.5, 1.0])   # 5.0 at 9 s never happens
    with pytest.raises(TrajectoryError) as err:
        f.set_trajectory(['a'], [8.0, 9.0], [[7.0], [7.0]], now=10.0)
    assert err.value.reason == 'late'
    assert f.sample(11.0)[0] == pytest.approx(1.0)            # nothing changed


def test_a_new_trajectory_replaces_the_old_from_its_first_point():
    f = TrajectoryFollower(NAMES, [0.0, 0.0, 0.0], now=0.0)
    f.set_trajectory(['a'], [1.0, 2.0], [[1.0], [2.0]], now=0.0)
    f.set_trajectory(['a'], [1.5, 2.5], [[-1.0], [-2.0]], now=0.5)
    assert f.sample(0.75)[0] == pytest.approx(0.75)    # the old plan runs until 1.5 s ...
    assert f.sample(1.0)[0] == pytest.approx(1.0)
    assert f.sample(1.25)[0] == pytest.approx(0.0)     # ... heading for the new first point
    assert f.sample(2.0)[0] == pytest.approx(-1.5)
    assert f.sample(3.0)[0] == pytest.approx(-2.0)
    f.prune(2.2)
    assert f.sample(3.0)[0] == pytest.approx(-2.0) and len(f.plans[0].times) == 2


@pytest.mark.parametrize('names, times, positions, reason', [
    (['a', 'z'], [1.0], [[0.0, 0.0]], 'joints'),
    (['a', 'a'], [1.0], [[0.0, 0.0]], 'joints'),
    (['a', 'b'], [1.0], [[0.0]], 'positions'),
    (['a'], [1.0], [[float('nan')]], 'nonfinite'),
    (['a'], [2.0, 1.0], [[0.0], [1.0]], 'times'),
])
def test_malformed_trajectories_are_rejected(names, times, positions, reason):
    f = TrajectoryFollower(NAMES, [0.0, 0.0, 0.0], now=0.0)
    with pytest.raises(TrajectoryError) as err:
        f.set_trajectory(names, times, positions, now=0.0)
    assert err.value.reason == reason


# -- the node, over DDS ---------------------------------------------------------------------


@pytest.fixture
def make_sim(make_node):
    from rclpy.parameter import Parameter

    from aura_ros.ros.so101.sim import So101SimNode

    def make(**overrides):
        params = dict(lockstep=True, lockstep_timeout_s=0.02, image_width=48, image_height=40,
                      trajectory_topics=['arm_controller/joint_trajectory',
                                         'gripper_controller/joint_trajectory'])
        params.update(overrides)
        return make_node('so101_sim', node_class=So101SimNode, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])

    return make


def _client(make_node):
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    node = make_node('so101_test_client')
    got = {'image': [], 'joints': [], 'events': []}
    node.create_subscription(Image, 'image', got['image'].append, 100)
    node.create_subscription(JointState, 'joint_states', got['joints'].append, 1000)
    node.create_subscription(String, 'task_events',
                             lambda m: got['events'].append(json.loads(m.data)), 100)
    pubs = {name: node.create_publisher(JointTrajectory, f'{name}_controller/joint_trajectory',
                                        10) for name in ('arm', 'gripper')}
    return node, got, pubs


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _trajectory(names, start, points):
    from builtin_interfaces.msg import Duration
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from aura_ros.ros.so101.sim import _seconds_msg

    msg = JointTrajectory(joint_names=list(names))
    if start:
        msg.header.stamp = _seconds_msg(start)
    for offset, positions in points:
        point = JointTrajectoryPoint(positions=list(positions))
        point.time_from_start = Duration(sec=int(offset), nanosec=int(round(offset % 1 * 1e9)))
        msg.points.append(point)
    return msg


def _position(got, joint: int, at: float) -> float:
    """Measured position of a joint in the last joint state stamped at or before `at`."""
    states = [m for m in got['joints'] if _stamp(m) <= at + 1e-6]
    return states[-1].position[joint]


def test_frames_joint_states_and_events(make_sim, make_node, executor, wait_for):
    sim = make_sim()
    _, got, _ = _client(make_node)
    wait_for(lambda: len(got['joints']) >= 25 and len(got['image']) >= 25, TIMEOUT, executor,
             '25 frames')
    image = got['image'][-1]
    assert (image.width, image.height, image.encoding, image.step) == (48, 40, 'rgb8', 144)
    assert len(image.data) == 48 * 40 * 3
    joints = got['joints'][-1]
    assert list(joints.name) == ['shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex',
                                 'wrist_roll', 'gripper']
    stamps = [_stamp(m) for m in got['joints']]
    assert np.allclose(np.diff(stamps), 1 / 30, atol=1e-6)     # one frame of sim time each
    assert {_stamp(m) for m in got['image']} <= set(stamps)
    kinds = [e['event'] for e in got['events']]
    if 'start' in kinds:                                         # unless it was missed
        assert kinds[0] == 'start'
    cue = next(e for e in got['events'] if e['event'] == 'cue')
    assert cue['frame'] == sim.config.rest_frames and cue['task'] == 0
    assert cue['stamp'] == pytest.approx(sim.base + cue['frame'] / 30, abs=1e-6)
    assert cue['colour'] == sim.config.pad_colours[cue['goal']]


def test_trajectories_interpolate_per_joint_on_two_topics(make_sim, make_node, executor,
                                                         wait_for):
    sim = make_sim()
    _, got, pubs = _client(make_node)
    wait_for(lambda: len(got['joints']) >= 3 and pubs['gripper'].get_subscription_count(),
             TIMEOUT, executor, 'joint states')
    home = np.array(got['joints'][-1].position)
    start = _stamp(got['joints'][-1]) + 0.2
    pubs['arm'].publish(_trajectory(['shoulder_pan'], start, [(0.3, [0.6]), (0.6, [0.6])]))
    pubs['gripper'].publish(_trajectory(['gripper'], start, [(0.3, [0.8])]))
    targets = {}                    # sim time -> commanded pan target, probed while it runs

    def probe():
        targets[sim.sim_time] = sim.follower.sample(sim.sim_time)[0]
        return _stamp(got['joints'][-1]) >= start + 1.0

    wait_for(probe, TIMEOUT, executor, 'a second of sim time')
    # the commanded pan target is a straight line up to the first point, then it holds
    ramp = sorted((t, v) for t, v in targets.items() if 0.01 < v < 0.59)
    assert len(ramp) >= 4 and all(t < start + 0.3 for t, _ in ramp)
    slopes = np.diff([v for _, v in ramp]) / np.diff([t for t, _ in ramp])
    assert np.allclose(slopes, slopes[0], rtol=1e-3)
    assert all(v == pytest.approx(0.6) for t, v in targets.items() if t >= start + 0.3)
    assert _position(got, 0, start + 0.9) == pytest.approx(0.6, abs=0.05)
    assert _position(got, 5, start + 0.9) == pytest.approx(0.8, abs=0.08)
    # the arm joints nobody named stayed where they were
    assert np.allclose(got['joints'][-1].position[1:5], home[1:5], atol=0.03)
    assert not sim.rejected


def test_past_points_dropped_late_rejected_new_replaces_old(make_sim, make_node, executor,
                                                            wait_for):
    sim = make_sim()
    _, got, pubs = _client(make_node)
    wait_for(lambda: len(got['joints']) >= 3 and pubs['arm'].get_subscription_count(),
             TIMEOUT, executor, 'joint states')
    now = _stamp(got['joints'][-1])
    # a stamp 1 s in the past: the point at +0.5 s is gone, the one at +1.8 s is executed
    pubs['arm'].publish(_trajectory(['shoulder_pan'], now - 1.0,
                                    [(0.5, [-0.9]), (1.8, [-0.3])]))
    # every point in the past: rejected, counted, nothing changes
    pubs['arm'].publish(_trajectory(['shoulder_pan'], now - 2.0, [(0.1, [1.0])]))
    wait_for(lambda: _stamp(got['joints'][-1]) >= now + 1.2, TIMEOUT, executor, 'the move')
    pans = [m.position[0] for m in got['joints'] if _stamp(m) > now]
    assert min(pans) > -0.36 and pans[-1] == pytest.approx(-0.3, abs=0.05)
    assert sim.rejected == {'late': 1}
    # replacement: a slow move to +0.5, then from t1 + 0.3 on a move to -0.2
    t1 = _stamp(got['joints'][-1]) + 0.1
    pubs['arm'].publish(_trajectory(['shoulder_pan'], t1, [(1.0, [0.5])]))
    wait_for(lambda: _stamp(got['joints'][-1]) >= t1 + 0.1, TIMEOUT, executor, 'the slow move')
    pubs['arm'].publish(_trajectory(['shoulder_pan'], t1 + 0.3, [(0.1, [-0.2])]))
    wait_for(lambda: _stamp(got['joints'][-1]) >= t1 + 1.5, TIMEOUT, executor, 'the new move')
    assert sim.follower.sample(t1 + 0.4)[0] == pytest.approx(-0.2)
    assert sim.follower.sample(t1 + 1.0)[0] == pytest.approx(-0.2)   # the old end is gone
    assert max(m.position[0] for m in got['joints'] if _stamp(m) > t1) < 0.3
    assert got['joints'][-1].position[0] == pytest.approx(-0.2, abs=0.05)


def test_bad_parameters_fail_at_start(rclpy_context):
    from rclpy.parameter import Parameter

    from aura_ros.ros.so101.sim import So101SimNode

    with pytest.raises(ValueError, match='trajectory_topics'):
        So101SimNode(context=rclpy_context,
                     parameter_overrides=[Parameter('trajectory_topics', value=[''])])
    with pytest.raises(ValueError, match='n_pads'):
        So101SimNode(context=rclpy_context, parameter_overrides=[Parameter('n_pads', value=9)])


def test_a_bad_parameter_exits_2_with_one_line():
    """The process, as `ros2 run` starts it: no traceback, the parameter named."""
    import subprocess
    import sys

    pytest.importorskip('rclpy', reason='rclpy not installed')
    proc = subprocess.run([sys.executable, '-m', 'aura_ros.ros.so101.sim', '--ros-args', '-p',
                           'frame_hz:=0.0'], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines() == [
        'so101_sim: parameters frame_hz and time_scale must be > 0'], proc.stdout


def test_real_time_driven_like_aura_node(make_sim, make_node, executor, wait_for):
    """aura_node's output, unchanged: on every image an absolute chunk stamped with the
    publisher's own clock (at or after publication), point i due (i + 1) action periods later."""
    sim = make_sim(lockstep=False, time_scale=1.0)
    node, got, pubs = _client(make_node)
    goal, period, answered = 0.4, 1 / 30, []

    def answer():
        if got['image'] and (not answered or answered[-1] is not got['image'][-1]):
            answered.append(got['image'][-1])
            q = got['joints'][-1].position[0] if got['joints'] else 0.0
            chunk = [q + np.clip(goal - q, -0.05 * (i + 1), 0.05 * (i + 1)) for i in range(4)]
            stamp = node.get_clock().now().nanoseconds * 1e-9
            pubs['arm'].publish(_trajectory(['shoulder_pan'], stamp, [
                ((i + 1) * period, [p]) for i, p in enumerate(chunk)]))
        return got['joints'] and abs(got['joints'][-1].position[0] - goal) < 0.03 \
            and len(answered) > 30

    wait_for(answer, TIMEOUT, executor, 'the arm to follow the chunks to the goal')
    assert sim.trajectories >= 20
    # a chunk that reached the simulator after its last point is refused as late; how many
    # depends on this machine's load, never another reason
    assert set(sim.rejected) <= {'late'}, sim.rejected


@pytest.mark.parametrize('params,after_s,again_s,signum', [
    ([], 0.0, None, 'SIGINT'),                           # right after the node was built
    ([], 1.0, None, 'SIGINT'),                           # real time, frames flowing
    ([], 1.0, 0.05, 'SIGINT'),                           # Ctrl-C twice (ros2 launch, then you)
    ([], 1.0, None, 'SIGTERM'),                          # ros2 launch's second step
    (['-p', 'lockstep:=true', '-p', 'wait_for_command:=true'], 1.0, None, 'SIGINT'),
])
def test_a_signal_finishes_the_simulator_process_cleanly(params, after_s, again_s, signum):
    """The process as `ros2 launch aura_ros demo.launch.py` starts it: a signal at any moment
    publishes the summary and exits 0, no traceback (it was RCLError in finish(), exit 1, or
    KeyboardInterrupt in destroy_node(), exit -2)."""
    import signal
    import sys

    from conftest import interrupt_process

    pytest.importorskip('rclpy', reason='rclpy not installed')
    code, output = interrupt_process(
        [sys.executable, '-m', 'aura_ros.ros.so101.sim', '--ros-args', '-p', 'image_width:=48',
         '-p', 'image_height:=40', *params], after_s=after_s, again_s=again_s,
        signum=getattr(signal, signum), ready_line='SO-101 simulator:')
    assert code == 0 and 'Traceback' not in output, output
    assert 'SO-101 summary' in output, output


@pytest.mark.parametrize('stall', ['executor', 'wait_for_command'])
def test_real_time_stamps_stay_on_the_clock(make_sim, make_node, executor, wait_for, stall):
    """Real time: after the simulator could not run for a while (a stalled process, a loaded
    machine) or waited for its first command, its frames are stamped with the clock again; the
    stamps used to stay behind by the lost time for good (0.42-0.45 s seen under load). Lag is
    measured as reception time - stamp: DDS transit and this machine's speed only add to it,
    so the least lag over a dozen frames tells the offset."""
    from sensor_msgs.msg import Image
    from trajectory_msgs.msg import JointTrajectory

    sim = make_sim(lockstep=False, time_scale=1.0, wait_for_command=stall == 'wait_for_command')
    node = make_node('so101_lag_client')
    lags = []

    def on_image(msg):
        lags.append(node.get_clock().now().nanoseconds * 1e-9 - _stamp(msg))

    node.create_subscription(Image, 'image', on_image, 100)
    command = node.create_publisher(JointTrajectory, 'arm_controller/joint_trajectory', 10)
    wait_for(lambda: lags, TIMEOUT, executor, 'the first frame')
    for _ in range(2):                    # 3 s in which the world does not step
        if stall == 'executor':
            time.sleep(1.5)
        else:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
    if stall == 'wait_for_command':
        command.publish(_trajectory(['shoulder_pan'], 0.0, [(0.1, [0.0])]))
    count = len(lags)
    wait_for(lambda: len(lags) >= count + 12, TIMEOUT, executor, 'a dozen frames after')
    least = min(lags[count:count + 12])
    assert least < 1.0, f'frames stamped {least:.2f} s or more behind the clock'
    assert stall != 'executor' or sim.frames_skipped > 0
