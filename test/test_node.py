"""aura_node over real DDS on loopback: frames in, chunks and gate out, reset, bad input, params.

The node runs in-process (its own worker thread, the test's executor) so the tests can also look at
its memory state; two tests start it as a process to check exit codes and Ctrl-C.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy not installed (pip install .[ros])')

from conftest import TINY_PERIOD_S  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from aura_ros.ros.node import AuraNode  # noqa: E402
from aura_ros.ros.params import ParameterError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)
FRAMES = [RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(8)]


def image_msg(pixels, stamp, encoding='rgb8'):
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                step=pixels.shape[1] * (pixels.shape[2] if pixels.ndim == 3 else 1))
    msg.data = pixels.tobytes()
    msg.header.stamp = stamp
    return msg


def assert_chunk_contract(chunk, observation_ns, period_s, points, min_lead_s):
    """The stamping rule, whatever the machine's speed: at least one point, none less than
    min_lead_s after the publish stamp, and the points that remain are the chunk's last ones at
    the times the model meant (observation + (i + 1) periods). Returns the first point's index."""
    from aura_ros.ros.trajectory import answers

    assert 1 <= len(chunk.points) <= points, len(chunk.points)
    published = nanoseconds(chunk.header.stamp)
    leads = [nanoseconds(p.time_from_start) for p in chunk.points]
    assert min(leads) >= round(min_lead_s * 10**9), f'a point {min(leads) / 1e6:.1f} ms ahead'
    first = answers(chunk, observation_ns, period_s)
    assert first == points - len(chunk.points), (first, len(chunk.points))
    for i, lead in enumerate(leads, start=first):
        meant = observation_ns + round((i + 1) * period_s * 10**9)
        assert abs(published + lead - meant) <= 2, (i, published + lead - meant)
    return first


def joint_msg(stamp, positions=(0.1, -0.2), names=('elbow', 'shoulder', 'gripper')):
    msg = JointState(name=list(names), position=[positions[1], positions[0], 0.0][:len(names)])
    msg.header.stamp = stamp
    return msg


def aura_statuses(messages, predicate) -> list:
    """(status, {key: value}) of the AURA policy statuses in DiagnosticArray `messages` for
    which predicate(status, values) holds, in order."""
    out = []
    for msg in messages:
        for status in msg.status:
            if 'AURA policy' in status.name:
                values = {kv.key: kv.value for kv in status.values}
                if predicate(status, values):
                    out.append((status, values))
    return out


class Rig:
    """The node under test plus a client node that feeds it and records what comes out."""

    def __init__(self, make_node, executor, wait_for, model_dir, **params):
        overrides = [Parameter('model_dir', value=str(model_dir))]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        self.node = AuraNode(context=executor.context, parameter_overrides=overrides)
        executor.add_node(self.node)
        self.executor, self.wait_for = executor, wait_for
        self.client = make_node('aura_test_client')
        self.image_pub = self.client.create_publisher(Image, 'image', qos_profile_sensor_data)
        self.joint_pub = self.client.create_publisher(JointState, 'joint_states',
                                                      qos_profile_sensor_data)
        self.chunks, self.gates, self.health = [], [], []
        self.client.create_subscription(JointTrajectory, '/aura/action_chunk',
                                        self.chunks.append, 10)
        self.client.create_subscription(DiagnosticArray, '/aura/gate', self.gates.append, 10)
        self.client.create_subscription(DiagnosticArray, '/diagnostics', self.health.append, 10)
        self.reset_client = self.client.create_client(Trigger, '/aura/reset')
        self.wait_for(lambda: self.image_pub.get_subscription_count() > 0
                      and self.joint_pub.get_subscription_count() > 0
                      and self.client.count_publishers('/aura/gate') > 0, 10, executor,
                      'discovery')

    def now(self):
        return self.client.get_clock().now().to_msg()

    def send(self, pixels, encoding='rgb8', stamp=None, joints=True):
        """Publish joints then an image; wait until the node has taken the image."""
        if joints:                  # taken before the image is sent: no race between topics
            kept, refused = self.node._joints, sum(self.node.rejected.values())
            self.joint_pub.publish(joint_msg(self.now()))
            self.wait_for(lambda: self.node._joints is not kept
                          or sum(self.node.rejected.values()) > refused, 5, self.executor,
                          'the joint state taken')
        before = self.node.received
        self.image_pub.publish(image_msg(pixels, stamp or self.now(), encoding))
        self.wait_for(lambda: self.node.received > before, 5, self.executor, 'image received')

    def step(self, pixels):
        """Send a good frame and wait for its chunk and gate."""
        count = len(self.chunks)
        self.send(pixels)
        self.wait_for(lambda: len(self.chunks) > count and len(self.gates) > count, 10,
                      self.executor, 'action chunk and gate')
        return self.chunks[-1], self.gates[-1]

    def reset(self):
        future = self.reset_client.call_async(Trigger.Request())
        self.wait_for(future.done, 10, self.executor, 'reset response')
        return future.result()

    def settle(self):
        """Wait until the worker has nothing pending."""
        self.wait_for(lambda: self.node._frame is None, 5, self.executor, 'worker idle')
        time.sleep(0.1)

    def state(self):
        return {k: np.array(v, copy=True) for k, v in self.node.runtime.state_dict().items()}

    def close(self):
        self.executor.remove_node(self.node)
        self.node.stop()
        self.node.destroy_node()


