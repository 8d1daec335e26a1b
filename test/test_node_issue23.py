"""Issue 23, the node's rows: found from outside over DDS, each pinned here over real DDS.

The node runs in-process (its worker thread, the test's executor) unless a row is about the
process (exit codes, the lifecycle shutdown); a client node plays cameras, joint states and
controllers. Each test names its row of the issue.
"""

import io
import os
import signal
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy not installed (pip install .[ros])')

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from PIL import Image as PILImage  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rosgraph_msgs.msg import Clock as ClockMsg  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from test_node_faults import FaultRig, set_parameter, start_node  # noqa: E402
from test_node_robot import (  # noqa: E402
    GROUPS,
    Robot,
    features_msg,
    image_msg,
    joint_msg,
    make_model,
    node_process,
    smooth_frame,
    wait_ready,
)

from aura_ros.ros.params import ParameterError  # noqa: E402

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
HUGE_FEATURES = np.linspace(-1e20, 1e20, 32)


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp('issue23_models')
    return {
        'features': make_model(root / 'features', cameras='none'),
        'delta': make_model(root / 'delta', 'delta', GROUPS, {'gripper': (0.45, 0.55)}),
        'plain': make_model(root / 'plain'),
        'two': make_model(root / 'two', cameras='two'),
        'timing': make_model(root / 'timing', period=1 / 30),     # chunk 3 x 33 ms = 0.1 s
    }


@pytest.fixture
def robot(make_node, executor, wait_for):
    made = []

    def make(model_dir, **kwargs):
        rig = Robot(make_node, executor, wait_for, model_dir, **kwargs)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


def health_level(rig, predicate, what):
    return rig.diagnostics(predicate, what=what)[0].level


def stamp_at(rig, offset_s):
    ns = rig.client.get_clock().now().nanoseconds + int(offset_s * 1e9)
    return rclpy.time.Time(nanoseconds=ns).to_msg()


def all_numbers_finite(rig):
    """No non-finite number in any chunk or gate message the client received."""
    for msgs in rig.chunks.values():
        for msg in msgs:
            assert np.isfinite([p.positions for p in msg.points]).all()
    for msg in rig.gates:
        for kv in msg.status[0].values:
            try:
                value = float(kv.value)
            except ValueError:
                continue
            assert np.isfinite(value), (kv.key, kv.value)


# -- row 1: finite but huge inputs never make a NaN leave the node ---------------------------

def test_row1_huge_features_are_refused_before_the_state_and_nothing_nonfinite_leaves(
        robot, models):
    rig = robot(models['features'], topics=('features',), diagnostics_period_s=0.2)
    rig.connect()
    rig.publish('features', features_msg(np.linspace(-1, 1, 32), rig.now()))
    rig.wait_gates(1, 'a good step')
    state = rig.node.runtime.state_dict()
    for i in range(3):
        rig.publish('features', features_msg(HUGE_FEATURES, rig.now()))
        rig.wait_for(lambda n=i + 1: sum(rig.node.rejected.values()) == n, 10, rig.executor,
                     f'refusal {i}')
    assert rig.node.rejected == {'nonfinite_step': 3}
    assert rig.node.runtime.steps == 1 and rig.node.clipped == 0
    for key, value in rig.node.runtime.state_dict().items():
        assert np.array_equal(value, state[key]), key
    rig.spin(0.3)
    assert len(rig.gates) == 1 and len(rig.chunks['action_chunk']) == 1
    all_numbers_finite(rig)
    assert health_level(rig, lambda s, v: v.get('rejected_nonfinite_step') == '3',
                        'the refusals on /diagnostics') == DiagnosticStatus.WARN


