"""Issue #15: faults found by attacking aura_node from outside, each pinned by a test.

Each test names its row of the issue. They drive the node over real DDS (in-process node, test
client node), or start it as a process for signals and exit codes, and use the real condition: a
directory at the state_file path, a read-only or full file system (a tmpfs mounted in a private
mount namespace with `unshare`), a /clock publisher, a second camera publisher.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy not installed (pip install .[ros])')

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rcl_interfaces.msg import Log, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from rosgraph_msgs.msg import Clock as ClockMsg  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from test_crash_resume import _snapshot_bytes  # noqa: E402
from test_node import FRAMES, REPO, Rig, aura_statuses, image_msg, joint_msg  # noqa: E402

from aura_ros.ros.node import AuraNode  # noqa: E402
from aura_ros.ros.params import ParameterError  # noqa: E402
from aura_ros.runtime.state_file import model_fingerprint  # noqa: E402

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


class FaultRig(Rig):
    """The test_node Rig, also recording /rosout and the node's own /diagnostics values."""

    def __init__(self, make_node, executor, wait_for, model_dir, **params):
        super().__init__(make_node, executor, wait_for, model_dir, **params)
        self.logs = []
        self.client.create_subscription(Log, '/rosout', self._on_log, RELIABLE)

    def _on_log(self, msg):
        if msg.name == 'aura':
            self.logs.append(msg)

    def diagnostics(self, predicate=lambda status, values: True, timeout=10, what='diagnostics'):
        """The first of the node's /diagnostics statuses from now on that passes predicate."""
        start = len(self.health)
        found = []

        def check():
            found[:] = aura_statuses(self.health[start:], predicate)
            return bool(found)
        self.wait_for(check, timeout, self.executor, what)
        return found[0]

    def warnings(self, text):
        return [m.msg for m in self.logs if text in m.msg]


@pytest.fixture
def make_rig(make_node, executor, wait_for, tiny_model_dir):
    rigs = []

    def make(**params):
        rig = FaultRig(make_node, executor, wait_for, tiny_model_dir, **params)
        rigs.append(rig)
        return rig
    yield make
    for rig in rigs:
        rig.close()


def start_node(rclpy_context, model_dir, **params):
    overrides = [Parameter('model_dir', value=str(model_dir)),
                 Parameter('device', value='cpu')]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return AuraNode(context=rclpy_context, parameter_overrides=overrides)


def set_parameter(rig, value_msg):
    client = rig.client.create_client(SetParameters, '/aura/set_parameters')
    rig.wait_for(client.service_is_ready, 5, rig.executor, 'parameter service')
    request = SetParameters.Request(parameters=[ParameterMsg(name='gate_threshold',
                                                             value=value_msg)])
    future = client.call_async(request)
    rig.wait_for(future.done, 5, rig.executor, 'set_parameters')
    return future.result().results[0]


# -- row 1: a directory (or any file not ours) at state_file is refused and left alone ---------

