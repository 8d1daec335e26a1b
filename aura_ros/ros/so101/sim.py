"""`so101_sim`: the SO-101 cue-reach world (MuJoCo) as a ROS 2 node that acts like a
ros2_control robot with joint_trajectory_controller.

Publishes every frame (1/`frame_hz` s of sim time), all stamped with the frame's sim time:
  /clock           rosgraph_msgs/Clock (when `publish_clock`): for nodes with use_sim_time
  task_events      std_msgs/String, one JSON object per event (see below), before the frame
  joint_states     sensor_msgs/JointState: the 6 joints by name, position and velocity
  image            sensor_msgs/Image rgb8, the fixed camera ('wrist_image' too with
                   `wrist_camera`)
and once, latched (transient local) as robot_state_publisher does:
  robot_description  std_msgs/String, a URDF with the joint limits of the loaded MJCF, so a bag
                   recorded from the simulator gives a trained model its joint limits
Executes trajectory_msgs/JointTrajectory on every topic of `trajectory_topics` like
joint_trajectory_controller: absolute targets, header.stamp + time_from_start (zero stamp =
now), linear interpolation, past points dropped, the new trajectory replaces the old one from
its first point on, unnamed joints keep their plan (aura_ros.ros.joint_trajectory).

Clock: sim time = the ROS time at start + frames / frame_hz. In real time (default) the
physics follows the wall clock times `time_scale`; with time_scale 1 the stamps match other
nodes' wall clocks, otherwise they must run with use_sim_time. The stamps never fall behind that
clock: while the world waits for its first command, and when the simulator cannot keep up (more
than MAX_CATCH_UP frames due at once: a slow render, a loaded machine), the sim time skips ahead
(`frames_skipped`, warned) instead of stepping every frame late. With `lockstep` the world
advances one frame as soon as a trajectory answering the last frame arrives (header.stamp at or
after the frame's stamp, or zero), or after `lockstep_timeout_s` of wall time: faster than real
time when the controller is fast, and deterministic. Sim time then runs ahead of the wall
clock, so the controller must use_sim_time.

Events (JSON, std_msgs/String on `task_events`): every object has 'event', 'stamp' (sim time,
s, = the stamp of the frame that shows it), 'frame', 'time' (s since the episode start) and,
except 'start' and 'summary', 'task'. 'start' (once: seed and the world config), 'cue' (goal,
colour), 'distractor' (lamp, colour), 'go' (goal), 'success' / 'failure' (the TaskOutcome:
goal, reason, reached, frames, cue_frame, go_frame, end_frame, distractors), 'summary' (at the
end: tasks, successes). An evaluator counts tasks by their one 'success' or 'failure' event.
"""

import io
import json
import time
from typing import Callable, Optional

from aura_ros.ros.interrupt import INTERRUPT  # isort: split

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from aura_ros.ros.conversions import stamp_seconds
from aura_ros.ros.joint_trajectory import TrajectoryError, TrajectoryFollower
from aura_ros.tasks.so101 import So101World, summarise
from aura_ros.tasks.so101_config import DEFAULT
from aura_ros.urdf import limits_urdf

