"""The cue-reach simulator node over real DDS: camera and joint streams, actions move the arm."""

import json
import time

import numpy as np
import pytest

TIMEOUT = 15.0


@pytest.fixture
def make_sim(make_node):
    """make_sim(**parameters) -> a SimNode on the test context, spun by `executor`."""
    from rclpy.parameter import Parameter

    from aura_ros.ros.sim_node import SimNode

    def make(**overrides):
        return make_node('aura_sim', node_class=SimNode, parameter_overrides=[
            Parameter(k, value=v) for k, v in overrides.items()])

    return make


def listen(make_node, name='sim_test_listener'):
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    node = make_node(name)
    got = {'image': [], 'joints': [], 'outcome': [], 'image_t': []}

    def on_image(msg):
        got['image'].append(msg)
        got['image_t'].append(time.monotonic())

    node.create_subscription(Image, 'image', on_image, 50)
    node.create_subscription(JointState, 'joint_states', got['joints'].append, 50)
    node.create_subscription(String, 'aura_sim/task_outcome', got['outcome'].append, 50)
    return node, got


def test_publishes_rgb8_images_and_joint_states_at_the_rate(make_sim, make_node, executor,
                                                            wait_for):
    make_sim(image_width=48, image_height=40, rate_hz=30.0, wait_for_policy=False)
    _, got = listen(make_node)
    wait_for(lambda: len(got['image']) >= 46 and len(got['joints']) >= 46, TIMEOUT, executor,
             '46 images and joint states')
    image = got['image'][-1]
    assert (image.width, image.height, image.encoding, image.step) == (48, 40, 'rgb8', 48 * 3)
    assert len(image.data) == 48 * 40 * 3
    pixels = np.frombuffer(bytes(image.data), np.uint8).reshape(40, 48, 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) >= 4    # a scene, not a blank frame
    joints = got['joints'][-1]
    assert list(joints.name) == ['shoulder', 'elbow']
    assert len(joints.position) == 2 and np.isfinite(joints.position).all()
    stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in got['image']}
    assert (joints.header.stamp.sec, joints.header.stamp.nanosec) in stamps   # same stamps
    times = got['image_t'][5:]
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 20.0 < rate < 40.0, f'{rate:.1f} Hz'


@pytest.mark.parametrize('mode', ['position', 'delta'])
def test_an_action_chunk_moves_the_arm(make_sim, make_node, executor, wait_for, mode):
    """Absolute targets (what aura_node publishes) or per-frame deltas, four points."""
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    make_sim(rate_hz=30.0, action_mode=mode)   # waits for the policy: the world holds still
    node, got = listen(make_node, 'sim_test_policy')
    publisher = node.create_publisher(JointTrajectory, 'aura/action_chunk', 10)
    wait_for(lambda: len(got['joints']) >= 5 and publisher.get_subscription_count(), TIMEOUT,
             executor, 'joint states and the simulator subscribing the chunks')
    start = np.array(got['joints'][-1].position)
    assert np.allclose([m.position for m in got['joints']], start)  # nothing moves it yet

    step = np.array([0.05, -0.03]) * np.sign(-start)  # towards the middle of the joint range
    chunk = JointTrajectory(joint_names=['elbow', 'shoulder'])   # by name, not by order
    chunk.header.stamp = got['image'][-1].header.stamp
    # absolute: the target of point k is start + (k + 1) steps; delta: one step per point
    points = [start + step * (k + 1) if mode == 'position' else step for k in range(4)]
    chunk.points = [JointTrajectoryPoint(positions=[p[1], p[0]]) for p in points]
    seen = len(got['joints'])
    publisher.publish(chunk)
    wait_for(lambda: len(got['joints']) >= seen + 8, TIMEOUT, executor, 'eight more frames')
    end = np.array(got['joints'][-1].position)
    # four points of the chunk applied, one per frame, then the arm holds still
    assert np.allclose(end - start, 4 * step, atol=1e-6), (start, end)


def test_finished_tasks_are_published_as_json(make_sim, make_node, executor, wait_for):
    _, got = listen(make_node, 'sim_test_outcomes')
    sim_node = make_sim(rate_hz=400.0, wait_for_policy=False, max_tasks=2)
    deadline = time.monotonic() + TIMEOUT    # discovery runs without spinning: no frames pass
    while not sim_node.outcome_pub.get_subscription_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    wait_for(lambda: len(got['outcome']) >= 2, TIMEOUT, executor, 'two task outcomes')
    outcomes = [json.loads(m.data) for m in got['outcome']]
    for index, outcome in enumerate(outcomes):
        # nobody moves the arm: both tasks time out
        assert outcome['task'] == index and outcome['success'] is False
        assert 0 <= outcome['goal'] < 8 and outcome['cue']
        assert outcome['steps'] == outcome['go_step'] + 120
        assert outcome['writes'] is None          # no gate heard
    wait_for(lambda: sim_node.done, TIMEOUT, executor, 'the run to end after max_tasks')


def test_bad_parameters_fail_at_start(rclpy_context):
    from rclpy.parameter import Parameter

    from aura_ros.ros.sim_node import SimNode

    with pytest.raises(ValueError, match='action_mode'):
        SimNode(context=rclpy_context,
                parameter_overrides=[Parameter('action_mode', value='torque')])


def test_a_chunk_stamped_at_publish_time_is_traced_to_the_frame_it_answers(make_sim, executor,
                                                                          wait_for):
    """aura_node stamps a chunk when it publishes it and leaves out points already past; the
    simulator finds the frame from the point times, as a controller would place them."""
    from builtin_interfaces.msg import Duration, Time
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    sim = make_sim(rate_hz=30.0, wait_for_policy=False)
    wait_for(lambda: sim.frame >= 12, TIMEOUT, executor, 'twelve frames')
    (sec, nanosec), frame = list(sim.stamps.items())[-8]
    observation = sec * 10**9 + nanosec
    publish = observation + 75_000_000                # 75 ms later: points 0 and 1 have passed
    chunk = JointTrajectory(joint_names=['shoulder', 'elbow'])
    chunk.header.stamp = Time(sec=publish // 10**9, nanosec=publish % 10**9)
    for k in (2, 3):
        offset = observation + round((k + 1) * 1e9 / 30) - publish
        chunk.points.append(JointTrajectoryPoint(positions=[0.0, 0.0], time_from_start=Duration(
            sec=offset // 10**9, nanosec=offset % 10**9)))
    answered, first = sim.origin(chunk)
    # (frame f, first point 2) and (frame f + 1, first point 1) execute identically
    assert answered + first == frame + 2 and 0 <= first <= 2
    chunk.header.stamp = Time(sec=1, nanosec=0)       # matches no frame: the current one
    assert sim.origin(chunk) == (sim.frame, 0)


def test_absolute_targets_are_followed_like_joint_trajectory_controller(make_sim):
    """The point for the next frame is reached in one step; a first point meant for a later
    frame (the ones before it left out as past) is approached linearly."""
    sim = make_sim(rate_hz=30.0, action_mode='position')
    q = sim.env.q.copy()
    sim.chunk = np.array([q + [0.02, 0.0], q + [0.04, 0.0]])
    sim.chunk_frame, sim.chunk_first = sim.frame, 0
    np.testing.assert_allclose(sim.next_delta(), [0.02, 0.0])
    sim.chunk_first = 1                     # its first point is two frames ahead
    np.testing.assert_allclose(sim.next_delta(), [0.01, 0.0])
    sim.chunk_frame = sim.frame - 3         # past its last point: hold
    np.testing.assert_allclose(sim.next_delta(), [0.0, 0.0])
