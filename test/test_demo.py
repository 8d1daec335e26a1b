"""The demo command: simulator and aura_node as two processes over DDS, ending with a summary."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (pip install .[ros])')


def test_demo_runs_both_nodes_and_prints_the_summary(tiny_model_dir):
    env = dict(os.environ)   # conftest keeps DDS on loopback with this run's domain id
    proc = subprocess.run([sys.executable, '-m', 'aura_ros', 'demo', '--duration', '8',
                           '--model-dir', str(tiny_model_dir)], env=env, capture_output=True,
                          text=True, timeout=180)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert 'first action chunk received' in out, out
    assert 'cue-reach summary:' in out, out
    assert 'aura_node exit 0' in out, out


BUNDLED = Path(__file__).resolve().parents[1] / 'models' / 'cue_reach' / 'model.yaml'


@pytest.mark.skipif(not BUNDLED.is_file(), reason='no bundled model (python -m aura_ros train '
                                                  'cue-reach)')
def test_closed_loop_through_ros_solves_tasks_with_few_writes(tmp_path):
    """Simulator <-> aura_node over DDS with the bundled model: the in-process evaluation's
    success (0.995 over 200 tasks) must hold through ROS too, at a handful of writes per task."""
    out = tmp_path / 'loop.json'
    proc = subprocess.run([sys.executable, '-m', 'aura_ros', 'demo', '--tasks', '6', '--out',
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result['tasks'] == 6
    assert result['success']['mean'] >= 5 / 6, proc.stdout
    assert result['writes_per_task']['mean'] <= 5, proc.stdout   # always-write: ~110 per task
