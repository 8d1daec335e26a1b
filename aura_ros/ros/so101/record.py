"""`python -m aura_ros record-demos`: scripted SO-101 demonstrations recorded through ROS.

Three nodes in one process, talking over DDS (loopback only):
- `so101_sim` in lock-step (aura_ros.ros.so101.sim): publishes each frame, waits for the answer;
- `so101_expert`: the scripted expert (damped least squares IK) as a teleop leader would be: it
  answers every frame (image + joint state of one stamp) with a JointTrajectory on
  `arm_controller/joint_trajectory` (header.stamp = the frame's stamp, one point one action
  period later) and the same targets as sensor_msgs/JointState on `/leader/joint_states`,
  stamped with the time they are due (frame stamp + one period). Its privileged knowledge of
  the goal (and of GO) comes from the simulator's world object, in process. With `perturb`
  (DART, Laskey et al. 2017) the trajectory it sends is pushed off by short random joint offsets
  while `/leader/joint_states` keeps the clean command: the bag then shows how the expert brings
  the arm back from states its own clean runs never visit, which a policy trained on it needs
  once its own errors take it there;
- `bag_recorder`: raw (serialized CDR) subscriptions written unchanged into a rosbag2 mcap bag
  with rosbags' Writer and the ROS 2 Kilted message definitions, as `ros2 bag record` does;
  the log time of a message is the sim time at which the recorder received it.

Recorded topics: /image (and /wrist_image), /joint_states, /leader/joint_states,
/arm_controller/joint_trajectory, /task_events (JSON events, see so101_sim), and the simulator's
latched /robot_description (its joint limits, which `train --data` reads; logged at the time of
frame 0, as `ros2 bag record` logs a latched message when recording starts). The bag is read
back with rosbags' AnyReader at the end and its topic counts and types are checked.
"""

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from aura_ros.ros.conversions import stamp_seconds
from aura_ros.ros.so101.sim import LATCHED, So101SimNode, _seconds_msg
from aura_ros.tasks.so101 import ARM_JOINTS, JOINT_NAMES, ScriptedExpert, So101World
from aura_ros.tasks.so101_config import DEFAULT as WORLD

TRAJECTORY_TOPIC = '/arm_controller/joint_trajectory'
LEADER_TOPIC = '/leader/joint_states'
DESCRIPTION_TOPIC = '/robot_description'
MESSAGE_CLASSES = {'sensor_msgs/msg/Image': Image, 'sensor_msgs/msg/JointState': JointState,
                   'sensor_msgs/msg/CompressedImage': CompressedImage,
                   'trajectory_msgs/msg/JointTrajectory': JointTrajectory,
                   'std_msgs/msg/String': String,
                   # aura_node's gate topics, for recording a run (gate-report)
                   'diagnostic_msgs/msg/DiagnosticArray': DiagnosticArray,
                   'std_msgs/msg/Float64MultiArray': Float64MultiArray}
RELIABLE = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)


def demo_topics(cameras: tuple[str, ...]) -> dict[str, str]:
    """Topic -> message type of a demonstration bag."""
    topics = {f'/{camera}': 'sensor_msgs/msg/Image' for camera in cameras}
    topics.update({'/joint_states': 'sensor_msgs/msg/JointState',
                   LEADER_TOPIC: 'sensor_msgs/msg/JointState',
                   TRAJECTORY_TOPIC: 'trajectory_msgs/msg/JointTrajectory',
                   '/task_events': 'std_msgs/msg/String',
                   DESCRIPTION_TOPIC: 'std_msgs/msg/String'})
    return topics


@dataclass(frozen=True)
class Perturbation:
    """DART-style pushes on the executed command: a push starts with probability `rate` per
    frame, holds one random offset per arm joint (uniform in +-`size` rad) for `frames` frames
    (uniform in the given range). size 0 turns it off."""

    size: float = 0.0
    rate: float = 0.03
    frames: tuple[int, int] = (5, 15)

    def __post_init__(self) -> None:
        if not 0.0 <= self.size <= 0.5:
            raise ValueError(f'perturbation size must be in [0, 0.5] rad, got {self.size}')
        if not 0.0 < self.rate <= 1.0:
            raise ValueError(f'perturbation rate must be in (0, 1], got {self.rate}')
        if not 1 <= self.frames[0] <= self.frames[1]:
            raise ValueError(f'perturbation frames must be 1 <= min <= max, got {self.frames}')


