"""record-demos pusher: the Pusher world recorded through ROS as a two-camera rig's bag, which
the trainer's data reader loads with no topic named."""

import json

import numpy as np
import pytest

pytest.importorskip('gymnasium')
pytest.importorskip('aura_ros.tasks.pusher')
pytest.importorskip('rclpy')


def test_a_short_recording_is_a_rig_bag_the_data_reader_loads(tmp_path):
    from rosbags.highlevel import AnyReader

    from aura_ros.data import DataConfig, load_demonstrations
    from aura_ros.ros.pusher.record import TOPICS, record
    from aura_ros.tasks.pusher import JOINT_NAMES

    out = tmp_path / 'bags' / 'run_0'
    summary = record(out, tasks=2, seed=4, delay=(5, 8), log=None)
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
    demos = load_demonstrations(tmp_path / 'bags', DataConfig(cache_dir=str(tmp_path / 'cache')),
                                progress=False)
    assert demos.cameras == ('front', 'wrist')
    assert demos.camera_transports == ('raw', 'compressed')
    assert demos.joint_names == demos.action_names == JOINT_NAMES
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
