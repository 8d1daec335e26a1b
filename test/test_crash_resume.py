"""Crash-resume: `kill -9` of aura_node mid-episode loses nothing the snapshot promised.

The node runs as its own process with a state_file, over real DDS (reliable QoS so every frame is
stepped). After SIGKILL the snapshot on disk must equal, bit for bit, the state of the same
frames replayed in-process (skips leave the state bit-identical, so that is the state after the
last write), and a restarted node must resume it and act exactly like the replay on the next
frame. A bad state file at start is kept aside (renamed, never deleted) with a warning, and the
node starts fresh.
"""

import os
import signal
import subprocess
import sys
import threading
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
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from aura_ros.ros.node import AuraNode  # noqa: E402
from aura_ros.ros.trajectory import answers  # noqa: E402
from aura_ros.runtime import AuraRuntime  # noqa: E402
from aura_ros.runtime.state_file import (  # noqa: E402
    model_fingerprint,
    read_snapshot,
    save_snapshot,
)

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(7)
FRAMES = [RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(13)]
JOINTS = np.array([0.3, -0.4], np.float32)        # shoulder, elbow: one value, no sync race
KILL_AFTER = 12
# gate threshold per frame, set at run time: 0 writes, 1 skips (skips after the last write too)
THRESHOLDS = [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.5]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class NodeProcess:
    """aura_node as a process; its output is collected by a thread."""

    def __init__(self, *ros_args):
        env = dict(os.environ, PYTHONUNBUFFERED='1')   # ROS_* (LOCALHOST, domain) inherited
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'aura_ros.ros.node', '--ros-args', *ros_args], cwd=REPO,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for_line(self, text, timeout=60):
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f'no {text!r} from aura_node:\n' + ''.join(self.lines))
            time.sleep(0.05)

    def stop(self, sig=signal.SIGINT):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class Client:
    def __init__(self, context):
        self.node = Node('aura_crash_client', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.image_pub = self.node.create_publisher(Image, 'image', RELIABLE)
        self.joint_pub = self.node.create_publisher(JointState, 'joint_states', RELIABLE)
        self.chunks, self.gates = {}, {}
        self.node.create_subscription(JointTrajectory, '/aura/action_chunk', self._on_chunk, 10)
        self.node.create_subscription(DiagnosticArray, '/aura/gate', self._on_gate, 10)
        self.param_client = self.node.create_client(SetParameters, '/aura/set_parameters')
        self.threshold = None

    def _on_chunk(self, msg):
        self.chunks[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg

    def chunk_for(self, key):
        """(chunk answering the observation stamped key, index of its first point), or None."""
        for msg in self.chunks.values():
            first = answers(msg, key[0] * 10**9 + key[1], TINY_PERIOD_S)
            if first is not None:
                return msg, first
        return None

    def _on_gate(self, msg):
        values = {kv.key: kv.value for kv in msg.status[0].values}
        self.gates[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = values

    def spin_until(self, predicate, timeout, what, lines=()):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f'timed out waiting for {what}; node output:\n' + ''.join(lines))
            self.executor.spin_once(timeout_sec=0.02)

    def set_threshold(self, value):
        """gate_threshold of the node, through its parameter service."""
        if value == self.threshold:
            return
        request = SetParameters.Request(parameters=[ParameterMsg(
            name='gate_threshold', value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                                        double_value=value))])
        # after a kill -9 the dead node's service may still look matched until its lease runs
        # out, and a request sent before the new node's server matched is lost: ask again
        for _ in range(5):
            future = self.param_client.call_async(request)
            deadline = time.monotonic() + 3
            while not future.done() and time.monotonic() < deadline:
                self.executor.spin_once(timeout_sec=0.02)
            if future.done():
                break
            self.param_client.remove_pending_request(future)
        else:
            pytest.fail('set_parameters was never answered')
        assert future.result().results[0].successful
        self.threshold = value

    def discover(self):
        self.threshold = None
        self.spin_until(lambda: self.image_pub.get_subscription_count() > 0
                        and self.joint_pub.get_subscription_count() > 0
                        and self.node.count_publishers('/aura/gate') > 0
                        and self.param_client.service_is_ready(), 30, 'discovery')

    def step(self, pixels, lines=()):
        """Joints, then the image; returns (action [chunk, d_action], gate values).

        A frame the node rejected (e.g. its joints arrived after the image on a loaded machine)
        is sent again with a new stamp; a rejection never touches the state.
        """
        for _ in range(4):
            stamp = self.node.get_clock().now().to_msg()
            joints = JointState(name=['shoulder', 'elbow'],
                                position=JOINTS.astype(float).tolist())
            joints.header.stamp = stamp
            self.joint_pub.publish(joints)
            time.sleep(0.03)
            image = Image(height=24, width=32, encoding='rgb8', step=96, data=pixels.tobytes())
            image.header.stamp = stamp
            self.image_pub.publish(image)
            key = (stamp.sec, stamp.nanosec)
            try:
                self.spin_until(lambda k=key: self.chunk_for(k) and k in self.gates, 5, 'chunk')
            except pytest.fail.Exception:
                continue
            chunk, first = self.chunk_for(key)
            action = np.full((first + len(chunk.points), 2), np.nan)   # points left out: NaN
            action[first:] = [p.positions for p in chunk.points]
            return action, self.gates[key]
        pytest.fail('no action chunk for 4 tries; node output:\n' + ''.join(lines))

    def close(self):
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        self.executor.shutdown()


def test_kill_9_mid_episode_then_resume_exactly(rclpy_context, tiny_model_dir, tmp_path):
    state_file = tmp_path / 'aura.state'
    args = ('-p', f'model_dir:={tiny_model_dir}', '-p', f'state_file:={state_file}',
            '-p', 'input_qos:=reliable', '-p', 'device:=cpu')
    node = NodeProcess(*args)
    client = Client(rclpy_context)
    try:
        node.wait_for_line('memory state')
        client.discover()
        gates = []
        for pixels, threshold in zip(FRAMES[:KILL_AFTER], THRESHOLDS, strict=False):
            client.set_threshold(threshold)
            gates.append(client.step(pixels, node.lines)[1])
        node.stop(signal.SIGKILL)                        # mid-episode, no shutdown save
        assert node.proc.returncode == -signal.SIGKILL

        replay = AuraRuntime.from_model_dir(tiny_model_dir, device='cpu')
        replayed = []
        for pixels, threshold in zip(FRAMES[:KILL_AFTER], THRESHOLDS, strict=False):
            replay.set_gate_threshold(threshold)
            replayed.append(replay.step(pixels, 'rgb8', JOINTS).gate)
        assert [g['wrote'] for g in gates] == [str(int(g.wrote)) for g in replayed]
        wrote = [g.wrote for g in replayed]
        assert any(wrote) and not all(wrote), 'the test needs writes and skips'
        expected = replay.state_dict()
        snap = read_snapshot(state_file, model_fingerprint(tiny_model_dir),
                             {k: v.shape for k, v in expected.items()})
        for key, value in expected.items():
            assert np.array_equal(snap.state[key], value), key          # bit for bit
        last_write = max(i for i, w in enumerate(wrote, start=1) if w)
        assert (snap.steps, snap.writes) == (last_write, replay.writes)

        node = NodeProcess(*args)                        # same state_file: resume
        node.wait_for_line('memory state')
        assert any('resumed the memory state' in line for line in node.lines), node.lines
        client.discover()
        client.set_threshold(THRESHOLDS[KILL_AFTER])
        replay.set_gate_threshold(THRESHOLDS[KILL_AFTER])
        action, gate = client.step(FRAMES[KILL_AFTER], node.lines)
        expected_next = replay.step(FRAMES[KILL_AFTER], 'rgb8', JOINTS)
        kept = ~np.isnan(action[:, 0])
        np.testing.assert_allclose(action[kept], expected_next.action[kept], rtol=0, atol=1e-6)
        assert gate['writes'] == str(expected_next.gate.writes)
        assert node.stop() == 0
    finally:
        client.close()
        node.stop(signal.SIGKILL)


def _snapshot_bytes(path, fingerprint):
    rng = np.random.default_rng(1)
    state = {'W': rng.standard_normal((1, 8, 8)).astype(np.float32),
             'b': rng.standard_normal((1, 8)).astype(np.float32)}
    save_snapshot(path, state, fingerprint, 5, 3)
    return path.read_bytes()


@pytest.mark.parametrize('kind', ['corrupt', 'truncated', 'foreign'])
def test_a_bad_state_file_is_kept_aside_and_the_node_starts_fresh(rclpy_context, tiny_model_dir,
                                                                  tmp_path, capfd, kind):
    path = tmp_path / 'aura.state'
    good = _snapshot_bytes(path, model_fingerprint(tiny_model_dir))
    if kind == 'corrupt':
        data = bytearray(good)
        data[-5] ^= 0xFF                                 # a bit of the tensor data
    elif kind == 'truncated':
        data = good[:len(good) // 2]
    else:
        data = _snapshot_bytes(path, '0' * 64)           # another model's snapshot
    path.write_bytes(bytes(data))
    node = AuraNode(context=rclpy_context, parameter_overrides=[
        Parameter('model_dir', value=str(tiny_model_dir)),
        Parameter('state_file', value=str(path)), Parameter('device', value='cpu')])
    try:
        assert node.runtime.steps == 0
        assert all(not v.any() for v in node.runtime.state_dict().values())
        asides = list(tmp_path.glob('aura.state.rejected-*'))
        assert len(asides) == 1 and asides[0].read_bytes() == bytes(data)   # kept, not deleted
        assert not path.exists()
    finally:
        node.stop()
        node.destroy_node()
    output = capfd.readouterr()
    text = output.out + output.err
    assert 'not used' in text and 'kept aside' in text and 'starting fresh' in text, text