@pytest.fixture
def rig(make_node, executor, wait_for, tiny_model_dir):
    rig = Rig(make_node, executor, wait_for, tiny_model_dir)
    yield rig
    rig.close()


def gate_values(gate_msg):
    return {kv.key: kv.value for kv in gate_msg.status[0].values}


def nanoseconds(stamp):
    return stamp.sec * 10**9 + stamp.nanosec


def test_one_chunk_and_one_gate_per_frame(rig):
    """The gate carries the image's stamp; the chunk is stamped when published, its points at
    image stamp + (i + 1) periods (those already past left out: README "On a real robot")."""
    stamps = []
    for pixels in FRAMES[:5]:
        chunk, gate = rig.step(pixels)
        stamps.append(gate.header.stamp)
        observation, published = nanoseconds(gate.header.stamp), nanoseconds(chunk.header.stamp)
        assert published > observation
        first = int(gate_values(gate)['first_point'])
        assert len(chunk.points) == 3 - first
        for i, point in enumerate(chunk.points, start=first):
            assert len(point.positions) == 2
            at = published + nanoseconds(point.time_from_start)
            assert abs(at - observation - round((i + 1) * TINY_PERIOD_S * 10**9)) < 2
    assert len(rig.chunks) == len(rig.gates) == 5
    assert len({(s.sec, s.nanosec) for s in stamps}) == 5
    chunk = rig.chunks[-1]
    assert chunk.joint_names == ['shoulder', 'elbow']
    values = gate_values(rig.gates[-1])
    assert values['step'] == '5'
    assert {'wrote', 'p', 'surprise', 'writes', 'write_rate', 'state_bytes',
            'latency_ms'} <= set(values)
    assert int(values['state_bytes']) == (8 * 8 + 8) * 4
    rig.wait_for(lambda: any(s.values and 'AURA' in s.name for m in rig.health for s in m.status),
                 5, rig.executor, '/diagnostics')


def test_reset_returns_a_summary_and_starts_a_fresh_episode(rig):
    first, _ = rig.step(FRAMES[0])
    for pixels in FRAMES[1:4]:
        rig.step(pixels)
    response = rig.reset()
    assert response.success
    assert '4 steps' in response.message
    assert all(not v.any() for v in rig.state().values())
    again, gate = rig.step(FRAMES[0])
    assert gate_values(gate)['step'] == '1'
    np.testing.assert_allclose([p.positions for p in again.points],
                               [p.positions for p in first.points], rtol=0, atol=1e-6)


BAD_INPUTS = {
    'encoding': dict(pixels=FRAMES[0], encoding='yuv422'),
    'size': dict(pixels=FRAMES[0][:, :30], encoding='rgba8'),
    'empty': dict(pixels=np.zeros((0, 0, 3), np.uint8)),
}


