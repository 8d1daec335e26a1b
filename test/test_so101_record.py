"""record-demos: the scripted expert drives the simulator through ROS into a readable mcap bag."""

import json

import numpy as np
import pytest

pytest.importorskip('aura_ros.tasks.so101')
pytest.importorskip('rclpy')


def test_recorder_writes_a_readable_mcap_bag(tmp_path):
    from rosbags.highlevel import AnyReader

    from aura_ros.ros.so101.record import record

    out = tmp_path / 'demo_bag'
    summary = record(out, tasks=1, seed=3, size=32, log=None)
    assert summary['tasks'] == 1 and summary['successes'] == 1
    assert summary['read_back'] == summary['recorded']
    assert summary['lockstep_timeouts'] == 0
    counts = summary['read_back']
    frames = summary['frames']
    # every frame recorded once, and every frame answered once by the expert
    assert counts['/image'] == counts['/joint_states'] == frames
    assert counts['/leader/joint_states'] == counts['/arm_controller/joint_trajectory'] == frames
    assert counts['/robot_description'] == 1          # latched: once, whenever it matched
    assert list(out.glob('*.mcap'))

    with AnyReader([out]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types['/image'] == 'sensor_msgs/msg/Image'
        assert types['/task_events'] == 'std_msgs/msg/String'
        images, leader, events = [], [], []
        for connection, _, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            if connection.topic == '/image':
                images.append(msg)
            elif connection.topic == '/leader/joint_states':
                leader.append(msg)
            elif connection.topic == '/task_events':
                events.append(json.loads(msg.data))

    def stamp(m):
        return m.header.stamp.sec + m.header.stamp.nanosec * 1e-9

    assert (images[0].width, images[0].height, images[0].encoding) == (32, 32, 'rgb8')
    image_stamps = np.array([stamp(m) for m in images])
    assert np.all(np.diff(image_stamps) > 0)
    # each command is stamped with the time it is due: one action period after its frame
    assert np.allclose(np.array([stamp(m) for m in leader]) - image_stamps, 1 / 30, atol=1e-6)
    assert len(leader[0].name) == 6
    kinds = [e['event'] for e in events]
    assert kinds[0] == 'start' and kinds[-1] == 'summary'
    assert kinds.count('cue') == 1 and kinds.count('go') == 1 and kinds.count('success') == 1


def test_a_recorded_bag_gives_the_trainer_the_arms_joint_limits(tmp_path):
    """The simulator publishes its MJCF's joint ranges as a latched robot_description, as a
    robot's robot_state_publisher does; the bag carries it, so a model trained on it clips its
    targets to the SO-101's ranges with no --urdf (logged at frame 0's time, not at 0)."""
    from rosbags.highlevel import AnyReader

    from aura_ros.data import DataConfig, load_demonstrations
    from aura_ros.ros.so101.record import record
    from aura_ros.training.so101_limits import so101_joint_limits

    bags = tmp_path / 'bags'
    record(bags / 'run_0', tasks=1, seed=2, size=16, log=None)
    first = {}
    with AnyReader([bags / 'run_0']) as reader:
        for connection, log_ns, _ in reader.messages():
            first.setdefault(connection.topic, log_ns)
    assert first['/robot_description'] == first['/image']        # frame 0's time
    demos = load_demonstrations(bags, DataConfig(cache_dir=str(tmp_path / 'cache')),
                                progress=False)
    limits = so101_joint_limits()
    assert demos.joint_limits == limits and set(limits) == set(demos.action_names)
    assert limits['gripper'][0] < 0 < limits['shoulder_pan'][1]


def test_recorder_refuses_to_overwrite(tmp_path):
    from aura_ros.ros.so101.record import record

    with pytest.raises(FileExistsError):
        record(tmp_path, tasks=1, log=None)


def test_lockstep_recordings_are_deterministic(tmp_path):
    """Same seed, same bag content: the expert answers every frame before the world moves on."""
    from rosbags.highlevel import AnyReader

    from aura_ros.ros.so101.record import record

    def joint_rows(bag):
        with AnyReader([bag]) as reader:
            wanted = [c for c in reader.connections if c.topic == '/joint_states']
            return np.array([reader.deserialize(raw, c.msgtype).position
                             for c, _, raw in reader.messages(connections=wanted)])

    runs = []
    for name in ('a', 'b'):
        record(tmp_path / name, tasks=1, seed=5, size=16, log=None)
        runs.append(joint_rows(tmp_path / name))
    assert runs[0].shape == runs[1].shape and len(runs[0]) > 50
    assert np.array_equal(runs[0], runs[1])


def test_recorder_passes_the_distractor_rate_to_the_simulator(tmp_path):
    """--distractor-prob reaches the world: no flash at 0, flashes at 1."""
    from rosbags.highlevel import AnyReader

    from aura_ros.ros.so101.record import record

    flashes = {}
    for prob in (0.0, 1.0):
        out = tmp_path / f'bag_{prob}'
        record(out, tasks=1, seed=4, size=32, distractor_prob=prob, log=None)
        with AnyReader([out]) as reader:
            conns = [c for c in reader.connections if c.topic == '/task_events']
            events = [json.loads(reader.deserialize(raw, c.msgtype).data)
                      for c, _, raw in reader.messages(connections=conns)]
        flashes[prob] = sum(e['event'] == 'distractor' for e in events)
    assert flashes[0.0] == 0 and flashes[1.0] >= 1


def test_dart_pushes_move_the_robot_while_the_leader_keeps_the_clean_command(tmp_path):
    """--perturb: the executed trajectory differs from the recorded leader command by a held,
    bounded offset on the arm joints only, on some frames and not on others."""
    from rosbags.highlevel import AnyReader

    from aura_ros.ros.so101.record import Perturbation, record

    out = tmp_path / 'pushed'
    summary = record(out, tasks=1, seed=6, size=16, perturbation=Perturbation(0.1, 0.2),
                     log=None)
    with AnyReader([out]) as reader:
        rows = {}
        for topic in ('/leader/joint_states', '/arm_controller/joint_trajectory'):
            conns = [c for c in reader.connections if c.topic == topic]
            msgs = [reader.deserialize(raw, c.msgtype) for c, _, raw in
                    reader.messages(connections=conns)]
            rows[topic] = np.array([m.position if hasattr(m, 'position')
                                    else m.points[0].positions for m in msgs])
    push = rows['/arm_controller/joint_trajectory'] - rows['/leader/joint_states']
    pushed = np.abs(push).max(1) > 0
    assert pushed.sum() == summary['pushed_frames'] and 0 < pushed.sum() < len(push)
    assert np.abs(push).max() <= 0.1 + 1e-9
    assert np.all(push[:, 4:] == 0)               # wrist roll and gripper are never pushed
    starts = np.flatnonzero(pushed[1:] & ~pushed[:-1]) + 1
    assert all(np.allclose(push[s], push[s + 1], atol=1e-9) for s in starts
               if s + 1 < len(push) and pushed[s + 1])


def test_bad_perturbations_are_named():
    from aura_ros.ros.so101.record import Perturbation

    for bad in ({'size': -0.1}, {'size': 1.0}, {'rate': 0.0}, {'frames': (0, 3)},
                {'frames': (5, 2)}):
        with pytest.raises(ValueError, match='perturbation'):
            Perturbation(**bad)
