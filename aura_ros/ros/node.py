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

Robots: by default the node serves one robot with the names above. With the `robots` parameter
it serves a fleet from one process: one runtime whose memory state has one row per robot, each
robot with the same names under its own (`arm1/image` in, `arm1/aura/<group>` and the
`arm1/aura/reset` service out; aura_ros/ros/robot.py). A single robot is a fleet of one: the
same code. The policies the node applies are ROS-free: stamp admission
(aura_ros/runtime/admission.py), crash-resume (aura_ros/runtime/crash_resume.py), counters and
delivery accounting (aura_ros/ros/health.py).

Threading: one worker thread owns the runtime and its memory state. Subscription callbacks only
hand the latest observation over (an unprocessed one that a newer one replaces is counted as
dropped), so a slow step drops frames instead of queueing them. Decoding happens in the worker,
which steps every robot with a new observation in one batched runtime call. A reset is performed
by the worker between two steps; the service callback waits for it.

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

import functools
import sys
import threading
import time
import traceback
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
from aura_ros.ros.health import DeliveryLedger, RecentProblems, Throttle
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
from aura_ros.ros.robot import Robot
from aura_ros.ros.trajectory import group_trajectories, plan, time_ns
from aura_ros.runtime import AuraRuntime, InputError, ModelDirError
from aura_ros.runtime.admission import Admission
from aura_ros.runtime.crash_resume import CrashResumeRefused
from aura_ros.runtime.decode import frame_pixel_limit
from aura_ros.runtime.frame_sync import FrameMatcher
from aura_ros.runtime.runtime import check_threshold
from aura_ros.runtime.state_file import model_fingerprint

WARN_THROTTLE_S = 2.0
LOG_MESSAGE_CHARS = 400          # a warning built from peer input is cut to this
IDLE_WAIT_S = 10.0               # deactivate/cleanup wait at most this for the step in progress
RESET_WAIT_S = 10.0              # ~/reset waits at most this for the worker to clear the memory


def check_device(device: str) -> None:
    """A CUDA device asked for on a machine without one: a parameter error, not a traceback."""
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ParameterError(f"parameter 'device' is {device!r} but torch sees no CUDA device "
                             "here; available: auto, cpu")


