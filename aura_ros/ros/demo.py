"""`python -m aura_ros demo`: the cue-reach simulator drives aura_node, headless, time-bounded.

It starts `aura_node` (bundled model unless --model-dir) and `aura_sim` as two processes, exactly
as `launch/demo.launch.py` does on a machine with ROS 2 launch, prints the simulator's line per
task and its summary, then stops the node with Ctrl-C semantics (SIGINT). DDS stays on
loopback: the demo sets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and, unless given, a
ROS_DOMAIN_ID of its own.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

READY = 'memory state'      # aura_node's start-up line ends with the state size
LOG_PREFIX = re.compile(r'^\[\w+\] \[[\d.]+\] \[[^\]]+\]: ')


def _process(module: str, *ros_args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-u', '-m', module, '--ros-args', *ros_args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _forward_warnings(node: subprocess.Popen) -> None:
    """Show what aura_node warns or errs about (rejected input, discarded steps)."""
    for line in node.stdout:
        if not line.startswith('[INFO]'):
            print(f'  [aura_node] {LOG_PREFIX.sub("", line.rstrip())}', flush=True)


def _write_results(args: argparse.Namespace, outcomes_path: str) -> None:
    """The closed loop through ROS, in the shape of docs/results/cue_reach.json's methods."""
    from aura_ros.training.cue_reach_eval import mean_ci, wilson

    with open(outcomes_path) as f:
        tasks = [json.loads(line) for line in f if line.strip()]
    os.unlink(outcomes_path)
    wins = sum(bool(t['success']) for t in tasks)
    writes = [t['writes'] for t in tasks if t.get('writes') is not None]
    result = {'command': 'python -m aura_ros demo ' + ' '.join(sys.argv[2:]),
              'loop': 'aura_sim <-> aura_node over DDS (loopback), 30 Hz wall clock',
              'engine': args.engine, 'model_dir': args.model_dir or 'bundled', 'tasks': len(tasks),
              'success': {'mean': wins / max(len(tasks), 1), 'ci95': wilson(wins, len(tasks))},
              'writes_per_task': mean_ci(writes), 'outcomes': tasks}
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)
        f.write('\n')
    print(f'demo: wrote {args.out}', flush=True)


def main(args: argparse.Namespace) -> int:
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1')
    env.setdefault('ROS_DOMAIN_ID', str(101 + os.getpid() % 100))
    node_args = ['-p', f'memory_engine:={args.engine}']
    if args.model_dir:
        node_args += ['-p', f'model_dir:={os.path.abspath(args.model_dir)}']
    node = _process('aura_ros.ros.node', *node_args, env=env)
    print(f'demo: starting aura_node (ROS_DOMAIN_ID {env["ROS_DOMAIN_ID"]}, loopback only)',
          flush=True)
    deadline = time.monotonic() + 120
    for line in node.stdout:
        print(f'  [aura_node] {line.rstrip()}', flush=True)
        if READY in line or time.monotonic() > deadline:
            break
    if node.poll() is not None:
        print(f'demo: aura_node exited with code {node.returncode}', file=sys.stderr)
        return node.returncode or 1
    forward = threading.Thread(target=_forward_warnings, args=(node,), daemon=True)
    forward.start()
    sim_args = ['-p', f'duration_s:={args.duration}', '-p', f'max_tasks:={args.tasks}',
                '-p', f'seed:={args.seed}']
    outcomes = None
    if args.out:
        outcomes = tempfile.NamedTemporaryFile(suffix='.jsonl', delete=False).name
        sim_args += ['-p', f'outcomes_file:={outcomes}']
    sim = _process('aura_ros.ros.sim_node', *sim_args, env=env)
    try:
        for line in sim.stdout:
            print(LOG_PREFIX.sub('', line.rstrip()), flush=True)
        sim_code = sim.wait()
    except KeyboardInterrupt:
        sim_code = _stop(sim)
    node_code = _stop(node)
    forward.join(timeout=5)
    if outcomes:
        _write_results(args, outcomes)
    print(f'demo: finished (simulator exit {sim_code}, aura_node exit {node_code})', flush=True)
    return sim_code or node_code
