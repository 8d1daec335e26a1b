"""Non-finite guard: a step whose new state would hold NaN/Inf is discarded, bit for bit.

Forced two ways, with no mocks: a model whose value projection overflows float32 on every write
(both engines, the weights are in the checkpoint and the exported step), and the live torch
layer's value weights blown up in the middle of an episode, so the kept state is a non-zero one.
"""

import numpy as np
import pytest
import torch

from aura_ros.memory import AuraMemLayer, MemoryConfig
from aura_ros.runtime import AuraRuntime, ImageSpec, ModelSpec, SmallCNN, save_model_dir

ENGINES = ['torch', 'onnx']


pytestmark = pytest.mark.usefixtures('one_torch_thread', 'isolated_export_cache')


def blow_up(layer: AuraMemLayer) -> None:
    """Finite weights whose write overflows float32 for any input, and nothing else does.

    The norm's bias pins x[0] near 1000, so v = W_v x = +inf in every component (a single
    dominant term: no inf - inf), surprise = +inf (p stays finite), and W - beta e k and
    b - beta e become infinite. Keys, the gate, the head and the read stay finite.
    """
    with torch.no_grad():
        layer.norm.bias[0] = 1e3
        layer.to_v.weight[:, 0] = 1e36


def make_model(out, overflow: bool):
    torch.manual_seed(0)
    memory = MemoryConfig(d_model=16, d_key=4, d_val=4, d_action=2, chunk=2, head_hidden=16,
                          gate_init_bias=0.0)
    spec = ModelSpec('overflow' if overflow else 'plain',
                     ImageSpec(16, 12, (0.5,) * 3, (0.25,) * 3), ('j1', 'j2'), ('a1', 'a2'),
                     0.1, memory)
    layer = AuraMemLayer(memory)
    if overflow:
        blow_up(layer)
    save_model_dir(out, spec, SmallCNN(12, 16, 2, 16), layer)
    return out


@pytest.fixture(scope='module')
def overflow_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp('overflow'), overflow=True)


@pytest.fixture(scope='module')
def plain_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp('plain'), overflow=False)


def observations(n, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), rng.normal(size=2)


@pytest.mark.parametrize('engine', ENGINES)
def test_overflowing_writes_are_discarded_and_the_episode_goes_on(overflow_dir, engine):
    rt = AuraRuntime.from_model_dir(overflow_dir, device='cpu', engine=engine, threads=1,
                                    gate_threshold=0.0)          # p > 0: the gate always opens
    before = rt.state_dict()
    for i, (image, joints) in enumerate(observations(5), start=1):
        result = rt.step(image, 'rgb8', joints)
        assert result.gate.discarded and not result.gate.wrote
        assert result.gate.step == i and result.gate.writes == 0
        assert np.isfinite(result.action).all()     # the action of a skip, not NaN
        for key, value in rt.state_dict().items():
            assert np.array_equal(value, before[key]), key
    assert rt.discarded == 5 and rt.writes == 0
    assert rt.reset().steps == 5 and rt.discarded == 0


@pytest.mark.parametrize('engine', ENGINES)
def test_a_discarded_step_acts_like_a_skip(overflow_dir, engine):
    """The action on a discarded step equals the one a closed gate gives for that input."""
    guarded = AuraRuntime.from_model_dir(overflow_dir, device='cpu', engine=engine, threads=1,
                                         gate_threshold=0.0)
    closed = AuraRuntime.from_model_dir(overflow_dir, device='cpu', engine=engine, threads=1,
                                        gate_threshold=1.0)      # p > 1 never: always skips
    for image, joints in observations(3, seed=1):
        a, b = guarded.step(image, 'rgb8', joints), closed.step(image, 'rgb8', joints)
        assert a.gate.discarded and not b.gate.discarded and not b.gate.wrote
        np.testing.assert_array_equal(a.action, b.action)
        assert a.gate.p == b.gate.p


def test_the_last_good_state_is_kept_bit_for_bit_mid_episode(plain_dir):
    rt = AuraRuntime.from_model_dir(plain_dir, device='cpu', engine='torch', threads=1,
                                    gate_threshold=0.0)
    obs = list(observations(8, seed=2))
    for image, joints in obs[:4]:
        assert rt.step(image, 'rgb8', joints).gate.wrote
    good = rt.state_dict()
    assert np.abs(good['W']).sum() > 0
    layer = rt.memory.layer
    saved = {k: v.clone() for k, v in layer.state_dict().items()}
    blow_up(layer)                                               # the update now overflows
    for image, joints in obs[4:6]:
        result = rt.step(image, 'rgb8', joints)
        assert result.gate.discarded and not result.gate.wrote
        assert np.isfinite(result.action).all()
        for key, value in rt.state_dict().items():
            assert np.array_equal(value, good[key]), key
    layer.load_state_dict(saved)
    result = rt.step(obs[6][0], 'rgb8', obs[6][1])
    assert result.gate.wrote and not result.gate.discarded    # writes resume on the kept state
    assert (rt.steps, rt.writes, rt.discarded) == (7, 5, 2)
    assert not np.array_equal(rt.state_dict()['W'], good['W'])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('engine,graph', [('torch', False), ('torch', True), ('onnx', False)])
def test_the_guard_on_cuda_with_and_without_a_cuda_graph(overflow_dir, engine, graph):
    rt = AuraRuntime.from_model_dir(overflow_dir, device='cuda', engine=engine,
                                    gate_threshold=0.0, **({'cuda_graph': True} if graph else {}))
    before = rt.state_dict()
    for image, joints in observations(3, seed=3):
        result = rt.step(image, 'rgb8', joints)
        assert result.gate.discarded and np.isfinite(result.action).all()
    for key, value in rt.state_dict().items():
        assert np.array_equal(value, before[key]), key
    assert rt.discarded == 3
