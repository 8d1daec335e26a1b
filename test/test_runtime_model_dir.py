"""Model directory and SmallCNN: round trip, and every broken directory refused by name."""

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml

from aura_ros.memory import AuraMemLayer, MemoryConfig, save_checkpoint
from aura_ros.runtime import (
    ImageSpec,
    ModelDirError,
    ModelSpec,
    SmallCNN,
    load_model_dir,
    save_model_dir,
)
from aura_ros.runtime.init_model import init_model_dir
from aura_ros.runtime.model_dir import load_memory


def small_spec(**changes):
    memory = MemoryConfig(d_model=24, d_key=8, d_val=8, d_action=2, chunk=3, head_hidden=16)
    fields = dict(name='tiny', cameras=ImageSpec(width=20, height=12, mean=(0.4, 0.5, 0.6),
                                                 std=(0.2, 0.3, 0.4)),
                  joint_names=('shoulder', 'elbow', 'wrist'), action_names=('a1', 'a2'),
                  action_period_s=0.05, memory=memory)
    fields.update(changes)
    return ModelSpec(**fields)


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    spec = small_spec()
    backbone = SmallCNN(spec.image.height, spec.image.width, 3, spec.memory.d_model)
    layer = AuraMemLayer(spec.memory)
    out = tmp_path_factory.mktemp('model')
    save_model_dir(out, spec, backbone, layer, card='tiny test model')
    return out, spec, backbone, layer


def copy_dir(src, tmp_path):
    dst = tmp_path / 'copy'
    shutil.copytree(src, dst)
    return dst


def test_round_trip(model_dir):
    out, spec, backbone, layer = model_dir
    assert load_model_dir(out) == spec
    assert spec.chunk == 3
    assert (out / 'MODEL_CARD.md').read_text() == 'tiny test model\n'
    loaded = load_memory(out, spec)
    for name, tensor in layer.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_backbone_onnx_matches_torch_with_dynamic_batch(model_dir):
    out, spec, backbone, _ = model_dir
    session = ort.InferenceSession(str(out / 'backbone.onnx'), providers=['CPUExecutionProvider'])
    image, joints = torch.randn(5, 3, 12, 20), torch.randn(5, 3)
    (features,) = session.run(['features'], {'image': image.numpy(), 'joints': joints.numpy()})
    with torch.no_grad():
        expected = backbone.eval()(image, joints).numpy()
    assert features.shape == (5, 24)
    np.testing.assert_allclose(features, expected, atol=1e-5)


def test_small_cnn_is_small_and_sees_position():
    net = SmallCNN(64, 64, 2, 128)
    assert sum(p.numel() * p.element_size() for p in net.parameters()) < 500_000
    # The same blob at two places must give different features (soft-argmax keeps position).
    a, b = torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)
    a[..., 5:12, 5:12] = 3.0
    b[..., 50:57, 50:57] = 3.0
    with torch.no_grad():
        fa, fb = net(a, torch.zeros(1, 2)), net(b, torch.zeros(1, 2))
    assert fa.shape == (1, 128)
    assert not torch.allclose(fa, fb, atol=1e-4)


@pytest.mark.parametrize('change, message', [
    (dict(action_names=('a1',)), 'd_action'),
    (dict(joint_names=('a', 'a')), 'repeated: a'),
    (dict(joint_names=()), 'must not be empty'),
    (dict(action_period_s=0.0), 'action_period_s'),
    (dict(name=''), 'name'),
])
def test_spec_validated_on_creation(change, message):
    with pytest.raises(ModelDirError, match=message):
        small_spec(**change)


def test_image_spec_validated():
    with pytest.raises(ModelDirError, match='std'):
        ImageSpec(width=4, height=4, mean=(0, 0, 0), std=(1, 0, 1))
    with pytest.raises(ModelDirError, match='width'):
        ImageSpec(width=0, height=4, mean=(0, 0, 0), std=(1, 1, 1))


@pytest.mark.parametrize('missing', ['model.yaml', 'backbone.onnx', 'memory.safetensors'])
def test_missing_file_named(model_dir, tmp_path, missing):
    d = copy_dir(model_dir[0], tmp_path)
    (d / missing).unlink()
    with pytest.raises(ModelDirError, match=f'{missing}: missing'):
        load_model_dir(d)


def test_wrong_backbone_output_width_named(model_dir, tmp_path):
    out, spec, _, _ = model_dir
    d = copy_dir(out, tmp_path)
    wide = SmallCNN(spec.image.height, spec.image.width, 3, spec.memory.d_model + 1)
    from aura_ros.runtime.model_dir import export_backbone
    export_backbone(wide, spec, d / 'backbone.onnx')
    with pytest.raises(ModelDirError, match=r"backbone.onnx: 'features' has shape .*25.*d_model"):
        load_model_dir(d)


