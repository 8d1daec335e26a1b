"""`python -m aura_ros demo`: so101_sim and aura_node with the bundled SO-101 model, two processes
over DDS, one line per task and a summary (what `make demo` runs, shortened to 3 tasks)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (pip install .[ros])')
pytest.importorskip('mujoco', reason='mujoco not installed')

BUNDLED = Path(__file__).resolve().parents[1] / 'models' / 'so101'
TASK_LINE = re.compile(r'^task +(\d+): cue .* \| +(\d+) frames, .* \| +(\d+) writes$')


def test_demo_runs_the_bundled_so101_model_with_few_writes():
    """The gate of the bundled model writes the cue's few frames, not every frame (the 5-frame
    cue; always-write would write all of a task's ~150 frames)."""
    env = dict(os.environ)   # conftest keeps DDS on loopback with this run's domain id
    proc = subprocess.run([sys.executable, '-m', 'aura_ros', 'demo', '--tasks', '3'], env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert f'aura_node ({BUNDLED})' in out, out          # no --model-dir: the bundled model
    tasks = [TASK_LINE.match(line) for line in out.splitlines() if line.startswith('task ')]
    assert [int(t[1]) for t in tasks if t] == [0, 1, 2], out
    for task in tasks:
        frames, writes = int(task[2]), int(task[3])
        assert 1 <= writes <= 10 < frames, out
    assert re.search(r'so101 demo: \d/3 tasks succeeded', out), out


def test_demo_so101_is_the_same_command():
    from aura_ros.cli import COMMANDS, build_parser

    assert COMMANDS['demo'].target == COMMANDS['demo so101'].target == \
        'aura_ros.ros.so101.demo:main'
    parser = build_parser()
    plain = vars(parser.parse_args(['demo', '--tasks', '4', '--seed', '2']))
    alias = vars(parser.parse_args(['demo', 'so101', '--tasks', '4', '--seed', '2']))
    plain.pop('demo_command')
    alias.pop('demo_command')
    assert plain == alias


FLEET_TASK_LINE = re.compile(r'^(arm\d) task +(\d+): cue +(\w+) -> pad \d \| (\w+) .* \| +(\d+) '
                             r'frames, .* \| +(\d+) writes$')


def test_demo_robots_3_drives_three_arms_from_one_fleet_node():
    """`demo --robots 3`: three arms, each its own MuJoCo world under /arm1../arm3, against ONE
    aura_node (robots parameter): every arm finishes its tasks and succeeds as the single demo
    does, with its own few writes per task (each arm's memory is its own row)."""
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, '-m', 'aura_ros', 'demo', '--robots', '3',
                           '--tasks', '2'], env=env, capture_output=True, text=True, timeout=400)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert 'ONE aura_node (robots' in out, out
    tasks = [FLEET_TASK_LINE.match(line) for line in out.splitlines()
             if re.match(r'^arm\d task', line)]
    assert all(tasks), out
    by_arm: dict = {}
    for task in tasks:
        by_arm.setdefault(task[1], []).append(int(task[2]))
        assert task[3] != '?', out                    # each arm's cue event was heard
        assert task[4] == 'SUCCESS', out
        assert 1 <= int(task[6]) <= 10 < int(task[5]), out
    assert {arm: sorted(t) for arm, t in by_arm.items()} == \
        {'arm1': [0, 1], 'arm2': [0, 1], 'arm3': [0, 1]}, out
    for arm in ('arm1', 'arm2', 'arm3'):
        assert re.search(rf'so101 demo: {arm}: 2/2 tasks succeeded', out), out
    assert 'so101 demo: fleet of 3: 6/6 tasks succeeded' in out, out


def test_demo_robots_out_of_range_is_refused_with_its_reason():
    proc = subprocess.run([sys.executable, '-m', 'aura_ros', 'demo', '--robots', '9'],
                          env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert '--robots must be 1 to 4, got 9' in proc.stderr
