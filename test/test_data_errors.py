"""Every way a source can be wrong gives a DataError that names the problem (real bags/videos)."""

import numpy as np
import pytest

from aura_ros.data import DataConfig, DataError, load_demonstrations
from aura_ros.data.synthetic import (
    JOINT_NAMES,
    BagBuilder,
    write_bag,
    write_lerobot_dataset,
)

T0 = 1_700_000_000 * 10**9
MS = 1_000_000


def cfg(tmp_path, **kwargs):
    return DataConfig(cache_dir=str(tmp_path / 'cache'), **kwargs)


def load(path, tmp_path, **kwargs):
    return load_demonstrations(path, cfg(tmp_path, **kwargs), progress=False)


def small_bag(path, frames=((0, (8, 8)),), joints_at=(0,), commands_at=(0, 2000),
              storage='mcap'):
    """frames: (ms, (h, w)); joints and leader commands at the given ms offsets."""
    with BagBuilder(path, storage) as bag:
        for ms, (h, w) in frames:
            bag.image('/camera/image_raw', T0 + ms * MS, T0 + ms * MS,
                      np.zeros((h, w, 3), np.uint8))
        for ms in joints_at:
            bag.joint_state('/joint_states', T0 + ms * MS, T0 + ms * MS, JOINT_NAMES,
                            np.zeros(6))
        for ms in commands_at:
            bag.joint_state('/leader/joint_states', T0 + ms * MS, T0 + ms * MS, JOINT_NAMES,
                            np.zeros(6))
    return path


def test_topic_not_in_bag_lists_topics_with_types(tmp_path):
    bag = write_bag(tmp_path / 'bag')
    with pytest.raises(DataError) as err:
        load(bag, tmp_path, image_topics=('/front/image_raw',))
    message = str(err.value)
    assert 'camera topic /front/image_raw is not in the bag' in message
    assert '/camera/image_raw (sensor_msgs/msg/Image)' in message
    assert '/joint_states (sensor_msgs/msg/JointState)' in message
    with pytest.raises(DataError, match='joints topic /robot/joint_states is not in the bag'):
        load(bag, tmp_path, joints_topic='/robot/joint_states')


def test_wrong_type_topic_as_camera(tmp_path):
    bag = write_bag(tmp_path / 'bag')
    with pytest.raises(DataError, match='camera topic /joint_states has type '
                                        'sensor_msgs/msg/JointState'):
        load(bag, tmp_path, image_topics=('/joint_states',))


def test_no_time_overlap(tmp_path):
    bag = small_bag(tmp_path / 'bag', frames=[(ms, (8, 8)) for ms in range(0, 1000, 100)],
                    joints_at=[500_000], commands_at=[0, 2000])
    with pytest.raises(DataError, match='joint states .* do not overlap in time'):
        load(bag, tmp_path, action_period_s=0.1)
    bag = small_bag(tmp_path / 'bag2', frames=[(ms, (8, 8)) for ms in range(0, 1000, 100)],
                    joints_at=[0], commands_at=[90_000, 91_000])
    with pytest.raises(DataError, match='commands .*leader.* do not overlap in time'):
        load(bag, tmp_path, action_period_s=0.1)


def test_missing_joint_names_named_with_those_present(tmp_path):
    bag = write_bag(tmp_path / 'bag', command='joint_state')
    with pytest.raises(DataError) as err:
        load(bag, tmp_path, joint_names=('shoulder_pan', 'elbow', 'wrist'))
    assert '/joint_states has no joint(s) named elbow, wrist' in str(err.value)
    assert 'its messages name: ' + ', '.join(JOINT_NAMES) in str(err.value)
    # an extra joint in the joint states that the trajectory does not command is not an error:
    # the default joints and actions are the commanded ones
    bag = write_bag(tmp_path / 'shuffled', command='trajectory', shuffle_joints=True)
    demos = load(bag, tmp_path)
    assert 'base_yaw' not in demos.joint_names and set(demos.action_names) == set(JOINT_NAMES)


def test_mixed_image_sizes(tmp_path):
    bag = small_bag(tmp_path / 'bag', frames=[(0, (8, 8)), (100, (8, 8)), (200, (6, 8))])
    with pytest.raises(DataError, match=r'mixed image sizes: 8x8 then 8x6'):
        load(bag, tmp_path)


