"""Model format 2: cameras, statistics, action modes, output groups, limits, features in.

Checked through real files, real ONNX Runtime sessions and the real memory layer.
"""

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from aura_ros.memory import AuraMemLayer, MemoryConfig
from aura_ros.runtime import (
    ActionContract,
    AuraRuntime,
    ImageSpec,
    InputError,
    ModelDirError,
    ModelSpec,
    OutputGroup,
    SmallCNN,
    Stats,
    load_model_dir,
    save_model_dir,
)

JOINTS = ('pan', 'lift', 'elbow', 'gripper')


def spec_of(**changes) -> ModelSpec:
    memory = MemoryConfig(d_model=16, d_key=4, d_val=4, d_action=4, chunk=3, head_hidden=8)
    fields = dict(name='fmt', cameras=ImageSpec(width=8, height=6), joint_names=JOINTS,
                  action_names=JOINTS, action_period_s=0.1, memory=memory)
    fields.update(changes)
    return ModelSpec(**fields)


ARM_GRIPPER = (OutputGroup('arm', ('pan', 'lift', 'elbow')),
               OutputGroup('gripper', ('gripper',), mode='absolute'))


def test_format_1_reads_as_one_camera_and_delta_actions():
    v1 = {'format': 'aura_ros.model/1', 'name': 'old',
          'image': {'width': 8, 'height': 6, 'mean': [0.5] * 3, 'std': [0.25] * 3},
          'joint_names': list(JOINTS), 'action_names': list(JOINTS), 'action_period_s': 0.1,
          'memory': spec_of().memory.to_dict()}
    spec = ModelSpec.from_dict(v1)
    assert spec.action_mode == 'delta' and spec.image.name == 'image'
    assert spec.groups == (OutputGroup('action_chunk', JOINTS, 'delta'),)
    again = ModelSpec.from_dict(spec.to_dict())
    assert again == spec and spec.to_dict()['format'] == 'aura_ros.model/2'


def test_round_trip_of_every_field():
    spec = spec_of(joint_stats=Stats((0.0, 1.0, 2.0, 3.0), (1.0, 1.0, 2.0, 0.5)),
                   action_stats=Stats((0.1,) * 4, (2.0,) * 4), action_mode='delta',
                   output_groups=ARM_GRIPPER, joint_limits={'gripper': (0.0, 1.5)})
    assert ModelSpec.from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict()))) == spec
    assert [g.mode for g in spec.groups] == ['delta', 'absolute']


@pytest.mark.parametrize('changes, message', [
    (dict(output_groups=(OutputGroup('arm', ('pan', 'lift')),)), 'elbow, gripper are in no'),
    (dict(output_groups=(OutputGroup('a', ('pan',)), OutputGroup('b', ('pan', 'lift', 'elbow',
                                                                       'gripper')))),
     "'pan' is in output groups 'a' and 'b'"),
    (dict(output_groups=(OutputGroup('arm', ('pan', 'wrist')),)), "names 'wrist'"),
    (dict(output_groups=(OutputGroup('Arm', JOINTS),)), r'output_groups\[0\].name'),
    (dict(output_groups=(OutputGroup('arm', JOINTS, mode='velocity'),)), 'mode must be'),
    (dict(action_mode='relative'), 'action_mode must be'),
    (dict(joint_limits={'wrist': (0, 1)}), "joint_limits names 'wrist'"),
    (dict(joint_limits={'pan': (1, -1)}), 'lower < upper'),
    (dict(joint_stats=Stats((0.0,), (1.0,))), 'joint_stats.mean must be a list of 4'),
    (dict(action_stats=Stats((0.0,) * 4, (1.0, 1.0, 0.0, 1.0))), 'action_stats.std'),
    (dict(cameras=(ImageSpec(8, 6, name='a'), ImageSpec(8, 6, name='a'))), 'repeated: a'),
    (dict(joint_names=('pan', 'lift', 'elbow'), action_mode='delta'), 'gripper not in joint'),
])
def test_inconsistent_spec_names_the_field(changes, message):
    with pytest.raises(ModelDirError, match=message):
        spec_of(**changes)


def test_camera_named_like_the_joints_input_refused():
    with pytest.raises(ModelDirError, match="must not be 'joints'"):
        ImageSpec(8, 6, name='joints')


def test_yaml_errors_name_the_file_and_field(tmp_path):
    data = spec_of(output_groups=ARM_GRIPPER).to_dict()
    data['output_groups'][1]['colour'] = 'red'
    (tmp_path / 'model.yaml').write_text(yaml.safe_dump(data))
    (tmp_path / 'memory.safetensors').write_bytes(b'')
    with pytest.raises(ModelDirError, match=r'yaml: unknown output_groups\[1\] field.*colour'):
        load_model_dir(tmp_path)


