"""The demo command: simulator and aura_node as two processes over DDS, ending with a summary."""

import os
import subprocess
import sys

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