#: robot_state_publisher's robot_description QoS: one message, kept for late subscribers
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
WORLD = DEFAULT      # the world's knobs and their defaults: aura_ros/tasks/so101_config.py
PARAMETERS = {
    'frame_hz': (WORLD.frame_hz,
                 'frames (images, joint states, task logic) per second of sim time'),
    'image_width': (WORLD.width, 'camera image width in pixels'),
    'image_height': (WORLD.height, 'camera image height in pixels'),
    'wrist_camera': (WORLD.wrist_camera, "also publish the wrist camera on 'wrist_image'"),
    'n_pads': (WORLD.n_pads, 'look-alike pads (2 to 4)'),
    'seed': (0, 'episode seed: goals, delays and distractors are deterministic given it'),
    'delay_min': (WORLD.delay_min, 'frames from the end of the cue to GO, at least'),
    'delay_max': (WORLD.delay_max, 'frames from the end of the cue to GO, at most (uniform)'),
    'distractor_prob': (WORLD.distractor_prob, 'chance per frame that a distractor flash starts'),
    'time_scale': (1.0, 'real-time mode: sim seconds per wall second'),
    'lockstep': (False, 'advance one frame per answered frame (see the module docstring)'),
    'lockstep_timeout_s': (1.0, 'lockstep: wall seconds to wait for an answer (0: forever)'),
    'wait_for_command': (False, 'hold the world still until the first trajectory arrives'),
    'trajectory_topics': (['arm_controller/joint_trajectory'],
                          'JointTrajectory topics executed (e.g. an arm and a gripper one)'),
    'publish_clock': (True, 'publish the sim time on /clock'),
    'max_tasks': (0, 'stop after this many finished tasks (0: never)'),
    'duration_s': (0.0, 'stop after this many sim seconds (0: never)'),
    'frame_id': ('camera', 'header.frame_id of the images'),
    'outcomes_file': ('', 'append every finished task as one JSON line here (empty: off)'),
}
MAX_CATCH_UP = 5          # real time: frames stepped at most per tick before time is dropped