def test_empty_dataset_after_alignment(tmp_path):
    # joint state only at 0 (fresh for frames 0 and 100 ms), commands end at 450 ms: every frame
    # is stale or its chunk ends after the last command
    bag = small_bag(tmp_path / 'bag', frames=[(ms, (8, 8)) for ms in range(0, 500, 100)],
                    joints_at=[0], commands_at=[0, 450])
    with pytest.raises(DataError, match=r'empty dataset.*5 frames read; dropped '
                                        r'stale_joints: 3, after_last_command: 2'):
        load(bag, tmp_path, action_period_s=0.1, chunk=8)
    assert not list((tmp_path / 'cache').glob('*')), 'a failed build must leave nothing'


def test_not_a_source(tmp_path):
    with pytest.raises(DataError, match='not a rosbag2 bag'):
        load(tmp_path, tmp_path)
    with pytest.raises(DataError, match='no such file'):
        load(tmp_path / 'missing', tmp_path)


def test_unsupported_image_encoding(tmp_path):
    bag = write_bag(tmp_path / 'bag', encoding='16UC1')
    with pytest.raises(DataError, match="unsupported image encoding '16UC1'; supported: rgb8"):
        load(bag, tmp_path)


def test_unsupported_compressed_format(tmp_path):
    with BagBuilder(tmp_path / 'bag') as bag:
        msg = bag.types['sensor_msgs/msg/CompressedImage'](
            header=bag._header(T0), format='tiff', data=np.zeros(4, np.uint8))
        bag.write('/camera/image_raw', msg, T0)
        bag.joint_state('/joint_states', T0, T0, JOINT_NAMES, np.zeros(6))
        bag.joint_state('/leader/joint_states', T0, T0, JOINT_NAMES, np.zeros(6))
    with pytest.raises(DataError, match="unsupported compressed image format 'tiff'"):
        load(tmp_path / 'bag', tmp_path)


def test_float64_commands_need_action_names(tmp_path):
    bag = write_bag(tmp_path / 'bag', command='float64')
    with pytest.raises(DataError, match='Float64MultiArray, which carries no joint names; set '
                                        'action_names'):
        load(bag, tmp_path, action_topic='/arm_controller/commands')
    with pytest.raises(DataError, match='has 6 values, action_names has 2'):
        load(bag, tmp_path, action_topic='/arm_controller/commands',
             action_names=('a', 'b'))


def test_command_topic_ambiguous_or_missing(tmp_path):
    with BagBuilder(tmp_path / 'bag') as bag:
        bag.image('/camera/image_raw', T0, T0, np.zeros((4, 4, 3), np.uint8))
        for topic in ('/joint_states', '/leader_a/joint_states', '/leader_b/joint_states'):
            bag.joint_state(topic, T0, T0, JOINT_NAMES, np.zeros(6))
    with pytest.raises(DataError, match='several sensor_msgs/msg/JointState topics could be the '
                                        'commands: /leader_a/joint_states, '
                                        '/leader_b/joint_states; set action_topic'):
        load(tmp_path / 'bag', tmp_path)
    bag = small_bag(tmp_path / 'nocmd', commands_at=())
    with pytest.raises(DataError, match='no command topic'):
        load(bag, tmp_path)


def test_unsupported_video_codec(tmp_path):
    root = write_lerobot_dataset(tmp_path / 'ds', cues=(0,), seconds=0.5, codec='mpeg4')
    with pytest.raises(DataError, match="unsupported video codec 'mpeg4'; supported: av1, h264"):
        load(root, tmp_path)


def test_lerobot_missing_names_and_cameras(tmp_path):
    root = write_lerobot_dataset(tmp_path / 'ds', cues=(0,), seconds=0.5)
    with pytest.raises(DataError, match='observation.state has no column.* named elbow; its '
                                        'names: shoulder_pan'):
        load(root, tmp_path, joint_names=('elbow',))
    with pytest.raises(DataError, match='camera feature.* observation.images.top not in the '
                                        'dataset; its camera features: '
                                        'observation.images.front'):
        load(root, tmp_path, image_topics=('observation.images.top',))