@pytest.mark.parametrize('kind', ['directory', 'user_file'])
def test_row1_state_file_that_is_not_ours_is_refused_and_untouched(rclpy_context, tiny_model_dir,
                                                                   tmp_path, kind):
    target = tmp_path / 'aura.state'
    if kind == 'directory':
        target.mkdir()
        (target / 'notes.txt').write_text('mine')
    else:
        target.write_text('my notes, not a snapshot')
    with pytest.raises(ParameterError, match='state_file'):
        start_node(rclpy_context, tiny_model_dir, state_file=str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['aura.state']   # nothing renamed
    if kind == 'directory':
        assert (target / 'notes.txt').read_text() == 'mine'
    else:
        assert target.read_text() == 'my notes, not a snapshot'


# -- rows 2, 5, 8: read-only and full file systems, real ones (tmpfs in a private namespace) ----

def _unshare_works():
    if shutil.which('unshare') is None:
        return False
    return subprocess.run(['unshare', '-rm', 'sh', '-c', 'mount -t tmpfs tmpfs /mnt'],
                          capture_output=True).returncode == 0


needs_unshare = pytest.mark.skipif(not _unshare_works(),
                                   reason='needs unshare -rm (user + mount namespaces) to mount '
                                          'a read-only or full tmpfs without root')


class PrivateMountNode:
    """aura_node in its own mount namespace, `folder` a fresh tmpfs prepared by `setup` (sh).

    The wrapper shell prints the node's pid, waits for it, prints its exit code and then lists
    the folder, which only this namespace can see.
    """

    def __init__(self, folder, setup, *ros_args):
        node = ' '.join([sys.executable, '-m', 'aura_ros.ros.node', '--ros-args', *ros_args])
        script = (f'set -e; mount -t tmpfs -o size=64k tmpfs {folder}; {setup}; set +e; '
                  f'{node} & echo "node pid $!"; wait $!; echo "node exit $?"; '
                  f'ls -a {folder}')
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        self.proc = subprocess.Popen(['unshare', '-rm', 'sh', '-c', script], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()

    def text(self):
        return ''.join(self.lines)

    def wait_for_line(self, text, timeout=60):
        deadline = time.monotonic() + timeout
        while text not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f'no {text!r} from aura_node:\n{self.text()}')
            time.sleep(0.05)

    def stop(self):
        """SIGTERM to the node; returns (exit code, files left in the folder)."""
        match = re.search(r'node pid (\d+)', self.text())
        if match and self.proc.poll() is None:
            try:
                os.kill(int(match.group(1)), signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(0.2)
        out = self.text()
        code = re.search(r'node exit (-?\d+)', out)
        files = out[code.end():].split() if code else []
        return (int(code.group(1)) if code else None), sorted(set(files) - {'.', '..'})


@pytest.fixture
def diagnostics_listener(make_node, executor):
    listener = make_node('aura_faults_listener')
    seen = []
    listener.create_subscription(DiagnosticArray, '/diagnostics', seen.append, 10)
    return listener, seen


def _aura_status(seen, predicate):
    found = aura_statuses(seen, lambda status, values: predicate(values))
    return found[0] if found else None


@needs_unshare
def test_row2_bad_snapshot_on_a_read_only_file_system_starts_fresh_with_resume_off(
        tiny_model_dir, tmp_path, executor, wait_for, diagnostics_listener):
    corrupt = tmp_path / 'corrupt.state'
    data = bytearray(_snapshot_bytes(corrupt, model_fingerprint(tiny_model_dir)))
    data[-5] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    folder = tmp_path / 'ro'
    folder.mkdir()
    node = PrivateMountNode(folder, f'cp {corrupt} {folder}/aura.state; '
                            f'mount -o remount,ro {folder}',
                            '-p', f'model_dir:={tiny_model_dir}', '-p', 'device:=cpu',
                            '-p', f'state_file:={folder}/aura.state',
                            '-p', 'diagnostics_period_s:=0.2')
    try:
        node.wait_for_line('memory state')
        _, seen = diagnostics_listener
        wait_for(lambda: _aura_status(seen, lambda v: 'crash_resume' in v), 30, executor,
                 '/diagnostics from the node')
        _, values = _aura_status(seen, lambda v: 'crash_resume' in v)
    finally:
        code, files = node.stop()
    out = node.text()
    assert values['crash_resume'].startswith('off:') and 'set aside' in values['crash_resume']
    assert 'could not be set aside' in out and 'will not be overwritten' in out, out
    assert 'Traceback' not in out, out
    assert code == 0, out
    assert files == ['aura.state'], out                  # still there, never renamed


@needs_unshare
def test_rows5_8_saves_on_a_full_file_system_fail_apart_and_leave_no_temp_files(
        tiny_model_dir, tmp_path, rclpy_context, executor, wait_for, diagnostics_listener,
        make_node):
    folder = tmp_path / 'full'
    folder.mkdir()
    node = PrivateMountNode(folder, f'dd if=/dev/zero of={folder}/filler bs=4k 2>/dev/null '
                            '|| true',
                            '-p', f'model_dir:={tiny_model_dir}', '-p', 'device:=cpu',
                            '-p', f'state_file:={folder}/aura.state', '-p', 'gate_threshold:=0.0',
                            '-p', 'input_qos:=reliable', '-p', 'diagnostics_period_s:=0.2')
    client = make_node('aura_faults_full_client')
    image_pub = client.create_publisher(Image, 'image', RELIABLE)
    joint_pub = client.create_publisher(JointState, 'joint_states', RELIABLE)
    _, seen = diagnostics_listener
    try:
        node.wait_for_line('memory state')
        wait_for(lambda: image_pub.get_subscription_count() > 0
                 and joint_pub.get_subscription_count() > 0, 30, executor, 'discovery')
        # a writer's side can match before the node's reader has: let the joint topic settle,
        # or the first image may arrive before its joint state (rejected as no_joints)
        joint_pub.publish(joint_msg(client.get_clock().now().to_msg()))
        time.sleep(0.5)
        for pixels in FRAMES[:3]:                       # threshold 0: every step writes, saves
            stamp = client.get_clock().now().to_msg()
            joint_pub.publish(joint_msg(stamp))
            time.sleep(0.05)
            image_pub.publish(image_msg(pixels, stamp))
            time.sleep(0.3)
        # every frame received is accounted for as stepped, rejected or dropped: a failed save
        # is not a rejected frame (one may be rejected as stale on a loaded machine)
        def settled(v):
            return int(v.get('state_save_failures', 0)) > 0 and int(v['frames_received']) == (
                int(v['steps']) + int(v['frames_rejected']) + int(v['frames_dropped']))
        wait_for(lambda: _aura_status(seen, settled), 30, executor,
                 'a failed save on /diagnostics, every frame accounted for')
        _, values = _aura_status(seen, settled)
    finally:
        code, files = node.stop()
    assert int(values['steps']) >= 1 and 'rejected_state_save_failed' not in values, values
    assert code == 0, node.text()
    assert not [f for f in files if '.tmp-' in f], files           # no temp-file litter
    assert 'could not save the state' in node.text()


def test_row5_state_file_in_a_missing_folder_fails_at_start(rclpy_context, tiny_model_dir,
                                                            tmp_path):
    with pytest.raises(ParameterError, match="'state_file'.*does not exist"):
        start_node(rclpy_context, tiny_model_dir, state_file=str(tmp_path / 'no' / 'x.state'))


@needs_unshare
def test_row5_state_file_on_a_read_only_file_system_fails_at_start_naming_it(tiny_model_dir,
                                                                             tmp_path):
    folder = tmp_path / 'ro'
    folder.mkdir()
    node = PrivateMountNode(folder, f'mount -o remount,ro {folder}',
                            '-p', f'model_dir:={tiny_model_dir}', '-p', 'device:=cpu',
                            '-p', f'state_file:={folder}/aura.state')
    try:
        node.proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        node.stop()                                        # it started: the fault
    time.sleep(0.2)
    out = node.text()
    assert 'node exit 2' in out and "'state_file'" in out and 'Read-only' in out, out
    assert 'Traceback' not in out, out


# -- row 3: a joint state from the future is rejected -----------------------------------------

def test_row3_future_joint_state_is_rejected_and_not_kept(make_rig):
    rig = make_rig()
    rig.step(FRAMES[0])
    kept = rig.node._joints
    future = rig.now()
    future.sec += 3600
    rig.joint_pub.publish(joint_msg(future))
    rig.wait_for(lambda: rig.node.rejected['future_joints'] == 1, 5, rig.executor,
                 'future_joints rejection')
    assert rig.node._joints is kept
    assert rig.node.joint_states_rejected == 1


# -- rows 4 and 21: gate_threshold set at run time, applied at once, integers accepted ---------

def test_row4_threshold_change_is_applied_logged_and_visible_without_frames(make_rig):
    rig = make_rig(diagnostics_period_s=0.2)
    result = set_parameter(rig, ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                               double_value=0.9))
    assert result.successful
    rig.diagnostics(lambda s, v: v['gate_threshold'] == '0.9', what='gate_threshold 0.9')
    rig.wait_for(lambda: rig.warnings('gate threshold set to 0.9'), 5, rig.executor,
                 'the log line on /rosout')
    assert rig.node.received == 0


def test_row21_an_integer_is_accepted_for_the_float_threshold(make_rig):
    rig = make_rig(diagnostics_period_s=0.2)
    result = set_parameter(rig, ParameterValue(type=ParameterType.PARAMETER_INTEGER,
                                               integer_value=1))      # as `ros2 param set` sends
    assert result.successful, result.reason
    rig.diagnostics(lambda s, v: v['gate_threshold'] == '1', what='gate_threshold 1')
    assert rig.node.get_parameter('gate_threshold').value == 1.0
    assert not set_parameter(rig, ParameterValue(type=ParameterType.PARAMETER_INTEGER,
                                                 integer_value=2)).successful   # range holds
    assert not set_parameter(rig, ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                 string_value='0.3')).successful


