"""LeRobot v3.0 datasets: the exact layout lerobot writes, H.264 and AV1 video, image features."""

import json

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from aura_ros.data import DataConfig, load_demonstrations
from aura_ros.data.synthetic import (
    CUE_COLOURS,
    JOINT_NAMES,
    commanded,
    frame_level,
    write_lerobot_dataset,
)

FPS = 30
HAS_AV1_ENCODER = 'libsvtav1' in av.codecs_available


def load(root, tmp_path, **kwargs):
    kwargs.setdefault('chunk', 8)
    return load_demonstrations(root, DataConfig(cache_dir=str(tmp_path / 'cache'), **kwargs),
                               progress=False)


def test_layout_matches_lerobot_v3(tmp_path):
    root = write_lerobot_dataset(tmp_path / 'ds', cues=(0, 1), seconds=1.0,
                                 cameras=('front', 'wrist'))
    files = sorted(str(p.relative_to(root)) for p in root.rglob('*') if p.is_file())
    assert files == ['data/chunk-000/file-000.parquet', 'meta/episodes/chunk-000/file-000.parquet',
                     'meta/info.json', 'meta/stats.json', 'meta/tasks.parquet',
                     'videos/observation.images.front/chunk-000/file-000.mp4',
                     'videos/observation.images.wrist/chunk-000/file-000.mp4']
    info = json.loads((root / 'meta/info.json').read_text())
    assert info['codebase_version'] == 'v3.0' and info['fps'] == FPS
    assert info['data_path'] == 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
    assert info['video_path'] == \
        'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4'
    assert info['features']['action']['names'] == list(JOINT_NAMES)
    assert info['features']['observation.images.front']['info']['video.codec'] == 'h264'
    data = pq.read_table(root / 'data/chunk-000/file-000.parquet')
    assert set(data.column_names) == {'observation.state', 'action', 'timestamp', 'frame_index',
                                      'episode_index', 'index', 'task_index'}
    episodes = pq.read_table(root / 'meta/episodes/chunk-000/file-000.parquet').to_pylist()
    assert [e['dataset_from_index'] for e in episodes] == [0, 31]
    assert episodes[1]['videos/observation.images.front/from_timestamp'] == pytest.approx(31 / 30)
    assert episodes[1]['videos/observation.images.front/to_timestamp'] == pytest.approx(62 / 30)
    assert {'tasks', 'length', 'data/chunk_index', 'data/file_index', 'meta/episodes/chunk_index',
            'stats/action/mean'} <= set(episodes[0])
    tasks = pq.read_table(root / 'meta/tasks.parquet')
    assert json.loads(tasks.schema.metadata[b'pandas'])['index_columns'] == ['task']
    stats = json.loads((root / 'meta/stats.json').read_text())
    assert np.array(stats['observation.images.front']['mean']).shape == (3, 1, 1)


