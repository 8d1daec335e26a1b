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
same code. The fleet changes by a lifecycle reconfigure: `robots` may be set while the node is
unconfigured (after cleanup, which saved every robot's state), and configure seats the new list
(its rows, topics and reset services; a robot that stays or comes back resumes its own state
file). The policies the node applies are ROS-free: stamp admission
(aura_ros/runtime/admission.py), crash-resume (aura_ros/runtime/crash_resume.py), counters and
delivery accounting (aura_ros/ros/health.py).

This module keeps the lifecycle, the wiring of topics and services, the callbacks' entry points
and main(); the jobs live beside it: the input callbacks (handover.py), the worker thread's loop
(worker.py) and its step (stepping.py), /diagnostics (diagnostics.py, input_checks.py).

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

import dataclasses
import functools
import sys
import threading
import time
from typing import Optional

# first of all: when aura_node is the program, its Ctrl-C/SIGHUP handler, before torch loads
from aura_ros.ros.interrupt import INTERRUPT  # isort: split

import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
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

from aura_ros.ros import diagnostics
from aura_ros.ros.adaptive_qos import InputSubscription
from aura_ros.ros.gate_topics import GateTopics
from aura_ros.ros.handover import InputHandOver
from aura_ros.ros.health import DeliveryLedger, ProblemLog
from aura_ros.ros.input_checks import InputChecks
from aura_ros.ros.inputs import (
    COMPRESSED_TYPE,
    FEATURES_TOPIC,
    IMAGE_TYPE,
    TopicWatch,
    camera_topics,
    camera_transports,
    message_type,
)
from aura_ros.ros.model_remaps import remap_rules, unfit_rules
from aura_ros.ros.params import (
    ParameterError,
    check_device,
    declare_and_read,
    robots_now,
    run_time_refusal,
    widen_integers,
)
from aura_ros.ros.remaps import unmatched_remaps
from aura_ros.ros.robot import Robot, seat_fleet
from aura_ros.ros.worker import Worker
from aura_ros.runtime import AuraRuntime, ModelDirError
from aura_ros.runtime.admission import Admission
from aura_ros.runtime.crash_resume import CrashResumeRefused
from aura_ros.runtime.decode import frame_pixel_limit
from aura_ros.runtime.frame_sync import FrameMatcher
from aura_ros.runtime.state_file import model_fingerprint

WARN_THROTTLE_S = 2.0
IDLE_WAIT_S = 10.0               # deactivate/cleanup wait at most this for the step in progress
RESET_WAIT_S = 10.0              # ~/reset waits at most this for the worker to clear the memory


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
            if hasattr(self, 'lock'):
                self._release()
            raise
        except Exception:
            # a bad parameter, model or state file: the half-made node is destroyed now (its
            # name's /rosout publisher with it), not whenever the garbage collector reaches it
            if hasattr(self, 'lock'):
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
        # what went wrong: warned about (throttled) and counted for /diagnostics
        self.problem_log = ProblemLog(self.get_logger(), WARN_THROTTLE_S, p.health_window_s)
        self._configure_error: Optional[Exception] = None
        # one Robot per robot served (aura_ros/ros/robot.py): a single robot is a fleet of one
        self.robots: list[Robot] = []              # seated below and at every configure

        self.worker = Worker(self)                 # what the worker thread does (worker.py)
        self._worker: Optional[threading.Thread] = None
        self.handover = InputHandOver(self)        # the input callbacks (handover.py)
        self.input_checks = InputChecks(self)      # the input topics, checked on every tick
        self.lock = threading.Condition()          # guards the hand-over: callbacks <-> worker
        self.active = False

        self.clock_jumps_back = 0
        # gaps in the publishers' sequence numbers: lost in transport or missed by the node
        self.delivery = DeliveryLedger(1.5 * p.diagnostics_period_s)
        self.failure: Optional[str] = None         # what killed the worker
        self.exit_code: Optional[int] = None       # set when the process should end (main)
        self.admission: Optional[Admission] = None
        self.max_pixels: dict[str, int] = {}       # camera -> most pixels a frame may have

        self.health_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._seat_robots()
        self.create_timer(p.diagnostics_period_s, self._publish_health,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.add_pre_set_parameters_callback(widen_integers)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.failure_guard = self.create_guard_condition(self._on_worker_failure)
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

    _active = property(lambda self: self.active)
    _busy = property(lambda self: self.worker.busy)          # the worker is stepping
    lost_in_transport = property(lambda self: self.delivery.lost_in_transport)
    missed_by_node = property(lambda self: self.delivery.missed_by_node)

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
        with self.lock:
            self.active = True
            self.delivery.pause()                  # frames missed while inactive were ours
        for robot in self.robots:
            for watch in robot.watches.values():
                watch.restart()
        self.get_logger().info('active: stepping on every observation')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.failure is not None:               # the worker died: into error processing
            return TransitionCallbackReturn.ERROR
        with self.lock:
            self.active = False
            for robot in self.robots:
                robot.frame = None
                if robot.matcher is not None:
                    robot.matcher.clear()
            self.lock.wait_for(lambda: not self.worker.busy, timeout=IDLE_WAIT_S)
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

    def _seat_robots(self) -> None:
        """The robots of the `robots` parameter, at start and at every configure (it changes only
        while unconfigured): a robot that left loses its reset service, a new one gets its own."""
        names = robots_now(self)
        if self.robots and names != self.params.robots:
            self.get_logger().info(f'robots: {list(self.params.robots)} -> {list(names)}')
        self.params = p = dataclasses.replace(self.params, robots=names)
        self.robots, left = seat_fleet(self.robots, names, lambda name: Robot(
            name, 0, self.get_name(), p.state_file, self.get_logger(), p.health_window_s))
        for robot in left:
            self.destroy_service(robot.reset_service)
        for robot in self.robots:
            if robot.reset_service is None:
                robot.reset_service = self.create_service(
                    Trigger, robot.output_topic('reset'), functools.partial(self._on_reset, robot))

    def _configure(self) -> None:
        """Seat the robots, load and check the model, warm it up, resume each robot's state,
        create topics and worker."""
        self._seat_robots()
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
        self.runtime.warm_up()
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
        self.max_pixels = {c.name: frame_pixel_limit(p.max_frame_pixels, c.width, c.height)
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
        self._worker = self.worker.start()
        unmatched = unmatched_remaps(self, rules)         # every topic exists now
        self.remap_warnings += unmatched
        for warning in unmatched:
            self.get_logger().warning(warning)
        inputs = ', '.join(f'{i.topic_name} ({i.reliability})' for robot in self.robots
                           for i in robot.subscriptions)
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
                functools.partial(self.handover.on_joints, robot), qos))
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
            self.handover.on_observation(robot, name, msg, info)

        sub = self._input(msg_type, robot.input_topic(topic), on_message, qos)
        robot.subscriptions.append(sub)
        robot.watches[name] = TopicWatch(sub.topic_name, type_name, self.params.input_timeout_s)

    def _input(self, msg_type, topic: str, callback, qos) -> InputSubscription:
        """An input subscription: fixed QoS, or with input_qos auto the publishers' reliability
        (re-checked on every /diagnostics tick); an unmatched QoS is warned about."""
        def on_incompatible(event) -> None:
            self.problem_log.report('incompatible_qos', lambda: (
                f'a publisher on {made.topic_name} offers a QoS this subscription '
                f'({self.params.input_qos}: {made.reliability}) cannot match: no messages '
                'from it (set input_qos)'), key=f'incompatible_qos {made.topic_name}')

        made = InputSubscription(self, msg_type, topic, callback, qos,
                                 adaptive=self.params.input_qos == 'auto',
                                 on_incompatible=on_incompatible)
        return made

    def _release(self) -> None:
        """Stop the worker (states saved), drop every topic, the model and the state."""
        with self.lock:
            self.active = False
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
            with self.lock:
                robot.joints = None
                robot.last_stamp = -float('inf')
            if robot.crash is not None:
                robot.crash.release()
        self.input_checks.clear()
        device = self.runtime.device if self.runtime is not None else 'cpu'
        self.runtime = self.spec = self.admission = None
        if device.startswith('cuda'):
            torch.cuda.empty_cache()

    # -- callbacks: hand over, never compute --

    def _on_reset(self, robot: Robot, request, response):
        if self.runtime is None or self._worker is None:
            response.success = False
            response.message = (f'no model loaded (lifecycle state {self.lifecycle_state}): '
                                'configure the node first')
            return response
        done = {'event': threading.Event()}
        with self.lock:
            self.delivery.pause()      # the executor waits here: its input queues overflow
            robot.reset_request = done
            robot.frame = None
            if robot.matcher is not None:
                robot.matcher.clear()
            self.lock.notify()
        deadline = time.monotonic() + RESET_WAIT_S
        while not done['event'].wait(timeout=0.05):
            if self.failure is not None or time.monotonic() > deadline:
                break
        with self.lock:
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
        refusal = run_time_refusal(params, self.lifecycle_state)
        if refusal:
            return SetParametersResult(successful=False, reason=refusal)
        for param in params:
            if param.name == 'robots':             # seated at the next configure
                continue
            with self.lock:
                self.worker.threshold_update = float(param.value)
                self.lock.notify()                 # applied now, frames or not
        return SetParametersResult(successful=True)

    def _on_clock_jump(self, jump: TimeJump) -> None:
        back = -jump.delta.nanoseconds * 1e-9
        if back <= 0:
            return
        self.clock_jumps_back += 1
        self.problem_log.recent.add('clock_jump_back')
        with self.lock:
            self.worker.clock_jumped = True
            for robot in self.robots:
                if robot.matcher is not None:      # frames waiting from before the jump
                    robot.matcher.clear()
                if robot.joints is not None \
                        and robot.joints[1] - self.now() > self.params.max_obs_age_s:
                    robot.joints = None            # from the time before the jump
        self.get_logger().warning(
            f'the ROS clock jumped back by {back:.3f} s (a bag played in a loop?): frames step '
            'again from the new time; the memory is kept (call ~/reset for a new episode)')

    def now(self) -> float:
        """The ROS clock's time, seconds."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_worker_failure(self) -> None:
        """On the executor: active or inactive -> error processing (on_error) -> finalized."""
        state = self.lifecycle_state
        if state == 'active':
            self.trigger_deactivate()
        elif state == 'inactive':
            self.trigger_cleanup()
        self.exit_code = 1

    # -- health and stopping --

    def health(self) -> dict:
        """Counters and latency percentiles, as published on /diagnostics (diagnostics.py)."""
        return diagnostics.health(self)

    def robot_health(self, robot: Robot) -> dict:
        """One robot's counters, episode and crash-resume, as its /diagnostics status shows."""
        return diagnostics.robot_health(self, robot)

    def problems(self) -> list[str]:
        """What makes the node WARN now: recent problems by kind, and input topic problems."""
        return diagnostics.problems(self)

    def _publish_health(self) -> None:
        with self.lock:                            # a stall, seen by the timer first
            self.delivery.executor_ran()
        self.input_checks.run(self.active)
        self.health_pub.publish(diagnostics.message(self))

    def stop(self) -> None:
        """Stop and join the worker (the current step finishes first); save the state."""
        worker = self._worker
        if worker is None:
            return
        self.worker.stop()
        if worker is not threading.current_thread():
            worker.join()
        for robot in self.robots:
            robot.save_state(self.runtime, self.problem_log)


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