def test_row21_an_integer_override_at_start_is_accepted(rclpy_context, tiny_model_dir):
    node = start_node(rclpy_context, tiny_model_dir, gate_threshold=0, max_obs_age_s=2)
    try:
        assert node.runtime.gate_threshold == 0.0 and node.params.max_obs_age_s == 2.0
    finally:
        node.stop()
        node.destroy_node()


# -- row 18: /diagnostics on a wall-clock timer ------------------------------------------------

def test_row18_health_is_published_with_sim_time_and_no_clock(make_rig):
    rig = make_rig(use_sim_time=True, diagnostics_period_s=0.2)
    status, _ = rig.diagnostics(timeout=10, what='/diagnostics without /clock')
    # no /clock publisher exists yet in this test run (row 6, after this one, makes the first)
    assert rig.node.get_clock().now().nanoseconds == 0, 'a /clock reached the node'


# -- row 6: /clock jumping back (a bag in a loop) --------------------------------------------

def _sim_stamp(seconds):
    msg = ClockMsg()
    msg.clock.sec, msg.clock.nanosec = int(seconds), int(round(seconds % 1 * 1e9))
    return msg.clock


def test_row6_a_backwards_clock_jump_is_noticed_and_stepping_goes_on(make_rig):
    rig = make_rig(use_sim_time=True, diagnostics_period_s=0.2)
    clock_pub = rig.client.create_publisher(ClockMsg, '/clock', RELIABLE)
    node = rig.node

    def at(seconds, pixels):
        clock_pub.publish(ClockMsg(clock=_sim_stamp(seconds)))
        rig.wait_for(lambda: abs(node.get_clock().now().nanoseconds * 1e-9 - seconds) < 1e-6,
                     5, rig.executor, f'node clock at {seconds}')
        steps = node.runtime.steps
        rig.joint_pub.publish(joint_msg(_sim_stamp(seconds)))
        time.sleep(0.05)
        rig.image_pub.publish(image_msg(pixels, _sim_stamp(seconds)))
        rig.wait_for(lambda: node.runtime.steps > steps or node.rejected, 5, rig.executor,
                     f'frame at {seconds}')

    rig.wait_for(lambda: clock_pub.get_subscription_count() > 0, 5, rig.executor, '/clock')
    at(1000.0, FRAMES[0])
    at(1000.1, FRAMES[1])
    at(10.0, FRAMES[2])                                    # the bag starts again
    at(10.1, FRAMES[3])
    assert node.runtime.steps == 4, dict(node.rejected)
    assert not node.rejected and node.clock_jumps_back == 1
    status, values = rig.diagnostics(lambda s, v: v['clock_jumps_back'] == '1')
    assert status.level == DiagnosticStatus.WARN and 'clock_jump_back' in status.message
    assert rig.warnings('jumped back')


