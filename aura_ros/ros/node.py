"""`aura_node`: camera + joint states in, action chunks and the write gate out, reset service.

Threading: one worker thread owns the runtime and its memory state. Subscription callbacks only
hand the latest message over (an unprocessed frame that a newer one replaces is counted as
dropped), so a slow step drops frames instead of queueing them. A reset is performed by the worker
between two steps; the service callback waits for it, at most about one step.

A step whose new memory state would be NaN/Inf is discarded by the runtime (the state stays the
last good one); the node publishes that step's chunk (a skip step's), counts it apart from input
rejections (`nonfinite_state_discarded` on /diagnostics) and warns, throttled.
"""

import os
import sys
import threading
import time
from collections import Counter, deque
from typing import Optional

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from aura_ros.ros.conversions import (
    action_chunk_msg,
    image_to_array,
    joints_to_array,
    stamp_seconds,
    status,
)
from aura_ros.ros.params import ParameterError, declare_and_read
from aura_ros.runtime import AuraRuntime, InputError, ModelDirError
from aura_ros.runtime.state_file import (
    StateFileError,
    model_fingerprint,
    read_snapshot,
    save_snapshot,
    set_aside,
)

WARN_THROTTLE_S = 2.0


class AuraNode(Node):
    """The AURA policy node (DESIGN.md section 6)."""

    def __init__(self, **kwargs):
        super().__init__('aura', **kwargs)
        try:
            self.params = declare_and_read(self)
        except ParameterError:
            raise
        except Exception as err:  # rclpy's range/type exceptions name the parameter
            raise ParameterError(str(err)) from err
        p = self.params
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
        if p.state_file:
            self._fingerprint = model_fingerprint(p.model_dir)
            self._resume_state()

        self._lock = threading.Condition()
        self._frame: Optional[tuple[Image, float]] = None
        self._joints: Optional[tuple[np.ndarray, float]] = None
        self._last_stamp = -float('inf')
        self._reset_request: Optional[dict] = None
        self._threshold_update: Optional[float] = None
        self._stopping = False

        self.received = 0
        self.dropped = 0
        self.rejected: Counter = Counter()
        self.nonfinite_discarded = 0               # steps whose non-finite new state was dropped
        self.latencies = deque(maxlen=2000)
        self.stage_times: dict[str, deque] = {}
        self.last_gate: dict = {}

        qos = p.qos()
        self.create_subscription(Image, 'image', self._on_image, qos)
        self.create_subscription(JointState, 'joint_states', self._on_joints, qos)
        self.action_pub = self.create_publisher(JointTrajectory, '~/action_chunk', 10)
        self.gate_pub = self.create_publisher(DiagnosticArray, '~/gate', 10)
        self.health_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_service(Trigger, '~/reset', self._on_reset)
        self.create_timer(p.diagnostics_period_s, self._publish_health)
        self.add_on_set_parameters_callback(self._on_set_parameters)

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
            self._frame = (msg, time.monotonic())
            self._lock.notify()

    def _on_joints(self, msg: JointState) -> None:
        try:
            positions = joints_to_array(msg, self.spec.joint_names)
        except InputError as err:
            self._reject(err)
            return
        with self._lock:
            self._joints = (positions, stamp_seconds(msg.header.stamp))

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
        return SetParametersResult(successful=True)

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
                if reset is not None:
                    self._joints = None
                    self._last_stamp = -float('inf')
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
                    self._reject(err)
                except Exception as err:  # keep the node alive; the state was not committed
                    self._reject(InputError('step_failed', f'step failed: {err!r}'))

    def _step(self, msg: Image, received: float, joints) -> None:
        started = time.perf_counter()
        stamp = stamp_seconds(msg.header.stamp)
        age = self.get_clock().now().nanoseconds * 1e-9 - stamp
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
            self.get_logger().warning(
                f'step {gate.step}: the new memory state was not finite; write discarded, the '
                f'last good state kept ({self.nonfinite_discarded} so far)',
                throttle_duration_sec=WARN_THROTTLE_S)
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

    def _reject(self, err: InputError) -> None:
        self.rejected[err.reason] += 1
        self.get_logger().warning(f'rejected input ({err.reason}): {err}',
                                  throttle_duration_sec=WARN_THROTTLE_S)

    # -- crash-resume --

    def _resume_state(self) -> None:
        """Continue the episode saved in `state_file` if it belongs to this model."""
        path = self.params.state_file
        if not os.path.exists(path):
            self.get_logger().info(f'state_file {path} does not exist yet: starting fresh')
            return
        shapes = {k: v.shape for k, v in self.runtime.state_dict().items()}
        try:
            snapshot = read_snapshot(path, self._fingerprint, shapes)
        except StateFileError as err:
            aside = set_aside(path)
            self.get_logger().warning(f'state_file {path} not used: {err}; kept aside as '
                                      f'{aside}; starting fresh')
            return
        self.runtime.load_state(snapshot.state)
        self.runtime.steps, self.runtime.writes = snapshot.steps, snapshot.writes
        self.get_logger().info(f'resumed the memory state from {path}: {snapshot.steps} steps, '
                               f'{snapshot.writes} writes')

    def _save_state(self) -> None:
        """Snapshot the state (after a write, a reset, at shutdown): bytes follow the writes."""
        if not self.params.state_file:
            return
        try:
            self.state_bytes_written += save_snapshot(
                self.params.state_file, self.runtime.state_dict(), self._fingerprint,
                self.runtime.steps, self.runtime.writes)
            self.state_saves += 1
        except OSError as err:
            self.rejected['state_save_failed'] += 1
            self.get_logger().warning(f'could not save the state to {self.params.state_file}: '
                                      f'{err}', throttle_duration_sec=WARN_THROTTLE_S)

    # -- health --

    def health(self) -> dict:
        """Counters and latency percentiles, as published on /diagnostics.

        Runs on the executor while the worker appends to (or, on reset, clears) the latency
        buffers: each is copied with list() first, atomic under the GIL, so a long run can never
        hit 'deque mutated during iteration' in the diagnostics timer.
        """
        latencies = np.asarray(list(self.latencies)) * 1e3
        values = {'frames_received': self.received, 'frames_dropped': self.dropped,
                  'frames_rejected': sum(self.rejected.values()),
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
        if self.params.state_file:
            values['state_saves'] = self.state_saves
            values['state_bytes_written'] = self.state_bytes_written
        for reason, count in sorted(list(self.rejected.items())):
            values[f'rejected_{reason}'] = count
        return values

    def _publish_health(self) -> None:
        values = self.health()
        level = (DiagnosticStatus.WARN if self.rejected or self.dropped or self.nonfinite_discarded
                 else DiagnosticStatus.OK)
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status.append(status(f'{self.get_fully_qualified_name()}: AURA policy',
                                 f'{values["steps"]} steps, {values["writes"]} writes',
                                 values, level=level, hardware_id=self.runtime.device))
        self.health_pub.publish(msg)

    def stop(self) -> None:
        """Stop and join the worker (the current step finishes first)."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._worker.join()
        self._save_state()


def main(args=None) -> int:
    rclpy.init(args=args)
    executor = SingleThreadedExecutor()    # before the node says it is up: Ctrl-C may come next
    node = None
    try:
        node = AuraNode()
        executor.add_node(node)
        executor.spin()
    except (ParameterError, ModelDirError) as err:   # a bad parameter or model: say which
        print(f'aura_node: {err}', file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
