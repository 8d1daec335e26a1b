"""`aura_node`: cameras (or features) + joint states in, absolute joint targets and the gate out.

A managed (lifecycle) node. `configure` loads and checks the model, allocates the memory state,
resumes it from `state_file` and runs one warm-up step (whose trace is reset away); `activate`
makes the inputs and outputs live; `deactivate` stops stepping and keeps the memory state;
`cleanup` releases the model, the state and every topic. `~/reset` works whenever a model is
loaded (inactive or active). With `autostart` (default) the node configures and activates itself
at start, so `ros2 run` / `ros2 launch` alone run it; a bad model then stops it at start.

Inputs (relative names, aura_ros/ros/inputs.py): `image` for a one-camera model,
`<camera>/image` for each camera of a several-camera model (one frame from each, stamps within
`camera_max_skew_s`, make one step: aura_ros/runtime/frame_sync.py), `<topic>/compressed` for a
camera trained compressed or set so by `image_transport`, `features` for a model without
cameras; `joint_states`. With
`input_qos: auto` (default) each subscribes with the reliability its publishers offer, re-checked
on every /diagnostics tick (aura_ros/ros/adaptive_qos.py).
Outputs: the absolute, clipped joint targets of each output group on `~/<group>`
(`~/action_chunk` for a model without groups), stamped for a controller by the rule of
aura_ros/ros/trajectory.py; `~/gate`, stamped with the observation's stamp; the gate for
plotting tools and people, `~/gate_values` and `~/gate_image` (aura_ros/ros/gate_topics.py).

Threading: one worker thread owns the runtime and its memory state. Subscription callbacks only
hand the latest observation over (an unprocessed one that a newer one replaces is counted as
dropped), so a slow step drops frames instead of queueing them. Decoding happens in the worker. A
reset is performed by the worker between two steps; the service callback waits for it.

A step whose new memory state would be NaN/Inf is discarded by the runtime (the state stays the
last good one); the node publishes that step's chunk (a skip step's), counts it apart from input
rejections (`nonfinite_state_discarded` on /diagnostics) and warns, throttled. A step whose
targets or gate probability are not finite is refused before the state (`nonfinite_step`): no
non-finite number is ever published. Anything escaping the worker is fatal and loud: /diagnostics
ERROR, the lifecycle through error processing to finalized, aura_node exits 1.

Health: /diagnostics runs on a wall-clock (steady) timer, so it is published whatever the ROS
clock does (use_sim_time without /clock included). Its level is WARN while a problem (rejection,
drop, failed save, clock jump, several image publishers, an input of the wrong type or silent
while it has publishers, frames lost in transport, camera frames that made no set) happened
within `health_window_s` or holds now, and its message names them; the totals since start stay in
the values. Warnings are throttled per reason.

With use_sim_time, a backwards jump of /clock (a bag played in a loop) is noticed through rclpy's
time-jump callback: it is warned about and counted, the last image stamp is forgotten so later
frames step again, and a kept joint state from after the new time is dropped. The memory is kept
as it is (the episode goes on); call ~/reset if the loop means a new episode.
"""

import sys
import threading
import time
import traceback
from collections import Counter, deque
from typing import Callable, Optional

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
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions, install_signal_handlers
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from aura_ros.ros.adaptive_qos import InputSubscription
from aura_ros.ros.conversions import checked_stamp_seconds, joints_to_array, status
from aura_ros.ros.gate_topics import GateTopics
from aura_ros.ros.health import RecentProblems, Throttle
from aura_ros.ros.inputs import (
    COMPRESSED_TYPE,
    FEATURES_TOPIC,
    IMAGE_TYPE,
    TopicWatch,
    camera_topics,
    camera_transports,
    features_to_array,
    frame_to_array,
    message_type,
)
from aura_ros.ros.model_remaps import remap_rules, unfit_rules
from aura_ros.ros.params import ParameterError, declare_and_read, widen_integers
from aura_ros.ros.remaps import unmatched_remaps
from aura_ros.ros.trajectory import group_trajectories, plan, time_ns
from aura_ros.runtime import AuraRuntime, InputError, ModelDirError
from aura_ros.runtime.admission import Admission
from aura_ros.runtime.crash_resume import CrashResume, CrashResumeRefused
from aura_ros.runtime.decode import frame_pixel_limit
from aura_ros.runtime.frame_sync import FrameMatcher
from aura_ros.runtime.runtime import check_threshold
from aura_ros.runtime.state_file import model_fingerprint

WARN_THROTTLE_S = 2.0
LOG_MESSAGE_CHARS = 400          # a warning built from peer input is cut to this
IDLE_WAIT_S = 10.0               # deactivate/cleanup wait at most this for the step in progress