def test_empty_model_dir_runs_the_bundled_so101_model(make_node, executor, wait_for):
    """model_dir '' (config/aura.yaml's default) is models/so101: one camera 'image' of its size,
    its joints by name, absolute targets for its actions, its chunk and period."""
    from aura_ros.runtime import load_model_dir

    spec = load_model_dir(REPO / 'models' / 'so101')
    rig = Rig(make_node, executor, wait_for, '')
    try:
        assert rig.node.spec.name == spec.name and rig.node.spec.cameras == spec.cameras
        (camera,) = spec.cameras
        assert camera.name == 'image'
        pixels = np.random.default_rng(3).integers(0, 256, (camera.height, camera.width, 3),
                                                   dtype=np.uint8)
        home = np.asarray(spec.joint_stats.mean, float)
        sent = {}
        for _ in range(10):         # a step slower than the chunk lasts publishes no chunk
            stamp = rig.now()
            sent[nanoseconds(stamp)] = stamp
            joints = JointState(name=list(spec.joint_names), position=home.tolist())
            joints.header.stamp = stamp
            kept = rig.node._joints
            rig.joint_pub.publish(joints)
            wait_for(lambda kept=kept: rig.node._joints is not kept, 5, executor, 'joints')
            gates = len(rig.gates)
            rig.image_pub.publish(image_msg(pixels, stamp))
            wait_for(lambda gates=gates: len(rig.gates) > gates, 20, executor, 'gate')
            executor.spin_once(timeout_sec=0.05)
            if rig.chunks:
                break
        from aura_ros.ros.trajectory import answers

        chunk = rig.chunks[0]
        (stamp,) = [t for ns, t in sent.items() if answers(chunk, ns, spec.action_period_s)
                    is not None]
        (gate,) = [g for g in rig.gates if g.header.stamp == stamp]
        assert chunk.joint_names == list(spec.action_names)
        first = assert_chunk_contract(chunk, nanoseconds(stamp), spec.action_period_s,
                                      spec.chunk, rig.node.params.chunk_min_lead_s)
        observation, published = nanoseconds(stamp), nanoseconds(chunk.header.stamp)
        for i, point in enumerate(chunk.points, start=first):
            at = published + nanoseconds(point.time_from_start)
            assert abs(at - observation - round((i + 1) * spec.action_period_s * 10**9)) < 2
            # absolute targets near the arm's working range, not deltas around zero
            assert np.abs(np.asarray(point.positions) - home).max() < 1.0, point.positions
        assert int(gate_values(gate)['state_bytes']) == 4224
    finally:
        rig.close()


@pytest.mark.parametrize('reason', sorted(BAD_INPUTS))
def test_bad_images_are_rejected_counted_and_leave_the_state(rig, reason):
    rig.step(FRAMES[0])
    before = rig.state()
    rig.send(**BAD_INPUTS[reason])
    rig.settle()
    assert rig.node.rejected[reason] == 1
    for key, value in rig.state().items():
        assert np.array_equal(value, before[key])
    rig.step(FRAMES[1])   # still alive
    assert rig.node.runtime.steps == 2


def test_stale_and_out_of_order_stamps_are_rejected(rig):
    rig.step(FRAMES[0])
    last = rig.gates[-1].header.stamp                         # the image's stamp
    before = rig.state()
    rig.send(FRAMES[1], stamp=last)                           # not after the last one
    rig.settle()                                              # judged before the next comes
    old = rig.now()
    old.sec -= 5
    rig.send(FRAMES[2], stamp=old)                            # older than max_obs_age_s
    rig.settle()
    assert rig.node.rejected['out_of_order'] == 1
    assert rig.node.rejected['stale_image'] == 1
    for key, value in rig.state().items():
        assert np.array_equal(value, before[key])