@pytest.mark.parametrize('limits', [True, False])
def test_row1_a_huge_joint_position_publishes_no_nan_on_any_group(robot, models, tmp_path,
                                                                  limits):
    model = models['delta'] if limits else make_model(tmp_path / 'm', 'delta', GROUPS)
    rig = robot(model, groups=('arm', 'gripper'))
    rig.connect()
    for i, position in enumerate((0.1, 1e25, 1e25, 0.1)):
        rig.joints(positions=(position, -0.2, 0.3, 0.5))
        rig.publish('image', image_msg(smooth_frame(i), rig.now()))
        rig.wait_for(lambda n=i + 1: rig.node.runtime.steps + sum(rig.node.rejected.values())
                     >= n, 10, rig.executor, f'frame {i}')
    assert rig.node.runtime.steps == 2, dict(rig.node.rejected)
    assert rig.node.rejected['nonfinite_step'] + rig.node.rejected['nonfinite_features'] == 2
    rig.wait_gates(2)
    rig.spin(0.3)
    assert len(rig.chunks['arm']) == len(rig.chunks['gripper']) == 2
    all_numbers_finite(rig)


# -- row 2: an observation too old for its chunk is refused before the state -----------------

def test_row2_a_frame_older_than_its_chunk_is_refused_and_the_memory_not_written(robot, models):
    rig = robot(models['timing'])
    rig.connect()
    for i in range(3):                        # 0.09 s behind: the chunk (0.1 s) is all past
        rig.joints()
        rig.publish('image', image_msg(smooth_frame(i), stamp_at(rig, -0.09)))
        # one at a time: on a loaded machine a second frame could replace the first unjudged
        rig.wait_for(lambda n=i + 1: rig.node.rejected['stale_for_chunk'] == n, 10,
                     rig.executor, 'stale_for_chunk refusals')
    assert rig.node.runtime.steps == 0 and rig.node.runtime.writes == 0
    assert rig.node.chunks_expired == 0
    rig.joints()
    rig.publish('image', image_msg(smooth_frame(5), rig.now()))      # a fresh one steps
    rig.wait_gates(1)


# -- row 3: a threshold just above 1; a worker that dies fails loudly ------------------------

def test_row3_a_threshold_just_above_one_fails_at_start_naming_it(rclpy_context, models):
    with pytest.raises(ParameterError, match="'gate_threshold'"):
        start_node(rclpy_context, models['plain'], gate_threshold=1.0000005)
    proc = node_process('-p', f'model_dir:={models["plain"]}', '-p', 'device:=cpu',
                        '-p', 'gate_threshold:=1.0000005')
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 2, output
    assert "parameter 'gate_threshold'" in output and 'Traceback' not in output


def test_row3_a_threshold_just_above_one_is_refused_at_run_time(make_node, executor, wait_for,
                                                                tiny_model_dir):
    rig = FaultRig(make_node, executor, wait_for, tiny_model_dir)
    try:
        result = set_parameter(rig, ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                                   double_value=1.0000005))
        assert not result.successful and 'gate_threshold' in result.reason
        assert rig.node.runtime.gate_threshold == 0.5
        rig.step(np.zeros((24, 32, 3), np.uint8))                   # the worker lives on
        assert rig.node.failure is None
    finally:
        rig.close()


def test_row3_a_dead_worker_is_an_error_not_a_live_looking_node(robot, models):
    rig = robot(models['plain'], diagnostics_period_s=0.2)
    rig.connect()
    rig.joints()
    rig.publish('image', image_msg(smooth_frame(0), rig.now()))
    rig.wait_gates(1)
    # no input reaches the worker's own failure any more (that is the point of the row): break
    # the loaded runtime by hand so the next reset raises inside the worker
    rig.node.runtime.memory.reset = None
    reply = rig.call(rig.reset_client, Trigger.Request())
    assert not reply.success
    rig.wait_for(lambda: rig.node.exit_code == 1, 10, rig.executor, 'the node gives up')
    assert rig.state() == State.PRIMARY_STATE_FINALIZED
    status, values = rig.diagnostics(lambda s, v: s.level == DiagnosticStatus.ERROR,
                                     what='/diagnostics ERROR')
    assert 'the worker failed' in status.message and 'TypeError' in values['worker_failure']
    reply = rig.call(rig.reset_client, Trigger.Request())    # answered with why, not left to
    assert not reply.success and 'timed out' not in reply.message        # time out on the worker
    assert 'finalized' in reply.message


# -- row 4: two cameras are never blinded by one unpairable frame ----------------------------

