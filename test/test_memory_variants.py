"""Layer variants (MemoryConfig.write_rule, time_features, input_map, write_bias): each keeps
the layer's contract: step form = sequence form, a closed gate leaves the state bit-identical,
the state bytes are what memory_bytes says, and the defaults are the original layer (old
checkpoints load as-is)."""

import math

import pytest
import torch

from aura_ros.memory import (
    AlwaysWrite,
    AuraMemLayer,
    ConfigError,
    MemoryConfig,
    build_model,
    fit_input_map,
    load_checkpoint,
    save_checkpoint,
    state_bytes,
)

BASE = MemoryConfig(d_model=24, d_key=8, d_val=6, d_action=3, chunk=2, gate_init_bias=0.0)
VARIANTS = {'add': dict(write_rule='add'), 'time': dict(time_features=4),
            'time_period': dict(time_features=2, time_period=5),
            'time_add': dict(time_features=3, write_rule='add'),
            'whiten': dict(input_map='whiten'), 'no_bias': dict(write_bias=False),
            'center_no_bias_add': dict(input_map='center', write_bias=False, write_rule='add'),
            'decay': dict(write_decay=True),
            'whiten_no_bias_decay': dict(input_map='whiten', write_bias=False, write_decay=True)}


def correlated(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Features like a backbone's: a large offset shared by every frame, a strong shared
    direction, and a little noise."""
    gen = torch.Generator().manual_seed(seed)
    offset, common = 3.0 * torch.randn(d, generator=gen), torch.randn(d, generator=gen)
    return offset + torch.randn(n, 1, generator=gen) * common \
        + 0.3 * torch.randn(n, d, generator=gen)


def _layer(name: str, **changes) -> AuraMemLayer:
    torch.manual_seed(0)
    layer = AuraMemLayer(BASE.replace(**VARIANTS[name], **changes))
    gen = torch.Generator().manual_seed(9)          # a map that is not the identity
    mix = torch.eye(BASE.d_model) + 0.3 * torch.randn(BASE.d_model, BASE.d_model, generator=gen)
    fit_input_map(layer, [0.5 + torch.randn(300, BASE.d_model, generator=gen) @ mix])
    return layer


@torch.no_grad()
@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_step_form_equals_sequence_form(name):
    layer = _layer(name).eval()
    z = torch.randn(3, 40, BASE.d_model)
    seq = layer(z, t0=11)
    state, outs = layer.init_state(3), []
    for t in range(40):
        out = layer.step(z[:, t], state, 11 + t)
        state = out['state']
        outs.append(out)
    assert torch.equal(seq['g'], torch.stack([o['g'] for o in outs], 1))
    assert 0 < seq['g'].mean() < 1, 'the test needs writes and skips'
    for key in ('action', 'p', 'surprise'):
        torch.testing.assert_close(seq[key], torch.stack([o[key] for o in outs], 1),
                                   rtol=1e-5, atol=1e-5)
    for key in ('W', 'b'):
        torch.testing.assert_close(seq['state'][key], state[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_closed_gate_leaves_state_bit_identical(name):
    layer = _layer(name, gate_threshold=1.5)
    gen = torch.Generator().manual_seed(1)
    start = {'W': torch.randn(2, BASE.d_val, BASE.d_key, generator=gen),
             'b': torch.randn(2, BASE.d_val, generator=gen)}
    state = {k: v.clone() for k, v in start.items()}
    with torch.no_grad():
        for t in range(100):
            state = layer.step(torch.randn(2, BASE.d_model) * 5, state, t)['state']
    seq = layer(torch.randn(2, 60, BASE.d_model), {k: v.clone() for k, v in start.items()}, 3)
    for key in start:
        assert torch.equal(state[key], start[key])
        assert torch.equal(seq['state'][key], start[key])


@torch.no_grad()
@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_memory_bytes_are_the_state_bytes(name):
    layer = _layer(name, gate_threshold=-1.0)
    state = layer.init_state(2)
    for t in range(300):
        state = layer.step(torch.randn(2, BASE.d_model), state, t)['state']
    assert state_bytes(state) == layer.memory_bytes(2) == (8 * 6 + 6) * 2 * 4


@torch.no_grad()
def test_time_features_repeat_with_the_period_and_move_the_addresses():
    layer = _layer('time_period')
    z = torch.randn(1, BASE.d_model)
    key = [layer.project(z, t)['k'] for t in (0, 1, 5, 10_000_000)]
    torch.testing.assert_close(key[0], key[2])
    torch.testing.assert_close(key[0], key[3])           # 10^7 = 0 mod 5, exact
    assert not torch.allclose(key[0], key[1])
    enc = layer.time_encoding(torch.zeros(1, 4, BASE.d_model), 0)
    assert enc.shape == (4, 4)
    torch.testing.assert_close(enc[1], torch.tensor([math.sin(2 * math.pi / 5),
                                                     math.sin(4 * math.pi / 5),
                                                     math.cos(2 * math.pi / 5),
                                                     math.cos(4 * math.pi / 5)]))


@torch.no_grad()
def test_add_rule_accumulates_repeated_writes():
    """W += beta v k^T: the same input written n times reads back ~n times (counting), where
    the delta rule saturates at v."""
    reads = {}
    for rule in ('delta', 'add'):
        torch.manual_seed(0)
        layer = AuraMemLayer(BASE.replace(write_rule=rule, gate_threshold=-1.0))
        z = torch.randn(1, 1, BASE.d_model).expand(1, 12, BASE.d_model)
        reads[rule] = layer(z)['read'][0].norm(dim=-1)
    assert reads['add'][-1] > 5 * reads['add'][0]
    assert reads['delta'][-1] < 1.5 * reads['delta'][2]


def test_defaults_are_the_original_layer_and_old_checkpoints_load(tmp_path):
    config = MemoryConfig(d_model=16, d_key=4, d_val=4, d_action=2)
    assert (config.write_rule, config.time_features, config.time_period) == ('delta', 0, 0)
    assert (config.input_map, config.write_bias, config.write_decay) == ('none', True, False)
    torch.manual_seed(0)
    layer = AuraMemLayer(config)
    names = set(layer.state_dict())
    assert not any(n.startswith(('time_', 'input_', 'to_decay')) for n in names)
    save_checkpoint(layer, tmp_path / 'm.safetensors')
    loaded = load_checkpoint(tmp_path / 'm.safetensors')
    for name, tensor in layer.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    timed = AuraMemLayer(config.replace(time_features=2))
    save_checkpoint(timed, tmp_path / 't.safetensors')
    assert load_checkpoint(tmp_path / 't.safetensors').config.time_features == 2
    with pytest.raises(Exception, match='time_features'):
        load_checkpoint(tmp_path / 't.safetensors', AuraMemLayer(config))


@pytest.mark.parametrize('changes,field', [(dict(write_rule='erase'), 'write_rule'),
                                           (dict(time_features=-1), 'time_features'),
                                           (dict(time_period=1.5), 'time_period'),
                                           (dict(input_map='pca'), 'input_map'),
                                           (dict(write_bias=1), 'write_bias'),
                                           (dict(write_decay='yes'), 'write_decay')])
def test_bad_variant_values_are_named(changes, field):
    with pytest.raises(ConfigError, match=field):
        BASE.replace(**changes)



def _read_after_an_orthogonal_write(**changes) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """v1 written at k1, then v2 at an orthogonal k2 (beta 1): the read at k1, v1 and the
    projections of the second step."""
    k1, k2 = torch.eye(BASE.d_key)[:2]
    v1, v2 = torch.randn(2, BASE.d_val, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    layer = AuraMemLayer(BASE.replace(**changes), AlwaysWrite())
    proj = layer.project(torch.randn(1, BASE.d_model))
    state = layer.init_state(1)
    for k, v in ((k1, v1), (k2, v2)):
        step = dict(proj, k=k[None], q=k1[None], v=v[None], beta=torch.ones(1))
        state, read, *_ = layer.advance(state, step, 0)
    assert state_bytes(state) == (8 * 6 + 6) * 4
    return read[0], v1, proj


@torch.no_grad()
def test_without_bias_write_an_orthogonal_write_leaves_the_first_read_alone():
    """b is read with a constant 1 by every key: writing it moves every key's read (an
    orthogonal key's write overwrites about half of the first); with write_bias=False the
    first value reads back exactly after a write at an orthogonal key."""
    read, v1, _ = _read_after_an_orthogonal_write(write_bias=False)
    torch.testing.assert_close(read, v1)
    read, v1, _ = _read_after_an_orthogonal_write(write_bias=True)
    assert (read - v1).norm() > 0.3 * v1.norm()


@torch.no_grad()
def test_a_decaying_write_fades_what_an_orthogonal_key_leaves():
    """The delta rule erases only along the new key: a value stored under an orthogonal key (an
    old task's cue of another colour) reads back whole after the write. With `write_decay` the
    write keeps 1 - beta gamma of the state, so the old value fades by exactly that factor."""
    read, v1, proj = _read_after_an_orthogonal_write(write_bias=False, write_decay=True)
    gamma = float(proj['decay'][0])
    assert 0 < gamma < 1
    torch.testing.assert_close(read, (1 - gamma) * v1)     # the second write faded it


@torch.no_grad()
def test_whitening_spreads_the_keys_and_travels_in_the_checkpoint(tmp_path):
    """On features with a large shared direction the keys of a fresh layer are all alike; the
    whitening fitted on training features spreads them, and its map is saved and loaded with
    the model (no-memory too, so the floor sees the same input)."""
    z = correlated(400, BASE.d_model)
    cos = {}
    for kind in ('none', 'center', 'whiten'):
        torch.manual_seed(0)
        layer = AuraMemLayer(BASE.replace(input_map=kind))
        fit_input_map(layer, [z[:200], z[200:300]])
        k = layer.project(z[300:][None])['k'][0]
        cos[kind] = float((k @ k.T)[~torch.eye(len(k), dtype=torch.bool)].mean())
    assert cos['none'] > 0.8
    assert abs(cos['whiten']) < 0.2 and abs(cos['center']) < 0.5
    torch.testing.assert_close(layer.input_mean, z[:300].mean(0), rtol=1e-4, atol=1e-4)
    fit_input_map(layer, [z[:300]], ridge=0.0)      # without the ridge: exactly white
    white = (z[:300] - layer.input_mean) @ layer.input_map
    torch.testing.assert_close(white.T @ white / 299, torch.eye(BASE.d_model), rtol=0,
                               atol=1e-3)
    save_checkpoint(layer, tmp_path / 'w.safetensors')
    loaded = load_checkpoint(tmp_path / 'w.safetensors')
    assert torch.equal(loaded.input_map, layer.input_map)
    assert torch.equal(loaded(z[None])['action'], layer(z[None])['action'])
    floor = build_model('no_memory', layer.config)
    fit_input_map(floor, [z[:300]], ridge=0.0)
    assert torch.equal(floor.input_map, layer.input_map)
