"""Command line of aura_ros: `python -m aura_ros <command> [args]`.

Every command is one entry of COMMANDS: its name (words separated by spaces make nested
commands, e.g. 'bench synthetic'), the 'module:function' that runs it, a help line and, if it
takes arguments, a function that adds them to its argparse parser. The implementing module is
imported only when its command runs, so `--help` and unrelated commands never pay for torch,
onnxruntime or rclpy. The function gets the parsed argparse.Namespace and returns an exit code
(None means 0).

To add a command, add one entry, e.g.:

    'bench synthetic': Command('aura_ros.training.synthetic_bench:main',
                               'synthetic event-recall benchmark', _bench_synthetic_args),
"""

import argparse
import importlib
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

from aura_ros import __version__

AddArguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    """One command line command, resolved lazily."""

    target: str  # 'package.module:function', imported only when the command runs
    help: str
    add_arguments: Optional[AddArguments] = None


def print_version(args: argparse.Namespace) -> int:
    print(f'aura_ros {__version__}')
    return 0


def _names(text: str) -> tuple:
    return tuple(n.strip() for n in text.split(','))


def _train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--data', help='(required) a rosbag2 bag (.mcap/.db3 or its folder), '
                                       'a folder of bags, or a LeRobot dataset folder')
    parser.add_argument('--out', help='(required) model directory to write')
    parser.add_argument('--config', default=None,
                        help='train.yaml: TrainerConfig fields, with data: (DataConfig) and '
                             'training: (TrainingConfig) mappings')
    parser.add_argument('--image-topic', action='append', default=None,
                        help="camera topic (repeat for several cameras, in the model's order)")
    parser.add_argument('--joints-topic', default=None, help='sensor_msgs/JointState topic')
    parser.add_argument('--action-topic', action='append', default=None,
                        help='a command topic; repeat for one per controller, each becomes an '
                             'output group (default: every JointTrajectory topic, else the only '
                             'JointState topic besides the joints topic)')
    parser.add_argument('--joints', type=_names, default=None,
                        help='comma-separated joint names the model reads (default: the '
                             'commanded joints that the joints topic names)')
    parser.add_argument('--extra-joints', type=_names, default=None,
                        help='comma-separated joints read besides the commanded ones')
    parser.add_argument('--actions', type=_names, default=None,
                        help='comma-separated action names (default: the joints the command '
                             'topics name)')
    parser.add_argument('--urdf', default=None,
                        help="URDF file whose joint limits clip the model's targets (default: "
                             "the bag's /robot_description, if recorded)")
    parser.add_argument('--quick', action='store_true',
                        help='a tiny run (seconds) that checks the pipeline; not a model')
    parser.add_argument('--resume', action='store_true',
                        help='continue the run whose checkpoints are in --out/checkpoints')
    parser.add_argument('--force', action='store_true',
                        help='train into an existing non-empty --out anew')


def _world_args(parser: argparse.ArgumentParser, delay_min: bool = True) -> None:
    """The SO-101 world's knobs, their defaults read from So101Config (the one source;
    aura_ros/tasks/so101_config.py holds no MuJoCo, so building the parser stays cheap)."""
    from aura_ros.tasks.so101_config import DEFAULT as WORLD

    parser.add_argument('--pads', type=int, default=WORLD.n_pads,
                        help='look-alike pads, 2 to 4 (default %(default)s)')
    parser.add_argument('--size', type=int, default=WORLD.width,
                        help='square camera image size (default %(default)s)')
    _task_timing_args(parser, WORLD, delay_min)


def _task_timing_args(parser: argparse.ArgumentParser, world, delay_min: bool = True) -> None:
    """The knobs both arm worlds share (GO delay, distractor rate), defaults from `world`, a
    So101Config or PusherConfig."""
    if delay_min:
        parser.add_argument('--delay-min', type=int, default=world.delay_min,
                            help='frames from the end of the cue to GO, at least '
                                 '(default %(default)s)')
    parser.add_argument('--delay-max', type=int, default=world.delay_max,
                        help='frames from the end of the cue to GO, at most (default %(default)s)')
    parser.add_argument('--distractor-prob', type=float, default=world.distractor_prob,
                        help='chance per frame that a distractor flash starts '
                             '(default %(default)s)')


