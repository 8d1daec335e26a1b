"""The SO-101 demo: the MuJoCo arm driven by aura_node through ROS, headless, one line per task.

Two processes over DDS (loopback): `so101_sim` (lock-step: the world waits for every answer, so
the run is deterministic and as fast as the machine allows) and `aura_node` with the bundled
model (models/so101, aura_node's default) or --model-dir. Prints, per task, the cue, the
outcome, its frames and the memory writes aura_node made in it, then a summary. A machine that
cannot render gets one line naming the Debian package to install, and exit code 2.

With --robots N (2 to 4), a fleet: `so101_fleet_sim` (one MuJoCo world per arm, /arm1 .. /armN,
lock-step on one clock) against ONE aura_node serving them all (its `robots` parameter); one
line per task names its arm, then each arm's summary and the fleet's.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

from aura_ros.ros.params import bundled_model_dir
from aura_ros.ros.so101.closed_loop import (
    EvalError,
    Loop,
    Trace,
    loop_env,
    run_fleet_loop,
    run_loop,
    wilson,
)

MAX_ROBOTS = 4      # arms of `demo --robots`: each renders its camera on the same cores


def check_rendering() -> Optional[str]:
    """None if MuJoCo can render the world here, else the one-line reason (names the package)."""
    try:
        from aura_ros.tasks.so101 import RenderError, So101Config, So101World
    except ImportError as err:
        return f'cannot import the SO-101 world: {err}'
    except RuntimeError as err:          # RenderError at import: the GL library is missing
        return str(err)
    try:
        world = So101World(So101Config(), seed=0)
        world.render()
        world.close()
    except (RenderError, FileNotFoundError) as err:
        return str(err)
    except (ImportError, OSError, AttributeError) as err:   # a GL library mujoco loads late
        from aura_ros.tasks.so101 import _GL_PACKAGES

        backend = os.environ.get('MUJOCO_GL', 'egl')
        return (f'{type(err).__name__}: {err}; MUJOCO_GL={backend} needs the Debian package(s) '
                f'{_GL_PACKAGES.get(backend, "of an OpenGL driver")}')
    return None


class TaskPrinter:
    """Prints one line per finished task as its event arrives (writes from the gate so far);
    in a fleet the line starts with the arm's name."""

    def __init__(self, traces: dict):
        self.traces = traces                  # arm ('' alone) -> its Trace, filled by the loop
        self.writes: dict[str, int] = {}
        self.cues: dict[tuple, str] = {}

    def __call__(self, event: dict) -> None:
        robot = event.get('robot', '')
        if event['event'] == 'cue':
            self.cues[robot, event['task']] = event['colour']
        if event['event'] not in ('success', 'failure'):
            return
        trace: Trace = self.traces[robot]
        counts = [c for s, c in list(trace.counts.items()) if s < event['stamp']]
        total = max((w for _, w in counts), default=0)   # aura_node's cumulative writes
        writes, self.writes[robot] = total - self.writes.get(robot, 0), total
        cue = self.cues.get((robot, event['task']), '?')
        outcome = 'SUCCESS' if event['success'] else f'failure ({event["reason"]})'
        if event['reason'] == 'wrong_pad':
            outcome = f'failure (pad {event["reached"]})'
        arm = f'{robot} ' if robot else ''
        print(f'{arm}task {event["task"]:3d}: cue {cue:>7} -> pad {event["goal"]} | '
              f'{outcome:<20} | {event["frames"]:4d} frames, {event["distractors"]} '
              f'distractor(s) | {writes:3d} writes', flush=True)


def run(model_dir: Path, tasks: int, seed: int = 0, engine: str = 'torch',
        duration_s: float = 0.0, distractor_prob: float = 0.0, robots: int = 1) -> dict:
    """One loop; with robots > 1, arms arm1..armN against one aura_node (its fleet mode):
    the result then holds each arm's under 'robots'."""
    traces: dict = {}
    printer = TaskPrinter(traces)
    loop = Loop(model_dir, tasks, seed=seed, engine=engine, duration_s=duration_s,
                distractor_prob=distractor_prob,
                robots=fleet_names(robots) if robots > 1 else ())
    with tempfile.TemporaryDirectory(prefix='so101_demo_') as work:
        if loop.robots:
            return run_fleet_loop(loop, Path(work), env=loop_env(), on_event=printer,
                                  traces=traces)
        traces[''] = Trace()
        result, _ = run_loop(loop, Path(work), env=loop_env(), on_event=printer,
                             trace=traces[''])
    return result


