"""Non-finite guard: a step whose new state would hold NaN/Inf is discarded, bit for bit.

Forced two ways, with no mocks: a model whose value projection overflows float32 on every write
(both engines, the weights are in the checkpoint and the exported step), and the live torch
layer's value weights blown up in the middle of an episode, so the kept state is a non-zero one.
"""

import numpy as np
import pytest
import torch

from aura_ros.memory import AuraMemLayer, MemoryConfig
from aura_ros.runtime import (
    AuraRuntime,
    ImageSpec,
    InputError,
    ModelSpec,
    SmallCNN,
    save_model_dir,
)
from aura_ros.runtime.runtime import SURPRISE_OVERFLOW

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


@pytest.fixture(scope='module')
def huge_input_dirs(tmp_path_factory):
    """A features-in model, and camera models in delta mode with and without joint limits."""
    root = tmp_path_factory.mktemp('huge')
    torch.manual_seed(0)
    memory = MemoryConfig(d_model=16, d_key=4, d_val=4, d_action=2, chunk=2, head_hidden=16,
                          gate_init_bias=0.0)
    made = {}
    for name, cameras, limits in (('features', (), {}), ('limits', 'camera', {'j1': (-1, 1)}),
                                  ('no_limits', 'camera', {})):
        image = (ImageSpec(16, 12, (0.5,) * 3, (0.25,) * 3),) if cameras else ()
        spec = ModelSpec(name, image, ('j1', 'j2') if cameras else (), ('j1', 'j2'), 0.1,
                         memory, action_mode='delta' if cameras else 'absolute',
                         joint_limits=limits)
        save_model_dir(root / name, spec, SmallCNN(12, 16, 2, 16) if cameras else None,
                       AuraMemLayer(memory))
        made[name] = root / name
    return made


@pytest.mark.parametrize('engine', ENGINES)
@pytest.mark.parametrize('model', ['features', 'limits', 'no_limits'])
def test_finite_but_huge_inputs_are_refused_before_the_state(huge_input_dirs, model, engine):
    """Issue 23 row 1: features of 1e20, a joint of 1e25 gave NaN targets (counted as clipped)
    and p = nan. The step is now refused as nonfinite_step: no NaN out, the state untouched."""
    rt = AuraRuntime.from_model_dir(huge_input_dirs[model], device='cpu', engine=engine,
                                    threads=1, gate_threshold=0.0)
    image = np.full((12, 16, 3), 100, np.uint8)

    def step(huge):
        if model == 'features':
            return rt.step_features(np.linspace(-1e20, 1e20, 16) if huge else np.full(16, 0.5))
        return rt.step(image, 'rgb8', [1e25 if huge else 0.1, 0.2])

    def finite(result):
        return np.isfinite([result.gate.p, result.gate.surprise]).all() and all(
            np.isfinite(t).all() for t in result.targets.values())

    assert step(False).gate.wrote
    before = rt.state_dict()
    try:
        result = step(True)
    except InputError as err:
        assert err.reason == 'nonfinite_step'
        assert (rt.steps, rt.writes) == (1, 1)
        for key, value in rt.state_dict().items():
            assert np.array_equal(value, before[key]), key
    else:       # ONNX Runtime's LayerNorm does not overflow here: a finite step is fine
        assert engine == 'onnx' and finite(result)
    result = step(False)                                     # and the episode goes on
    assert finite(result) and result.gate.step == rt.steps


@pytest.mark.parametrize('engine', ENGINES)
def test_compute_leaves_the_state_until_commit(plain_dir, engine):
    rt = AuraRuntime.from_model_dir(plain_dir, device='cpu', engine=engine, threads=1,
                                    gate_threshold=0.0)
    image, joints = next(observations(1))
    rt.step(image, 'rgb8', joints)
    before = rt.state_dict()
    assert rt.memory.compute(1)[1]                           # the gate opened...
    for key, value in rt.state_dict().items():               # ...but nothing is committed
        assert np.array_equal(value, before[key]), key
    rt.memory.commit()
    assert not np.array_equal(rt.state_dict()['W'], before['W'])


def test_an_overflowing_surprise_is_reported_finite(overflow_dir):
    rt = AuraRuntime.from_model_dir(overflow_dir, device='cpu', threads=1, gate_threshold=0.0)
    image, joints = next(observations(1))
    gate = rt.step(image, 'rgb8', joints).gate
    assert gate.discarded and gate.surprise == SURPRISE_OVERFLOW and np.isfinite(gate.p)