def _eval_so101_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--model-dir', default='models/so101',
                        help='trained model directory (with baselines/)')
    parser.add_argument('--tasks', type=int, default=100, help='chained tasks per method')
    parser.add_argument('--methods', default='aura,always_write,gru,no_memory',
                        help='comma-separated: aura, always_write, gru, no_memory')
    parser.add_argument('--seed', type=int, default=0, help='episode seed (same for all)')
    _world_args(parser, delay_min=False)
    parser.add_argument('--out', default='docs/results/so101_closed_loop.json',
                        help='results JSON; the .md table goes beside it')
    parser.add_argument('--timeline', default='',
                        help='also plot camera frames + the gate of the AURA run into this PNG')
    parser.add_argument('--keep-frames', type=int, default=600,
                        help='frames of the AURA run kept for --timeline')
    parser.add_argument('--jobs', type=int, default=1,
                        help='methods run side by side (each its own DDS domain)')
    parser.add_argument('--append', action='store_true',
                        help='add these methods to an existing --out of the same set-up')
    parser.add_argument('--action-topics', default='/aura/action_chunk',
                        help="aura_node's JointTrajectory output topic(s), comma-separated")
    parser.add_argument('--reset-each-task', action='store_true',
                        help="call aura_node's ~/reset after every task (default: one "
                             'never-reset episode)')


def _record_pusher_args(parser: argparse.ArgumentParser) -> None:
    """The Pusher world's knobs, their defaults read from PusherConfig (the one source;
    aura_ros/tasks/pusher_config.py holds no MuJoCo)."""
    from aura_ros.tasks.pusher_config import DEFAULT as WORLD

    parser.add_argument('--out', required=True, help='rosbag2 directory to create (mcap)')
    parser.add_argument('--tasks', type=int, default=25, help='tasks to record (default 25)')
    parser.add_argument('--seed', type=int, default=0, help='episode seed')
    parser.add_argument('--targets', type=int, default=WORLD.n_targets,
                        help='look-alike targets on the table, 2 to 5 (default %(default)s)')
    _task_timing_args(parser, WORLD)


def _init_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', required=True, help='model directory to write')
    parser.add_argument('--image-size', type=int, default=64,
                        help="the one camera 'image': square input size (pixels)")
    parser.add_argument('--camera', action='append', default=None,
                        help='a camera NAME[:HxW][:raw|compressed] (repeat for several, in the '
                             "model's order), instead of the one 'image'")
    parser.add_argument('--features-in', action='store_true',
                        help='no camera and no backbone: features come in on ~/features')
    parser.add_argument('--group', action='append', default=None,
                        help='an output group NAME=action,action (repeat; they must cover every '
                             'action): one JointTrajectory topic ~/NAME each')
    parser.add_argument('--limit', action='append', default=None,
                        help='joint limits ACTION=LOWER,UPPER the targets are clipped to (repeat)')
    parser.add_argument('--action-mode', default='absolute', choices=('absolute', 'delta'))
    parser.add_argument('--period', type=float, default=0.1, help='action_period_s')
    parser.add_argument('--gate-threshold', type=float, default=None,
                        help='memory.gate_threshold (the node uses it unless set)')
    parser.add_argument('--d-model', type=int, default=128, help='backbone feature width')
    parser.add_argument('--joints', type=_names, default=('j1', 'j2'),
                        help="comma-separated joint names, in the model's order")
    parser.add_argument('--actions', type=_names, default=('a1', 'a2'),
                        help='comma-separated action dimension names')
    parser.add_argument('--chunk', type=int, default=4, help='action chunk length')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--name', default='random')
    parser.add_argument('--force', action='store_true',
                        help='write into an existing non-empty directory')


def _export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--model-dir', required=True,
                        help='model directory; memory_step.onnx is written into it')