def check_device(device: str) -> None:
    """A CUDA device asked for on a machine without one: a parameter error, not a traceback."""
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ParameterError(f"parameter 'device' is {device!r} but torch sees no CUDA device "
                             "here; available: auto, cpu")


class AuraNode(LifecycleNode):
    """The AURA policy node (docs/design.md, "The node"; README "On a real robot")."""

    def __init__(self, **kwargs):
        super().__init__('aura', **kwargs)
        self._ros_args = [*(sys.argv if kwargs.get('use_global_arguments', True) else []),
                          '--', *(kwargs.get('cli_args') or [])]
        try:
            self._set_up()
        except KeyboardInterrupt:          # Ctrl-C/SIGHUP/SIGTERM while starting: state saved
            if hasattr(self, '_lock'):
                self._release()
            raise
        except Exception:
            # a bad parameter, model or state file: the half-made node is destroyed now (its
            # name's /rosout publisher with it), not whenever the garbage collector reaches it
            if hasattr(self, '_lock'):
                self._release()
            self.destroy_node()
            raise

    def _set_up(self) -> None:
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
        self.runtime: Optional[AuraRuntime] = None      # loaded by configure, dropped by cleanup
        self.spec = None
        self.matcher: Optional[FrameMatcher] = None
        self.state_bytes = 0
        # crash-resume policy (aura_ros/runtime/crash_resume.py), opened by every configure
        self.crash = CrashResume(p.state_file, self.get_logger()) if p.state_file else None
        self._throttle = Throttle(WARN_THROTTLE_S)
        self._problems = RecentProblems(p.health_window_s)
        self._configure_error: Optional[Exception] = None

        self._lock = threading.Condition()
        self._frame: Optional[tuple[dict, float]] = None   # {camera or 'features': msg}, time
        self._joints: Optional[tuple[np.ndarray, float]] = None
        self._last_stamp = -float('inf')
        self._reset_request: Optional[dict] = None
        self._threshold_update: Optional[float] = None
        self._clock_jumped = False
        self._stopping = False
        self._busy = False                         # the worker is stepping
        self._active = False
        self._worker: Optional[threading.Thread] = None
        self._input_subs: list[InputSubscription] = []
        self._group_pubs: dict = {}
        self.gate_pub = None
        self.gate_topics: Optional[GateTopics] = None   # ~/gate_image, ~/gate_values
        self._watches: dict[str, TopicWatch] = {}
        self._camera_topics: dict[str, str] = {}   # camera -> resolved topic
        self._last_sequence: dict = {}             # (topic, publisher) -> sequence number
        self._input_problems: list[str] = []

        self.received = 0
        self.dropped = 0
        self.rejected: Counter = Counter()         # by reason, images and joint states
        self.images_rejected = 0
        self.joint_states_received = 0
        self.joint_states_rejected = 0
        self.clock_jumps_back = 0
        self.image_publishers = 0
        self.nonfinite_discarded = 0               # steps whose non-finite new state was dropped
        self.clipped = 0                           # target values clipped to the joint limits
        self.chunks_expired = 0                    # chunks whose every point had passed
        self.points_dropped = 0                    # chunk points left out as already past
        self.lost_in_transport = 0                 # gaps in the publishers' sequence numbers
        self.missed_by_node = 0                    # gaps while the node itself did not take
        self._pause_epoch = 0                      # +1 whenever the node stops/starts taking
        self._taken_epoch: dict = {}               # (topic, publisher) -> epoch of its last take
        self._executor_seen = time.monotonic()     # the executor last ran one of our callbacks
        self.publish_failures = 0                  # committed steps whose publishing failed
        self.failure: Optional[str] = None         # what killed the worker
        self.exit_code: Optional[int] = None       # set when the process should end (main)
        self.admission: Optional[Admission] = None
        self._unmatched_seen = 0
        self.latencies = deque(maxlen=2000)
        self.stage_times: dict[str, deque] = {}
        self.last_gate: dict = {}

        self.health_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_service(Trigger, '~/reset', self._on_reset)
        self.create_timer(p.diagnostics_period_s, self._publish_health,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.add_pre_set_parameters_callback(widen_integers)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._failure_guard = self.create_guard_condition(self._on_worker_failure)
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1),
                          on_clock_change=False), post_callback=self._on_clock_jump)
        if p.autostart:
            self._autostart()

    def _autostart(self) -> None:
        """configure + activate; a failed configure raises its error (aura_node exits 2)."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise self._configure_error or RuntimeError('configure failed')
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError('activate failed')

    def destroy_node(self) -> None:
        """Also destroy the lifecycle state machine: it holds the node's handle, so without
        this the rcl node (and its name's /rosout publisher) would live on until the garbage
        collector reaches this object, and a later node of the same name would log nowhere."""
        super().destroy_node()
        self._state_machine.destroy_when_not_in_use()
        crash = getattr(self, 'crash', None)
        if crash is not None:                     # the node is gone: so is its claim on the file
            crash.release()

    @property
    def lifecycle_state(self) -> str:
        return self._state_machine.current_state[1]

    # -- life cycle ---------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._configure_error = None
        try:
            self._configure()
        except Exception as err:  # a bad model or state file: say which, stay unconfigured
            self._configure_error = err
            self.get_logger().error(f'configure failed: {err}')
            self._release()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self._active = True
            self._pause_epoch += 1                 # frames missed while inactive were ours
        for watch in self._watches.values():
            watch.restart()
        self.get_logger().info('active: stepping on every observation')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.failure is not None:               # the worker died: into error processing
            return TransitionCallbackReturn.ERROR
        with self._lock:
            self._active = False
            self._frame = None
            if self.matcher is not None:
                self.matcher.clear()
            self._lock.wait_for(lambda: not self._busy, timeout=IDLE_WAIT_S)
        self.get_logger().info('inactive: not stepping; the memory state is kept')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.failure is not None:
            return TransitionCallbackReturn.ERROR
        self._release()
        self.get_logger().info('unconfigured: model and memory state released')
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info('lifecycle shutdown: model released, state saved; exiting')
        self.exit_code = 0                         # aura_node ends (main)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        if self.failure is not None:               # finalized: nothing can bring it back
            self.exit_code = 1
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        """Load and check the model, warm it up, resume the state, create topics and worker."""
        p = self.params
        threshold = self.get_parameter('gate_threshold').value
        threshold = None if threshold < 0 else threshold      # negative: the model's own
        self.runtime = AuraRuntime.from_model_dir(p.model_dir, device=p.device,
                                                  engine=p.memory_engine,
                                                  gate_threshold=threshold,
                                                  threads=p.inference_threads)
        self.spec = spec = self.runtime.spec
        threshold = f'{self.runtime.gate_threshold:g} (' + (
            "the model's, selected in training; the gate_threshold parameter overrides it"
            if threshold is None else "the gate_threshold parameter; the model's is "
            f'{spec.memory.gate_threshold:g}') + ')'
        reserved = sorted({g.name for g in spec.groups} & {'gate', 'transition_event'})
        if reserved:
            raise ModelDirError(f'{p.model_dir}: output group(s) {", ".join(reserved)} would '
                                f"publish on the node's own ~/{reserved[0]}; rename them in "
                                'model.yaml output_groups')
        self.state_bytes = self.runtime.memory_bytes()     # constant while configured
        self._warm_up()
        if p.state_file:
            try:
                self.crash.open(self.runtime, model_fingerprint(p.model_dir))
            except CrashResumeRefused as err:
                raise ParameterError(f"parameter 'state_file': {err}") from None
        cameras = tuple(c.name for c in spec.cameras)
        self.matcher = FrameMatcher(cameras, p.camera_max_skew_s) if len(cameras) > 1 else None
        self.admission = Admission(p.max_obs_age_s, spec.action_period_s, spec.memory.chunk,
                                   p.chunk_min_lead_s)
        if self.admission.usable_age_s < p.max_obs_age_s:
            self.get_logger().info(
                f'observations older than {self.admission.usable_age_s:.3f} s are refused '
                f'(stale_for_chunk): the chunk ends {self.admission.horizon_s:.3f} s after the '
                f'stamp and a point needs chunk_min_lead_s {p.chunk_min_lead_s:g} s of lead; '
                f'max_obs_age_s is {p.max_obs_age_s:g} s')
        self._max_pixels = {c.name: frame_pixel_limit(p.max_frame_pixels, c.width, c.height)
                            for c in spec.cameras}
        qos = p.qos()
        self._last_sequence = {}
        self._watches = {}
        if spec.n_joints:
            # first: when a joint state and a frame are ready together, the executor takes them
            # in creation order, so the frame steps with the joint state that came before it
            self._input_subs.append(self._input(JointState, 'joint_states', self._on_joints,
                                                qos))
        if spec.features_in:
            self._subscribe(Image, FEATURES_TOPIC, 'features', IMAGE_TYPE, qos)
        else:
            try:
                transports = camera_transports(spec.cameras, p.image_transport)
            except ValueError as err:
                raise ParameterError(f"parameter 'image_transport': {err}") from err
            for camera, topic in camera_topics(cameras, transports).items():
                kind = COMPRESSED_TYPE if transports[camera] == 'compressed' else IMAGE_TYPE
                self._subscribe(message_type(transports[camera]), topic, camera, kind, qos)
        self._camera_topics = {name: self._watches[name].topic for name in cameras}
        rules = remap_rules(self._ros_args, self.get_name())
        self.remap_warnings = unfit_rules(rules, cameras, [g.name for g in spec.groups],
                                          spec.features_in)
        for warning in self.remap_warnings:
            self.get_logger().warning(warning)
        self._group_pubs = {g.name: self.create_lifecycle_publisher(
            JointTrajectory, f'~/{g.name}', 10) for g in spec.groups}
        self.gate_pub = self.create_lifecycle_publisher(DiagnosticArray, '~/gate', 10)
        self.gate_topics = GateTopics(self, p.gate_image_steps, p.gate_image_rate_hz,
                                      p.gate_image_thumbnails)
        self._stopping = False
        self._worker = threading.Thread(target=self._run, name='aura_worker', daemon=True)
        self._worker.start()
        unmatched = unmatched_remaps(self, rules)         # every topic exists now
        self.remap_warnings += unmatched
        for warning in unmatched:
            self.get_logger().warning(warning)
        inputs = ', '.join(f'{i.topic_name} ({i.reliability})' for i in self._input_subs)
        outputs = ', '.join(pub.topic_name for pub in self._group_pubs.values())
        self.get_logger().info(
            f'model {spec.name!r} from {p.model_dir}; device {self.runtime.device}, '
            f'backbone provider {self.runtime.provider}, engine {self.runtime.engine}; '
            f'memory state {self.state_bytes} bytes; gate threshold {threshold}; in: {inputs}; '
            f'out: {outputs} (absolute joint targets)')

    def _subscribe(self, msg_type, topic: str, name: str, type_name: str, qos) -> None:
        def on_message(msg, info) -> None:
            self._on_observation(name, msg, info)

        sub = self._input(msg_type, topic, on_message, qos)
        self._input_subs.append(sub)
        self._watches[name] = TopicWatch(sub.topic_name, type_name, self.params.input_timeout_s)

    def _input(self, msg_type, topic: str, callback, qos) -> InputSubscription:
        """An input subscription: fixed QoS, or with input_qos auto the publishers' reliability
        (re-checked on every /diagnostics tick); an unmatched QoS is warned about."""
        def on_incompatible(event) -> None:
            self._problem('incompatible_qos', lambda: (
                f'a publisher on {made.topic_name} offers a QoS this subscription '
                f'({self.params.input_qos}: {made.reliability}) cannot match: no messages '
                'from it (set input_qos)'), key=f'incompatible_qos {made.topic_name}')

        made = InputSubscription(self, msg_type, topic, callback, qos,
                                 adaptive=self.params.input_qos == 'auto',
                                 on_incompatible=on_incompatible)
        return made

    def _warm_up(self) -> None:
        """One step on blank inputs (first-call allocations, CUDA graph capture), then reset:
        the first real observation pays no set-up cost and meets a fresh state."""
        spec, runtime = self.spec, self.runtime
        joints = np.zeros(spec.n_joints, np.float32)
        if spec.features_in:
            runtime.step_features(np.zeros(spec.memory.d_model, np.float32), joints)
        else:
            runtime.step_frames({c.name: (np.zeros((c.height, c.width, 3), np.uint8), 'rgb8')
                                 for c in spec.cameras}, joints)
        runtime.reset()

    def _release(self) -> None:
        """Stop the worker (state saved), drop every topic, the model and the state."""
        with self._lock:
            self._active = False
            self._frame = None
        if self._worker is not None:
            self.stop()
            self._worker = None
        for sub in self._input_subs:
            sub.destroy()
        for pub in [*self._group_pubs.values(), *([self.gate_pub] if self.gate_pub else [])]:
            self.destroy_lifecycle_publisher(pub)
        self._input_subs, self._group_pubs, self.gate_pub = [], {}, None
        if self.gate_topics is not None:
            self.gate_topics.destroy()
            self.gate_topics = None
        self._watches, self._camera_topics, self._input_problems = {}, {}, []
        self.matcher = None
        with self._lock:
            self._joints = None
            self._last_stamp = -float('inf')
        device = self.runtime.device if self.runtime is not None else 'cpu'
        self.runtime = self.spec = self.admission = None
        if self.crash is not None:
            self.crash.release()
        if device.startswith('cuda'):
            torch.cuda.empty_cache()

    # -- callbacks: hand over, never compute --

    def _on_observation(self, name: str, msg, info: dict) -> None:
        """A camera frame or features message: count it, match camera sets, hand over."""
        watch = self._watches.get(name)
        if watch is None or not self._active:
            return
        watch.heard()
        if not self._count_sequence(watch.topic, info):
            return                                 # a copy, while input_qos auto re-subscribes
        admission = self.admission
        if self.matcher is not None and admission is not None:
            try:     # a frame no camera set could use never waits in the set buffer
                stamp = checked_stamp_seconds(msg.header.stamp)
                admission.check(self._now() - stamp, f'{name} frame')
            except InputError as err:
                with self._lock:
                    self.received += 1
                self._reject(err, image=True)
                return
        with self._lock:
            if not self._active:
                return
            self.received += 1
            if self.matcher is None:
                observation = {name: msg}
            else:
                matched = self.matcher.add(name, stamp, msg)
                if matched is None:
                    return
                observation = {camera: frame.item for camera, frame in matched.items()}
            if self._frame is not None:
                self.dropped += 1
                self._problems.add('dropped')
            self._frame = (observation, time.monotonic())
            self._lock.notify()

    def _count_sequence(self, topic: str, info: dict, count_loss: bool = True) -> bool:
        """Frames the middleware lost: gaps in each publisher's sequence numbers (frames lost
        after the last one received stay invisible until the next one comes). False for a
        message already had: the second copy while input_qos auto replaces a subscription.

        A gap is the node's own, not transport's (`frames_missed_by_node`), when the node was
        not taking since the publisher's previous message: it was inactive, a reset or
        deactivation held the executor, or the executor ran none of our callbacks (not even the
        /diagnostics timer) for longer than 1.5 periods: the messages were overwritten in the
        node's own depth-`input_depth` queue."""
        now = time.monotonic()
        stalled = now - self._executor_seen > 1.5 * self.params.diagnostics_period_s
        self._executor_seen = now
        sequence = info.get('publication_sequence_number') if info else None
        if not sequence:
            return True
        gid = info.get('publisher_gid')
        known = isinstance(gid, dict) and 'data' in gid     # else: all publishers share a key
        key = (topic, bytes(gid['data']) if known else None)
        last = self._last_sequence.get(key)
        if known and last is not None and sequence <= last:
            return False
        self._last_sequence[key] = sequence if last is None else max(last, sequence)
        paused = stalled or self._taken_epoch.get(key, self._pause_epoch) != self._pause_epoch
        self._taken_epoch[key] = self._pause_epoch
        if count_loss and last is not None and sequence > last + 1 and paused:
            self.missed_by_node += sequence - last - 1
        elif count_loss and last is not None and sequence > last + 1:
            lost = sequence - last - 1
            self.lost_in_transport += lost
            self._problem('frames_lost_in_transport', lambda: (
                f'{lost} message(s) lost in transport on {topic} ({self.lost_in_transport} '
                'so far): see input_qos and the Fast DDS profile (README "On a real robot")'))
        return True

    def _on_joints(self, msg: JointState, info: dict) -> None:
        spec, admission = self.spec, self.admission
        if spec is None or admission is None or not self._active:
            return
        if not self._count_sequence('joint_states', info, count_loss=False):
            return                                 # a copy, while input_qos auto re-subscribes
        self.joint_states_received += 1
        try:
            stamp = checked_stamp_seconds(msg.header.stamp)
            positions = joints_to_array(msg, spec.joint_names)
            admission.check_joint_state(stamp - self._now())
        except InputError as err:
            self._reject(err, image=False)
            return
        with self._lock:
            self._joints = (positions, stamp)

    def _on_reset(self, request, response):
        if self.runtime is None or self._worker is None:
            response.success = False
            response.message = (f'no model loaded (lifecycle state {self.lifecycle_state}): '
                                'configure the node first')
            return response
        done = {'event': threading.Event()}
        with self._lock:
            self._pause_epoch += 1     # the executor waits here: its input queues overflow
            self._reset_request = done
            self._frame = None
            if self.matcher is not None:
                self.matcher.clear()
            self._lock.notify()
        deadline = time.monotonic() + 10.0
        while not done['event'].wait(timeout=0.05):
            if self.failure is not None or time.monotonic() > deadline:
                break
        with self._lock:
            self._pause_epoch += 1
        if self.failure is not None:
            response.success = False
            response.message = f'the worker failed ({self.failure}): the node is stopping'
            return response
        if not done['event'].is_set():
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
            try:             # rclpy's range check lets 1 + 1e-6 through; the runtime would not
                if param.value >= 0:                 # negative: back to the model's own
                    check_threshold(param.value)
            except ValueError as err:
                return SetParametersResult(successful=False, reason=f'gate_threshold: {err}')
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
            if self.matcher is not None:           # frames waiting from before the jump
                self.matcher.clear()
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
                self._busy = True
            try:
                self._work(reset, threshold, frame, joints)
            except BaseException as err:  # noqa: B036 - a dead worker must not look alive
                self._fail(err)
                return
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _fail(self, err: BaseException) -> None:
        """The worker cannot go on: say so loudly (log, /diagnostics ERROR at once), then let
        the executor take the lifecycle through error processing to finalized, and aura_node
        exit 1 (`_on_worker_failure`). Never a node that says `active` but steps no more."""
        self.failure = f'{type(err).__name__}: {err}'
        self.get_logger().fatal(
            f'the worker failed and can take no more steps ({self.failure}); going to error '
            f'processing, aura_node exits 1\n{"".join(traceback.format_exception(err))}')
        with self._lock:
            self._stopping = True
        try:
            self.health_pub.publish(self._health_message())
        except Exception:  # noqa: BLE001 - shutting down already: the log said it
            pass
        self._failure_guard.trigger()

    def _on_worker_failure(self) -> None:
        """On the executor: active or inactive -> error processing (on_error) -> finalized."""
        state = self.lifecycle_state
        if state == 'active':
            self.trigger_deactivate()
        elif state == 'inactive':
            self.trigger_cleanup()
        self.exit_code = 1

    def _work(self, reset, threshold, frame, joints) -> None:
        if reset is not None:
            reset['summary'] = self.runtime.reset()
            self.latencies.clear()
            self.last_gate = {}
            self.gate_topics.view.clear()
            self._save_state()
            reset['event'].set()
            return
        if threshold is not None:
            own = threshold < 0                 # negative: back to the model's own
            threshold = self.spec.memory.gate_threshold if own else threshold
            self.runtime.set_gate_threshold(threshold)
            self.get_logger().info(f'gate threshold set to {threshold}'
                                   + (" (the model's)" if own else ''))
        if frame is not None:
            steps = self.runtime.steps
            try:
                self._step(*frame, joints)
            except InputError as err:
                self._reject(err, image=True)
            except Exception as err:  # keep the node alive
                if self.runtime.steps == steps:    # the state was not committed
                    self._reject(InputError('step_failed', f'step failed: {err!r}'), image=True)
                elif self.context.ok():            # committed, then publishing failed
                    self.publish_failures += 1
                    self._problem('publish_failed', lambda err=err: (
                        f'step {self.runtime.steps} was taken but publishing its results '
                        f'failed: {err!r}'))
                # else: shutting down (Ctrl-C during the step): the step counts as taken

    def _step(self, observation: dict, received: float, joints) -> None:
        started = time.perf_counter()
        stamps = {name: checked_stamp_seconds(msg.header.stamp)
                  for name, msg in observation.items()}
        newest = max(stamps, key=stamps.get)       # a camera set is as recent as its newest
        stamp, header_stamp = stamps[newest], observation[newest].header.stamp
        what = 'features' if self.spec.features_in else 'image'
        now = self._now()
        age = now - stamp
        self.admission.check_step(stamp, now, self._last_stamp,
                                  None if joints is None else joints[1],
                                  bool(self.spec.n_joints), what, self._step_time())
        positions = joints[0] if self.spec.n_joints else np.zeros(0, np.float32)
        if self.spec.features_in:
            features = features_to_array(observation[newest], self.spec.memory.d_model)
            decoded = time.perf_counter()
            result = self.runtime.step_features(features, positions)
        else:
            frames = {c.name: frame_to_array(observation[c.name], (c.width, c.height),
                                             self._max_pixels[c.name])
                      for c in self.spec.cameras}
            decoded = time.perf_counter()
            result = self.runtime.step_frames(frames, positions)
        self._last_stamp = stamp
        timing = plan(time_ns(header_stamp), self.get_clock().now().nanoseconds,
                      self.spec.action_period_s, len(result.action), self.params.chunk_min_lead_s)
        chunks = group_trajectories(result.targets, self.runtime.contract.names, timing,
                                    self.params.frame_id)
        for name, msg in chunks.items():
            self._group_pubs[name].publish(msg)
        self.clipped += result.clipped
        self.points_dropped += timing.dropped
        if not chunks:
            self.chunks_expired += 1
            ready_age = timing.publish_ns * 1e-9 - stamp
            step_s = time.perf_counter() - started
            self._problem('chunk_expired', lambda: (
                f'a whole action chunk was past when it was ready ({self.chunks_expired} so '
                f'far): the observation was {age:.3f} s old when the step began and '
                f'{ready_age:.3f} s when its chunk was ready; the chunk ends '
                f'{self.admission.horizon_s:.3f} s after the stamp and needs '
                f'{self.params.chunk_min_lead_s:g} s of lead; the step took '
                f'{step_s * 1e3:.1f} ms; not published (the memory step was taken)'))
        gate = result.gate
        if gate.wrote:
            self._save_state()
        if gate.discarded:
            self.nonfinite_discarded += 1
            self._problem('nonfinite_state_discarded', lambda: (
                f'step {gate.step}: the new memory state was not finite; write discarded, '
                f'the last good state kept ({self.nonfinite_discarded} so far)'))
        latency = time.perf_counter() - started
        self.last_gate = {'wrote': gate.wrote, 'p': gate.p, 'surprise': gate.surprise,
                          'step': gate.step, 'writes': gate.writes,
                          'discarded': gate.discarded,
                          'write_rate': gate.writes / max(gate.step, 1),
                          'gate_threshold': self.runtime.gate_threshold,
                          'state_bytes': self.state_bytes,
                          'latency_ms': latency * 1e3,
                          'first_point': timing.first_point, 'clipped': result.clipped}
        gate_msg = DiagnosticArray()
        gate_msg.header.stamp = header_stamp          # the observation's stamp: traceable
        gate_msg.status.append(status('aura/gate', 'wrote' if gate.wrote else 'skipped',
                                      self.last_gate, hardware_id=self.runtime.device))
        self.gate_pub.publish(gate_msg)
        self.gate_topics.record(self.last_gate, None if self.spec.features_in
                                else frames[self.spec.cameras[0].name])
        published = time.perf_counter()
        stages = {'decode': decoded - started, **result.timings,
                  'publish': published - decoded - result.timings.get('total', 0.0),
                  'queue': started - received}
        for name, seconds in stages.items():
            self.stage_times.setdefault(name, deque(maxlen=2000)).append(seconds)
        self.latencies.append(published - received)

    def _step_time(self) -> float:
        """The median time of the recent steps (decode to publish), seconds; 0 before any."""
        times = list(self.latencies)
        return float(np.median(times)) if times else 0.0

    def _problem(self, reason: str, message: Callable[[], str], key: str = '') -> None:
        """Record a problem for /diagnostics and warn about it, at most once per throttle period
        per `key` (default: the reason); the message is built only when it is logged."""
        self._problems.add(reason)
        if self._throttle.ready(key or reason):
            self.get_logger().warning(message())

    def _reject(self, err: InputError, image: bool) -> None:
        """Count a rejected image or joint state by reason; warn, throttled per reason."""
        self.rejected[err.reason] += 1
        if image:
            self.images_rejected += 1
        else:
            self.joint_states_rejected += 1

        def message() -> str:
            text = str(err)
            if len(text) > LOG_MESSAGE_CHARS:
                text = f'{text[:LOG_MESSAGE_CHARS]}... ({len(text)} chars)'
            return f'rejected {"image" if image else "joint state"} ({err.reason}): {text}'

        self._problem(err.reason, message)

    # -- crash-resume --

    def _save_state(self) -> None:
        """Snapshot the state (after a write, a reset, at shutdown): bytes follow the writes."""
        if self.crash is None or self.runtime is None:
            return
        err = self.crash.save(self.runtime)
        if err is not None:
            self._problem('state_save_failed', lambda: (
                f'could not save the state to {self.params.state_file}: {err}'))

    # -- health --

    def health(self) -> dict:
        """Counters and latency percentiles, as published on /diagnostics.

        Runs on the executor while the worker appends to (or, on reset, clears) the latency
        buffers: each is copied with list() first, atomic under the GIL, so a long run can never
        hit 'deque mutated during iteration' in the diagnostics timer.
        """
        latencies = np.asarray(list(self.latencies)) * 1e3
        runtime = self.runtime
        values = {'lifecycle_state': self.lifecycle_state,
                  'frames_received': self.received, 'frames_dropped': self.dropped,
                  'frames_rejected': self.images_rejected,
                  'frames_lost_in_transport': self.lost_in_transport,
                  'frames_missed_by_node': self.missed_by_node,
                  'joint_states_received': self.joint_states_received,
                  'joint_states_rejected': self.joint_states_rejected,
                  'image_publishers': self.image_publishers,
                  'image_transport': self.params.image_transport,
                  'input_qos': self.params.input_qos,
                  'clock_jumps_back': self.clock_jumps_back,
                  'nonfinite_state_discarded': self.nonfinite_discarded,
                  'targets_clipped': self.clipped, 'chunks_expired': self.chunks_expired,
                  'chunk_points_dropped': self.points_dropped,
                  'publish_failures': self.publish_failures,
                  'steps': runtime.steps if runtime else 0,
                  'writes': runtime.writes if runtime else 0,
                  'state_bytes': self.state_bytes,
                  'gate_images_rendered': self.gate_topics.view.renders if self.gate_topics
                  else 0}
        if runtime is not None:
            values.update({'device': runtime.device, 'execution_provider': runtime.provider,
                           'engine': runtime.engine, 'gate_threshold': runtime.gate_threshold})
        matcher = self.matcher
        if matcher is not None:
            values['camera_sets_matched'] = matcher.matched
            values['camera_frames_unmatched'] = sum(matcher.unmatched.values())
            for camera, count in sorted(matcher.unmatched.items()):
                values[f'camera_{camera}_unmatched'] = count
        if latencies.size:
            values['latency_p50_ms'] = float(np.percentile(latencies, 50))
            values['latency_p99_ms'] = float(np.percentile(latencies, 99))
        for name, times in list(self.stage_times.items()):
            values[f'stage_{name}_p50_ms'] = float(np.median(list(times))) * 1e3
        for sub in list(self._input_subs):         # what each input subscribes with now
            values[f'reliability_{sub.topic_name}'] = sub.reliability
        values['crash_resume'] = self.crash.status if self.crash is not None else 'off'
        if self.failure is not None:
            values['worker_failure'] = self.failure
        if self.crash is not None:
            values.update(self.crash.values())
        for reason, count in sorted(list(self.rejected.items())):
            values[f'rejected_{reason}'] = count
        return values

    def _check_inputs(self) -> None:
        """Per input topic: several publishers (one memory fed by several cameras), a publisher
        of the wrong type (DDS never matches it: 0 frames), or publishers but silence. With
        input_qos auto, first re-subscribe where the publishers' reliability changed."""
        for sub in self._input_subs:
            changed = sub.adapt()
            if changed:
                self.get_logger().info(changed)
        self._check_name()
        watches = list(self._watches.values())
        if not watches:
            self.image_publishers = 0
            self._input_problems = []
            return
        found, most = [], 0
        for watch in watches:
            types = [info.topic_type for info in self.get_publishers_info_by_topic(watch.topic)]
            count = len(types)
            if watch.topic in self._camera_topics.values():
                if count > 1 and count > self.image_publishers:
                    self.get_logger().warning(
                        f'{count} publishers on {watch.topic}: their frames all feed one '
                        'memory; remap each camera to its own node')
                most = max(most, count)
            for kind, text in watch.problems(types) if self._active else []:
                found.append(f'{kind}: {text}')
                if self._throttle.ready(f'{kind} {watch.topic}'):
                    self.get_logger().warning(text)
        if most > 1:
            found += [f'{self.count_publishers(t)} publishers on {t}'
                      for t in self._camera_topics.values() if self.count_publishers(t) > 1]
        self.image_publishers = most
        matcher = self.matcher
        if matcher is not None:
            unmatched = sum(matcher.unmatched.values())
            for _ in range(min(unmatched - self._unmatched_seen, 1000)):
                self._problems.add('camera_frames_unmatched')
            self._unmatched_seen = unmatched
        self._input_problems = found

    def _check_name(self) -> None:
        """Two nodes of one name (two `aura` in one namespace): their services and topics mix."""
        name, namespace = self.get_name(), self.get_namespace()
        same = sum(1 for n, ns in self.get_node_names_and_namespaces()
                   if n == name and ns == namespace)
        if same > 1:
            self._problem('duplicate_node_name', lambda: (
                f'{same} nodes are named {self.get_fully_qualified_name()}: their topics, '
                'services and parameters mix (give each its own name or namespace)'))

    def problems(self) -> list[str]:
        """What makes the node WARN now: recent problems by kind, and input topic problems."""
        recent = self._problems.counts()
        window = f'{self.params.health_window_s:g} s'
        found = [f'{n} {kind} in the last {window}' for kind, n in sorted(recent.items())]
        return found + self._input_problems

    def _publish_health(self) -> None:
        now = time.monotonic()
        if now - self._executor_seen > 1.5 * self.params.diagnostics_period_s:
            with self._lock:                       # a stall, seen by the timer first
                self._pause_epoch += 1
        self._executor_seen = now
        self._check_inputs()
        self.health_pub.publish(self._health_message())

    def _health_message(self) -> DiagnosticArray:
        """/diagnostics: OK, WARN while problems() names any, ERROR once the worker failed."""
        values = self.health()
        problems = self.problems()
        if self.failure is not None:
            problems = [f'the worker failed: {self.failure}', *problems]
            level = DiagnosticStatus.ERROR
        else:
            level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        summary = (f'{values["lifecycle_state"]}: {values["steps"]} steps, '
                   f'{values["writes"]} writes')
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status.append(status(f'{self.get_fully_qualified_name()}: AURA policy',
                                 '; '.join([*problems, summary]), values, level=level,
                                 hardware_id=values.get('device', '')))
        return msg

    def stop(self) -> None:
        """Stop and join the worker (the current step finishes first); save the state."""
        worker = self._worker
        if worker is None:
            return
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if worker is not threading.current_thread():
            worker.join()
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
        while node.exit_code is None:           # lifecycle shutdown (0) or a failed worker (1)
            executor.spin_once(timeout_sec=1.0)
        if node.failure is not None:
            print(f'aura_node: the worker failed ({node.failure}); exiting', file=sys.stderr)
        return node.exit_code
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
