"""SO-101 closed loop through ROS: a tiny recorded bag, `train --quick` with every baseline, the
baselines in the runtime's torch engine, a few chained tasks of so101_sim + aura_node over DDS,
and the demo's one-line errors."""

import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy not installed')
pytest.importorskip('mujoco', reason='mujoco not installed')

REASONS = {'reached', 'wrong_pad', 'early', 'timeout'}


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory) -> Path:
    """3 expert tasks (short delays) recorded through ROS, trained with --quick: a real model
    directory with baselines/always_write, gru and no_memory."""
    from aura_ros.cli import main as cli

    root = tmp_path_factory.mktemp('so101')
    (root / 'train.yaml').write_text('baselines: [always_write, no_memory, gru]\n')
    assert cli(['record-demos', '--out', str(root / 'bag'), '--tasks', '3', '--seed', '5',
                '--delay-min', '5', '--delay-max', '10']) == 0
    assert cli(['train', '--data', str(root / 'bag'), '--out', str(root / 'model'),
                '--image-topic', '/image', '--action-topic', '/leader/joint_states', '--quick',
                '--config', str(root / 'train.yaml')]) == 0
    return root / 'model'


def test_wilson_interval():
    from aura_ros.ros.so101.closed_loop import wilson

    assert wilson(0, 100)[0] == 0.0 and wilson(0, 100)[1] == pytest.approx(0.0370, abs=1e-4)
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson(100, 100)[1] == pytest.approx(1.0)
    assert wilson(0, 0) == [0.0, 1.0]


def _frames(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(n)]


def test_runtime_runs_every_trained_baseline(tiny_model, tmp_path):
    """GRU remembers (the same frame after two histories gives two actions), no-memory does
    not, always-write at threshold 0 writes every step; all in the node's engine."""
    from aura_ros.ros.so101.closed_loop import method_dir
    from aura_ros.runtime import AuraRuntime, ModelDirError

    q = np.zeros(6)
    probe = _frames(1, 99)[0]
    for method in ('gru', 'no_memory', 'always_write'):
        directory, threshold = method_dir(tiny_model, method, tmp_path)
        actions = []
        for seed in (1, 2):
            runtime = AuraRuntime.from_model_dir(directory, device='cpu',
                                                 gate_threshold=threshold)
            for frame in _frames(12, seed):
                runtime.step(frame, 'rgb8', q)
            actions.append(runtime.step(probe, 'rgb8', q).action)
        type_name = type(runtime.memory.layer).__name__
        if method == 'gru':
            assert type_name == 'DenseGRU'
            assert runtime.memory_bytes() == runtime.memory.layer.hidden * 4
            assert not np.allclose(actions[0], actions[1])
            assert runtime.writes == runtime.steps == 13
        elif method == 'no_memory':
            assert type_name == 'NoMemory' and runtime.memory_bytes() == 0
            np.testing.assert_allclose(actions[0], actions[1], rtol=1e-5, atol=1e-6)
            assert runtime.writes == 0
        else:
            assert type_name == 'AuraMemLayer' and threshold == 0.0
            assert runtime.writes == runtime.steps == 13
    with pytest.raises(ModelDirError, match='torch engine'):
        AuraRuntime.from_model_dir(method_dir(tiny_model, 'gru', tmp_path)[0], device='cpu',
                                   engine='onnx')


def test_closed_loop_through_ros(tiny_model, tmp_path):
    """AURA and the GRU drive so101_sim through aura_node: every task scored, writes counted,
    the lock-step never timed out, the JSON, the table and the timeline written."""
    from aura_ros.ros.so101.closed_loop import evaluate

    out = tmp_path / 'so101.json'
    args = Namespace(model_dir=str(tiny_model), tasks=2, methods='aura,gru', seed=3, pads=3,
                     size=96, delay_max=10, distractor_prob=0.0, out=str(out),
                     timeline=str(tmp_path / 'tl.png'), keep_frames=300)
    results = evaluate(args, log=lambda *_: None)
    saved = json.loads(out.read_text())
    assert saved['methods'].keys() == {'aura', 'gru'}
    assert saved['distractor_prob'] == 0.0
    for method, r in saved['methods'].items():
        assert r['tasks'] == 2 and len(r['outcomes']) == 2, method
        # the rate reached the simulator: no flash in any task
        assert all(o['distractors'] == 0 for o in r['outcomes']), method
        assert {t['reason'] for t in r['outcomes']} <= REASONS
        assert r['aura_node_exit'] == 0 and r['lockstep_timeouts'] == 0
        assert r['rejected_trajectories'] == {}
        frames = r['outcomes'][-1]['end_frame']
        assert r['steps'] >= frames                   # aura_node answered every frame
        assert sum(t['writes'] for t in r['outcomes']) <= r['writes']
        start = 0                                      # each task's writes, frame by frame
        for t in r['outcomes']:
            assert len(t['write_frames']) == t['writes'], method
            assert all(start <= f < t['end_frame'] for f in t['write_frames']), method
            start = t['end_frame']
        lo, hi = r['success']['ci95']
        assert 0 <= lo <= r['success']['mean'] <= hi <= 1
    assert saved['methods']['gru']['writes'] == saved['methods']['gru']['steps']
    # same seed, same world: both methods saw the same goals
    goals = [[t['goal'] for t in r['outcomes']] for r in saved['methods'].values()]
    assert goals[0] == goals[1]
    assert '| gru | 2 |' in out.with_suffix('.md').read_text()
    assert (tmp_path / 'tl.png').stat().st_size > 10_000
    assert results['methods']['aura']['success'] == saved['methods']['aura']['success']