def _bench_synthetic_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--quick', action='store_true',
                        help='a few minutes: 1 seed, short training and horizons')
    parser.add_argument('--out', default=None,
                        help='results JSON (default docs/results/synthetic.json, --quick: '
                             'docs/results/quick/synthetic.json); the .md and PNGs go beside it')
    parser.add_argument('--seeds', type=int, default=None,
                        help='seeds per configuration (default 3; --quick: 1)')
    parser.add_argument('--settings', nargs='+', default=None, metavar='NAME',
                        help='only these settings (easy, hard; default both), e.g. one per '
                             'process; each seed done is saved to <out>.partial.json')
    parser.add_argument('--merge', nargs='+', default=None, metavar='JSON',
                        help='only merge the results of earlier runs (e.g. one per setting, '
                             '.partial.json files too) into --out')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (default 1: the machine is shared)')
    parser.add_argument('--no-plots', action='store_true', help='skip the PNG plots')


def _demo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--tasks', type=int, default=0,
                        help='stop after this many tasks (default 10 when no --duration)')
    parser.add_argument('--duration', type=float, default=0.0,
                        help='stop after this many seconds of sim time (0: tasks only)')
    parser.add_argument('--model-dir', default='', help='model directory (default: bundled)')
    parser.add_argument('--seed', type=int, default=0, help='simulator seed')
    parser.add_argument('--engine', default='torch', choices=('torch', 'onnx'),
                        help='memory engine of aura_node')
    parser.add_argument('--distractor-prob', type=float, default=0.0,
                        help='chance per frame that a distractor flash starts (default 0: the '
                             'bundled model was trained without distractors)')
    parser.add_argument('--robots', type=int, default=1,
                        help='arms (2 to 4): each its own simulator under /arm1 .. /armN, all '
                             'served by ONE aura_node (its robots parameter); default 1')


def _record_demos_args(parser: argparse.ArgumentParser) -> None:
    # not required=True here: argparse would then ask for it before `record-demos pusher` too
    parser.add_argument('--out', help='(required) rosbag2 directory to create (mcap)')
    parser.add_argument('--tasks', type=int, default=100, help='tasks to record (default 100)')
    parser.add_argument('--seed', type=int, default=0, help='episode seed')
    parser.add_argument('--wrist-camera', action='store_true', help='also record /wrist_image')
    _world_args(parser)
    parser.add_argument('--perturb', type=float, default=0.0,
                        help='DART pushes: random joint offsets up to this many rad on the '
                             'executed command, the clean command recorded (default 0: off)')
    parser.add_argument('--perturb-rate', type=float, default=0.03,
                        help='chance per frame that a push (5-15 frames) starts (default 0.03)')


def _bench_perf_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--quick', action='store_true',
                        help='horizons up to 10^4 and a 10 s node run (a few minutes)')
    parser.add_argument('--out', default=None,
                        help='results JSON (default docs/results/perf.json, --quick: '
                             'docs/results/quick/perf.json); .md and .png go beside it')
    parser.add_argument('--model-dir', default='', help='model of the node run (default: bundled)')
    parser.add_argument('--skip-node', action='store_true', help='memory step only')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1)')


def _bench_fleet_args(parser: argparse.ArgumentParser) -> None:
    from aura_ros.bench.fleet import add_arguments

    add_arguments(parser)


def _bench_soak_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--frames', type=int, default=100_000, help='frames in one episode')
    parser.add_argument('--window', type=int, default=10_000,
                        help='frames per reported window (latency percentiles, RSS)')
    parser.add_argument('--model-dir', default='',
                        help='model (default: bundled if trained, else a random one)')
    parser.add_argument('--image-size', type=int, default=None,
                        help="square rgb8 frames sent (default: the model's camera size)")
    parser.add_argument('--engine', default='torch', choices=('torch', 'onnx'))
    parser.add_argument('--out', default='docs/results/soak.json',
                        help='results JSON; the PNG plot goes beside it')