def pair(rig, stamp, seed):
    rig.publish('front/image', image_msg(smooth_frame(seed), stamp))
    rig.publish('wrist/image', image_msg(smooth_frame(seed, 6, 8), stamp))


def test_row4_a_frame_an_hour_ahead_or_a_camera_going_back_does_not_blind_the_node(robot,
                                                                                   models):
    rig = robot(models['two'], topics=('front/image', 'wrist/image'))
    rig.connect()
    rig.joints()
    rig.publish('front/image', image_msg(smooth_frame(9), stamp_at(rig, 3600.0)))
    rig.wait_for(lambda: rig.node.rejected['future_image'] == 1, 5, rig.executor, 'refused')
    for i in range(3):
        rig.joints()
        pair(rig, rig.now(), i)
        rig.wait_gates(i + 1, f'set {i}')
    rig.publish('front/image', image_msg(smooth_frame(8), stamp_at(rig, 0.2)))   # waits...
    rig.spin(0.1)
    for i in range(3, 6):                     # ...then the front camera restarts, earlier
        rig.joints()
        pair(rig, rig.now(), i)
        rig.wait_gates(i + 1, f'set {i}')
    assert rig.node.runtime.steps == 6


def test_row4_a_clock_jump_back_while_a_frame_waits_clears_the_set_buffer(robot, models):
    rig = robot(models['two'], topics=('front/image', 'wrist/image'), use_sim_time=True)
    clock = rig.client.create_publisher(ClockMsg, '/clock', RELIABLE)
    rig.connect()
    rig.wait_for(lambda: clock.get_subscription_count() > 0, 5, rig.executor, '/clock')

    def at(seconds):
        msg = ClockMsg()
        msg.clock.sec, msg.clock.nanosec = int(seconds), int(round(seconds % 1 * 1e9))
        clock.publish(msg)
        rig.wait_for(lambda: abs(rig.node.get_clock().now().nanoseconds * 1e-9 - seconds)
                     < 1e-6, 5, rig.executor, f'clock at {seconds}')
        rig.joint_pub.publish(joint_msg(msg.clock))
        rig.spin(0.05)
        return msg.clock

    rig.publish('front/image', image_msg(smooth_frame(0), at(1000.0)))   # waits for its wrist
    rig.spin(0.1)
    for i, t in enumerate((10.0, 10.1, 10.2)):                        # the bag starts again
        pair(rig, at(t), i)
        rig.wait_gates(i + 1, f'set at {t}')
    assert rig.node.clock_jumps_back == 1 and rig.node.runtime.steps == 3


# -- rows 5, 6, 8: bombs, truncated frames, oversized ones ----------------------------------

def compressed(data, stamp):
    msg = CompressedImage(format='png', data=data)
    msg.header.stamp = stamp
    return msg


def encoded(pixels, fmt):
    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, fmt)
    return out.getvalue()


def test_rows5_6_8_bombs_are_too_large_and_truncated_frames_decode_failed(robot, models):
    rig = robot(models['plain'], topics=('image/compressed',), msg_type=CompressedImage,
                image_transport='compressed')
    rig.connect()
    bomb = encoded(np.zeros((4096, 4096), np.uint8), 'PNG')           # ~50 KB declaring 16 Mpx
    jpeg = bytearray(encoded(smooth_frame(0, 24, 32), 'JPEG'))
    sof = jpeg.find(b'\xff\xc0')
    jpeg[sof + 5:sof + 9] = (512).to_bytes(2, 'big') * 2              # claims 512x512
    for n, data in enumerate((bomb, bytes(jpeg)), 1):
        rig.joints()
        rig.publish('image/compressed', compressed(data, rig.now()))
        rig.wait_for(lambda n=n: rig.node.images_rejected == n, 10, rig.executor, 'refusals')
    assert rig.node.rejected == {'too_large': 1, 'decode_failed': 1}
    assert rig.node.runtime.steps == 0
    rig.joints()
    rig.publish('image/compressed', compressed(encoded(smooth_frame(1), 'PNG'), rig.now()))
    rig.wait_gates(1)