@pytest.mark.parametrize('bad', ['nan', 'missing'])
def test_bad_joint_states_are_rejected_and_the_last_good_one_is_kept(rig, bad):
    rig.step(FRAMES[0])
    before = rig.state()
    if bad == 'nan':
        rig.joint_pub.publish(joint_msg(rig.now(), positions=(float('nan'), 0.0)))
        reason = 'nonfinite_joints'
    else:
        rig.joint_pub.publish(joint_msg(rig.now(), names=('elbow',)))
        reason = 'missing_joints'
    rig.wait_for(lambda: rig.node.rejected[reason] == 1, 5, rig.executor, reason)
    for key, value in rig.state().items():
        assert np.array_equal(value, before[key])
    rig.send(FRAMES[1], joints=False)           # steps with the last good joint state
    rig.wait_for(lambda: rig.node.runtime.steps == 2, 5, rig.executor, 'second step')


def test_a_frame_whose_joints_are_stale_is_rejected(rig):
    rig.step(FRAMES[0])
    before = rig.state()
    time.sleep(0.6)                             # longer than max_obs_age_s = 0.5
    rig.send(FRAMES[1], joints=False)
    rig.settle()
    assert rig.node.rejected['stale_joints'] == 1
    assert rig.node.runtime.steps == 1
    for key, value in rig.state().items():
        assert np.array_equal(value, before[key])


def test_gate_threshold_changes_at_run_time(rig):
    client = rig.client.create_client(SetParameters, '/aura/set_parameters')
    rig.wait_for(client.service_is_ready, 5, rig.executor, 'parameter service')

    def set_threshold(value):
        request = SetParameters.Request(parameters=[ParameterMsg(
            name='gate_threshold', value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                                        double_value=value))])
        future = client.call_async(request)
        rig.wait_for(future.done, 5, rig.executor, 'set_parameters')
        return future.result().results[0]

    assert set_threshold(1.0).successful                      # p > 1 never holds
    wrote = [gate_values(rig.step(p)[1])['wrote'] for p in FRAMES[:4]]
    assert wrote == ['0'] * 4
    assert set_threshold(0.0).successful                      # p > 0 always holds
    wrote = [gate_values(rig.step(p)[1])['wrote'] for p in FRAMES[4:8]]
    assert wrote == ['1'] * 4
    assert not set_threshold(7.0).successful                  # outside the declared range


@pytest.mark.parametrize('name,value,expected', [
    ('device', 'tpu', 'device'), ('memory_engine', 'tensorrt', 'memory_engine'),
    ('gate_threshold', 1.5, 'gate_threshold'), ('input_depth', 0, 'input_depth'),
    ('model_dir', '/nonexistent/model', 'model_dir'),
    ('input_qos', 'best_effort', "'input_qos' is 'best_effort'; allowed: auto, sensor_data, "
                                 'reliable')])
def test_bad_parameter_fails_at_start_with_its_name(rclpy_context, tiny_model_dir, name, value,
                                                    expected):
    overrides = [Parameter('model_dir', value=str(tiny_model_dir)), Parameter(name, value=value)]
    with pytest.raises(ParameterError, match=expected):
        AuraNode(context=rclpy_context, parameter_overrides=overrides)


def node_process(*ros_args):
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    return subprocess.Popen([sys.executable, '-m', 'aura_ros.ros.node', '--ros-args', *ros_args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_process_with_the_parameter_file_stops_cleanly_on_ctrl_c(tiny_model_dir):
    proc = node_process('--params-file', str(REPO / 'config' / 'aura.yaml'),
                        '-p', f'model_dir:={tiny_model_dir}', '-r', '__node:=aura')
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if 'memory state' in line or not line:
            break
    assert any('memory state 288 bytes' in line for line in lines), ''.join(lines)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0, proc.stdout.read()


def test_process_with_a_bad_parameter_exits_non_zero_naming_it(tiny_model_dir):
    proc = node_process('-p', f'model_dir:={tiny_model_dir}', '-p', 'device:=tpu')
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "'device'" in output and 'allowed: auto, cpu, cuda' in output


def test_process_with_a_broken_model_exits_non_zero_naming_the_file(tiny_model_dir, tmp_path):
    import shutil
    broken = tmp_path / 'model'
    shutil.copytree(tiny_model_dir, broken)
    (broken / 'memory.safetensors').write_bytes(b'not a checkpoint')
    proc = node_process('-p', f'model_dir:={broken}')
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert 'memory.safetensors' in output and 'Traceback' not in output