class Pusher:
    """The offsets of a Perturbation, frame by frame (zero between pushes)."""

    def __init__(self, perturbation: Perturbation, seed: int, joints: int = len(JOINT_NAMES),
                 pushed_joints: int = ARM_JOINTS):
        self.p = perturbation
        self.rng = np.random.default_rng([seed, 0xDA27])
        self.pushed_joints = pushed_joints
        self.offset = np.zeros(joints)
        self.left = 0
        self.pushed_frames = 0

    def next(self) -> np.ndarray:
        if self.left == 0 and self.p.size > 0 and self.rng.random() < self.p.rate:
            self.left = int(self.rng.integers(self.p.frames[0], self.p.frames[1] + 1))
            self.offset[:self.pushed_joints] = self.rng.uniform(-self.p.size, self.p.size,
                                                                self.pushed_joints)
        if self.left == 0:
            return np.zeros(len(self.offset))
        self.left -= 1
        self.pushed_frames += 1
        return self.offset.copy()


class ExpertNode(Node):
    """The scripted expert as a ROS teleop leader (see the module docstring). Another world
    brings its own `expert` (act(q, goal, go) -> targets) and the topic of its first camera
    (raw sensor_msgs/Image); the world gives the joint names."""

    def __init__(self, world: So101World, name: str = 'so101_expert',
                 perturbation: Perturbation = Perturbation(), seed: int = 0,
                 expert=None, camera_topic: str = 'image', **kwargs):
        super().__init__(name, **kwargs)
        self.world = world
        self.joint_names = tuple(world.joint_names)
        self.expert = expert or ScriptedExpert(world.model, world.hover_points)
        self.pusher = Pusher(perturbation, seed, len(self.joint_names))
        self.period = world.config.period
        self.images: set[float] = set()
        self.joints: dict[float, np.ndarray] = {}
        self.answered = -1.0
        self.create_subscription(Image, camera_topic, self.on_image, RELIABLE)
        self.create_subscription(JointState, 'joint_states', self.on_joints, RELIABLE)
        self.trajectory_pub = self.create_publisher(JointTrajectory, TRAJECTORY_TOPIC, 10)
        self.leader_pub = self.create_publisher(JointState, LEADER_TOPIC, 10)

    def on_image(self, msg: Image) -> None:
        self.images.add(stamp_seconds(msg.header.stamp))
        self.try_act()

    def on_joints(self, msg: JointState) -> None:
        index = {n: i for i, n in enumerate(msg.name)}
        q = np.array([msg.position[index[n]] for n in self.joint_names])
        self.joints[stamp_seconds(msg.header.stamp)] = q
        self.try_act()

    def try_act(self) -> None:
        """Answer the newest frame whose image and joint state both arrived, once."""
        ready = [t for t in self.images if t in self.joints and t > self.answered]
        if not ready:
            return
        stamp = max(ready)
        q = self.joints[stamp]
        self.images = {t for t in self.images if t > stamp}
        self.joints = {t: v for t, v in self.joints.items() if t > stamp}
        self.answered = stamp
        world = self.world                      # privileged: the goal and GO, in process
        targets = self.expert.act(q, world.goal if world.cue_seen else None, world.go)
        self.publish(targets, stamp)

    def publish(self, targets: np.ndarray, stamp: float) -> None:
        """The leader topic gets the expert's command; the robot gets it plus any push."""
        trajectory = JointTrajectory(joint_names=list(self.joint_names))
        trajectory.header.stamp = _seconds_msg(stamp)
        point = JointTrajectoryPoint(positions=(targets + self.pusher.next()).tolist())
        point.time_from_start.nanosec = int(round(self.period * 1e9))
        trajectory.points = [point]
        leader = JointState(name=list(self.joint_names), position=targets.tolist())
        leader.header.stamp = _seconds_msg(stamp + self.period)
        self.leader_pub.publish(leader)
        self.trajectory_pub.publish(trajectory)


