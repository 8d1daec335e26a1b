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