def test_reset_each_task_gives_every_task_a_new_episode(tiny_model, tmp_path):
    """--reset-each-task: the listener calls aura_node's ~/reset when a task ends, so the node's
    step counter restarts once per finished task (before the next task's cue), and a task's
    writes are counted from its gate messages."""
    from aura_ros.ros.so101.closed_loop import Loop, frame_of, loop_env, run_loop

    loop = Loop(tiny_model, 3, seed=3, delay=(5, 10), distractor_prob=0.0, reset_each_task=True)
    result, trace = run_loop(loop, tmp_path / 'work', env=loop_env())
    assert result['tasks'] == 3 and result['aura_node_exit'] == 0
    steps = [step for _, (step, _) in sorted(trace.counts.items())]
    restarts = sum(b < a for a, b in zip(steps, steps[1:], strict=False))
    assert restarts >= 2, steps                 # after tasks 0 and 1 (the last may end the run)
    starts = [frame_of(trace, s) for s, (step, _) in trace.counts.items() if step == 1]
    outcomes = result['outcomes']
    for before, task in zip(outcomes, outcomes[1:], strict=False):   # reset before the cue
        assert any(before['end_frame'] <= f < task['cue_frame'] for f in starts), starts
    assert all(t['writes'] == len(t['write_frames']) for t in result['outcomes'])
    assert result['writes'] == sum(w for w, _ in trace.gate.values())


def _children(pid: int) -> dict[int, str]:
    """{pid: command line} of the live processes whose parent is `pid` (Linux /proc)."""
    found = {}
    for entry in Path('/proc').iterdir():
        try:
            parent = int((entry / 'stat').read_text().split(')')[-1].split()[1])
            if entry.name.isdigit() and parent == pid:
                command = (entry / 'cmdline').read_bytes().replace(b'\0', b' ')
                found[int(entry.name)] = command.decode(errors='replace')
        except (OSError, ValueError, IndexError):
            continue                                   # gone meanwhile
    return found


def test_sigterm_stops_the_evals_node_and_simulator(tiny_model, tmp_path):
    """`eval so101` ended by SIGTERM (a job scheduler, `kill`) stops the aura_node and so101_sim it
    started before it exits (130, the reason on stderr): left running, they stayed on the loop's
    ROS domain, where the next eval met them."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, '-m', 'aura_ros', 'eval', 'so101', '--model-dir',
                             str(tiny_model), '--tasks', '50', '--methods', 'aura', '--out',
                             str(tmp_path / 'r.json')], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not any('so101.sim' in c for c in _children(proc.pid).values()):
            assert proc.poll() is None, proc.communicate()     # the eval is still running
            if time.monotonic() > deadline:                   # a hang guard, not a speed check
                pytest.fail('the eval started no simulator within 180 s')
            time.sleep(0.2)
        children = _children(proc.pid)
        assert any('aura_ros.ros.node' in c for c in children.values()), children
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert 'interrupted: aura_node and the simulator were stopped' in err
    for pid in children:
        assert not Path(f'/proc/{pid}').exists(), children[pid]
    assert not (tmp_path / 'r.json').exists()


def test_missing_baseline_is_reported_not_fatal(tiny_model, tmp_path):
    from aura_ros.ros.so101.closed_loop import EvalError, method_dir

    (tmp_path / 'm').mkdir()
    for name in ('model.yaml', 'memory.safetensors'):
        (tmp_path / 'm' / name).write_bytes((tiny_model / name).read_bytes())
    with pytest.raises(EvalError, match='baselines/gru.safetensors does not exist'):
        method_dir(tmp_path / 'm', 'gru', tmp_path / 'work')


def _demo(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'aura_ros.ros.so101.demo', *args],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_demo_without_a_model_says_how_to_train_one(tmp_path):
    proc = _demo('--model-dir', str(tmp_path / 'none'))
    assert proc.returncode == 2
    assert 'record-demos' in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_demo_names_the_missing_gl_package(tiny_model):
    """A back end whose library is missing: one line naming the Debian package, exit 2."""
    import ctypes.util

    if ctypes.util.find_library('OSMesa'):
        pytest.skip('libOSMesa is installed here: the osmesa back end would work')
    proc = _demo('--model-dir', str(tiny_model), MUJOCO_GL='osmesa', PYOPENGL_PLATFORM='osmesa')
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'libosmesa6' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_append_merges_only_the_same_set_up():
    from aura_ros.ros.so101.closed_loop import EvalError, _merge

    old = {'command': 'a', 'backbone_sha256': 'f00', 'seed': 0, 'n_pads': 3,
           'delay_frames': [30, 150], 'tasks_per_method': 100, 'methods': {'aura': {'tasks': 100}}}
    new = {**old, 'command': 'b', 'methods': {'gru': {'tasks': 100}}}
    merged = _merge(old, new)
    assert list(merged['methods']) == ['aura', 'gru'] and merged['commands'] == ['a', 'b']
    with pytest.raises(EvalError, match='seed'):
        _merge(old, {**new, 'seed': 1})
