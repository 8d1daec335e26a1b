"""`python -m aura_ros demo`: the cue-reach simulator drives aura_node, headless, time-bounded.

It starts `aura_node` (bundled model unless --model-dir) and `aura_sim` as two processes, exactly
as `launch/demo.launch.py` does on a machine with ROS 2 launch, prints the simulator's line per
task and its summary, then stops the node with Ctrl-C semantics (SIGINT). DDS stays on
loopback: the demo sets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and, unless given, a
ROS_DOMAIN_ID of its own.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
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
    sim = _process('aura_ros.ros.sim_node', '-p', f'duration_s:={args.duration}',
                   '-p', f'max_tasks:={args.tasks}', '-p', f'seed:={args.seed}', env=env)
    try:
        for line in sim.stdout:
            print(LOG_PREFIX.sub('', line.rstrip()), flush=True)
        sim_code = sim.wait()
    except KeyboardInterrupt:
        sim_code = _stop(sim)
    node_code = _stop(node)
    rest = node.stdout.read()
    if node_code != 0:
        print(rest, file=sys.stderr)
    print(f'demo: finished (simulator exit {sim_code}, aura_node exit {node_code})', flush=True)
    return sim_code or node_code