def _bench_train_speed_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2],
                        help='torch CPU thread counts to time (default 1 2)')
    parser.add_argument('--lengths', type=int, nargs='+', default=[128, 512],
                        help='sequence lengths T (default 128 512)')
    parser.add_argument('--repeats', type=int, default=3,
                        help='timed steps per form; the best is kept (default 3)')
    parser.add_argument('--kinds', nargs='+', default=['layer', 'gate_phase'],
                        choices=['layer', 'gate_phase'],
                        help='what to time (default: all)')
    parser.add_argument('--out', default='docs/results/train_speed.json',
                        help='results JSON; the .md goes beside it')


def _bench_train_scale_args(parser: argparse.ArgumentParser) -> None:
    from aura_ros.bench.train_scale import add_args

    add_args(parser)


def _bench_popgym_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--seeds', type=int, default=3, help='seeds per method (default 3)')
    parser.add_argument('--updates', type=int, default=600,
                        help='training updates per run (AURA: half warm-up; default 600)')
    parser.add_argument('--eval-episodes', type=int, default=64,
                        help='closed-loop episodes per run (default 64)')
    parser.add_argument('--envs', nargs='+', default=None, help='environments (default all)')
    parser.add_argument('--methods', nargs='+', default=None, help='methods (default all)')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1)')
    parser.add_argument('--out', default='docs/results/popgym.json',
                        help='results JSON; the .md and .png go beside it')
    parser.add_argument('--merge', nargs='+', default=None, metavar='JSON',
                        help='only merge the results of earlier runs (e.g. split over '
                             'processes) into --out')


def _bench_fuzz_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--cases', type=int, default=10_000,
                        help='hypothesis-drawn (joint state, image) pairs (default 10^4)')
    parser.add_argument('--kind-cases', type=int, default=1000,
                        help='cases of each further input kind: features, JPEG/PNG, '
                             'two-camera stamps (default 1000 each)')
    parser.add_argument('--resets', type=int, default=1000,
                        help='resets at random moments under streaming load (default 1000)')
    parser.add_argument('--rate', type=float, default=30.0, help='frame rate of the reset phase')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default='docs/results/fuzz.json', help='results JSON')


def _gate_report_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('bag', help='a rosbag2 bag (.mcap/.db3 or its folder) holding '
                                    "aura_node's gate topic (and the camera, for thumbnails)")
    parser.add_argument('--out', default=None, help='PNG to write (default: <bag name>_gate.png)')
    parser.add_argument('--gate-topic', default='/aura/gate', help='the gate topic')
    parser.add_argument('--camera-topic', default=None,
                        help="camera topic (default: the bag's only image topic, if one)")
    parser.add_argument('--thumbnails', type=int, default=6,
                        help='written frames shown, spread over the run (default 6)')
    parser.add_argument('--width', type=int, default=1200, help='picture width in pixels')


