"""`aura_node`: camera + joint states in, action chunks and the write gate out, reset service.

Threading: one worker thread owns the runtime and its memory state. Subscription callbacks only
hand the latest message over (an unprocessed frame that a newer one replaces is counted as
dropped), so a slow step drops frames instead of queueing them. A reset is performed by the worker
between two steps; the service callback waits for it, at most about one step.

A step whose new memory state would be NaN/Inf is discarded by the runtime (the state stays the
last good one); the node publishes that step's chunk (a skip step's), counts it apart from input
rejections (`nonfinite_state_discarded` on /diagnostics) and warns, throttled.

Health: /diagnostics runs on a wall-clock (steady) timer, so it is published whatever the ROS
clock does (use_sim_time without /clock included). Its level is WARN while a problem (rejection,
drop, failed save, clock jump, several image publishers) happened within `health_window_s`, and its
message names them; the totals since start stay in the values. Warnings are throttled per reason.

With use_sim_time, a backwards jump of /clock (a bag played in a loop) is noticed through rclpy's
time-jump callback: it is warned about and counted, the last image stamp is forgotten so later
frames step again, and a kept joint state from after the new time is dropped. The memory is kept
as it is (the episode goes on); call ~/reset if the loop means a new episode.
"""

import os
import sys
import threading
import time
from collections import Counter, deque
from typing import Optional

# first of all: when aura_node is the program, its Ctrl-C/SIGHUP handler, before torch loads
from aura_ros.ros.interrupt import INTERRUPT  # isort: split

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType, JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions, install_signal_handlers
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from aura_ros.ros.conversions import (
    action_chunk_msg,
    checked_stamp_seconds,
    image_to_array,
    joints_to_array,
    status,
)
from aura_ros.ros.health import RecentProblems, Throttle
from aura_ros.ros.params import ParameterError, declare_and_read, widen_integers
from aura_ros.runtime import AuraRuntime, InputError, ModelDirError
from aura_ros.runtime.state_file import (
    StateFileError,
    is_snapshot,
    model_fingerprint,
    probe_writable,
    read_snapshot,
    save_snapshot,
    set_aside,
)

WARN_THROTTLE_S = 2.0
LOG_MESSAGE_CHARS = 400          # a warning built from peer input is cut to this


def check_device(device: str) -> None:
    """A CUDA device asked for on a machine without one: a parameter error, not a traceback."""
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ParameterError(f"parameter 'device' is {device!r} but torch sees no CUDA device "
                             "here; available: auto, cpu")