# -- row 7: CUDA asked for where there is none ---------------------------------------------------

@pytest.mark.skipif(__import__('torch').cuda.is_available(), reason='this machine has CUDA')
def test_row7_cuda_without_cuda_is_a_parameter_error(rclpy_context, tiny_model_dir):
    with pytest.raises(ParameterError, match=r"'device'.*available: auto, cpu"):
        start_node(rclpy_context, tiny_model_dir, device='cuda')


# -- row 9: peer strings are cut in logs ---------------------------------------------------------

def test_row9_a_megabyte_encoding_is_cut_in_the_log(make_rig):
    rig = make_rig()
    rig.step(FRAMES[0])
    rig.send(FRAMES[1], encoding='x' * 1_000_000)
    rig.wait_for(lambda: rig.warnings('(encoding)'), 10, rig.executor, 'the warning')
    line = rig.warnings('(encoding)')[0]
    assert len(line) < 1000 and '1000002 chars' in line, len(line)


# -- row 10: ~ in every path parameter -----------------------------------------------------------

def test_row10_state_file_expands_the_home_folder(rclpy_context, tiny_model_dir, tmp_path,
                                                  monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    node = start_node(rclpy_context, tiny_model_dir, state_file='~/aura.state')
    node.stop()                                            # saves at shutdown
    node.destroy_node()
    assert node.params.state_file == str(tmp_path / 'aura.state')
    assert (tmp_path / 'aura.state').is_file()


# -- row 11: Ctrl-C at any moment of start-up ----------------------------------------------------

@pytest.mark.parametrize('sig,after_s', [('SIGINT', 0.4), ('SIGINT', 1.2), ('SIGINT', 2.5),
                                         ('SIGINT', 4.0), ('SIGTERM', 2.0), ('SIGHUP', 2.0)])
def test_row11_a_signal_during_start_up_exits_cleanly(tiny_model_dir, sig, after_s):
    """Imports (torch: seconds here), rclpy.init, model load: exit 0, no traceback, any time."""
    proc = subprocess.Popen([sys.executable, '-m', 'aura_ros.ros.node', '--ros-args', '-p',
                             f'model_dir:={tiny_model_dir}', '-p', 'device:=cpu'], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(after_s)
    proc.send_signal(getattr(signal, sig))
    try:
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert 'Traceback' not in output, output


# -- rows 12, 13: a windowed level that names the reason; separate counters --------------------

def test_row12_warn_names_the_reason_and_clears_after_the_window(make_rig):
    rig = make_rig(health_window_s=1.0, diagnostics_period_s=0.2)
    rig.step(FRAMES[0])
    rig.send(FRAMES[1], encoding='yuv422')
    status, _ = rig.diagnostics(lambda s, v: s.level == DiagnosticStatus.WARN, what='WARN')
    assert '1 encoding in the last 1 s' in status.message, status.message
    status, values = rig.diagnostics(lambda s, v: s.level == DiagnosticStatus.OK, what='OK again')
    assert values['rejected_encoding'] == '1' and values['frames_rejected'] == '1'


def test_row13_joint_state_rejections_are_counted_apart_from_images(make_rig):
    rig = make_rig(diagnostics_period_s=0.2)
    rig.step(FRAMES[0])
    for n in range(1, 4):
        rig.joint_pub.publish(joint_msg(rig.now(), positions=(float('nan'), 0.0)))
        rig.wait_for(lambda n=n: rig.node.rejected['nonfinite_joints'] == n, 5, rig.executor,
                     f'rejected joint state {n}')
    _, values = rig.diagnostics(lambda s, v: v.get('joint_states_rejected') == '3')
    assert values['frames_rejected'] == '0' and values['frames_received'] == '1'
    assert int(values['joint_states_received']) >= 4


# -- row 14: a reset keeps a still-valid joint state ---------------------------------------------

def test_row14_after_a_reset_the_latest_joint_state_is_still_used(make_rig):
    rig = make_rig()
    rig.step(FRAMES[0])
    assert rig.reset().success
    rig.send(FRAMES[1], joints=False)                      # the joint state is still fresh
    rig.wait_for(lambda: rig.node.runtime.steps == 1 or rig.node.rejected, 5, rig.executor,
                 'the step after the reset')
    assert rig.node.runtime.steps == 1 and not rig.node.rejected, dict(rig.node.rejected)


# -- row 15: duplicate joint names --------------------------------------------------------------

def test_row15_duplicate_joint_names_are_malformed(make_rig):
    rig = make_rig()
    rig.step(FRAMES[0])
    kept = rig.node._joints
    msg = JointState(name=['shoulder', 'elbow', 'shoulder'], position=[0.1, 0.2, 0.3])
    msg.header.stamp = rig.now()
    rig.joint_pub.publish(msg)
    rig.wait_for(lambda: rig.node.rejected['malformed_joints'] == 1, 5, rig.executor,
                 'malformed_joints')
    assert rig.node._joints is kept


# -- row 16: two cameras on one topic ---------------------------------------------------------

def test_row16_two_image_publishers_are_warned_about(make_rig):
    rig = make_rig(diagnostics_period_s=0.2)
    second = rig.client.create_publisher(Image, 'image', qos_profile_sensor_data)
    try:
        status, values = rig.diagnostics(lambda s, v: v.get('image_publishers') == '2',
                                         what='image_publishers 2')
        assert status.level == DiagnosticStatus.WARN and '2 publishers on /image' in \
            status.message
        rig.wait_for(lambda: rig.warnings('2 publishers on /image'), 5, rig.executor, 'warning')
    finally:
        rig.client.destroy_publisher(second)


# -- row 17: SIGHUP saves and exits 0 -----------------------------------------------------------

def test_row17_sighup_saves_the_state_and_exits_0(tiny_model_dir, tmp_path):
    state = tmp_path / 'aura.state'
    proc = subprocess.Popen([sys.executable, '-m', 'aura_ros.ros.node', '--ros-args', '-p',
                             f'model_dir:={tiny_model_dir}', '-p', 'device:=cpu', '-p',
                             f'state_file:={state}'], cwd=REPO, env=dict(
                                 os.environ, PYTHONUNBUFFERED='1'),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if 'memory state' in line:
            break
    proc.send_signal(signal.SIGHUP)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, ''.join(lines) + output
    assert state.is_file()                                 # saved at shutdown


# -- row 19: nanosec out of range ---------------------------------------------------------------

def test_row19_a_stamp_with_nanosec_over_a_second_is_malformed(make_rig):
    rig = make_rig()
    rig.step(FRAMES[0])
    bad = rig.now()
    bad.sec -= 1
    bad.nanosec = 1_200_000_000                             # == now + 0.2 s if it were summed
    rig.joint_pub.publish(joint_msg(bad))
    rig.wait_for(lambda: rig.node.rejected['malformed_stamp'] == 1, 5, rig.executor, 'joints')
    rig.send(FRAMES[1], stamp=bad)
    rig.wait_for(lambda: rig.node.rejected['malformed_stamp'] == 2, 5, rig.executor, 'image')
    assert rig.node.runtime.steps == 1


# -- row 20: one throttle per reason ------------------------------------------------------------

def test_row20_warnings_are_throttled_per_reason(make_rig):
    rig = make_rig()
    rig.step(FRAMES[0])
    rig.send(FRAMES[1], encoding='yuv422')
    rig.settle()                                            # each judged before the next comes
    rig.send(np.zeros((0, 0, 3), np.uint8))
    rig.settle()
    rig.send(FRAMES[2], encoding='yuv422')                  # same reason within 2 s: throttled
    rig.wait_for(lambda: rig.warnings('(empty)') and rig.warnings('(encoding)'), 5,
                 rig.executor, 'one warning for each reason')
    rig.settle()
    assert rig.node.rejected['encoding'] == 2
    assert len(rig.warnings('(encoding)')) == 1
