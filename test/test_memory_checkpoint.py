"""Configs validate by field; checkpoints round-trip exactly and refuse what does not fit."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from aura_ros.memory import (
    AuraMemLayer,
    CheckpointError,
    ConfigError,
    MemoryConfig,
    build_model,
    load_checkpoint,
    save_checkpoint,
)

CONFIG = MemoryConfig(d_model=20, d_key=8, d_val=6, d_action=3, chunk=2)


@pytest.mark.parametrize('field,value', [('d_key', 0), ('d_model', -3), ('chunk', 1.5),
                                         ('gate_threshold', float('nan')), ('d_val', True)])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        CONFIG.replace(**{field: value})


def test_unknown_config_field_is_refused():
    with pytest.raises(ConfigError, match='d_keys'):
        MemoryConfig.from_dict({'d_keys': 4})


@pytest.mark.parametrize('suffix', ['.yaml', '.json'])
def test_config_round_trip(tmp_path, suffix):
    path = tmp_path / f'memory{suffix}'
    CONFIG.save(path)
    assert MemoryConfig.load(path) == CONFIG


def test_checkpoint_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = AuraMemLayer(CONFIG)
    path = tmp_path / 'memory.safetensors'
    save_checkpoint(model, path)
    loaded = load_checkpoint(path)
    assert type(loaded) is AuraMemLayer and loaded.config == CONFIG
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    z = torch.randn(1, 10, CONFIG.d_model)
    with torch.no_grad():
        assert torch.equal(model(z)['action'], loaded(z)['action'])


def test_checkpoint_saved_with_the_retired_ib_horizon_still_loads(tmp_path):
    """Checkpoints written before the counterfactual forward was removed carry `ib_horizon`
    in their config: they load, the field dropped, the weights and outputs unchanged."""
    from safetensors import safe_open

    torch.manual_seed(0)
    model = AuraMemLayer(CONFIG)
    path = tmp_path / 'old.safetensors'
    save_checkpoint(model, path)
    with safe_open(str(path), 'pt') as f:
        meta = f.metadata()
    old = {**json.loads(meta['config']), 'ib_horizon': 4}
    save_file(load_file(path), str(path), metadata={**meta, 'config': json.dumps(old)})
    loaded = load_checkpoint(path)
    assert loaded.config == CONFIG and 'ib_horizon' not in loaded.config.to_dict()
    z = torch.randn(1, 10, CONFIG.d_model)
    with torch.no_grad():
        assert torch.equal(model(z)['action'], loaded(z)['action'])
    assert MemoryConfig.from_dict({**CONFIG.to_dict(), 'ib_horizon': 4}) == CONFIG


@pytest.mark.parametrize('method', ['gru', 'kv_cache', 'no_memory', 'always_write'])
def test_baselines_round_trip(tmp_path, method):
    model = build_model(method, CONFIG)
    save_checkpoint(model, tmp_path / 'm.safetensors')
    loaded = load_checkpoint(tmp_path / 'm.safetensors')
    assert type(loaded) is type(model)


def _tamper(path, change):
    tensors = load_file(str(path))
    from safetensors import safe_open
    with safe_open(str(path), framework='pt') as f:
        meta = f.metadata()
    change(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


def test_wrong_shape_is_named(tmp_path):
    path = tmp_path / 'm.safetensors'
    save_checkpoint(AuraMemLayer(CONFIG), path)
    _tamper(path, lambda t, m: t.__setitem__('to_k.weight', torch.zeros(9, 20)))
    with pytest.raises(CheckpointError, match=r"'to_k.weight' has shape \(9, 20\), expected"):
        load_checkpoint(path)


def test_missing_tensor_is_named(tmp_path):
    path = tmp_path / 'm.safetensors'
    save_checkpoint(AuraMemLayer(CONFIG), path)
    _tamper(path, lambda t, m: t.pop('head_out.bias'))
    with pytest.raises(CheckpointError, match="missing tensor 'head_out.bias'"):
        load_checkpoint(path)


def test_different_config_is_named(tmp_path):
    path = tmp_path / 'm.safetensors'
    save_checkpoint(AuraMemLayer(CONFIG), path)
    other = AuraMemLayer(CONFIG.replace(d_action=4))
    with pytest.raises(CheckpointError, match='d_action: checkpoint 3, expected 4'):
        load_checkpoint(path, other)


def test_gate_threshold_is_a_run_time_setting(tmp_path):
    path = tmp_path / 'm.safetensors'
    save_checkpoint(AuraMemLayer(CONFIG), path)
    load_checkpoint(path, AuraMemLayer(CONFIG.replace(gate_threshold=0.8)))


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    junk = tmp_path / 'junk.safetensors'
    junk.write_bytes(b'\x00' * 64)
    with pytest.raises(CheckpointError, match='not a readable safetensors'):
        load_checkpoint(junk)
    foreign = tmp_path / 'foreign.safetensors'
    save_file({'w': torch.zeros(2)}, str(foreign), metadata={'format': 'other'})
    with pytest.raises(CheckpointError, match='format'):
        load_checkpoint(foreign)
    broken = tmp_path / 'broken.safetensors'
    save_file({'w': torch.zeros(2)}, str(broken),
              metadata={'format': 'aura_ros.memory/1', 'config': json.dumps({'d_key': 0})})
    with pytest.raises(CheckpointError, match='d_key'):
        load_checkpoint(broken)