class AuraNode(Node):
    """The AURA policy node (docs/design.md section 6)."""

    def __init__(self, **kwargs):
        super().__init__('aura', **kwargs)
        try:
            self.params = declare_and_read(self)
        except ParameterError:
            raise
        except Exception as err:  # rclpy's range/type exceptions name the parameter
            raise ParameterError(str(err)) from err
        p = self.params
        check_device(p.device)
        # Small per-frame ops gain nothing from intra-op parallelism, and on a busy robot computer
        # its thread hand-offs cost milliseconds (docs/results/perf.md): one thread by default.
        torch.set_num_threads(p.inference_threads)
        self.runtime = AuraRuntime.from_model_dir(p.model_dir, device=p.device,
                                                  engine=p.memory_engine,
                                                  gate_threshold=p.gate_threshold,
                                                  threads=p.inference_threads)
        self.spec = self.runtime.spec
        self.state_bytes = self.runtime.memory_bytes()     # constant for the node's lifetime
        self.state_saves = 0
        self.state_bytes_written = 0
        self.state_save_failures = 0
        self.crash_resume = 'off'                  # 'on', or 'off' with the reason
        self._saving = False
        self._throttle = Throttle(WARN_THROTTLE_S)
        self._problems = RecentProblems(p.health_window_s)
        if p.state_file:
            self._fingerprint = model_fingerprint(p.model_dir)
            self._open_state_file()

        self._lock = threading.Condition()
        self._frame: Optional[tuple[Image, float]] = None
        self._joints: Optional[tuple[np.ndarray, float]] = None
        self._last_stamp = -float('inf')
        self._reset_request: Optional[dict] = None
        self._threshold_update: Optional[float] = None
        self._clock_jumped = False
        self._stopping = False

        self.received = 0
        self.dropped = 0
        self.rejected: Counter = Counter()         # by reason, images and joint states
        self.images_rejected = 0
        self.joint_states_received = 0
        self.joint_states_rejected = 0
        self.clock_jumps_back = 0
        self.image_publishers = 0
        self.nonfinite_discarded = 0               # steps whose non-finite new state was dropped
        self.latencies = deque(maxlen=2000)
        self.stage_times: dict[str, deque] = {}
        self.last_gate: dict = {}

        qos = p.qos()
        self._image_sub = self.create_subscription(Image, 'image', self._on_image, qos)
        self.create_subscription(JointState, 'joint_states', self._on_joints, qos)
        self.action_pub = self.create_publisher(JointTrajectory, '~/action_chunk', 10)
        self.gate_pub = self.create_publisher(DiagnosticArray, '~/gate', 10)
        self.health_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_service(Trigger, '~/reset', self._on_reset)
        self.create_timer(p.diagnostics_period_s, self._publish_health,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.add_pre_set_parameters_callback(widen_integers)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1),
                          on_clock_change=False), post_callback=self._on_clock_jump)

        self._worker = threading.Thread(target=self._run, name='aura_worker', daemon=True)
        self._worker.start()
        self.get_logger().info(
            f'model {self.spec.name!r} from {p.model_dir}; device {self.runtime.device}, '
            f'backbone provider {self.runtime.provider}, engine {self.runtime.engine}; '
            f'memory state {self.state_bytes} bytes; gate threshold '
            f'{p.gate_threshold}')

    # -- callbacks: hand over, never compute --

    def _on_image(self, msg: Image) -> None:
        with self._lock:
            self.received += 1
            if self._frame is not None:
                self.dropped += 1
                self._problems.add('dropped')
            self._frame = (msg, time.monotonic())
            self._lock.notify()

    def _on_joints(self, msg: JointState) -> None:
        self.joint_states_received += 1
        try:
            stamp = checked_stamp_seconds(msg.header.stamp)
            positions = joints_to_array(msg, self.spec.joint_names)
            ahead = stamp - self._now()
            if ahead > self.params.max_obs_age_s:
                # if kept, it would pass the staleness check of every image from now on
                raise InputError('future_joints', f'joint state stamp is {ahead:.3f} s in the '
                                 f'future (max_obs_age_s {self.params.max_obs_age_s})')
        except InputError as err:
            self._reject(err, image=False)
            return
        with self._lock:
            self._joints = (positions, stamp)

    def _on_reset(self, request, response):
        done = {'event': threading.Event()}
        with self._lock:
            self._reset_request = done
            self._frame = None
            self._lock.notify()
        if not done['event'].wait(timeout=10.0):
            response.success = False
            response.message = 'reset timed out: the worker did not answer within 10 s'
            return response
        summary = done['summary']
        response.success = True
        response.message = (f'memory reset; the finished episode had {summary.steps} steps '
                            f'and {summary.writes} writes')
        self.get_logger().info(response.message)
        return response

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            if param.name != 'gate_threshold':
                return SetParametersResult(successful=False,
                                           reason=f'{param.name} is read-only at run time')
        for param in params:
            with self._lock:
                self._threshold_update = float(param.value)
                self._lock.notify()                # applied now, frames or not
        return SetParametersResult(successful=True)

    def _on_clock_jump(self, jump: TimeJump) -> None:
        back = -jump.delta.nanoseconds * 1e-9
        if back <= 0:
            return
        self.clock_jumps_back += 1
        self._problems.add('clock_jump_back')
        with self._lock:
            self._clock_jumped = True
            if self._joints is not None \
                    and self._joints[1] - self._now() > self.params.max_obs_age_s:
                self._joints = None                # from the time before the jump
        self.get_logger().warning(
            f'the ROS clock jumped back by {back:.3f} s (a bag played in a loop?): frames step '
            'again from the new time; the memory is kept (call ~/reset for a new episode)')

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- the worker --

    def _run(self) -> None:
        while True:
            with self._lock:
                while (self._frame is None and self._reset_request is None
                       and self._threshold_update is None and not self._stopping):
                    self._lock.wait()
                if self._stopping:
                    return
                reset, self._reset_request = self._reset_request, None
                threshold, self._threshold_update = self._threshold_update, None
                frame, self._frame = self._frame, None
                joints = self._joints
                if reset is not None or self._clock_jumped:
                    # a still-valid joint state survives a reset: it is the robot's, not memory
                    self._last_stamp = -float('inf')
                    self._clock_jumped = False
            if reset is not None:
                reset['summary'] = self.runtime.reset()
                self.latencies.clear()
                self.last_gate = {}
                self._save_state()
                reset['event'].set()
                continue
            if threshold is not None:
                self.runtime.set_gate_threshold(threshold)
                self.get_logger().info(f'gate threshold set to {threshold}')
            if frame is not None:
                try:
                    self._step(*frame, joints)
                except InputError as err:
                    self._reject(err, image=True)
                except Exception as err:  # keep the node alive; the state was not committed
                    self._reject(InputError('step_failed', f'step failed: {err!r}'), image=True)

    def _step(self, msg: Image, received: float, joints) -> None:
        started = time.perf_counter()
        stamp = checked_stamp_seconds(msg.header.stamp)
        age = self._now() - stamp
        if age > self.params.max_obs_age_s:
            raise InputError('stale_image', f'image is {age:.3f} s old '
                             f'(max_obs_age_s {self.params.max_obs_age_s})')
        if -age > self.params.max_obs_age_s:
            # accepted, it would make every later frame 'out_of_order' until its stamp passes
            raise InputError('future_image', f'image stamp is {-age:.3f} s in the future '
                             f'(max_obs_age_s {self.params.max_obs_age_s})')
        if stamp <= self._last_stamp:
            raise InputError('out_of_order', f'image stamp {stamp:.3f} is not after the last '
                             f'processed one ({self._last_stamp:.3f})')
        if joints is None:
            raise InputError('no_joints', 'no valid joint state received yet')
        positions, joint_stamp = joints
        if stamp - joint_stamp > self.params.max_obs_age_s:
            raise InputError('stale_joints', f'latest joint state is {stamp - joint_stamp:.3f} s '
                             f'older than the image (max_obs_age_s {self.params.max_obs_age_s})')
        pixels = image_to_array(msg)
        decoded = time.perf_counter()
        result = self.runtime.step(pixels, msg.encoding, positions)
        self._last_stamp = stamp
        self.action_pub.publish(action_chunk_msg(result.action, self.spec.action_names,
                                                 msg.header.stamp, self.spec.action_period_s,
                                                 self.params.frame_id))
        gate = result.gate
        if gate.wrote:
            self._save_state()
        if gate.discarded:
            self.nonfinite_discarded += 1
            self._problems.add('nonfinite_state_discarded')
            if self._throttle.ready('nonfinite_state_discarded'):
                self.get_logger().warning(
                    f'step {gate.step}: the new memory state was not finite; write discarded, '
                    f'the last good state kept ({self.nonfinite_discarded} so far)')
        latency = time.perf_counter() - started
        self.last_gate = {'wrote': gate.wrote, 'p': gate.p, 'surprise': gate.surprise,
                          'step': gate.step, 'writes': gate.writes,
                          'discarded': gate.discarded,
                          'write_rate': gate.writes / max(gate.step, 1),
                          'state_bytes': self.state_bytes,
                          'latency_ms': latency * 1e3}
        gate_msg = DiagnosticArray()
        gate_msg.header.stamp = msg.header.stamp
        gate_msg.status.append(status('aura/gate', 'wrote' if gate.wrote else 'skipped',
                                      self.last_gate, hardware_id=self.runtime.device))
        self.gate_pub.publish(gate_msg)
        published = time.perf_counter()
        stages = {'decode': decoded - started, **result.timings,
                  'publish': published - decoded - result.timings.get('total', 0.0),
                  'queue': started - received}
        for name, seconds in stages.items():
            self.stage_times.setdefault(name, deque(maxlen=2000)).append(seconds)
        self.latencies.append(published - received)

    def _reject(self, err: InputError, image: bool) -> None:
        """Count a rejected image or joint state by reason; warn, throttled per reason."""
        self.rejected[err.reason] += 1
        if image:
            self.images_rejected += 1
        else:
            self.joint_states_rejected += 1
        self._problems.add(err.reason)
        if self._throttle.ready(err.reason):
            text = str(err)
            if len(text) > LOG_MESSAGE_CHARS:
                text = f'{text[:LOG_MESSAGE_CHARS]}... ({len(text)} chars)'
            kind = 'image' if image else 'joint state'
            self.get_logger().warning(f'rejected {kind} ({err.reason}): {text}')

    # -- crash-resume --

    def _open_state_file(self) -> None:
        """Resume from `state_file` if it holds this model's snapshot; check it can be saved.

        Only a snapshot (its header says so) is ever set aside; any other file there, or a
        folder we cannot write in, stops the node at start (ParameterError) instead of at the
        first save. A bad snapshot that cannot be set aside is left alone and saving is off.
        """
        path = self.params.state_file
        if os.path.exists(path) and not is_snapshot(path):
            raise ParameterError(f"parameter 'state_file': {path} exists and is not an "
                                 'aura_ros state file; not touching it (move it away or choose '
                                 'another path)')
        if os.path.exists(path):
            if not self._resume_state(path):
                return
        else:
            self.get_logger().info(f'state_file {path} does not exist yet: starting fresh')
        folder = os.path.dirname(os.path.abspath(path))
        err = probe_writable(folder)
        if err is not None:
            raise ParameterError(f"parameter 'state_file': cannot write in {folder} "
                                 f'({err.strerror or err})')
        self._saving = True
        self.crash_resume = 'on'

    def _resume_state(self, path: str) -> bool:
        """Continue the saved episode; False when a bad snapshot could not be set aside."""
        shapes = {k: v.shape for k, v in self.runtime.state_dict().items()}
        try:
            snapshot = read_snapshot(path, self._fingerprint, shapes)
        except StateFileError as err:
            try:
                aside = set_aside(path)
            except OSError as move:
                self.crash_resume = (f'off: {path} is unusable ({err}) and could not be set '
                                     f'aside ({move.strerror or move})')
                self.get_logger().warning(
                    f'state_file {path} not used: {err}; it could not be set aside '
                    f'({move.strerror or move}) and will not be overwritten: crash-resume is '
                    'off for this run; starting fresh')
                return False
            self.get_logger().warning(f'state_file {path} not used: {err}; kept aside as '
                                      f'{aside}; starting fresh')
            return True
        self.runtime.load_state(snapshot.state)
        self.runtime.steps, self.runtime.writes = snapshot.steps, snapshot.writes
        self.get_logger().info(f'resumed the memory state from {path}: {snapshot.steps} steps, '
                               f'{snapshot.writes} writes')
        return True

    def _save_state(self) -> None:
        """Snapshot the state (after a write, a reset, at shutdown): bytes follow the writes."""
        if not self._saving:
            return
        try:
            self.state_bytes_written += save_snapshot(
                self.params.state_file, self.runtime.state_dict(), self._fingerprint,
                self.runtime.steps, self.runtime.writes)
            self.state_saves += 1
        except OSError as err:
            self.state_save_failures += 1
            self._problems.add('state_save_failed')
            if self._throttle.ready('state_save_failed'):
                self.get_logger().warning(f'could not save the state to '
                                          f'{self.params.state_file}: {err}')

    # -- health --

    def health(self) -> dict:
        """Counters and latency percentiles, as published on /diagnostics.

        Runs on the executor while the worker appends to (or, on reset, clears) the latency
        buffers: each is copied with list() first, atomic under the GIL, so a long run can never
        hit 'deque mutated during iteration' in the diagnostics timer.
        """
        latencies = np.asarray(list(self.latencies)) * 1e3
        values = {'frames_received': self.received, 'frames_dropped': self.dropped,
                  'frames_rejected': self.images_rejected,
                  'joint_states_received': self.joint_states_received,
                  'joint_states_rejected': self.joint_states_rejected,
                  'image_publishers': self.image_publishers,
                  'clock_jumps_back': self.clock_jumps_back,
                  'nonfinite_state_discarded': self.nonfinite_discarded,
                  'steps': self.runtime.steps, 'writes': self.runtime.writes,
                  'state_bytes': self.state_bytes, 'device': self.runtime.device,
                  'execution_provider': self.runtime.provider, 'engine': self.runtime.engine,
                  'gate_threshold': self.runtime.gate_threshold}
        if latencies.size:
            values['latency_p50_ms'] = float(np.percentile(latencies, 50))
            values['latency_p99_ms'] = float(np.percentile(latencies, 99))
        for name, times in list(self.stage_times.items()):
            values[f'stage_{name}_p50_ms'] = float(np.median(list(times))) * 1e3
        values['crash_resume'] = self.crash_resume
        if self.params.state_file:
            values['state_saves'] = self.state_saves
            values['state_bytes_written'] = self.state_bytes_written
            values['state_save_failures'] = self.state_save_failures
        for reason, count in sorted(list(self.rejected.items())):
            values[f'rejected_{reason}'] = count
        return values

    def _count_image_publishers(self) -> None:
        """Several cameras on one topic would feed one memory: warn when the count changes."""
        count = self.count_publishers(self._image_sub.topic_name)
        if count > 1 and count != self.image_publishers:
            self.get_logger().warning(
                f'{count} publishers on {self._image_sub.topic_name}: their frames all feed one '
                'memory; remap each camera to its own node')
        self.image_publishers = count

    def problems(self) -> list[str]:
        """What makes the node WARN now: recent problems by kind, and several image publishers."""
        recent = self._problems.counts()
        window = f'{self.params.health_window_s:g} s'
        found = [f'{n} {kind} in the last {window}' for kind, n in sorted(recent.items())]
        if self.image_publishers > 1:
            found.append(f'{self.image_publishers} publishers on '
                         f'{self._image_sub.topic_name}')
        return found

    def _publish_health(self) -> None:
        self._count_image_publishers()
        values = self.health()
        problems = self.problems()
        summary = f'{values["steps"]} steps, {values["writes"]} writes'
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status.append(status(f'{self.get_fully_qualified_name()}: AURA policy',
                                 '; '.join([*problems, summary]), values,
                                 level=DiagnosticStatus.WARN if problems else DiagnosticStatus.OK,
                                 hardware_id=self.runtime.device))
        self.health_pub.publish(msg)

    def stop(self) -> None:
        """Stop and join the worker (the current step finishes first)."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._worker.join()
        self._save_state()


def main(args=None) -> int:
    # Ctrl-C, SIGTERM and SIGHUP (the terminal went away) all end the node the same way: worker
    # joined, state saved, exit 0. Held while the node is built (interrupt.py); rclpy's handlers,
    # which chain to ours and wake the executor, are installed once the node exists.
    interrupt = INTERRUPT
    interrupt.install()
    if interrupt.pending:                      # a signal while the modules loaded: nothing to save
        return 0
    executor = node = None
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        executor = SingleThreadedExecutor()
        node = AuraNode()
        install_signal_handlers(SignalHandlerOptions.ALL)
        interrupt.release()
        executor.add_node(node)
        executor.spin()
    except (ParameterError, ModelDirError) as err:   # a bad parameter or model: say which
        print(f'aura_node: {err}', file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        interrupt.deferring = True
        if node is not None:
            node.stop()
            node.destroy_node()
        if executor is not None:
            executor.shutdown()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