class BagRecorder(Node):
    """Writes the serialized messages of `topics` into a new rosbag2 mcap bag."""

    def __init__(self, path: Path, topics: dict[str, str], clock: Callable[[], float],
                 name: str = 'bag_recorder', **kwargs):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        super().__init__(name, **kwargs)
        self.clock = clock
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        typestore = get_typestore(Stores.ROS2_KILTED)
        self.counts = dict.fromkeys(topics, 0)
        for topic, msgtype in topics.items():
            connection = self.writer.add_connection(topic, msgtype, typestore=typestore)
            qos = LATCHED if topic == DESCRIPTION_TOPIC else RELIABLE
            self.create_subscription(MESSAGE_CLASSES[msgtype], topic,
                                     self._writer_for(topic, connection), qos, raw=True)

    def _writer_for(self, topic: str, connection) -> Callable[[bytes], None]:
        def write(data: bytes) -> None:
            self.writer.write(connection, int(round(self.clock() * 1e9)), data)
            self.counts[topic] += 1
        return write

    def close(self) -> None:
        self.writer.close()


def check_bag(path: Path, expected: dict[str, str]) -> dict[str, int]:
    """Message count per topic of a bag read back with AnyReader; checks types and topics."""
    from rosbags.highlevel import AnyReader

    with AnyReader([Path(path)]) as reader:
        found = {c.topic: c.msgtype for c in reader.connections}
        if found != expected:
            raise RuntimeError(f'{path}: topics {found}, expected {expected}')
        counts = dict.fromkeys(found, 0)
        for connection, _, raw in reader.messages():
            counts[connection.topic] += 1
            if counts[connection.topic] == 1:       # every type deserializes
                reader.deserialize(raw, connection.msgtype)
    return counts


def _matched(sim: So101SimNode, expert: ExpertNode, topics: dict[str, str]) -> bool:
    """The expert hears the first camera and the joints, the recorder every recorded topic."""
    first = next(iter(sim.image_pubs.values()))
    return (first.get_subscription_count() >= 2
            and sim.joint_pub.get_subscription_count() >= 2
            and sim.event_pub.get_subscription_count() >= 1
            and expert.trajectory_pub.get_subscription_count() >= 2
            and expert.leader_pub.get_subscription_count() >= int(LEADER_TOPIC in topics)
            and sim.description_pub.get_subscription_count() >= int(DESCRIPTION_TOPIC in topics)
            and all(p.get_subscription_count() >= 1 for p in sim.image_pubs.values()))


def record(out: Path, tasks: int, seed: int = 0, n_pads: int = WORLD.n_pads,
           size: int = WORLD.width, wrist_camera: bool = WORLD.wrist_camera,
           delay: tuple[int, int] = (WORLD.delay_min, WORLD.delay_max),
           distractor_prob: float = WORLD.distractor_prob,
           perturbation: Perturbation = Perturbation(),
           timeout_s: float = 3600.0, log: Optional[Callable[[str], None]] = print) -> dict:
    """Record `tasks` expert tasks into a new bag at `out`; returns a summary dict."""
    def make_nodes(context: Context) -> tuple[So101SimNode, ExpertNode]:
        sim = So101SimNode(autostart=False, context=context, parameter_overrides=[
            Parameter('lockstep', value=True), Parameter('seed', value=seed),
            Parameter('max_tasks', value=tasks), Parameter('n_pads', value=n_pads),
            Parameter('image_width', value=size), Parameter('image_height', value=size),
            Parameter('wrist_camera', value=wrist_camera), Parameter('delay_min', value=delay[0]),
            Parameter('delay_max', value=delay[1]),
            Parameter('distractor_prob', value=float(distractor_prob)),
            Parameter('lockstep_timeout_s', value=5.0)])
        return sim, ExpertNode(sim.world, perturbation=perturbation, seed=seed, context=context)

    return record_with(out, make_nodes, lambda sim: demo_topics(sim.config.cameras), tasks,
                       timeout_s, log)


