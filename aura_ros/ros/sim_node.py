"""`aura_sim`: the cue-reach arm simulator as a ROS 2 node (simulated camera and arm).

Publishes, every 1/`rate_hz` s, the top-down camera image (`image`, sensor_msgs/Image rgb8) and
the arm's joint state (`joint_states`, sensor_msgs/JointState: shoulder, elbow) with the same
stamp. Subscribes the policy's action chunks (`action_topic`, trajectory_msgs/JointTrajectory,
default `aura/action_chunk`, the policy node `aura`'s `~/action_chunk`): the chunk answering the
image of frame f is executed from frame f on, one point per frame; when no newer chunk has
arrived the next point of the last chunk is used, and past its end the arm holds still. Which
frame a chunk answers is found from its timing, as a controller reads it: point k is meant for
`header.stamp + time_from_start`, which is that frame's stamp + (k + 1) frame periods (aura_node
may stamp the chunk at publish time and leave out points already past). Point `positions` are
absolute joint targets (`action_mode: position`, what aura_node publishes: the step is target -
current position, or a linear share of the way to a first point meant for a later frame, as
joint_trajectory_controller interpolates) or joint DELTAS per frame (`action_mode: delta`);
either way the step is clipped to the arm's speed limit.

Optionally listens to the policy's write gate (`gate_topic`, diagnostic_msgs/DiagnosticArray,
default `aura/gate`; a status whose message is 'wrote' or key 'wrote' == '1' is a write,
attributed by the header stamp to the frame it was computed on) to report writes per task.

Every finished task is logged as one line and published as JSON (std_msgs/String) on
`~/task_outcome`: task, goal, cue colour, success, frames, go frame, distractors, writes (null
when no gate was heard). The run ends after `duration_s` seconds or `max_tasks` tasks (0: never)
with a summary line. With `wait_for_policy` (default) the world stands still, republishing the
first frame, until the first action chunk arrives, so a slow-starting policy misses nothing.
"""

import bisect
import json
from collections import OrderedDict
from typing import Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from aura_ros.tasks.cue_reach import (
    COLOUR_NAMES,
    JOINT_NAMES,
    CueReach,
    CueReachConfig,
    TaskResult,
)

ACTION_MODES = ('delta', 'position')
OUTCOME_DELAY_FRAMES = 5     # late gate messages of a task's last frames still count
STAMP_MEMORY = 512           # frames whose stamps can still be matched to a chunk or a gate
MATCH_TOLERANCE_NS = 2_000_000   # a point's time vs a frame stamp + whole periods
NS = 1_000_000_000

PARAMETERS = {
    'rate_hz': (30.0, 'frames (image + joint state) per second; one action point per frame'),
    'image_width': (64, 'camera image width in pixels'),
    'image_height': (64, 'camera image height in pixels'),
    'seed': (0, 'episode seed: goals, delays and distractors are deterministic given it'),
    'duration_s': (0.0, 'stop after this many seconds of simulation (0: run until stopped)'),
    'max_tasks': (0, 'stop after this many finished tasks (0: run until stopped)'),
    'action_mode': ('position', "trajectory point positions are absolute joint 'position' "
                             "targets (what aura_node publishes) or joint 'delta's per frame"),
    'action_topic': ('aura/action_chunk', "the policy's JointTrajectory action chunks"),
    'gate_topic': ('aura/gate', "the policy's write-gate DiagnosticArray (for writes per task)"),
    'wait_for_policy': (True, 'hold the world still until the first action chunk arrives'),
    'frame_id': ('camera', 'header.frame_id of the published image'),
    'outcomes_file': ('', 'append every finished task as one JSON line here (empty: off)'),
}


def _stamp_key(stamp) -> tuple[int, int]:
    return int(stamp.sec), int(stamp.nanosec)


def _ns(stamp) -> int:
    return int(stamp.sec) * NS + int(stamp.nanosec)