def _seconds_msg(seconds: float):
    from builtin_interfaces.msg import Time

    sec = int(np.floor(seconds))
    return Time(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def _duration(d) -> float:
    return d.sec + d.nanosec * 1e-9


def _jpeg(pixels: np.ndarray, quality: int = 90) -> CompressedImage:
    """An RGB frame as sensor_msgs/CompressedImage, JPEG (what image_transport's compressed
    plugin publishes)."""
    from PIL import Image as PilImage

    buffer = io.BytesIO()
    PilImage.fromarray(pixels).save(buffer, format='JPEG', quality=quality)
    return CompressedImage(format='jpeg', data=buffer.getvalue())


class So101SimNode(Node):
    """The simulator; `done` turns true when `max_tasks` or `duration_s` is reached.

    Another world is served by a subclass that sets PARAMETERS, TITLE, NODE_NAME and overrides
    `make_world`, `camera_topics`, `world_line`, `outcome_line` and `start_fields`
    (aura_ros.ros.pusher.sim): the world needs
    the interface of So101World (step, render, joint_positions, joint_velocities, joint_names,
    config.period, seed, frame, time, close).
    """

    PARAMETERS = PARAMETERS
    TITLE = 'SO-101'
    NODE_NAME = 'so101_sim'

    def __init__(self, name: str = '', autostart: bool = True, **kwargs):
        super().__init__(name or self.NODE_NAME, **kwargs)
        for key, (default, text) in self.PARAMETERS.items():
            self.declare_parameter(key, default, ParameterDescriptor(description=text,
                                                                     read_only=True))
        p = {key: self.get_parameter(key).value for key in self.PARAMETERS}
        self._check(p)
        self.params = p
        self.world = self.make_world(p)
        self.config = self.world.config
        self.joint_names = tuple(self.world.joint_names)
        self.period = self.config.period
        self.base = 0.0                     # sim time (s) of frame 0, set by start()
        self.follower = TrajectoryFollower(self.joint_names,
                                           self.world.data.ctrl[:len(self.joint_names)])
        self.done = False
        self.started = False
        self.waiting = bool(p['wait_for_command'])
        self.awaiting = False               # lockstep: the last frame awaits its answer
        self.published_wall = 0.0
        self.finished: list[dict] = []
        self.rejected: dict[str, int] = {}
        self.trajectories = 0
        self.lockstep_timeouts = 0
        self.frames_skipped = 0             # real time: frames not stepped to stay on the clock

        sensor = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.cameras = self.camera_topics()
        self.image_pubs = {cam: self.create_publisher(CompressedImage if jpeg else Image, topic,
                                                      sensor)
                           for cam, (topic, jpeg) in self.cameras.items()}
        self.joint_pub = self.create_publisher(JointState, 'joint_states', sensor)
        # transient local: a listener that matches late (several arms to discover) still gets
        # the first events (the 'start', the first cue)
        self.event_pub = self.create_publisher(String, 'task_events', QoSProfile(
            depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.clock_pub = self.create_publisher(Clock, '/clock', 10) if p['publish_clock'] \
            else None
        self.description_pub = self.create_publisher(String, 'robot_description', LATCHED)
        self.description_pub.publish(String(data=limits_urdf(
            self.TITLE, self.joint_names, self.world.joint_limits())))
        for topic in p['trajectory_topics']:
            self.create_subscription(JointTrajectory, topic, self.on_trajectory, 10)
        self.answered = self.create_guard_condition(self.on_answered)
        # lockstep: what an answered (or timed-out) frame does; a fleet (fleet_sim.py) replaces
        # it so that every arm's world advances together, on one clock
        self.lockstep_advance = self.advance
        self.timer = None
        sources = ', '.join(self.resolve_topic_name(t) for t in p['trajectory_topics'])
        cameras = ', '.join(f'{t} ({"jpeg" if j else "rgb8"})' for t, j in self.cameras.values())
        self.get_logger().info(
            f'{self.TITLE} simulator: {self.world_line()}, cameras {cameras} at '
            f'{p["frame_hz"]:g} Hz, seed {p["seed"]}, '
            + ('lock-step' if p['lockstep'] else f'real time x{p["time_scale"]:g}')
            + f', trajectories from {sources}')
        if autostart:
            self.start()

    # -- the world served (a subclass serves another) ------------------------------------------

    def make_world(self, p: dict):
        """The world of the parameters `p`."""
        config = WORLD.with_knobs(
            width=int(p['image_width']), height=int(p['image_height']),
            wrist_camera=bool(p['wrist_camera']), n_pads=int(p['n_pads']),
            frame_hz=float(p['frame_hz']), delay_min=int(p['delay_min']),
            delay_max=int(p['delay_max']), distractor_prob=float(p['distractor_prob']))
        return So101World(config, seed=int(p['seed']))

    def camera_topics(self) -> dict[str, tuple[str, bool]]:
        """{camera: (topic, published JPEG-compressed)}, in the world's camera order."""
        return {camera: (camera, False) for camera in self.config.cameras}

    def world_line(self) -> str:
        return (f'{self.config.n_pads} pads, {self.config.width}x{self.config.height} '
                'images')

    def outcome_line(self, event: dict) -> str:
        return f'cue {self.config.pad_colours[event["goal"]]} -> pad {event["goal"]}'

    @staticmethod
    def _check(p: dict) -> None:
        if not p['frame_hz'] > 0 or not p['time_scale'] > 0:
            raise ValueError('parameters frame_hz and time_scale must be > 0')
        if p['duration_s'] < 0 or p['max_tasks'] < 0 or p['lockstep_timeout_s'] < 0:
            raise ValueError('parameters duration_s, max_tasks, lockstep_timeout_s must be >= 0')
        topics = p['trajectory_topics']
        if not topics or not all(isinstance(t, str) and t for t in topics):
            raise ValueError(f'parameter trajectory_topics must name at least one topic, '
                             f'got {topics!r}')

    # -- time ------------------------------------------------------------------------------

    @property
    def sim_time(self) -> float:
        """Sim time (ROS seconds) of the current frame."""
        return self.base + self.world.time

    def start(self, base: Optional[float] = None) -> None:
        """Publish frame 0 and start the clock (call once, after the subscribers matched).
        `base`: the sim time of frame 0 (default: now), one value for all arms of a fleet."""
        if self.started:
            return
        self.started = True
        self.base = self.get_clock().now().nanoseconds * 1e-9 if base is None else base
        self.clock_start = self.base
        self.wall_start = time.monotonic()
        self.follower = TrajectoryFollower(self.joint_names,
                                           self.world.data.ctrl[:len(self.joint_names)],
                                           now=self.sim_time)
        config = {k: v for k, v in vars(self.config).items()}
        self.publish_events([{'event': 'start', 'seed': self.world.seed,
                              'joint_names': list(self.joint_names),
                              **self.start_fields(), 'config': config,
                              'frame': 0, 'time': 0.0}])
        self.publish_frame()
        if self.params['lockstep']:
            timeout = self.params['lockstep_timeout_s']
            self.timer = self.create_timer(min(0.05, timeout / 2) if timeout else 0.05,
                                           self.check_lockstep)
        else:
            self.timer = self.create_timer(self.period / self.params['time_scale'] / 2,
                                           self.tick)

    def start_fields(self) -> dict:
        """World-specific fields of the 'start' event."""
        return {'pad_colours': list(self.config.pad_colours)}

    # -- inputs ------------------------------------------------------------------------------

    def on_trajectory(self, msg: JointTrajectory) -> None:
        now = self.sim_time
        start = stamp_seconds(msg.header.stamp)
        start = now if start == 0.0 else start
        try:
            for point in msg.points:
                if len(point.positions) != len(msg.joint_names):
                    raise TrajectoryError('positions', f'a point has {len(point.positions)} '
                                          f'positions for {len(msg.joint_names)} joints')
            self.follower.set_trajectory(
                msg.joint_names, [start + _duration(p.time_from_start) for p in msg.points],
                [list(p.positions) for p in msg.points], now)
        except TrajectoryError as err:
            self.rejected[err.reason] = self.rejected.get(err.reason, 0) + 1
            self.get_logger().warning(f'rejected a joint trajectory: {err}',
                                      throttle_duration_sec=5.0)
            return
        finally:
            self.trajectories += 1
        if self.waiting:
            self.waiting = False
            self.get_logger().info('first trajectory received: the world starts')
        if self.awaiting and start >= now - 1e-6:
            self.awaiting = False
            self.answered.trigger()

    # -- the world ---------------------------------------------------------------------------

    def on_answered(self) -> None:
        if self.params['lockstep'] and not self.done:
            self.lockstep_advance()

    def check_lockstep(self) -> None:
        """Lockstep: advance without an answer after the timeout; republish while waiting."""
        if self.done or not self.awaiting:
            return
        waited = time.monotonic() - self.published_wall
        if self.waiting:
            if waited > 1.0:
                self.publish_frame()          # late joiners see the first frame
            return
        timeout = self.params['lockstep_timeout_s']
        if timeout and waited > timeout:
            self.lockstep_timeouts += 1
            self.awaiting = False
            self.lockstep_advance()

    def clock(self) -> float:
        """Real time: the sim clock now (ROS seconds), the wall clock times `time_scale`."""
        return self.clock_start + (time.monotonic() - self.wall_start) * self.params['time_scale']

    def tick(self) -> None:
        """Real time: step the frames that are due by the clock, publish the last one."""
        if self.done:
            return
        if self.waiting:                      # time passes, the world stands still
            self.base = self.clock() - self.world.time
            if time.monotonic() - self.published_wall > 1.0:
                self.publish_frame()          # late joiners see the first frame
            return
        behind = int((self.clock() - self.sim_time) / self.period + 1e-9)
        if behind <= 0:
            return
        if behind > MAX_CATCH_UP:             # too slow: skip sim time rather than fall behind
            skipped = behind - MAX_CATCH_UP
            self.base += skipped * self.period
            self.frames_skipped += skipped
            behind = MAX_CATCH_UP
            self.get_logger().warning(
                f'real time: {skipped} frame(s) skipped to keep the stamps on the clock '
                f'({self.frames_skipped} so far; the simulator cannot keep up with '
                f'{self.params["frame_hz"]:g} Hz x{self.params["time_scale"]:g})',
                throttle_duration_sec=5.0)
        for i in range(behind):
            self.advance(publish=i == behind - 1)

    def advance(self, publish: bool = True) -> None:
        """One frame of physics under the trajectory plan, then the frame's messages."""
        base = self.base
        self.follower.prune(self.sim_time)
        events = self.world.step(lambda t: self.follower.sample(base + t))
        self.publish_events(events)
        for event in events:
            if event['event'] in ('success', 'failure'):
                self.record_outcome(event)
        if publish or self.params['lockstep']:
            self.publish_frame()
        self.check_bounds()

    def publish_events(self, events: list[dict]) -> None:
        for event in events:
            event['stamp'] = round(self.base + event['time'], 9)
            self.event_pub.publish(String(data=json.dumps(event)))

    def publish_frame(self) -> None:
        stamp = _seconds_msg(self.sim_time)
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=stamp))
        joints = JointState(name=list(self.joint_names),
                            position=self.world.joint_positions().tolist(),
                            velocity=self.world.joint_velocities().tolist())
        joints.header.stamp = stamp
        self.joint_pub.publish(joints)
        for camera, pixels in self.world.render().items():
            image = _jpeg(pixels) if self.cameras[camera][1] else Image(
                height=pixels.shape[0], width=pixels.shape[1], encoding='rgb8',
                is_bigendian=0, step=pixels.shape[1] * 3, data=pixels.tobytes())
            image.header.stamp = stamp
            image.header.frame_id = self.params['frame_id']
            self.image_pubs[camera].publish(image)
        self.published_wall = time.monotonic()
        self.awaiting = bool(self.params['lockstep'])

    def record_outcome(self, event: dict) -> None:
        self.finished.append(event)
        self.get_logger().info(
            f'task {event["task"]}: {self.outcome_line(event)}: '
            f'{"SUCCESS" if event["success"] else "failure"} '
            f'({event["reason"]}) after {event["frames"]} frames, '
            f'{event["distractors"]} distractor flash(es)')
        if self.params['outcomes_file']:
            with open(self.params['outcomes_file'], 'a') as f:
                f.write(json.dumps(event) + '\n')

    def check_bounds(self) -> None:
        max_tasks = int(self.params['max_tasks'])
        duration = float(self.params['duration_s'])
        if (max_tasks and len(self.finished) >= max_tasks) or \
                (duration and self.world.time >= duration):
            self.finish()

    def finish(self) -> None:
        """Publish the summary and stop the world (idempotent)."""
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        score = summarise(self.finished)
        wins = score['successes']
        summary = {'event': 'summary', **score,
                   'frames': self.world.frame, 'time': round(self.world.time, 6),
                   'trajectories': self.trajectories, 'rejected': dict(self.rejected),
                   'lockstep_timeouts': self.lockstep_timeouts,
                   'frames_skipped': self.frames_skipped}
        self.publish_events([{**summary, 'frame': self.world.frame}])
        self.get_logger().info(
            f'{self.TITLE} summary: {len(self.finished)} tasks, {wins} successes, '
            f'{self.world.frame} frames ({self.world.time:.1f} s sim time), '
            f'{self.trajectories} trajectories ({sum(self.rejected.values())} rejected)')

    def destroy_node(self):
        self.world.close()
        return super().destroy_node()


def main(args=None) -> int:
    """Spin the simulator until it is done; Ctrl-C, SIGTERM or SIGHUP finishes it (summary) and
    exits 0, a bad parameter (ValueError) exits 2 with one line."""
    return spin_until_done(lambda: [So101SimNode()], args)


def spin_until_done(build: Callable[[], list], args=None, name: str = 'so101_sim') -> int:
    """Spin the simulator nodes `build` makes until every one is done (see main).

    Signals stay held for the whole run (interrupt.py) and the loop polls them: rclpy's own
    handlers shut the context down at once, so the summary could not be published
    (RCLError, exit 1), and a KeyboardInterrupt could land anywhere, destroy_node included."""
    interrupt = INTERRUPT
    interrupt.install()
    if interrupt.pending:                      # a signal while the modules loaded
        interrupt.ignore()
        return 0
    nodes: list = []
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        executor = SingleThreadedExecutor()
        for node in build():
            nodes.append(node)
            executor.add_node(node)
        while rclpy.ok() and not all(n.done for n in nodes) and not interrupt.pending:
            executor.spin_once(timeout_sec=0.1)
        if rclpy.ok():
            for node in nodes:
                node.finish()
    except ExternalShutdownException:
        pass
    except ValueError as err:
        print(f'{name}: {err}')
        return 2
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
        interrupt.ignore()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