def test_contract_integrates_deltas_denormalises_and_clips():
    spec = spec_of(action_stats=Stats((0.0, 0.0, 0.0, 1.0), (0.5, 0.5, 0.5, 2.0)),
                   action_mode='delta', output_groups=ARM_GRIPPER,
                   joint_limits={'elbow': (-1.0, 0.35), 'gripper': (0.0, 2.0)})
    contract = ActionContract(spec)
    out = np.array([[0.2, -0.2, 0.2, 0.0], [0.2, -0.2, 0.2, 0.6], [0.2, -0.2, 0.2, -1.0]],
                   np.float32)
    action = contract.denormalise(out)
    np.testing.assert_allclose(action[:, 0], [0.1, 0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(action[:, 3], [1.0, 2.2, -1.0], rtol=1e-6)
    q = np.array([1.0, 2.0, 0.2, 0.5], np.float32)
    targets, clipped = contract.targets(action, q)
    np.testing.assert_allclose(targets['arm'][:, 0], [1.1, 1.2, 1.3], rtol=1e-6)
    np.testing.assert_allclose(targets['arm'][:, 1], [1.9, 1.8, 1.7], rtol=1e-6)
    np.testing.assert_allclose(targets['arm'][:, 2], [0.3, 0.35, 0.35], rtol=1e-6)  # clipped x2
    np.testing.assert_allclose(targets['gripper'][:, 0], [1.0, 2.0, 0.0], rtol=1e-6)  # x2
    assert clipped == 4


class TwoCameraBackbone(nn.Module):
    """Features from two cameras and the joints; mean pixel values make the test readable."""

    def __init__(self, d_model: int, n_joints: int):
        super().__init__()
        self.front = SmallCNN(6, 8, n_joints, d_model)
        self.mix = nn.Linear(d_model + 3, d_model)

    def forward(self, front, wrist, joints):
        return self.mix(torch.cat([self.front(front, joints), wrist.mean(dim=(2, 3))], dim=-1))


@pytest.fixture(scope='module')
def two_camera_dir(tmp_path_factory):
    torch.manual_seed(1)
    spec = spec_of(cameras=(ImageSpec(8, 6, name='front'), ImageSpec(5, 4, name='wrist')),
                   joint_stats=Stats((1.0, 1.0, 1.0, 1.0), (2.0, 2.0, 2.0, 2.0)))
    out = tmp_path_factory.mktemp('two_cameras')
    save_model_dir(out, spec, TwoCameraBackbone(16, 4), AuraMemLayer(spec.memory))
    return out, spec


def frames(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {'front': (rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), 'rgb8'),
            'wrist': (rng.integers(0, 255, (8, 10, 3), dtype=np.uint8), 'rgb8')}


def test_two_cameras_step_and_normalise_joints(two_camera_dir):
    out, spec = two_camera_dir
    assert load_model_dir(out) == spec
    import onnx
    names = [i.name for i in onnx.load(str(out / 'backbone.onnx')).graph.input]
    assert names == ['front', 'wrist', 'joints']
    rt = AuraRuntime.from_model_dir(out, device='cpu')
    result = rt.step_frames(frames(0), [3.0, 1.0, -1.0, 5.0])
    assert result.action.shape == (3, 4) and set(result.targets) == {'action_chunk'}
    np.testing.assert_array_equal(rt._joints[0], [1.0, 0.0, -1.0, 2.0])   # (q - 1) / 2
    before = rt.state_dict()
    with pytest.raises(InputError, match=r"one frame from each camera \['front', 'wrist'\]"):
        rt.step_frames({'front': frames(1)['front']}, [0.0] * 4)
    with pytest.raises(InputError, match='2 cameras'):
        rt.step(*frames(1)['front'], [0.0] * 4)
    after = rt.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before) and rt.steps == 1


def test_features_in_model(tmp_path):
    torch.manual_seed(2)
    spec = spec_of(cameras=(), joint_names=(), action_mode='absolute',
                   joint_limits={'pan': (-0.01, 0.01)})
    save_model_dir(tmp_path, spec, None, AuraMemLayer(spec.memory))
    assert not (tmp_path / 'backbone.onnx').exists() and load_model_dir(tmp_path).features_in
    rt = AuraRuntime.from_model_dir(tmp_path, device='cpu')
    z = np.linspace(-1, 1, 16).astype(np.float32)
    result = rt.step_features(z)
    assert result.targets['action_chunk'].shape == (3, 4)
    assert np.all(np.abs(result.targets['action_chunk'][:, 0]) <= 0.01)
    for bad, reason in ((np.zeros(15, np.float32), 'expected 16 features'),
                        (np.full(16, np.nan, np.float32), 'NaN')):
        with pytest.raises(InputError, match=reason):
            rt.step_features(bad)
    assert rt.steps == 1
    (tmp_path / 'backbone.onnx').write_bytes(b'x')
    with pytest.raises(ModelDirError, match='declares no cameras'):
        load_model_dir(tmp_path)


def test_bundled_model_is_format_2_absolute():
    """models/so101 was trained on the leader arm's absolute joint commands (the retired planar
    model, migrated from format 1, predicted deltas)."""
    from pathlib import Path

    bundled = Path(__file__).parents[1] / 'models' / 'so101'
    assert yaml.safe_load((bundled / 'model.yaml').read_text())['format'] == 'aura_ros.model/2'
    spec = load_model_dir(bundled)
    assert spec.action_mode == 'absolute' and spec.groups[0].mode == 'absolute'
    assert spec.action_names == spec.joint_names   # absolute targets for the arm's own joints


def test_format_1_with_actions_that_are_not_joints_says_how_to_migrate():
    v1 = {'format': 'aura_ros.model/1', 'name': 'old',
          'image': {'width': 8, 'height': 6, 'mean': [0.5] * 3, 'std': [0.25] * 3},
          'joint_names': ['j1', 'j2'], 'action_names': ['a1', 'a2'], 'action_period_s': 0.1,
          'memory': spec_of().memory.replace(d_action=2).to_dict()}
    with pytest.raises(ModelDirError, match=r'a1, a2 are not joint names.*action_mode: absolute'):
        ModelSpec.from_dict(v1)