class SimNode(Node):
    """The cue-reach simulator; `done` turns true when the run's bound is reached."""

    def __init__(self, name: str = 'aura_sim', **kwargs):
        super().__init__(name, **kwargs)
        for key, (default, text) in PARAMETERS.items():
            self.declare_parameter(key, default, ParameterDescriptor(description=text,
                                                                     read_only=True))
        p = {key: self.get_parameter(key).value for key in PARAMETERS}
        self._check(p)
        self.params = p
        self.rate_hz = float(p['rate_hz'])
        self.env = CueReach(CueReachConfig(width=int(p['image_width']),
                                           height=int(p['image_height'])), seed=int(p['seed']))
        self.action_mode = p['action_mode']
        self.waiting = bool(p['wait_for_policy'])
        self.done = False
        self.frame = 0
        self.stamps: OrderedDict = OrderedDict()       # stamp key -> frame
        self.frame_task: OrderedDict = OrderedDict()   # frame -> task index
        self.chunk: Optional[np.ndarray] = None        # [points, 2]
        self.chunk_frame = 0                           # frame the chunk answers
        self.chunk_first = 0                           # chunk index of its first point
        self.heard_gate = False
        self.writes: dict[int, int] = {}
        self.pending: list[tuple[int, TaskResult]] = []
        self.finished: list[dict] = []
        self.last_delta = np.zeros(2)
        self.rejected = 0

        sensor = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.create_publisher(Image, 'image', sensor)
        self.joint_pub = self.create_publisher(JointState, 'joint_states', sensor)
        self.outcome_pub = self.create_publisher(String, '~/task_outcome', 10)
        self.create_subscription(JointTrajectory, p['action_topic'], self.on_chunk,
                                 QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
        self.create_subscription(DiagnosticArray, p['gate_topic'], self.on_gate, 50)
        self.start = self.get_clock().now()
        self.timer = self.create_timer(1.0 / self.rate_hz, self.tick)
        self.get_logger().info(
            f'cue-reach simulator: {p["image_width"]}x{p["image_height"]} rgb8 at '
            f'{self.rate_hz:g} Hz, seed {p["seed"]}, actions ({self.action_mode}) from '
            f'{self.resolve_topic_name(p["action_topic"])}'
            + (', waiting for the first action chunk' if self.waiting else ''))
        self.publish_observation()

    @staticmethod
    def _check(p: dict) -> None:
        if not p['rate_hz'] > 0:
            raise ValueError(f'parameter rate_hz must be > 0, got {p["rate_hz"]}')
        for key in ('image_width', 'image_height'):
            if p[key] < 8:
                raise ValueError(f'parameter {key} must be >= 8 pixels, got {p[key]}')
        if p['duration_s'] < 0 or p['max_tasks'] < 0:
            raise ValueError('parameters duration_s and max_tasks must be >= 0')
        if p['action_mode'] not in ACTION_MODES:
            raise ValueError(f'parameter action_mode must be one of {ACTION_MODES}, '
                             f'got {p["action_mode"]!r}')

    # -- inputs -------------------------------------------------------------------------------

    def on_chunk(self, msg: JointTrajectory) -> None:
        if not msg.points:
            return
        names = list(msg.joint_names)
        try:
            order = [names.index(n) for n in JOINT_NAMES] if names else [0, 1]
            points = np.array([[pt.positions[i] for i in order] for pt in msg.points], float)
        except (ValueError, IndexError):
            self.rejected += 1
            self.get_logger().warning(
                f'ignored an action chunk for joints {names} (need {list(JOINT_NAMES)})',
                throttle_duration_sec=5.0)
            return
        if not np.isfinite(points).all():
            self.rejected += 1
            self.get_logger().warning('ignored an action chunk with non-finite values',
                                      throttle_duration_sec=5.0)
            return
        self.chunk = points
        self.chunk_frame, self.chunk_first = self.origin(msg)
        if self.waiting:
            self.waiting = False
            self.get_logger().info('first action chunk received: the world starts')

    def origin(self, msg: JointTrajectory) -> tuple[int, int]:
        """(frame the chunk answers, chunk index of its first point), from the point times.

        The first point's time minus (k + 1) frame periods is a frame's stamp for exactly one
        k (k > 0 when the policy left out points already past). A chunk that matches no frame
        (another period, or too old) is taken to answer the current frame.
        """
        first = _ns(msg.header.stamp) + _ns(msg.points[0].time_from_start)
        period = NS / self.rate_hz
        times = list(self.stamps)
        keys = [k[0] * NS + k[1] for k in times]
        for k in range(len(self.stamps)):
            target = first - round((k + 1) * period)
            if keys and target < keys[0] - MATCH_TOLERANCE_NS:
                break
            i = bisect.bisect_left(keys, target - MATCH_TOLERANCE_NS)
            if i < len(keys) and abs(keys[i] - target) <= MATCH_TOLERANCE_NS:
                return self.stamps[times[i]], k
        return self.frame, 0

    def on_gate(self, msg: DiagnosticArray) -> None:
        frame = self.stamps.get(_stamp_key(msg.header.stamp))
        if frame is None or frame not in self.frame_task:
            return
        self.heard_gate = True
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            wrote = values.get('wrote', '1' if status.message == 'wrote' else '0')
            if wrote in ('1', 'true', 'True'):
                task = self.frame_task[frame]
                self.writes[task] = self.writes.get(task, 0) + 1

    # -- the world ------------------------------------------------------------------------------

    def next_delta(self) -> np.ndarray:
        """The step out of the current frame (zeros when no point applies).

        Absolute targets are followed as joint_trajectory_controller does: towards the point
        meant for the next frame, or, when the chunk's first point is meant for a later frame
        (aura_node left out points that had passed), linearly from here towards that point.
        """
        if self.chunk is None:
            return np.zeros(2)
        index = self.frame - self.chunk_frame - self.chunk_first
        if index >= len(self.chunk) or (index < 0 and self.action_mode == 'delta'):
            return np.zeros(2)
        if self.action_mode == 'delta':
            return self.chunk[index]
        if index < 0:                       # the first point is 1 - index frames ahead
            return (self.chunk[0] - self.env.q) / (1 - index)
        return self.chunk[index] - self.env.q

    def tick(self) -> None:
        if self.done:
            return
        if not self.waiting:
            delta = np.clip(self.next_delta(), -self.env.config.max_step,
                            self.env.config.max_step)
            self.last_delta = delta
            result = self.env.step(delta)
            self.frame += 1
            if result is not None:
                self.pending.append((self.frame + OUTCOME_DELAY_FRAMES, result))
        self.report(flush=False)
        self.publish_observation()
        self.check_bounds()

    def publish_observation(self) -> None:
        stamp = self.get_clock().now().to_msg()
        self.stamps[_stamp_key(stamp)] = self.frame
        self.frame_task[self.frame] = self.env.task.index
        while len(self.stamps) > STAMP_MEMORY:
            self.stamps.popitem(last=False)
        while len(self.frame_task) > STAMP_MEMORY:
            self.frame_task.popitem(last=False)
        pixels = self.env.image()
        image = Image(height=pixels.shape[0], width=pixels.shape[1], encoding='rgb8',
                      is_bigendian=0, step=pixels.shape[1] * 3, data=pixels.tobytes())
        image.header.stamp = stamp
        image.header.frame_id = self.params['frame_id']
        joints = JointState(name=list(JOINT_NAMES), position=self.env.q.tolist(),
                            velocity=(self.last_delta * self.rate_hz).tolist())
        joints.header.stamp = stamp
        self.image_pub.publish(image)
        self.joint_pub.publish(joints)

    def report(self, flush: bool) -> None:
        """Log and publish finished tasks once their late gate messages had time to arrive."""
        keep = []
        for due, result in self.pending:
            if not flush and due > self.frame:
                keep.append((due, result))
                continue
            result.writes = self.writes.pop(result.index, 0) if self.heard_gate else None
            outcome = {**result.to_dict(), 'cue': COLOUR_NAMES[result.goal],
                       'task': result.index}
            self.finished.append(outcome)
            writes = 'writes unknown' if result.writes is None else \
                f'{result.writes} write{"" if result.writes == 1 else "s"}'
            self.get_logger().info(
                f'task {result.index}: cue {COLOUR_NAMES[result.goal]} -> pad {result.goal}: '
                f'{"SUCCESS" if result.success else "timeout"} after {result.steps} frames, '
                f'{writes}, {result.distractors} distractor flash(es)')
            self.outcome_pub.publish(String(data=json.dumps(outcome)))
            if self.params['outcomes_file']:
                with open(self.params['outcomes_file'], 'a') as f:
                    f.write(json.dumps(outcome) + '\n')
        self.pending = keep

    def check_bounds(self) -> None:
        elapsed = (self.get_clock().now() - self.start).nanoseconds * 1e-9
        max_tasks = int(self.params['max_tasks'])
        duration = float(self.params['duration_s'])
        if (max_tasks and len(self.finished) >= max_tasks) or (duration and elapsed >= duration):
            self.finish()

    def finish(self) -> None:
        """Flush pending outcomes, log the summary and mark the run done."""
        if self.done:
            return
        self.report(flush=True)
        self.done = True
        self.timer.cancel()
        self.get_logger().info(self.summary())

    def summary(self) -> str:
        n = len(self.finished)
        wins = sum(o['success'] for o in self.finished)
        text = f'cue-reach summary: {n} tasks, {wins} successes'
        if n:
            text += f' ({wins / n:.0%}), {np.mean([o["steps"] for o in self.finished]):.0f} ' \
                    'frames per task'
            writes = [o['writes'] for o in self.finished if o['writes'] is not None]
            if writes:
                text += f', {np.mean(writes):.1f} writes per task'
        return text + f', {self.frame} frames simulated'


def run_simulator(make_node, prog: str, args=None) -> int:
    """Spin a simulator node until it is done; Ctrl-C finishes it (summary), a bad parameter
    (ValueError) exits 2 with one line. Shared by aura_sim and so101_sim."""
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not node.done:
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        if node is not None:
            node.finish()
    except ValueError as err:
        print(f'{prog}: {err}')
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(args=None) -> int:
    return run_simulator(SimNode, 'aura_sim', args)


if __name__ == '__main__':
    raise SystemExit(main())