def record_with(out: Path, make_nodes: Callable[[Context], tuple[So101SimNode, ExpertNode]],
                topics_of: Callable[[So101SimNode], dict[str, str]], tasks: int,
                timeout_s: float = 3600.0, log: Optional[Callable[[str], None]] = print) -> dict:
    """Record what `make_nodes(context)` (a lock-step simulator, not started, with max_tasks
    set, and its expert) produce on the topics `topics_of(sim)` into a new bag at `out`."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f'{out} exists already; the recorder writes a new bag')
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    nodes: list[Node] = []
    try:
        sim, expert = make_nodes(context)
        nodes += [sim, expert]
        topics = topics_of(sim)
        # the sim time of frame 0, fixed now: what arrives before the start (the latched
        # robot_description) is logged at it
        base = sim.get_clock().now().nanoseconds * 1e-9
        recorder = BagRecorder(out, topics, clock=lambda: sim.sim_time if sim.started else base,
                               context=context)
        nodes.append(recorder)
        for node in nodes:
            executor.add_node(node)
        deadline = time.monotonic() + 30
        # the latched robot_description must be in the bag before frame 0, as `ros2 bag record`
        # writes it on matching: else it could arrive frames later
        while not (_matched(sim, expert, topics)
                   and recorder.counts.get(DESCRIPTION_TOPIC, 1) >= 1):
            if time.monotonic() > deadline:
                raise RuntimeError('the simulator, expert and recorder did not discover each '
                                   'other within 30 s (is DDS on loopback working?)')
            executor.spin_once(timeout_sec=0.05)
        wall = time.monotonic()
        sim.start(base)
        last_report = wall
        while not sim.done and time.monotonic() - wall < timeout_s:
            executor.spin_once(timeout_sec=0.1)
            if log and time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                log(f'record-demos: {len(sim.finished)}/{tasks} tasks, {sim.world.frame} frames')
        elapsed = time.monotonic() - wall
        flush = time.monotonic() + 2.0               # the last messages reach the recorder
        first = '/' + next(iter(sim.cameras.values()))[0]
        while time.monotonic() < flush and recorder.counts[first] < sim.world.frame + 1:
            executor.spin_once(timeout_sec=0.05)
        for _ in range(20):
            executor.spin_once(timeout_sec=0.01)
        recorder.close()
        summary = {'bag': str(out), 'tasks': len(sim.finished),
                   'successes': sum(bool(e['success']) for e in sim.finished),
                   'frames': sim.world.frame + 1, 'sim_seconds': round(sim.world.time, 3),
                   'wall_seconds': round(elapsed, 3), 'lockstep_timeouts': sim.lockstep_timeouts,
                   'pushed_frames': expert.pusher.pushed_frames,
                   'recorded': dict(recorder.counts)}
    except BaseException:
        if out.exists() and not any(out.glob('*.mcap')):
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        for node in nodes:
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown(context=context)
    summary['read_back'] = check_bag(out, topics)
    if log:
        log(json.dumps(summary))
    return summary


def main(args: argparse.Namespace) -> int:
    if not args.out:
        print('record-demos: --out BAG is required (the bag directory to create)')
        return 2
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.setdefault('ROS_DOMAIN_ID', str(101 + os.getpid() % 100))
    try:
        perturbation = Perturbation(args.perturb, args.perturb_rate)
    except ValueError as err:
        print(f'record-demos: {err}')
        return 2
    summary = record(Path(args.out), args.tasks, seed=args.seed, n_pads=args.pads,
                     size=args.size, wrist_camera=args.wrist_camera,
                     delay=(args.delay_min, args.delay_max),
                     distractor_prob=args.distractor_prob,
                     perturbation=perturbation)
    rate = summary['successes'] / max(summary['tasks'], 1)
    print(f'record-demos: {summary["tasks"]} tasks ({rate:.0%} expert successes), '
          f'{summary["frames"]} frames in {summary["wall_seconds"]:.0f} s -> {args.out}')
    return 0 if summary['read_back'] == summary['recorded'] else 1