def test_wrong_backbone_input_size_named(model_dir, tmp_path):
    out, spec, _, _ = model_dir
    d = copy_dir(out, tmp_path)
    other = small_spec(cameras=ImageSpec(width=16, height=12, mean=(0, 0, 0), std=(1, 1, 1)))
    from aura_ros.runtime.model_dir import export_backbone
    export_backbone(SmallCNN(12, 16, 3, 24), other, d / 'backbone.onnx')
    with pytest.raises(ModelDirError, match=r"backbone.onnx: 'image' has shape"):
        load_model_dir(d)


def test_backbone_with_symbolic_output_width_is_run_to_check(model_dir, tmp_path):
    out, spec, _, _ = model_dir
    d = copy_dir(out, tmp_path)
    model = onnx.load(str(d / 'backbone.onnx'))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = 'width'   # hide the size
    onnx.save(model, str(d / 'backbone.onnx'))
    assert load_model_dir(d) == spec                                           # real width fits
    bad = small_spec(memory=spec.memory.replace(d_model=30))
    (d / 'model.yaml').write_text(yaml.safe_dump(bad.to_dict()))
    save_checkpoint(AuraMemLayer(bad.memory), d / 'memory.safetensors')
    with pytest.raises(ModelDirError, match=r"'features' has shape \[1, 24\], expected"):
        load_model_dir(d)


def test_checkpoint_config_differs_named(model_dir, tmp_path):
    out, spec, _, _ = model_dir
    d = copy_dir(out, tmp_path)
    save_checkpoint(AuraMemLayer(spec.memory.replace(d_key=4)), d / 'memory.safetensors')
    with pytest.raises(ModelDirError, match=r'memory.safetensors: config differs.*d_key'):
        load_model_dir(d)


def test_checkpoint_gate_threshold_may_differ(model_dir, tmp_path):
    out, spec, _, _ = model_dir
    d = copy_dir(out, tmp_path)
    save_checkpoint(AuraMemLayer(spec.memory.replace(gate_threshold=0.9)),
                    d / 'memory.safetensors')
    assert load_model_dir(d).memory.gate_threshold == spec.memory.gate_threshold


@pytest.mark.parametrize('edit, message', [
    (lambda y: y.update(format='other/1'), 'format'),
    (lambda y: y.pop('joint_names'), 'missing field.*joint_names'),
    (lambda y: y.update(colour='red'), 'unknown field.*colour'),
    (lambda y: y['memory'].update(d_action=3), 'action_names has 2 names'),
    (lambda y: y['cameras'][0].update(mean=[0.5, 0.5]), 'mean'),
])
def test_bad_yaml_named(model_dir, tmp_path, edit, message):
    d = copy_dir(model_dir[0], tmp_path)
    data = yaml.safe_load((d / 'model.yaml').read_text())
    edit(data)
    (d / 'model.yaml').write_text(yaml.safe_dump(data))
    with pytest.raises(ModelDirError, match=f'model.yaml: .*{message}'):
        load_model_dir(d)


def test_corrupt_onnx_named(model_dir, tmp_path):
    d = copy_dir(model_dir[0], tmp_path)
    (d / 'backbone.onnx').write_bytes(b'not a model')
    with pytest.raises(ModelDirError, match='backbone.onnx: not a readable ONNX'):
        load_model_dir(d)


def test_save_refuses_layer_that_is_not_the_spec(tmp_path):
    spec = small_spec()
    with pytest.raises(ModelDirError, match='d_val'):
        save_model_dir(tmp_path, spec, SmallCNN(12, 20, 3, 24),
                       AuraMemLayer(spec.memory.replace(d_val=4)))


def test_init_model_dir_loads(tmp_path):
    spec = init_model_dir(tmp_path / 'm', image_size=16, d_model=16, joints=('x', 'y', 'z'),
                          actions=('u',), chunk=2, memory=dict(head_hidden=8))
    assert load_model_dir(tmp_path / 'm') == spec
    assert spec.joint_names == ('x', 'y', 'z') and spec.chunk == 2


def test_init_model_and_export_commands(tmp_path, monkeypatch, capsys):
    from aura_ros.cli import main

    monkeypatch.setenv('AURA_ROS_CACHE', str(tmp_path / 'cache'))
    out = tmp_path / 'cli_model'
    assert main(['init-model', '--out', str(out), '--image-size', '16', '--d-model', '16',
                 '--joints', 'shoulder,elbow', '--actions', 'u,v,w', '--chunk', '2']) == 0
    spec = load_model_dir(out)
    assert spec.joint_names == ('shoulder', 'elbow') and spec.action_names == ('u', 'v', 'w')
    assert spec.image.height == spec.image.width == 16 and spec.chunk == 2
    assert main(['init-model', '--out', str(out)]) == 2          # refuses to overwrite
    assert 'not empty' in capsys.readouterr().out
    assert main(['export', '--model-dir', str(out)]) == 0
    assert (out / 'memory_step.onnx').is_file()
    assert main(['export', '--model-dir', str(tmp_path / 'nowhere')]) == 2
