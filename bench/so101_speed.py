"""Render and simulation speed of the SO-101 world, and record-demos throughput.

    MUJOCO_GL=egl nice -n 10 python bench/so101_speed.py [--record-tasks 100] \
        [--out docs/results/so101_speed.json]

Measures, on one core: model build time; offscreen render time per frame (coarsened vs full
meshes, at 96x96 and 224x224); the in-process closed loop (scripted expert IK + physics at
600 Hz + one 96x96 render per 30 Hz frame) as a real-time factor; and `record-demos` (simulator,
expert and recorder talking over DDS, written to an mcap bag) in tasks and frames per wall
second. A benchmark, not a test: the numbers depend on the machine and its load.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault('MUJOCO_GL', 'egl')

import aura_ros.tasks.so101 as so101  # noqa: E402
from aura_ros import provenance
from aura_ros.tasks.so101 import (  # noqa: E402
    HOME_Q,
    ScriptedExpert,
    So101Config,
    So101World,
    gl_backend,
)


def render_ms(config: So101Config, frames: int) -> dict:
    """Build time (cold: STL parsing and coarsening included) and per-frame render time (p50,
    p90) of one camera at config's size."""
    so101._mesh.cache_clear()
    start = time.perf_counter()
    world = So101World(config, seed=0)
    build = time.perf_counter() - start
    world.render()                               # the GL context is made on the first frame
    times = []
    for i in range(frames):
        world.step(HOME_Q + np.sin(i / 10) * 0.2)  # a moving arm: the scene changes
        start = time.perf_counter()
        world.render()
        times.append(time.perf_counter() - start)
    triangles = int(world.model.mesh_facenum.sum())
    world.close()
    ms = np.array(times) * 1e3
    return {'size': f'{config.width}x{config.height}', 'mesh_cell_m': config.mesh_cell,
            'triangles': triangles, 'build_s': round(build, 3),
            'render_p50_ms': round(float(np.percentile(ms, 50)), 2),
            'render_p90_ms': round(float(np.percentile(ms, 90)), 2), 'frames': frames}


def closed_loop(tasks: int) -> dict:
    """Expert IK + physics + one render per frame, in process: sim seconds per wall second."""
    config = So101Config()
    world = So101World(config, seed=0)
    expert = ScriptedExpert(world.model, world.hover_points)
    start = time.perf_counter()
    while len(world.outcomes) < tasks:
        goal = world.goal if world.cue_seen else None
        world.step(expert.act(world.joint_positions(), goal, world.go))
        world.render()
    wall = time.perf_counter() - start
    wins = sum(o.success for o in world.outcomes)
    world.close()
    return {'tasks': len(world.outcomes), 'expert_successes': wins, 'frames': world.frame,
            'sim_s': round(world.time, 2), 'wall_s': round(wall, 2),
            'ms_per_frame': round(wall / world.frame * 1e3, 2),
            'real_time_factor': round(world.time / wall, 2)}


def record_demos(tasks: int) -> dict:
    """`python -m aura_ros record-demos` in a subprocess; its summary plus the bag size."""
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / 'bag'
        command = [sys.executable, '-m', 'aura_ros', 'record-demos', '--out', str(bag),
                   '--tasks', str(tasks)]
        start = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        summary = next(json.loads(line) for line in run.stdout.splitlines()
                       if line.startswith('{'))
        size = sum(f.stat().st_size for f in bag.iterdir())
    summary.pop('bag')
    summary.update({'process_wall_s': round(wall, 2), 'bag_mb': round(size / 1e6, 1),
                    'tasks_per_minute': round(summary['tasks'] / summary['wall_seconds'] * 60,
                                              1),
                    'real_time_factor': round(summary['sim_seconds'] /
                                              summary['wall_seconds'], 2)})
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=200, help='frames per render timing')
    parser.add_argument('--loop-tasks', type=int, default=20)
    parser.add_argument('--record-tasks', type=int, default=100, help='0 skips record-demos')
    parser.add_argument('--out', default='docs/results/so101_speed.json')
    args = parser.parse_args()
    renders = [render_ms(So101Config(width=s, height=s, mesh_cell=cell), args.frames)
               for s in (96, 224) for cell in (0.002, 0.0)]
    for r in renders:
        print(json.dumps(r), flush=True)
    loop = closed_loop(args.loop_tasks)
    print(json.dumps(loop), flush=True)
    record = record_demos(args.record_tasks) if args.record_tasks else None
    print(json.dumps(record), flush=True)
    result = {**provenance.header(provenance.command('python bench/so101_speed.py'),
                                  f'shared, loaded VM; MuJoCo GL back end {gl_backend()}, Mesa '
                                  'llvmpipe, no GPU'),
              'render': renders, 'closed_loop_in_process': loop, 'record_demos': record}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)
        f.write('\n')
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