def fleet_names(robots: int) -> tuple:
    """The arms of `demo --robots N`: arm1 .. armN (each its namespace)."""
    return tuple(f'arm{i + 1}' for i in range(robots))


def summary_line(result: dict) -> str:
    """'w/n tasks succeeded (rate, 95% CI [lo, hi]; reasons); writes ...' of one loop or arm."""
    n, wins = result['tasks'], result['successes']
    lo, hi = wilson(wins, n)
    reasons = ', '.join(f'{k} {v}' for k, v in sorted(result['reasons'].items()))
    rate = f'{result["write_rate"]:.3f}' if result['write_rate'] is not None else '-'
    return (f'{wins}/{n} tasks succeeded ({wins / max(n, 1):.0%}, 95% CI [{lo:.0%}, {hi:.0%}]; '
            f'{reasons}); {result["writes"]} memory writes in {result["steps"]} steps (write '
            f'rate {rate})')


def main(args: argparse.Namespace) -> int:
    model_dir = Path(getattr(args, 'model_dir', '') or bundled_model_dir())
    tasks = int(getattr(args, 'tasks', 0) or 0)
    duration = float(getattr(args, 'duration', 0.0) or 0.0)
    if not tasks and not duration:
        tasks = 10
    robots = int(getattr(args, 'robots', 1) or 1)
    if not 1 <= robots <= MAX_ROBOTS:
        print(f'so101 demo: --robots must be 1 to {MAX_ROBOTS}, got {robots}', file=sys.stderr)
        return 2
    if not (model_dir / 'model.yaml').is_file():
        print(f'so101 demo: no model at {model_dir} (train one: python -m aura_ros '
              'record-demos --out BAG, then python -m aura_ros train --data BAG --out DIR)',
              file=sys.stderr)
        return 2
    problem = check_rendering()
    if problem:
        print(f'so101 demo: cannot render the SO-101 world: {problem}', file=sys.stderr)
        return 2
    what = f'{tasks} tasks' if tasks else f'{duration:g} s of sim time'
    if robots > 1:
        print(f'so101 demo: so101_fleet_sim ({robots} arms: {", ".join(fleet_names(robots))}, '
              f'each its own MuJoCo world and namespace, lock-step on one clock) + ONE aura_node '
              f'(robots, {model_dir}) over DDS (loopback), {what} per arm, seeds '
              f'{getattr(args, "seed", 0)}..{getattr(args, "seed", 0) + robots - 1}', flush=True)
    else:
        print(f'so101 demo: so101_sim (MuJoCo, lock-step) + aura_node ({model_dir}) over DDS '
              f'(loopback), {what}, seed {getattr(args, "seed", 0)}', flush=True)
    try:
        result = run(model_dir, tasks, seed=int(getattr(args, 'seed', 0)),
                     engine=getattr(args, 'engine', 'torch'), duration_s=duration,
                     distractor_prob=float(getattr(args, 'distractor_prob', 0.0)),
                     robots=robots)
    except EvalError as err:
        print(f'so101 demo: {err}', file=sys.stderr)
        return 1
    for robot, each in result.get('robots', {}).items():
        print(f'so101 demo: {robot}: {summary_line(each)}', flush=True)
    if 'robots' in result:
        n, wins = result['tasks'], result['successes']
        lo, hi = result['success']['ci95']
        print(f'so101 demo: fleet of {robots}: {wins}/{n} tasks succeeded ({wins / max(n, 1):.0%}'
              f', 95% CI [{lo:.0%}, {hi:.0%}]); {result["wall_s"]:.0f} s wall', flush=True)
    else:
        print(f'so101 demo: {summary_line(result)}; {result["wall_s"]:.0f} s wall', flush=True)
    return 0


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tasks', type=int, default=10)
    parser.add_argument('--duration', type=float, default=0.0)
    parser.add_argument('--model-dir', default='')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--engine', default='torch', choices=('torch', 'onnx'))
    parser.add_argument('--distractor-prob', type=float, default=0.0)
    parser.add_argument('--robots', type=int, default=1)
    sys.exit(main(parser.parse_args()))