def test_row8_a_raw_frame_over_the_pixel_limit_is_too_large(robot, models):
    rig = robot(models['plain'], max_frame_pixels=1000)
    rig.connect()
    rig.joints()
    rig.publish('image', image_msg(smooth_frame(0, 48, 64), rig.now()))       # 3,072 pixels
    rig.wait_for(lambda: rig.node.rejected['too_large'] == 1, 10, rig.executor, 'too_large')
    assert rig.node.runtime.steps == 0


# -- row 7: frames the node itself did not take are not "lost in transport" ------------------

def test_row7_frames_missed_while_inactive_are_not_lost_in_transport(robot, models):
    rig = robot(models['plain'])
    rig.connect()
    rig.joints()
    rig.publish('image', image_msg(smooth_frame(0), rig.now()))
    rig.wait_gates(1)
    assert rig.transition(Transition.TRANSITION_DEACTIVATE)
    for i in range(5):
        rig.publish('image', image_msg(smooth_frame(i), rig.now()))
        rig.spin(0.02)
    assert rig.transition(Transition.TRANSITION_ACTIVATE)
    rig.joints()
    rig.publish('image', image_msg(smooth_frame(6), rig.now()))
    rig.wait_gates(2)
    assert rig.node.lost_in_transport == 0 and rig.node.missed_by_node == 5
    assert rig.node.health()['frames_missed_by_node'] == 5


# -- row 9: one state file, one node; one name, one node ------------------------------------

def test_row9_a_second_node_on_one_state_file_is_refused_naming_the_holder(
        rclpy_context, models, tmp_path):
    path = str(tmp_path / 'aura.state')
    first = start_node(rclpy_context, models['plain'], state_file=path)
    try:
        with pytest.raises(ParameterError, match=f'in use by another aura_node \\(pid '
                                                 f'{os.getpid()}'):
            start_node(rclpy_context, models['plain'], state_file=path)
        proc = node_process('-p', f'model_dir:={models["plain"]}', '-p', f'state_file:={path}',
                            '-p', 'device:=cpu')
        output, _ = proc.communicate(timeout=90)
        assert proc.returncode == 2, output
        assert f'pid {os.getpid()}' in output and 'Traceback' not in output
    finally:
        first.stop()
        first.destroy_node()
    second = start_node(rclpy_context, models['plain'], state_file=path)  # the lock went with it
    second.stop()
    second.destroy_node()


def test_row9_two_nodes_of_one_name_are_warned_about(make_node, executor, wait_for,
                                                     tiny_model_dir):
    rig = FaultRig(make_node, executor, wait_for, tiny_model_dir, diagnostics_period_s=0.2)
    try:
        make_node('aura')                                          # a second /aura
        status, _ = rig.diagnostics(lambda s, v: 'duplicate_node_name' in s.message,
                                    what='the duplicate name on /diagnostics')
        assert status.level == DiagnosticStatus.WARN    # (the warning goes to the console:
        # /rosout of a duplicated name is rcl's own mix-up, which is the point)
    finally:
        rig.close()


# -- row 10: the lifecycle shutdown transition ends the process -----------------------------

def test_row10_the_shutdown_transition_ends_the_process_with_exit_0(make_node, executor,
                                                                    wait_for, models):
    proc = node_process('-p', f'model_dir:={models["plain"]}', '-p', 'device:=cpu')
    try:
        started = wait_ready(proc)
        assert 'memory state' in started, started
        client = make_node('shutdown_client').create_client(ChangeState, '/aura/change_state')
        wait_for(client.service_is_ready, 30, executor, 'change_state')
        future = client.call_async(ChangeState.Request(
            transition=Transition(id=Transition.TRANSITION_ACTIVE_SHUTDOWN)))
        wait_for(future.done, 30, executor, 'the shutdown transition')
        assert future.result().success
        assert proc.wait(timeout=30) == 0
        assert 'lifecycle shutdown' in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=15)


# -- row 8: Ctrl-C in the middle of a step -----------------------------------------------------

