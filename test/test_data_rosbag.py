"""rosbag2 sources: real bags in mcap and sqlite3 written with rosbags, read back and aligned.

The synthetic bags (aura_ros.data.synthetic) have a known command(t), joint states at 100 Hz and
uniform-grey frames whose level encodes the frame index, so every aligned number is checked.
"""

import numpy as np
import pytest

from aura_ros.data import DataConfig, load_demonstrations
from aura_ros.data.synthetic import (
    CUE_COLOURS,
    CUE_WINDOW_S,
    JOINT_NAMES,
    START_S,
    commanded,
    frame_level,
    write_bag,
    write_bags,
)

FPS = 30.0


def config(tmp_path, **kwargs) -> DataConfig:
    kwargs.setdefault('chunk', 8)
    kwargs.setdefault('action_period_s', 1 / FPS)
    kwargs.setdefault('image_size', (96, 96))     # the pixel checks below are at this size
    return DataConfig(cache_dir=str(tmp_path / 'cache'), **kwargs)


def expected(stamps: np.ndarray, cue: int, chunk: int, period: float, t0=START_S):
    """Joints = state at the latest 100 Hz sample at or before t; targets = command(t + ...)."""
    rel = np.rint((stamps - t0) * FPS) / FPS       # the true frame times (k / 30)
    joints = commanded(np.floor(rel * 100 + 1e-9) / 100, cue)
    actions = np.stack([commanded(rel + (i + 1) * period, cue) for i in range(chunk)], axis=1)
    return joints, actions