COMMANDS: Dict[str, Command] = {
    'bench fuzz': Command('aura_ros.ros.bench.fuzz:main',
                          'fuzz a live aura_node (10^4 drawn inputs) and reset it 1000 times '
                          'under load', _bench_fuzz_args),
    'bench soak': Command('aura_ros.ros.bench.soak:main',
                          'soak aura_node: one long episode closed-loop, RSS and latency drift',
                          _bench_soak_args),
    'bench fleet': Command('aura_ros.bench.fleet:main',
                           'one runtime serving N robots, batched: latency, drops, CPU, RSS, '
                           'state bytes', _bench_fleet_args),
    'bench perf': Command('aura_ros.bench.perf:main',
                          'memory step vs horizon (AURA, KV-cache, GRU) and aura_node end to end',
                          _bench_perf_args),
    'demo': Command('aura_ros.ros.so101.demo:main',
                    'run the SO-101 MuJoCo world with aura_node (bundled model), headless',
                    _demo_args),
    # The SO-101 world used to be the second demo; its old name keeps working.
    'demo so101': Command('aura_ros.ros.so101.demo:main', 'the same as demo', _demo_args),
    'record-demos': Command('aura_ros.ros.so101.record:main',
                            'record scripted SO-101 demonstrations through ROS into an mcap bag',
                            _record_demos_args),
    'record-demos pusher': Command('aura_ros.ros.pusher.record:main',
                                   'record scripted demonstrations of the 7-joint Pusher arm '
                                   '(two cameras, show-then-hide task) through ROS',
                                   _record_pusher_args),
    'version': Command('aura_ros.cli:print_version', 'print the aura_ros version'),
    'gate-report': Command('aura_ros.data.gate_bag:main',
                           "draw the write gate of a recorded run (a bag of aura_node's gate "
                           'topic) as a PNG timeline', _gate_report_args),
    'train': Command('aura_ros.training.trainer:main',
                     'train a model directory on your own demonstrations (rosbag2 or LeRobot)',
                     _train_args),
    'eval so101': Command('aura_ros.ros.so101.closed_loop:main',
                          'closed-loop SO-101 evaluation through ROS: AURA vs baselines',
                          _eval_so101_args),
    'init-model': Command('aura_ros.runtime.init_model:main',
                          'write a randomly initialised model directory (plumbing tests)',
                          _init_model_args),
    'export': Command('aura_ros.runtime.export:main',
                      'export the memory step of a model directory to memory_step.onnx',
                      _export_args),
    'bench train-speed': Command('aura_ros.bench.train_speed:main',
                                 'training throughput of the AURA layer: scan vs reference loop',
                                 _bench_train_speed_args),
    'bench train-scale': Command('aura_ros.bench.train_scale:main',
                                 'training throughput at 1 and N ranks (torchrun), GRU update',
                                 _bench_train_scale_args),
    'bench popgym': Command('aura_ros.training.popgym_bench:main',
                            'POPGym memory tasks: AURA variants vs always-write vs GRU',
                            _bench_popgym_args),
    'bench synthetic': Command('aura_ros.training.synthetic_bench:main',
                               'synthetic event-recall benchmark (AURA vs baselines)',
                               _bench_synthetic_args),
}


def build_parser(commands: Dict[str, Command] = COMMANDS) -> argparse.ArgumentParser:
    """Build the parser for a command table (imports none of the command modules)."""
    parser = argparse.ArgumentParser(
        prog='python -m aura_ros', description='aura_ros: robot policy with AURA memory.'
    )
    parser.add_argument('--version', action='version', version=f'aura_ros {__version__}')
    groups: Dict[Tuple[str, ...], argparse._SubParsersAction] = {
        (): parser.add_subparsers(dest='command', metavar='command', required=True)
    }
    # A command that is also a group ('demo' and 'demo so101') runs when no subcommand
    # follows it; the group's parser takes the command's own arguments.
    for name, command in sorted(commands.items(), key=lambda item: len(item[0].split())):
        words = tuple(name.split())
        for depth in range(1, len(words)):  # the groups of a nested command, e.g. 'bench'
            group = words[:depth]
            if group not in groups:
                group_parser = groups[group[:-1]].add_parser(
                    group[-1], help=f'{" ".join(group)} commands'
                )
                groups[group] = group_parser.add_subparsers(
                    dest='_'.join(group) + '_command', metavar='command', required=True
                )
        parent = groups[words[:-1]]
        if words in groups:                 # registered before as a group: never, sorted
            raise ValueError(f'command {name!r} defined after its subcommands')
        if any(other.split()[:len(words)] == list(words) and other != name
               for other in commands):
            sub = parent.add_parser(words[-1], help=command.help, description=command.help)
            groups[words] = sub.add_subparsers(dest='_'.join(words) + '_command',
                                               metavar='command', required=False)
        else:
            sub = parent.add_parser(words[-1], help=command.help, description=command.help)
        if command.add_arguments is not None:
            command.add_arguments(sub)
        sub.set_defaults(_target=command.target)
    return parser


def resolve(target: str) -> Callable[[argparse.Namespace], Optional[int]]:
    """Import 'package.module:function' and return the function."""
    module_name, _, function_name = target.partition(':')
    return getattr(importlib.import_module(module_name), function_name)


def main(
    argv: Optional[Sequence[str]] = None, commands: Dict[str, Command] = COMMANDS
) -> int:
    args = build_parser(commands).parse_args(argv)
    target = vars(args).pop('_target')
    return int(resolve(target)(args) or 0)