def _of_robot(*path: str) -> property:
    """A read-only node attribute that is the single robot's (`self.robot`) `path`."""
    def get(self):
        value = self.robot
        for name in path:
            value = getattr(value, name)
        return value
    return property(get)


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
        self.state_bytes = 0
        self._throttle = Throttle(WARN_THROTTLE_S)
        self._problems = RecentProblems(p.health_window_s)
        self._configure_error: Optional[Exception] = None
        # one Robot per robot served (aura_ros/ros/robot.py): a single robot is a fleet of one
        self.robots = [Robot(name, row, self.get_name(), p.state_file, self.get_logger(),
                             p.health_window_s) for row, name in enumerate(p.robots or ('',))]

        self._lock = threading.Condition()
        self._threshold_update: Optional[float] = None
        self._clock_jumped = False
        self._stopping = False
        self._busy = False                         # the worker is stepping
        self._active = False
        self._worker: Optional[threading.Thread] = None
        self._input_problems: list[str] = []

        self.clock_jumps_back = 0
        self.image_publishers = 0
        # gaps in the publishers' sequence numbers: lost in transport or missed by the node
        self.delivery = DeliveryLedger(1.5 * p.diagnostics_period_s)
        self.failure: Optional[str] = None         # what killed the worker
        self.exit_code: Optional[int] = None       # set when the process should end (main)
        self.admission: Optional[Admission] = None
        self._unmatched_seen: dict[int, int] = {}  # robot row -> unmatched frames seen

        self.health_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        for robot in self.robots:
            self.create_service(Trigger, robot.output_topic('reset'),
                                functools.partial(self._on_reset, robot))
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
        for robot in getattr(self, 'robots', ()):  # the node is gone: so is its claim on the files
            if robot.crash is not None:
                robot.crash.release()

    @property
    def lifecycle_state(self) -> str:
        return self._state_machine.current_state[1]

    @property
    def robot(self) -> Robot:
        """The one robot of a single-robot node (a fleet's first)."""
        return self.robots[0]

    # the single robot's counters and hand-over, as the node's own (tests and rigs read them)
    received = _of_robot('counters', 'received')
    dropped = _of_robot('counters', 'dropped')
    rejected = _of_robot('counters', 'rejected')
    images_rejected = _of_robot('counters', 'images_rejected')
    joint_states_received = _of_robot('counters', 'joint_states_received')
    joint_states_rejected = _of_robot('counters', 'joint_states_rejected')
    clipped = _of_robot('counters', 'clipped')
    chunks_expired = _of_robot('counters', 'chunks_expired')
    latencies = _of_robot('counters', 'latencies')
    _frame = _of_robot('frame')
    _joints = _of_robot('joints')
    _last_stamp = _of_robot('last_stamp')
    matcher = _of_robot('matcher')
    gate_topics = _of_robot('gate_topics')
    gate_pub = _of_robot('gate_pub')
    _camera_topics = _of_robot('camera_topics')
    last_gate = _of_robot('last_gate')

    lost_in_transport = property(lambda self: self.delivery.lost_in_transport)
    missed_by_node = property(lambda self: self.delivery.missed_by_node)

    @property
    def _input_subs(self) -> list[InputSubscription]:
        return [sub for robot in self.robots for sub in robot.subscriptions]

    @property
    def _watches(self) -> dict:
        return {(robot.row, name): watch for robot in self.robots
                for name, watch in robot.watches.items()}

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
            self.delivery.pause()                  # frames missed while inactive were ours
        for watch in self._watches.values():
            watch.restart()
        self.get_logger().info('active: stepping on every observation')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.failure is not None:               # the worker died: into error processing
            return TransitionCallbackReturn.ERROR
        with self._lock:
            self._active = False
            for robot in self.robots:
                robot.frame = None
                if robot.matcher is not None:
                    robot.matcher.clear()
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
                                                  threads=p.inference_threads,
                                                  robots=len(self.robots))
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
            fingerprint = model_fingerprint(p.model_dir)
            for robot in self.robots:
                try:
                    robot.crash.open(self.runtime, fingerprint)
                except CrashResumeRefused as err:
                    raise ParameterError(f"parameter 'state_file': {err}") from None
        cameras = tuple(c.name for c in spec.cameras)
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
        try:
            transports = camera_transports(spec.cameras, p.image_transport)
        except ValueError as err:
            raise ParameterError(f"parameter 'image_transport': {err}") from err
        self.delivery.forget()
        for robot in self.robots:
            self._wire(robot, transports)
        rules = remap_rules(self._ros_args, self.get_name())
        self.remap_warnings = unfit_rules(rules, cameras, [g.name for g in spec.groups],
                                          spec.features_in)
        for warning in self.remap_warnings:
            self.get_logger().warning(warning)
        self._stopping = False
        self._worker = threading.Thread(target=self._run, name='aura_worker', daemon=True)
        self._worker.start()
        unmatched = unmatched_remaps(self, rules)         # every topic exists now
        self.remap_warnings += unmatched
        for warning in unmatched:
            self.get_logger().warning(warning)
        inputs = ', '.join(f'{i.topic_name} ({i.reliability})' for i in self._input_subs)
        outputs = ', '.join(pub.topic_name for robot in self.robots
                            for pub in robot.group_pubs.values())
        fleet = f'{len(self.robots)} robots ({", ".join(p.robots)}), ' if p.robots else ''
        self.get_logger().info(
            f'model {spec.name!r} from {p.model_dir}; {fleet}device {self.runtime.device}, '
            f'backbone provider {self.runtime.provider}, engine {self.runtime.engine}; '
            f'memory state {self.state_bytes} bytes; gate threshold {threshold}; in: {inputs}; '
            f'out: {outputs} (absolute joint targets)')

    def _wire(self, robot: Robot, transports: dict) -> None:
        """One robot's inputs and outputs: the single-robot interface under its name."""
        spec, p, qos = self.spec, self.params, self.params.qos()
        cameras = tuple(c.name for c in spec.cameras)
        robot.matcher = FrameMatcher(cameras, p.camera_max_skew_s) if len(cameras) > 1 else None
        if spec.n_joints:
            # first: when a joint state and a frame are ready together, the executor takes them
            # in creation order, so the frame steps with the joint state that came before it
            robot.subscriptions.append(self._input(
                JointState, robot.input_topic('joint_states'),
                functools.partial(self._on_joints, robot), qos))
        if spec.features_in:
            self._subscribe(robot, Image, FEATURES_TOPIC, 'features', IMAGE_TYPE, qos)
        else:
            for camera, topic in camera_topics(cameras, transports).items():
                kind = COMPRESSED_TYPE if transports[camera] == 'compressed' else IMAGE_TYPE
                self._subscribe(robot, message_type(transports[camera]), topic, camera, kind,
                                qos)
        robot.camera_topics = {name: robot.watches[name].topic for name in cameras}
        robot.group_pubs = {g.name: self.create_lifecycle_publisher(
            JointTrajectory, robot.output_topic(g.name), 10) for g in spec.groups}
        robot.gate_pub = self.create_lifecycle_publisher(DiagnosticArray,
                                                         robot.output_topic('gate'), 10)
        robot.gate_topics = GateTopics(self, p.gate_image_steps, p.gate_image_rate_hz,
                                       p.gate_image_thumbnails, prefix=robot.output_topic(''))

    def _subscribe(self, robot: Robot, msg_type, topic: str, name: str, type_name: str,
                   qos) -> None:
        def on_message(msg, info) -> None:
            self._on_observation(robot, name, msg, info)

        sub = self._input(msg_type, robot.input_topic(topic), on_message, qos)
        robot.subscriptions.append(sub)
        robot.watches[name] = TopicWatch(sub.topic_name, type_name, self.params.input_timeout_s)

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
        """One step of every robot on blank inputs (first-call allocations, CUDA graph
        capture), then reset: the first real observation pays no set-up cost and meets a fresh
        state."""
        spec, runtime = self.spec, self.runtime
        joints = np.zeros(spec.n_joints, np.float32)
        if spec.features_in:
            inputs = np.zeros(spec.memory.d_model, np.float32)
        else:
            inputs = {c.name: (np.zeros((c.height, c.width, 3), np.uint8), 'rgb8')
                      for c in spec.cameras}
        results = runtime.step_rows({robot.row: (inputs, joints) for robot in self.robots})
        for result in results.values():
            if isinstance(result, Exception):
                raise result
        runtime.reset()

    def _release(self) -> None:
        """Stop the worker (states saved), drop every topic, the model and the state."""
        with self._lock:
            self._active = False
            for robot in self.robots:
                robot.frame = None
        if self._worker is not None:
            self.stop()
            self._worker = None
        for robot in self.robots:
            for sub in robot.subscriptions:
                sub.destroy()
            for pub in [*robot.group_pubs.values(), *([robot.gate_pub] if robot.gate_pub
                                                       else [])]:
                self.destroy_lifecycle_publisher(pub)
            if robot.gate_topics is not None:
                robot.gate_topics.destroy()
            robot.clear_wiring()
            with self._lock:
                robot.joints = None
                robot.last_stamp = -float('inf')
            if robot.crash is not None:
                robot.crash.release()
        self._input_problems = []
        device = self.runtime.device if self.runtime is not None else 'cpu'
        self.runtime = self.spec = self.admission = None
        if device.startswith('cuda'):
            torch.cuda.empty_cache()

    # -- callbacks: hand over, never compute --

    def _on_observation(self, robot: Robot, name: str, msg, info: dict) -> None:
        """A camera frame or features message: count it, match camera sets, hand over."""
        watch = robot.watches.get(name)
        if watch is None or not self._active:
            return
        watch.heard()
        if not self._count_sequence(watch.topic, info):
            return                                 # a copy, while input_qos auto re-subscribes
        admission, counters = self.admission, robot.counters
        if robot.matcher is not None and admission is not None:
            try:     # a frame no camera set could use never waits in the set buffer
                stamp = checked_stamp_seconds(msg.header.stamp)
                admission.check(self._now() - stamp, f'{name} frame')
            except InputError as err:
                with self._lock:
                    counters.received += 1
                self._reject(robot, err, image=True)
                return
        with self._lock:
            if not self._active:
                return
            counters.received += 1
            if robot.matcher is None:
                observation = {name: msg}
            else:
                matched = robot.matcher.add(name, stamp, msg)
                if matched is None:
                    return
                observation = {camera: frame.item for camera, frame in matched.items()}
            if robot.frame is not None:
                counters.dropped += 1
                self._problems.add('dropped')
                robot.problems.add('dropped')
            robot.frame = (observation, time.monotonic())
            self._lock.notify()

    def _count_sequence(self, topic: str, info: dict, count_loss: bool = True) -> bool:
        """Account for the message in the delivery ledger (health.py); False for a message
        already had (the second copy while input_qos auto replaces a subscription)."""
        fresh, lost = self.delivery.take(topic, info, count_loss)
        if lost:
            self._problem('frames_lost_in_transport', lambda: (
                f'{lost} message(s) lost in transport on {topic} '
                f'({self.delivery.lost_in_transport} so far): see input_qos and the Fast DDS '
                'profile (README "On a real robot")'))
        return fresh

    def _on_joints(self, robot: Robot, msg: JointState, info: dict) -> None:
        spec, admission = self.spec, self.admission
        if spec is None or admission is None or not self._active:
            return
        if not self._count_sequence(robot.input_topic('joint_states'), info, count_loss=False):
            return                                 # a copy, while input_qos auto re-subscribes
        robot.counters.joint_states_received += 1
        try:
            stamp = checked_stamp_seconds(msg.header.stamp)
            positions = joints_to_array(msg, spec.joint_names)
            admission.check_joint_state(stamp - self._now())
        except InputError as err:
            self._reject(robot, err, image=False)
            return
        with self._lock:
            robot.joints = (positions, stamp)

    def _on_reset(self, robot: Robot, request, response):
        if self.runtime is None or self._worker is None:
            response.success = False
            response.message = (f'no model loaded (lifecycle state {self.lifecycle_state}): '
                                'configure the node first')
            return response
        done = {'event': threading.Event()}
        with self._lock:
            self.delivery.pause()      # the executor waits here: its input queues overflow
            robot.reset_request = done
            robot.frame = None
            if robot.matcher is not None:
                robot.matcher.clear()
            self._lock.notify()
        deadline = time.monotonic() + RESET_WAIT_S
        while not done['event'].wait(timeout=0.05):
            if self.failure is not None or time.monotonic() > deadline:
                break
        with self._lock:
            self.delivery.pause()
        if self.failure is not None:
            response.success = False
            response.message = f'the worker failed ({self.failure}): the node is stopping'
            return response
        if not done['event'].is_set():
            response.success = False
            response.message = (f'reset timed out: the worker did not answer within '
                                f'{RESET_WAIT_S:g} s')
            return response
        summary = done['summary']
        response.success = True
        whose = f'{robot.name}: ' if robot.name else ''
        response.message = (f'{whose}memory reset; the finished episode had {summary.steps} '
                            f'steps and {summary.writes} writes')
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
            for robot in self.robots:
                if robot.matcher is not None:      # frames waiting from before the jump
                    robot.matcher.clear()
                if robot.joints is not None \
                        and robot.joints[1] - self._now() > self.params.max_obs_age_s:
                    robot.joints = None            # from the time before the jump
        self.get_logger().warning(
            f'the ROS clock jumped back by {back:.3f} s (a bag played in a loop?): frames step '
            'again from the new time; the memory is kept (call ~/reset for a new episode)')

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- the worker --

    def _run(self) -> None:
        while True:
            with self._lock:
                while (not any(r.frame is not None or r.reset_request is not None
                               for r in self.robots)
                       and self._threshold_update is None and not self._stopping):
                    self._lock.wait()
                if self._stopping:
                    return
                resets = []
                for robot in self.robots:
                    reset, robot.reset_request = robot.reset_request, None
                    if reset is not None:
                        resets.append((robot, reset))
                    if reset is not None or self._clock_jumped:
                        # a still-valid joint state survives a reset: it is the robot's
                        robot.last_stamp = -float('inf')
                self._clock_jumped = False
                threshold, self._threshold_update = self._threshold_update, None
                # every robot with a new observation since the last step: one batched step
                frames = [(robot, robot.frame, robot.joints) for robot in self.robots
                          if robot.frame is not None]
                for robot, _, _ in frames:
                    robot.frame = None
                self._busy = True
            try:
                self._work(resets, threshold, frames)
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

    def _work(self, resets, threshold, frames) -> None:
        for robot, reset in resets:
            reset['summary'] = self.runtime.reset(robot.row)
            robot.counters.latencies.clear()
            robot.last_gate = {}
            robot.gate_topics.view.clear()
            self._save_state(robot)
            reset['event'].set()
        if threshold is not None:
            own = threshold < 0                 # negative: back to the model's own
            threshold = self.spec.memory.gate_threshold if own else threshold
            self.runtime.set_gate_threshold(threshold)
            self.get_logger().info(f'gate threshold set to {threshold}'
                                   + (" (the model's)" if own else ''))
        if frames:
            self._step_robots(frames)

    def _step_robots(self, frames: list) -> None:
        """Admit and decode each robot's observation, step the admitted ones together (one
        batched backbone call, one batched memory step), publish each robot's results."""
        admitted = {}
        for robot, (observation, received), joints in frames:
            try:
                admitted[robot.row] = (robot, self._admit(robot, observation, joints, received))
            except InputError as err:
                self._reject(robot, err, image=True)
            except Exception as err:  # keep the node alive  # noqa: BLE001
                self._reject(robot, InputError('step_failed', f'step failed: {err!r}'),
                             image=True)
        if not admitted:
            return
        counts = {row: self.runtime.counters[row].steps for row in admitted}
        try:
            results = self.runtime.step_rows({row: (prepared['inputs'], prepared['positions'])
                                              for row, (_, prepared) in admitted.items()})
        except Exception as err:  # keep the node alive  # noqa: BLE001
            results = {row: InputError('step_failed', f'step failed: {err!r}')
                       for row in admitted}
        for row, (robot, prepared) in admitted.items():
            result = results[row]
            if isinstance(result, InputError):
                self._reject(robot, result, image=True)
                continue
            try:
                self._publish(robot, prepared, result)
            except Exception as err:  # keep the node alive  # noqa: BLE001
                if self.runtime.counters[row].steps == counts[row]:
                    self._reject(robot, InputError('step_failed', f'step failed: {err!r}'),
                                 image=True)
                elif self.context.ok():            # committed, then publishing failed
                    robot.counters.publish_failures += 1
                    whose = f' of {robot.name}' if robot.name else ''
                    self._problem('publish_failed', lambda err=err, whose=whose, row=row: (
                        f'step {self.runtime.counters[row].steps}{whose} was taken but '
                        f'publishing its results failed: {err!r}'))
                # else: shutting down (Ctrl-C during the step): the step counts as taken

    def _admit(self, robot: Robot, observation: dict, joints, received: float) -> dict:
        """The checks before a step (admission.py) and the decoding: what the step needs."""
        started = time.perf_counter()
        stamps = {name: checked_stamp_seconds(msg.header.stamp)
                  for name, msg in observation.items()}
        newest = max(stamps, key=stamps.get)       # a camera set is as recent as its newest
        stamp, header_stamp = stamps[newest], observation[newest].header.stamp
        what = 'features' if self.spec.features_in else 'image'
        now = self._now()
        self.admission.check_step(stamp, now, robot.last_stamp,
                                  None if joints is None else joints[1],
                                  bool(self.spec.n_joints), what, robot.counters.step_time())
        positions = joints[0] if self.spec.n_joints else np.zeros(0, np.float32)
        if self.spec.features_in:
            inputs = features_to_array(observation[newest], self.spec.memory.d_model)
            gate_frame = None
        else:
            inputs = {c.name: frame_to_array(observation[c.name], (c.width, c.height),
                                             self._max_pixels[c.name])
                      for c in self.spec.cameras}
            gate_frame = inputs[self.spec.cameras[0].name]
        return {'inputs': inputs, 'positions': positions, 'stamp': stamp, 'age': now - stamp,
                'header_stamp': header_stamp, 'started': started, 'received': received,
                'decoded': time.perf_counter(), 'gate_frame': gate_frame}

    def _publish(self, robot: Robot, prepared: dict, result) -> None:
        """A committed step's chunk, gate and counters, for its robot."""
        stamp, started = prepared['stamp'], prepared['started']
        robot.last_stamp = stamp
        counters = robot.counters
        timing = plan(time_ns(prepared['header_stamp']), self.get_clock().now().nanoseconds,
                      self.spec.action_period_s, len(result.action), self.params.chunk_min_lead_s)
        chunks = group_trajectories(result.targets, self.runtime.contract.names, timing,
                                    self.params.frame_id)
        for name, msg in chunks.items():
            robot.group_pubs[name].publish(msg)
        counters.clipped += result.clipped
        counters.points_dropped += timing.dropped
        if not chunks:
            counters.chunks_expired += 1
            ready_age = timing.publish_ns * 1e-9 - stamp
            step_s = time.perf_counter() - started
            age = prepared['age']
            self._problem('chunk_expired', lambda: (
                f'a whole action chunk was past when it was ready ({counters.chunks_expired} so '
                f'far): the observation was {age:.3f} s old when the step began and '
                f'{ready_age:.3f} s when its chunk was ready; the chunk ends '
                f'{self.admission.horizon_s:.3f} s after the stamp and needs '
                f'{self.params.chunk_min_lead_s:g} s of lead; the step took '
                f'{step_s * 1e3:.1f} ms; not published (the memory step was taken)'))
        gate = result.gate
        if gate.wrote:
            self._save_state(robot)
        if gate.discarded:
            counters.nonfinite_discarded += 1
            self._problem('nonfinite_state_discarded', lambda: (
                f'step {gate.step}: the new memory state was not finite; write discarded, '
                f'the last good state kept ({counters.nonfinite_discarded} so far)'))
        latency = time.perf_counter() - started
        robot.last_gate = {'wrote': gate.wrote, 'p': gate.p, 'surprise': gate.surprise,
                           'step': gate.step, 'writes': gate.writes,
                           'discarded': gate.discarded,
                           'write_rate': gate.writes / max(gate.step, 1),
                           'gate_threshold': self.runtime.gate_threshold,
                           'state_bytes': self.state_bytes // len(self.robots),
                           'latency_ms': latency * 1e3,
                           'first_point': timing.first_point, 'clipped': result.clipped}
        gate_msg = DiagnosticArray()
        gate_msg.header.stamp = prepared['header_stamp']  # the observation's: traceable
        gate_msg.status.append(status(robot.label('aura') + '/gate' if robot.name else
                                      'aura/gate', 'wrote' if gate.wrote else 'skipped',
                                      robot.last_gate, hardware_id=self.runtime.device))
        robot.gate_pub.publish(gate_msg)
        robot.gate_topics.record(robot.last_gate, prepared['gate_frame'])
        published = time.perf_counter()
        decoded = prepared['decoded']
        stages = {'decode': decoded - started, **result.timings,
                  'publish': published - decoded - result.timings.get('total', 0.0),
                  'queue': started - prepared['received']}
        counters.record(stages, published - prepared['received'])

    def _problem(self, reason: str, message: Callable[[], str], key: str = '') -> None:
        """Record a problem for /diagnostics and warn about it, at most once per throttle period
        per `key` (default: the reason); the message is built only when it is logged."""
        self._problems.add(reason)
        if self._throttle.ready(key or reason):
            self.get_logger().warning(message())

    def _reject(self, robot: Robot, err: InputError, image: bool) -> None:
        """Count a rejected image or joint state by reason, for its robot; warn, throttled per
        reason (and robot)."""
        robot.counters.reject(err.reason, image)
        robot.problems.add(err.reason)
        whose = f'{robot.name}: ' if robot.name else ''

        def message() -> str:
            text = str(err)
            if len(text) > LOG_MESSAGE_CHARS:
                text = f'{text[:LOG_MESSAGE_CHARS]}... ({len(text)} chars)'
            return f'{whose}rejected {"image" if image else "joint state"} ({err.reason}): {text}'

        self._problem(err.reason, message, key=f'{err.reason} {robot.name}'.strip())

    # -- crash-resume --

    def _save_state(self, robot: Robot) -> None:
        """Snapshot a robot's row (after a write, a reset, at shutdown): bytes follow writes."""
        if robot.crash is None or self.runtime is None:
            return
        err = robot.crash.save(self.runtime)
        if err is not None:
            self._problem('state_save_failed', lambda: (
                f'could not save the state to {robot.crash.path}: {err}'))

    # -- health --

    def health(self) -> dict:
        """Counters and latency percentiles, as published on /diagnostics: the process's (with
        the robot's own, `robot_health`, for a single-robot node; with every robot's steps and
        writes summed for a fleet).

        Runs on the executor while the worker appends to (or, on reset, clears) the latency
        buffers: RobotCounters copies each first, so this never races the worker.
        """
        runtime = self.runtime
        values = {'lifecycle_state': self.lifecycle_state,
                  'frames_lost_in_transport': self.delivery.lost_in_transport,
                  'frames_missed_by_node': self.delivery.missed_by_node,
                  'image_publishers': self.image_publishers,
                  'image_transport': self.params.image_transport,
                  'input_qos': self.params.input_qos,
                  'clock_jumps_back': self.clock_jumps_back,
                  'state_bytes': self.state_bytes}
        if runtime is not None:
            values.update({'device': runtime.device, 'execution_provider': runtime.provider,
                           'engine': runtime.engine, 'gate_threshold': runtime.gate_threshold})
        for sub in list(self._input_subs):         # what each input subscribes with now
            values[f'reliability_{sub.topic_name}'] = sub.reliability
        if self.failure is not None:
            values['worker_failure'] = self.failure
        if len(self.robots) == 1:
            values.update(self.robot_health(self.robot))
        else:
            each = [self.robot_health(robot) for robot in self.robots]
            values['robots'] = len(self.robots)
            for key in ('steps', 'writes', 'frames_received', 'frames_dropped',
                        'frames_rejected'):
                values[key] = sum(v[key] for v in each)
        return values

    def robot_health(self, robot: Robot) -> dict:
        """One robot's counters, episode and crash-resume, as its /diagnostics status shows."""
        runtime = self.runtime
        counters = runtime.counters[robot.row] if runtime is not None else None
        values = {**robot.counters.values(),
                  'steps': counters.steps if counters else 0,
                  'writes': counters.writes if counters else 0,
                  'row_state_bytes': self.state_bytes // len(self.robots),
                  'gate_images_rendered': robot.gate_topics.view.renders if robot.gate_topics
                  else 0,
                  'crash_resume': robot.crash.status if robot.crash is not None else 'off'}
        matcher = robot.matcher
        if matcher is not None:
            values['camera_sets_matched'] = matcher.matched
            values['camera_frames_unmatched'] = sum(matcher.unmatched.values())
            for camera, count in sorted(matcher.unmatched.items()):
                values[f'camera_{camera}_unmatched'] = count
        if robot.crash is not None:
            values.update(robot.crash.values())
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
        camera_topics = [t for robot in self.robots for t in robot.camera_topics.values()]
        for watch in watches:
            types = [info.topic_type for info in self.get_publishers_info_by_topic(watch.topic)]
            count = len(types)
            if watch.topic in camera_topics:
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
                      for t in camera_topics if self.count_publishers(t) > 1]
        self.image_publishers = most
        for robot in self.robots:
            matcher = robot.matcher
            if matcher is not None:
                unmatched = sum(matcher.unmatched.values())
                seen = self._unmatched_seen.get(robot.row, 0)
                for _ in range(min(unmatched - seen, 1000)):
                    self._problems.add('camera_frames_unmatched')
                    robot.problems.add('camera_frames_unmatched')
                self._unmatched_seen[robot.row] = unmatched
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
        with self._lock:                           # a stall, seen by the timer first
            self.delivery.executor_ran()
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
        if len(self.robots) > 1:                   # a fleet: one status per robot besides
            window = f'{self.params.health_window_s:g} s'
            for robot in self.robots:
                own = self.robot_health(robot)
                recent = [f'{n} {kind} in the last {window}'
                          for kind, n in sorted(robot.problems.counts().items())]
                robot_level = DiagnosticStatus.ERROR if self.failure is not None else (
                    DiagnosticStatus.WARN if recent else DiagnosticStatus.OK)
                text = f'{own["steps"]} steps, {own["writes"]} writes'
                msg.status.append(status(
                    f'{self.get_fully_qualified_name()}: AURA policy, robot {robot.name}',
                    '; '.join([*recent, text]), own, level=robot_level,
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
        for robot in self.robots:
            self._save_state(robot)


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