def check_episode(ep, cue, chunk=8, period=1 / FPS, frames=None, t0=START_S):
    joints, actions = expected(ep.stamps, cue, chunk, period, t0)
    np.testing.assert_allclose(ep.joints, joints, atol=2e-6)
    np.testing.assert_allclose(ep.actions, actions, atol=2e-6)
    k = np.rint((ep.stamps - t0) * FPS).astype(int)
    if frames is not None:
        assert k.tolist() == frames
    image = ep.images['image']
    np.testing.assert_array_equal(image[:, 0, 0, 0], [frame_level(i) for i in k])
    cue_rows = np.flatnonzero((k / FPS >= CUE_WINDOW_S[0]) & (k / FPS < CUE_WINDOW_S[1]))
    assert len(cue_rows) > 5
    centre = image[cue_rows, image.shape[1] // 2, image.shape[2] // 2]
    np.testing.assert_array_equal(centre, np.tile(CUE_COLOURS[cue], (len(cue_rows), 1)))


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
@pytest.mark.parametrize('command', ['trajectory', 'joint_state', 'float64'])
def test_bag_aligned_numbers_exact(tmp_path, storage, command):
    bag = write_bag(tmp_path / 'bag', storage, cue=1, command=command)
    extra = {'action_names': JOINT_NAMES} if command == 'float64' else {}
    if command == 'float64':
        extra['action_topic'] = '/arm_controller/commands'
    demos = load_demonstrations(bag, config(tmp_path, **extra), progress=False)
    assert demos.cameras == ('image',) and demos.image_size == (96, 96)
    assert demos.joint_names == JOINT_NAMES and demos.action_names == JOINT_NAMES
    assert demos.chunk == 8 and demos.action_period_s == pytest.approx(1 / FPS)
    assert len(demos.episodes) == 1
    ep = demos.episodes[0]
    # trajectories reach 0.5 s past the last one (3.0 s): every frame keeps its chunk; sampled
    # commands end at 3.0 s: frames after 3.0 - 8/30 s (k >= 83) have no recorded targets
    last = 90 if command == 'trajectory' else 82
    check_episode(ep, cue=1, frames=list(range(last + 1)))
    assert demos.report['frames_read'] == 91
    assert demos.report['dropped_after_last_command'] == 90 - last
    assert isinstance(ep.images['image'], np.memmap)


@pytest.mark.parametrize('command', ['trajectory', 'joint_state'])
def test_zero_header_stamps_use_receive_time(tmp_path, command):
    # stamps zero: frames, joints and trajectory starts fall back to the receive time
    bag = write_bag(tmp_path / 'bag', 'mcap', cue=2, command=command, header_stamps=False)
    demos = load_demonstrations(bag, config(tmp_path), progress=False)
    last = 90 if command == 'trajectory' else 82
    check_episode(demos.episodes[0], cue=2, frames=list(range(last + 1)))


def test_header_stamps_win_over_receive_time(tmp_path):
    # receive times are 5 ms (camera) and 2 ms (joints) late: with header stamps the frames sit
    # exactly on k / 30 and joint states on k / 100
    bag = write_bag(tmp_path / 'bag', 'mcap', cue=0, command='joint_state')
    demos = load_demonstrations(bag, config(tmp_path), progress=False)
    ep = demos.episodes[0]
    np.testing.assert_allclose(ep.stamps - START_S, np.arange(83) / FPS, atol=1e-6)


def test_default_period_is_the_median_frame_period(tmp_path):
    bag = write_bag(tmp_path / 'bag', 'mcap', command='trajectory')
    demos = load_demonstrations(bag, config(tmp_path, action_period_s=None), progress=False)
    assert demos.action_period_s == pytest.approx(1 / FPS, abs=1e-6)
    check_episode(demos.episodes[0], 0, period=demos.action_period_s)


def test_joints_looked_up_by_name_and_single_mcap_file(tmp_path):
    bag = write_bag(tmp_path / 'bag', 'mcap', cue=2, command='joint_state', shuffle_joints=True)
    demos = load_demonstrations(next(bag.glob('*.mcap')),
                                config(tmp_path, joint_names=JOINT_NAMES), progress=False)
    assert demos.joint_names == JOINT_NAMES
    check_episode(demos.episodes[0], cue=2)


def test_subset_of_joints_and_actions(tmp_path):
    bag = write_bag(tmp_path / 'bag', 'sqlite3', cue=0, command='trajectory')
    names = ('gripper', 'shoulder_pan')
    demos = load_demonstrations(next(bag.glob('*.db3')), config(tmp_path, joint_names=names),
                                progress=False)
    assert demos.joint_names == names and demos.action_names == names
    ep = demos.episodes[0]
    joints, actions = expected(ep.stamps, 0, 8, 1 / FPS)
    cols = [JOINT_NAMES.index(n) for n in names]
    np.testing.assert_allclose(ep.joints, joints[:, cols], atol=2e-6)
    np.testing.assert_allclose(ep.actions, actions[:, :, cols], atol=2e-6)


@pytest.mark.parametrize('encoding', ['bgr8', 'rgba8', 'bgra8', 'mono8'])
def test_image_encodings_become_rgb(tmp_path, encoding):
    bag = write_bag(tmp_path / 'bag', 'mcap', cue=0, encoding=encoding)
    demos = load_demonstrations(bag, config(tmp_path), progress=False)
    image = demos.episodes[0].images['image']
    k = np.rint((demos.episodes[0].stamps - START_S) * FPS).astype(int)
    np.testing.assert_array_equal(image[:, 0, 0], np.repeat([[frame_level(i)] for i in k], 3, 1))
    row = int(np.flatnonzero(k == 9)[0])            # a cue frame: a red square
    want = (255, 255, 255) if encoding == 'mono8' else CUE_COLOURS[0]
    assert tuple(image[row, 48, 48]) == want


@pytest.mark.parametrize('fmt', ['png', 'jpeg'])
def test_compressed_images(tmp_path, fmt):
    bag = write_bag(tmp_path / 'bag', 'mcap', cue=1, compressed=fmt)
    demos = load_demonstrations(bag, config(tmp_path), progress=False)
    ep = demos.episodes[0]
    k = np.rint((ep.stamps - START_S) * FPS).astype(int)
    corner = ep.images['image'][:, 0, 0, 0].astype(int)
    tolerance = 0 if fmt == 'png' else 3
    assert np.abs(corner - [frame_level(i) for i in k]).max() <= tolerance
    centre = ep.images['image'][np.flatnonzero(k == 9)[0], 48, 48].astype(int)
    assert np.abs(centre - CUE_COLOURS[1]).max() <= 3 * tolerance + (8 if tolerance else 0)


def test_two_cameras_matched_within_skew(tmp_path):
    bag = write_bag(tmp_path / 'bag', 'mcap', cue=0, wrist_topic='/wrist/image_raw')
    cfg = config(tmp_path, image_topics=('/camera/image_raw', '/wrist/image_raw'))
    demos = load_demonstrations(bag, cfg, progress=False)
    assert demos.cameras == ('camera', 'wrist')
    ep = demos.episodes[0]
    np.testing.assert_array_equal(ep.images['wrist'], 255 - np.asarray(ep.images['camera']))
    # the wrist camera runs 4 ms late: a skew below that matches nothing
    with pytest.raises(Exception, match='empty dataset'):
        load_demonstrations(bag, config(tmp_path, image_topics=cfg.image_topics,
                                        camera_skew_s=0.003), progress=False)


def test_gap_splits_episodes(tmp_path):
    bag = write_bag(tmp_path / 'bag', 'mcap', cue=0, command='trajectory', pause_s=(1.2, 1.6))
    demos = load_demonstrations(bag, config(tmp_path, episode_gap_s=0.2), progress=False)
    assert [ep.name for ep in demos.episodes] == ['bag#0', 'bag#1']
    first, second = demos.episodes
    assert len(first) == 36 and len(second) == 91 - 48
    for ep in demos.episodes:
        joints, actions = expected(ep.stamps, 0, 8, 1 / FPS)
        np.testing.assert_allclose(ep.actions, actions, atol=2e-6)
    whole = load_demonstrations(bag, config(tmp_path), progress=False)
    assert len(whole.episodes) == 1 and len(whole.episodes[0]) == 91 - 12


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_folder_of_bags_one_episode_each(tmp_path, storage):
    folder = write_bags(tmp_path / 'bags', cues=(2, 0, 1), storage=storage,
                        command='joint_state')
    demos = load_demonstrations(folder, config(tmp_path), progress=False)
    assert [ep.name for ep in demos.episodes] == ['episode_000', 'episode_001', 'episode_002']
    for i, (ep, cue) in enumerate(zip(demos.episodes, (2, 0, 1), strict=True)):
        check_episode(ep, cue, t0=START_S + 10 * i, frames=list(range(83)))
    assert demos.frames == 3 * 83
    assert storage in demos.source


def test_folder_of_loose_bag_files_both_storages(tmp_path):
    folder = tmp_path / 'loose'
    folder.mkdir()
    for i, storage in enumerate(('sqlite3', 'mcap')):
        bag = write_bag(tmp_path / f'b{i}', storage, cue=i, command='joint_state',
                        start_s=START_S + 10 * i)
        file = next(p for p in bag.iterdir() if p.suffix in ('.mcap', '.db3'))
        file.rename(folder / f'take_{i}{file.suffix}')
    demos = load_demonstrations(folder, config(tmp_path), progress=False)
    assert [ep.name for ep in demos.episodes] == ['take_0.db3', 'take_1.mcap']
    for i, ep in enumerate(demos.episodes):
        check_episode(ep, i, t0=START_S + 10 * i, frames=list(range(83)))
    assert 'mcap+sqlite3' in demos.source


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_hint_topics_mark_the_frames_worth_remembering(tmp_path, storage):
    """A String without a stamp lands on the first frame the bag received after it; a Header
    marker on the frame at its own stamp; hint_match keeps only the cue; hint_frames spreads."""
    write_bag(tmp_path / 'bag', storage, hints=True, seconds=2.5)
    first = int(np.ceil(CUE_WINDOW_S[0] * FPS - 1e-9))
    for topic, match in (('/task_events', '"event": "cue"'), ('/marker', 'cue')):
        demos = load_demonstrations(tmp_path / 'bag', config(
            tmp_path, hint_topic=topic, hint_match=match, hint_frames=3), progress=False)
        ep = demos.episodes[0]
        assert np.flatnonzero(ep.hints).tolist() == [first, first + 1, first + 2], topic
        assert demos.report['frames_hinted'] == 3
    every = load_demonstrations(tmp_path / 'bag', config(tmp_path, hint_topic='/task_events'),
                                progress=False).episodes[0]
    assert np.flatnonzero(every.hints).tolist() == [first, int(round(2.0 * FPS))]
    plain = load_demonstrations(tmp_path / 'bag', config(tmp_path), progress=False)
    assert plain.episodes[0].hints is None


def test_a_missing_hint_topic_is_named_with_the_bags_topics(tmp_path):
    from aura_ros.data import DataError

    write_bag(tmp_path / 'bag', hints=False, seconds=1.0)
    with pytest.raises(DataError, match=r'hint topic /task_events is not in the bag; it has: '
                                        r'.*/camera/image_raw \(sensor_msgs/msg/Image\)'):
        load_demonstrations(tmp_path / 'bag', config(tmp_path, hint_topic='/task_events'),
                            progress=False)


def test_each_camera_keeps_its_aspect_by_default(tmp_path):
    """A 96x128 camera and a 48x48 one: the model sees 96x128 and 48x48 (never enlarged), or
    what image_size says per camera."""
    bag = write_bag(tmp_path / 'bag', cue=0, seconds=0.5, image_size=(96, 128),
                    wrist_topic='/wrist/image_raw')
    topics = ('/camera/image_raw', '/wrist/image_raw')
    demos = load_demonstrations(bag, config(tmp_path, image_topics=topics, image_size=None,
                                            image_short_side=48), progress=False)
    assert {c: demos.size_of(c) for c in demos.cameras} == {'camera': (48, 64),
                                                             'wrist': (48, 64)}
    assert demos.episodes[0].images['wrist'].shape[1:] == (48, 64, 3)
    demos = load_demonstrations(bag, config(tmp_path, image_topics=topics, image_size={
        'wrist': [32, 32]}), progress=False)
    assert {c: demos.size_of(c) for c in demos.cameras} == {'camera': (96, 128),
                                                             'wrist': (32, 32)}


@pytest.mark.parametrize('gripper', ['trajectory', 'float64', 'joint_state'])
def test_several_command_topics_merge_on_the_camera_clock(tmp_path, gripper):
    """An arm's JointTrajectory with a gripper's JointTrajectory, Float64MultiArray or leader
    JointState: one action column each, as commanded, one group per topic; the joint states'
    extra joints are left out unless listed."""
    from aura_ros.data.synthetic import RIG_EXTRA_JOINTS, RIG_GROUPS, write_rig_bag

    bag = write_rig_bag(tmp_path / 'rig.mcap', cue=2, seconds=1.5, gripper=gripper)
    topics = {'trajectory': ['/arm_controller/joint_trajectory',
                             '/gripper_controller/joint_trajectory'],
              'float64': ['/arm_controller/joint_trajectory', '/gripper_controller/commands'],
              'joint_state': ['/arm_controller/joint_trajectory',
                              '/gripper_leader/joint_states']}[gripper]
    extra = {} if gripper == 'trajectory' else {'action_topic': topics}
    if gripper == 'float64':
        extra['action_names'] = JOINT_NAMES
    demos = load_demonstrations(bag, config(tmp_path, image_topics=('/front/image_raw',),
                                            extra_joints=('j_extra',), **extra), progress=False)
    assert demos.action_names == JOINT_NAMES
    assert demos.joint_names == (*JOINT_NAMES, 'j_extra') and 'base_yaw' in RIG_EXTRA_JOINTS
    group = 'gripper_leader' if gripper == 'joint_state' else 'gripper_controller'
    assert dict(demos.action_groups) == {'arm_controller': RIG_GROUPS['arm_controller'],
                                         group: ('gripper',)}
    ep = demos.episodes[0]
    t = ep.stamps - START_S
    want = np.stack([commanded(t + (i + 1) / FPS, 2) for i in range(8)], axis=1)
    np.testing.assert_allclose(ep.actions, want, atol=2e-6)
    np.testing.assert_allclose(ep.joints[:, -1], 0.3, atol=1e-6)     # j_extra, as listed
