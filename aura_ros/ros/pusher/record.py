"""`python -m aura_ros record-demos pusher`: Pusher show-then-hide demonstrations through ROS.

The SO-101 recorder (aura_ros.ros.so101.record: lock-step simulator, scripted expert as a teleop
leader, a raw mcap recorder, the bag read back and checked) on the Pusher world, recording what
a ros2_control rig with two cameras records: `ros2 bag record /front/image_raw
/wrist/image_raw/compressed /joint_states /arm_controller/joint_trajectory /task_events
/robot_description` (the latched URDF with the arm's joint limits, which `train --data` reads). No
leader topic: the commands are the JointTrajectory the expert sends (one point one frame
ahead), so `train --data` needs no topic flag. `/task_events` is for evaluation only.
"""

import argparse
import json
import os
from pathlib import Path
from typing import Callable, Optional

from rclpy.context import Context
from rclpy.parameter import Parameter

from aura_ros.ros.pusher.sim import PusherSimNode
from aura_ros.ros.so101.record import DESCRIPTION_TOPIC, TRAJECTORY_TOPIC, ExpertNode, record_with
from aura_ros.tasks.pusher import PusherExpert
from aura_ros.tasks.pusher_config import DEFAULT as WORLD

TOPICS = {'/front/image_raw': 'sensor_msgs/msg/Image',
          '/wrist/image_raw/compressed': 'sensor_msgs/msg/CompressedImage',
          '/joint_states': 'sensor_msgs/msg/JointState',
          TRAJECTORY_TOPIC: 'trajectory_msgs/msg/JointTrajectory',
          '/task_events': 'std_msgs/msg/String', DESCRIPTION_TOPIC: 'std_msgs/msg/String'}


def record(out: Path, tasks: int, seed: int = 0,
           delay: tuple[int, int] = (WORLD.delay_min, WORLD.delay_max),
           distractor_prob: float = WORLD.distractor_prob, n_targets: int = WORLD.n_targets,
           timeout_s: float = 3600.0, log: Optional[Callable[[str], None]] = print) -> dict:
    """Record `tasks` expert tasks of the Pusher world into a new bag at `out`."""
    def make_nodes(context: Context):
        sim = PusherSimNode(autostart=False, context=context, parameter_overrides=[
            Parameter('lockstep', value=True), Parameter('seed', value=seed),
            Parameter('max_tasks', value=tasks), Parameter('n_targets', value=n_targets),
            Parameter('delay_min', value=delay[0]), Parameter('delay_max', value=delay[1]),
            Parameter('distractor_prob', value=float(distractor_prob)),
            Parameter('lockstep_timeout_s', value=5.0)])
        world = sim.world
        expert = ExpertNode(world, name='pusher_expert', seed=seed, context=context,
                            expert=PusherExpert(world.model, world.touch_points),
                            camera_topic=sim.cameras['front'][0])
        return sim, expert

    return record_with(out, make_nodes, lambda sim: TOPICS, tasks, timeout_s, log)


def main(args: argparse.Namespace) -> int:
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.setdefault('ROS_DOMAIN_ID', str(101 + os.getpid() % 100))
    summary = record(Path(args.out), args.tasks, seed=args.seed,
                     delay=(args.delay_min, args.delay_max),
                     distractor_prob=args.distractor_prob, n_targets=args.targets,
                     log=lambda line: print(line, flush=True))
    rate = summary['successes'] / max(summary['tasks'], 1)
    print(f'record-demos pusher: {summary["tasks"]} tasks ({rate:.0%} expert successes), '
          f'{summary["frames"]} frames in {summary["wall_seconds"]:.0f} s -> {args.out}')
    print(json.dumps({'recorded': summary['recorded']}))
    return 0 if summary['read_back'] == summary['recorded'] else 1
