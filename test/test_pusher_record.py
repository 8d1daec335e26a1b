"""record-demos pusher: the Pusher world recorded through ROS as a two-camera rig's bag, which
the trainer's data reader loads with no topic named."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('gymnasium')
pytest.importorskip('aura_ros.tasks.pusher')
pytest.importorskip('rclpy')


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def recorded(tmp_path_factory):
    """Two short tasks recorded through ROS: (bags folder, the recorder's summary)."""
    from aura_ros.ros.pusher.record import record

    bags = tmp_path_factory.mktemp('pusher') / 'bags'
    return bags, record(bags / 'run_0', tasks=2, seed=4, delay=(5, 8), log=None)


def test_a_short_recording_is_a_rig_bag_the_data_reader_loads(recorded, tmp_path):
    from rosbags.highlevel import AnyReader

    from aura_ros.data import DataConfig, load_demonstrations
    from aura_ros.ros.pusher.record import TOPICS
    from aura_ros.tasks.pusher import JOINT_NAMES, PusherWorld

    bags, summary = recorded
    out = bags / 'run_0'
    assert summary['tasks'] == 2 and summary['successes'] == 2
    assert summary['read_back'] == summary['recorded'] and summary['lockstep_timeouts'] == 0
    frames = summary['frames']
    counts = summary['read_back']
    assert set(counts) == set(TOPICS)
    assert counts['/front/image_raw'] == counts['/wrist/image_raw/compressed'] == frames
    assert counts['/joint_states'] == counts['/arm_controller/joint_trajectory'] == frames

    with AnyReader([out]) as reader:
        events = [json.loads(reader.deserialize(raw, c.msgtype).data)
                  for c, _, raw in reader.messages(
                      connections=[c for c in reader.connections if c.topic == '/task_events'])]
    kinds = [e['event'] for e in events]
    assert kinds[0] == 'start' and kinds[-1] == 'summary'
    assert kinds.count('cue') == kinds.count('go') == kinds.count('success') == 2
    assert events[0]['joint_names'] == list(JOINT_NAMES)

    # what `python -m aura_ros train --data BAGS` reads, with no topic flag
    demos = load_demonstrations(bags, DataConfig(cache_dir=str(tmp_path / 'cache')),
                                progress=False)
    assert demos.cameras == ('front', 'wrist')
    assert demos.camera_transports == ('raw', 'compressed')
    assert demos.joint_names == demos.action_names == JOINT_NAMES
    # the simulator's latched robot_description: the arm's joint limits, so targets get clipped
    assert counts['/robot_description'] == 1
    assert demos.joint_limits == PusherWorld().joint_limits()
    assert set(demos.joint_limits) == set(JOINT_NAMES)
    episode = demos.episodes[0]
    # every frame but the last chunk's (no command yet for its later points)
    assert len(episode.images['front']) == len(episode.images['wrist']) >= frames - demos.chunk - 1
    assert np.ptp(episode.joints[:, 1]) > 1.0        # the shoulder lifts to reach the table


def test_record_demos_pusher_is_a_command(tmp_path):
    from aura_ros.cli import build_parser

    args = build_parser().parse_args(['record-demos', 'pusher', '--out', str(tmp_path / 'b'),
                                      '--tasks', '3', '--distractor-prob', '0.05'])
    from aura_ros.tasks.pusher_config import DEFAULT

    assert (args.tasks, args.distractor_prob) == (3, 0.05)
    assert (args.delay_min, args.delay_max, args.targets) == (
        DEFAULT.delay_min, DEFAULT.delay_max, DEFAULT.n_targets)


def test_the_readme_train_command_and_the_held_out_bench_run_on_it(recorded, tmp_path):
    """`train --data BAGS --out RUN` (here --quick) with no topic flag, then
    bench/so101_heldout.py scores the run from the bag's /task_events: errors, and the gate's
    write probability on cue (and each goal's), distractor (and each kind of flash) and other
    frames (the model's
    whitening map fitted on the training features, which the bench once forgot), and how well
    the features tell a cue from each flash."""
    bags, _ = recorded
    run = tmp_path / 'run'
    train = subprocess.run([sys.executable, '-m', 'aura_ros', 'train', '--data', str(bags),
                            '--out', str(run), '--quick'], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    assert 'joint limits of 7 of 7 actions' in train.stderr + train.stdout
    from aura_ros.runtime.model_dir import load_model_dir
    from aura_ros.tasks.pusher import PusherWorld

    assert load_model_dir(run).joint_limits == PusherWorld().joint_limits()
    bench = subprocess.run([sys.executable, 'bench/so101_heldout.py', '--data', str(bags),
                            '--model-dir', str(run), '--out', str(tmp_path / 'heldout'),
                            '--target-with', '{"utility": "counterfactual"}'],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stderr[-2000:]
    result = json.loads((tmp_path / 'heldout.json').read_text())
    assert set(result['methods']) == {'aura', 'always_write', 'no_memory'}
    gate = result['methods']['aura']['gate_by_frame']
    flashes = {kind for kind in gate if kind.startswith('distractor (')}   # by the Pusher's kind
    goals = {kind for kind in gate if kind.startswith('cue (goal ')}
    assert goals and set(gate) - flashes - goals == {'cue', 'distractor', 'other'}
    assert sum(gate[k]['frames'] for k in flashes) == gate['distractor']['frames']
    assert sum(gate[k]['frames'] for k in goals) == gate['cue']['frames']
    assert set(result['feature_probe_auc']) == {f'cue vs {k}' for k in gate
                                                if k not in {'cue', 'other'} | goals}
    assert gate['cue']['frames'] == result['methods']['aura']['writes']['cue_frames']
    # what the gate's target asks for by kind, here (--target-with) the counterfactual target
    # instead of the run's gradient utility: it has a margin share, the gradient one has none
    target = result['methods']['aura']['target_by_frame']
    assert set(gate) <= set(target) and target['cue']['frames'] == gate['cue']['frames']
    assert isinstance(target['other']['mean_utility'], float), target['other']
    assert 0 <= target['other']['ib_target_share'] <= 1
    assert 0 <= target['other']['budget_target_share']['0.01'] <= 1
    assert 'the target with {"utility": "counterfactual"}' in (tmp_path / 'heldout.md').read_text()
    assert gate['other']['frames'] > 0 and gate['other']['mean_p'] is not None
    assert result['methods']['aura']['after_go']['action_error'] > 0
