"""DataConfig: defaults, derived camera names, and a named error for every bad field."""

import pytest
import yaml

from aura_ros.data import DataConfig, DataConfigError, DataError
from aura_ros.data.config import camera_names_from_topics


def test_defaults():
    c = DataConfig()
    assert c.image_topics == ('/camera/image_raw',) and c.camera_names == ('image',)
    assert c.joints_topic == '/joint_states' and c.action_topic is None
    assert c.image_size is None and c.image_short_side == 96    # each camera's own aspect
    assert c.size_for('image', (480, 640)) == (96, 128)
    assert c.size_for('image', (64, 64)) == (64, 64)
    assert c.chunk == 8 and c.action_period_s is None
    assert c.joint_tolerance_s == 0.1 and c.camera_skew_s == 0.05 and c.episode_gap_s is None
    assert isinstance(DataConfigError('x'), DataError)


@pytest.mark.parametrize('topics, names', [
    (('/camera/image_raw',), ('image',)),
    (('/front/image_raw', '/wrist/image_raw/compressed'), ('front', 'wrist')),
    (('/camera/image_raw', '/wrist/image_raw'), ('camera', 'wrist')),
    (('/left/cam/image_raw', '/right/cam/image_raw'), ('left_cam', 'right_cam')),
    (('/3d/image', '/Joints/image'), ('cam_3d', 'camera')),
    (('observation.images.front', 'observation.images.top'), ('front', 'top')),
])
def test_camera_names_from_topics(topics, names):
    assert camera_names_from_topics(topics) == names
    assert DataConfig(image_topics=topics).camera_names == names


@pytest.mark.parametrize('kwargs, message', [
    ({'image_topics': ()}, 'image_topics must be non-empty strings'),
    ({'image_topics': '/camera/image_raw'}, 'image_topics must be a list of names'),
    ({'image_topics': ('/a', '/a')}, 'image_topics must be unique; repeated: /a'),
    ({'camera_names': ('a',), 'image_topics': ('/a', '/b')}, 'camera_names has 1 names for 2'),
    ({'camera_names': ('Front',)}, r'camera_names must match .*bad: Front'),
    ({'camera_names': ('joints',)}, 'bad: joints'),
    ({'joints_topic': ''}, 'joints_topic must be a topic name'),
    ({'action_topic': '/joint_states'}, 'action_topic must differ from joints_topic'),
    ({'joint_names': ('a', 'a')}, 'joint_names must be unique'),
    ({'action_names': []}, 'action_names must be non-empty strings'),
    ({'image_size': (96,)}, 'image_size must be \\(height, width\\)'),
    ({'image_size': (96, 0)}, 'image_size must be'),
    ({'image_size': {'rear': [8, 8]}}, 'image_size names camera.s. rear; the cameras are image'),
    ({'image_short_side': 4}, 'image_short_side must be an integer >= 8'),
    ({'chunk': 0}, 'chunk must be a positive integer'),
    ({'chunk': True}, 'chunk must be a positive integer'),
    ({'action_period_s': 0}, 'action_period_s must be a positive number'),
    ({'action_period_s': float('nan')}, 'action_period_s must be a positive number'),
    ({'joint_tolerance_s': -1}, 'joint_tolerance_s must be a non-negative number'),
    ({'camera_skew_s': 'x'}, 'camera_skew_s must be a non-negative number'),
    ({'episode_gap_s': 0}, 'episode_gap_s must be a positive number'),
    ({'cache_dir': ''}, 'cache_dir must be a path'),
    ({'hint_topic': ' '}, 'hint_topic must be a topic name'),
    ({'hint_match': '(cue'}, 'hint_match must be a regular expression'),
    ({'hint_frames': 0}, 'hint_frames must be a positive integer'),
])
def test_bad_fields_are_named(kwargs, message):
    with pytest.raises(DataConfigError, match=message):
        DataConfig(**kwargs)


def test_from_yaml_mapping():
    text = """
image_topics: [/front/image_raw, /wrist/image_raw]
action_topic: /leader/joint_states
joint_names: [shoulder_pan, gripper]
image_size: [64, 80]
chunk: 4
episode_gap_s: 1.5
"""
    c = DataConfig.from_dict(yaml.safe_load(text))
    assert c.camera_names == ('front', 'wrist') and c.image_size == (64, 80)
    assert c.joint_names == ('shoulder_pan', 'gripper') and c.chunk == 4
    assert DataConfig.from_dict(c.to_dict()) == c
    assert 'cache_dir' not in c.cache_fields()
    assert DataConfig.from_dict(None) == DataConfig()


def test_from_dict_names_unknown_keys_and_where():
    with pytest.raises(DataConfigError, match=r'train.yaml: unknown key\(s\): fps, topics; known'):
        DataConfig.from_dict({'topics': 1, 'fps': 2, 'chunk': 3}, where='train.yaml')
    with pytest.raises(DataConfigError, match='train.yaml: DataConfig.chunk must be'):
        DataConfig.from_dict({'chunk': -1}, where='train.yaml')
    with pytest.raises(DataConfigError, match='expected a mapping, got list'):
        DataConfig.from_dict([1])