def check(demos, cues, seconds, chunk=8, pixel_tolerance=0, second_camera=None):
    n = int(round(seconds * FPS)) + 1
    keep = n - chunk      # the last `chunk` frames' targets run past the last action
    assert [len(ep) for ep in demos.episodes] == [keep] * len(cues)
    assert demos.report['dropped_after_last_command'] == chunk * len(cues)
    assert demos.joint_names == JOINT_NAMES and demos.action_names == JOINT_NAMES
    assert demos.action_period_s == pytest.approx(1 / FPS)
    for ep, cue in zip(demos.episodes, cues, strict=True):
        t = np.arange(keep) / FPS
        np.testing.assert_allclose(ep.stamps, t)
        np.testing.assert_allclose(ep.joints, commanded(t, cue), atol=1e-6)
        want = np.stack([commanded(t + (i + 1) / FPS, cue) for i in range(chunk)], axis=1)
        np.testing.assert_allclose(ep.actions, want, atol=1e-6)
        first = ep.images[demos.cameras[0]]
        levels = np.array([frame_level(k) for k in range(keep)])
        assert np.abs(first[:, 0, 0, 0].astype(int) - levels).max() <= pixel_tolerance
        centre = first[9, first.shape[1] // 2, first.shape[2] // 2].astype(int)
        assert np.abs(centre - CUE_COLOURS[cue]).max() <= 4 * pixel_tolerance
        if second_camera:
            other = ep.images[second_camera][:, 0, 0, 0].astype(int)
            assert np.abs(other - (255 - levels)).max() <= pixel_tolerance


def test_h264_video_dataset(tmp_path):
    root = write_lerobot_dataset(tmp_path / 'ds', cues=(0, 2, 1), seconds=1.5)
    demos = load(root, tmp_path)
    assert demos.cameras == ('image',) and 'LeRobot v3.0' in demos.source
    check(demos, (0, 2, 1), 1.5, pixel_tolerance=3)


@pytest.mark.skipif(not HAS_AV1_ENCODER, reason='PyAV here has no libsvtav1 encoder')
def test_av1_video_dataset(tmp_path):
    root = write_lerobot_dataset(tmp_path / 'ds', cues=(1, 0), seconds=1.0, codec='av1')
    with av.open(str(root / 'videos/observation.images.front/chunk-000/file-000.mp4')) as c:
        assert c.streams.video[0].codec_context.name in ('libdav1d', 'av1', 'libaom-av1')
    check(load(root, tmp_path), (1, 0), 1.0, pixel_tolerance=6)


def test_image_features_are_exact(tmp_path):
    root = write_lerobot_dataset(tmp_path / 'ds', cues=(2,), seconds=1.0, video=False)
    check(load(root, tmp_path), (2,), 1.0, pixel_tolerance=0)


def test_two_cameras_named_by_key_and_selected(tmp_path):
    root = write_lerobot_dataset(tmp_path / 'ds', cues=(0, 1), seconds=1.0,
                                 cameras=('front', 'wrist'), video=False)
    demos = load(root, tmp_path)
    assert demos.cameras == ('front', 'wrist')
    check(demos, (0, 1), 1.0, second_camera='wrist')
    only = load(root, tmp_path, image_topics=('observation.images.wrist',), chunk=2)
    assert only.cameras == ('image',)
    assert only.episodes[0].images['image'][0, 0, 0, 0] == 255


def test_column_subset_and_period(tmp_path):
    root = write_lerobot_dataset(tmp_path / 'ds', cues=(0,), seconds=1.0, video=False)
    demos = load(root, tmp_path, joint_names=('gripper', 'shoulder_pan'),
                 action_names=('shoulder_pan',), action_period_s=0.05, chunk=3)
    ep = demos.episodes[0]
    assert demos.joint_names == ('gripper', 'shoulder_pan')
    t = ep.stamps
    np.testing.assert_allclose(ep.joints, commanded(t, 0)[:, [5, 0]], atol=1e-6)
    want = np.stack([commanded(t + (i + 1) * 0.05, 0)[:, [0]] for i in range(3)], axis=1)
    np.testing.assert_allclose(ep.actions, want, atol=1e-6)
    assert ep.stamps[-1] + 3 * 0.05 <= 1.0 + 1e-9 < ep.stamps[-1] + 1 / FPS + 3 * 0.05


@pytest.mark.parametrize('video', [True, False])
def test_v21_layout(tmp_path, video):
    root = write_lerobot_dataset(tmp_path / 'ds', cues=(1, 2), seconds=1.0, version='v2.1',
                                 video=video)
    assert (root / 'meta/episodes.jsonl').is_file()
    if video:
        assert (root / 'videos/chunk-000/observation.images.front/episode_000001.mp4').is_file()
    demos = load(root, tmp_path)
    assert 'LeRobot v2.1' in demos.source
    check(demos, (1, 2), 1.0, pixel_tolerance=3 if video else 0)
