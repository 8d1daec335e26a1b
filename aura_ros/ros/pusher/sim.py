"""`pusher_sim`: the Pusher show-then-hide world (aura_ros.tasks.pusher) as a ROS 2 node.

The SO-101 simulator node (aura_ros.ros.so101.sim: clock, lock-step, trajectory execution,
`task_events`) serving another world, with a rig's topic layout:
  front/image_raw               sensor_msgs/Image rgb8, the fixed front camera
  wrist/image_raw/compressed    sensor_msgs/CompressedImage jpeg, the camera on the forearm
  joint_states                  the 7 joints of the arm by name (r_shoulder_pan_joint, ...)
  task_events                   std_msgs/String JSON: 'start', 'cue' (goal), 'distractor' (kind,
                                target), 'go', 'success' / 'failure', 'summary'; the same kinds
                                and fields as the SO-101 world's, so one evaluator scores both
and executes JointTrajectory on `trajectory_topics` (default arm_controller/joint_trajectory).
"""

from aura_ros.ros.interrupt import INTERRUPT  # noqa: F401  isort: split
from aura_ros.ros.so101 import sim as so101_sim
from aura_ros.tasks.pusher import PusherWorld
from aura_ros.tasks.pusher_config import DEFAULT as WORLD

_SHARED = ('frame_hz', 'seed', 'delay_min', 'delay_max', 'distractor_prob', 'time_scale',
           'lockstep', 'lockstep_timeout_s', 'wait_for_command', 'trajectory_topics',
           'publish_clock', 'max_tasks', 'duration_s', 'frame_id', 'outcomes_file')
PARAMETERS = {
    **{key: so101_sim.PARAMETERS[key] for key in _SHARED},
    'frame_hz': (WORLD.frame_hz, 'frames (images, joint states, task logic) per second'),
    'delay_min': (WORLD.delay_min, 'frames from the end of the cue to GO, at least'),
    'delay_max': (WORLD.delay_max, 'frames from the end of the cue to GO, at most (uniform)'),
    'distractor_prob': (WORLD.distractor_prob, 'chance per frame that a distractor flash starts'),
    'n_targets': (WORLD.n_targets, 'look-alike targets on the table (2 to 5)'),
    'front_size': (WORLD.front_size, 'front camera image size (square, rgb8)'),
    'wrist_size': (WORLD.wrist_size, 'wrist camera image size (square, jpeg)'),
}
CAMERA_TOPICS = {'front': ('front/image_raw', False),
                 'wrist': ('wrist/image_raw/compressed', True)}


class PusherSimNode(so101_sim.So101SimNode):
    """The simulator of the Pusher world; see So101SimNode for the clock and the modes."""

    PARAMETERS = PARAMETERS
    TITLE = 'Pusher'
    NODE_NAME = 'pusher_sim'

    def make_world(self, p: dict) -> PusherWorld:
        config = WORLD.with_knobs(
            frame_hz=float(p['frame_hz']), delay_min=int(p['delay_min']),
            delay_max=int(p['delay_max']), distractor_prob=float(p['distractor_prob']),
            n_targets=int(p['n_targets']), front_size=int(p['front_size']),
            wrist_size=int(p['wrist_size']))
        return PusherWorld(config, seed=int(p['seed']))

    def camera_topics(self) -> dict[str, tuple[str, bool]]:
        return dict(CAMERA_TOPICS)

    def world_line(self) -> str:
        return f'{self.config.n_targets} targets, 7 joints'

    def outcome_line(self, event: dict) -> str:
        return f'target {event["goal"]}'

    def start_fields(self) -> dict:
        return {'targets': self.config.n_targets}


def main(args=None) -> int:
    """Spin the simulator until done (so101_sim.main: signals, summary, exit codes)."""
    return so101_sim.spin_until_done(lambda: [PusherSimNode()], args,
                                     name=PusherSimNode.NODE_NAME)


if __name__ == '__main__':
    raise SystemExit(main())