def test_row8_a_step_committed_as_the_context_shuts_down_is_not_step_failed(tiny_model_dir):
    """Ctrl-C shuts the context down (rclpy's handler) while the worker steps: the step is
    committed, then publishing fails. That is not a failed step. The worker is held at the
    runtime's lock so that the shutdown lands exactly between taking the frame and the step."""
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from test_node import FRAMES
    from test_node import image_msg as tiny_image
    from test_node import joint_msg as tiny_joints

    from aura_ros.ros.node import AuraNode

    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    node = AuraNode(context=context,
                    parameter_overrides=[Parameter('model_dir', value=str(tiny_model_dir))])
    client = rclpy.create_node('ctrl_c_client', context=context)
    try:
        executor.add_node(node)
        executor.add_node(client)
        images = client.create_publisher(Image, 'image', qos_profile_sensor_data)
        joints = client.create_publisher(JointState, 'joint_states', qos_profile_sensor_data)
        deadline = time.monotonic() + 10
        while not (images.get_subscription_count() and joints.get_subscription_count()):
            assert time.monotonic() < deadline, 'discovery'
            executor.spin_once(timeout_sec=0.05)
        runtime = node.runtime
        with runtime._lock:                       # the worker will wait here, frame in hand
            now = client.get_clock().now().to_msg()
            joints.publish(tiny_joints(now))
            executor.spin_once(timeout_sec=0.2)
            images.publish(tiny_image(FRAMES[0], now))
            while node.received == 0:
                assert time.monotonic() < deadline + 10, 'the frame'
                executor.spin_once(timeout_sec=0.05)
            while node._frame is not None:        # taken by the worker
                time.sleep(0.01)
            time.sleep(0.2)
            context.shutdown()                    # what Ctrl-C does
        deadline = time.monotonic() + 10
        while runtime.steps == 0 or node._busy:
            assert time.monotonic() < deadline, 'the step'
            time.sleep(0.02)
        assert runtime.steps == 1 and not node.rejected, dict(node.rejected)
    finally:
        node.stop()
        executor.shutdown()
        rclpy.try_shutdown(context=context)


# -- row 14: outputs:= and cameras:= that fit the model are the only silent ones ---------------

def test_row14_remaps_naming_no_group_or_camera_of_the_model_are_warned_about(models):
    """What `outputs:='arm:=...' cameras:='side:=...'` of aura.launch.py pass to a model without
    those: the node names the model's groups and cameras instead of publishing into the void."""
    proc = node_process('-p', f'model_dir:={models["plain"]}', '-p', 'device:=cpu',
                        '-r', '~/arm:=/arm_controller/joint_trajectory',
                        '-r', 'side/image:=/cam_side/image_raw',
                        '-r', 'image:=/camera/image_raw', '-r', '~/action_chunk:=/ctrl/traj')
    try:
        output = wait_ready(proc)
        assert 'memory state' in output, output
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
    warnings = [line for line in output.splitlines() if 'remap' in line]
    assert len(warnings) == 2, output
    assert '~/arm:=' in warnings[0] and 'output group(s) are action_chunk' in warnings[0]
    assert 'side/image:=' in warnings[1] and 'on image' in warnings[1]


def test_row7_frames_overwritten_while_the_executor_stalled_are_not_lost_in_transport(
        robot, models):
    """The executor took nothing (not even the /diagnostics timer) while frames came: the ones
    overwritten in the node's own depth-1 queue are the node's, not the transport's."""
    rig = robot(models['plain'], diagnostics_period_s=0.2)
    rig.connect()
    rig.joints()
    rig.publish('image', image_msg(smooth_frame(0), rig.now()))
    rig.wait_gates(1)
    for i in range(5):                        # nobody spins: a stalled executor
        rig.publish('image', image_msg(smooth_frame(i), rig.now()))
        time.sleep(0.2)
    rig.spin(0.3)
    rig.joints()
    rig.publish('image', image_msg(smooth_frame(6), rig.now()))
    rig.wait_for(lambda: rig.node.received >= 3, 10, rig.executor, 'frames after the stall')
    assert rig.node.missed_by_node >= 4 and rig.node.lost_in_transport == 0
