"""AuraRuntime: bad input never touches the state, reset is exact, state round-trips."""

import numpy as np
import pytest
import torch
from torch import nn

from aura_ros.memory import AuraMemLayer, MemoryConfig
from aura_ros.runtime import (
    AuraRuntime,
    EpisodeSummary,
    ImageSpec,
    InputError,
    ModelSpec,
    save_model_dir,
)
from aura_ros.runtime.init_model import init_model_dir

ENGINES = ['torch', 'onnx']


pytestmark = pytest.mark.usefixtures('one_torch_thread', 'isolated_export_cache')


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp('model')
    init_model_dir(out, image_size=(12, 16), d_model=32, joints=('j1', 'j2'), chunk=2,
                   memory=dict(head_hidden=32))
    return out


class LogOfFirstJoint(nn.Module):
    """A real backbone that yields NaN features when joint 0 is negative (log of it)."""

    def __init__(self, d_model):
        super().__init__()
        self.proj = nn.Linear(1, d_model)

    def forward(self, image, joints):
        return self.proj(torch.log(joints[:, :1])) + image.mean(dim=(1, 2, 3))[:, None]


@pytest.fixture(scope='module')
def nan_model_dir(tmp_path_factory):
    memory = MemoryConfig(d_model=8, d_key=4, d_val=4, d_action=1, head_hidden=8)
    spec = ModelSpec('nan', ImageSpec(8, 8, (0.5,) * 3, (0.25,) * 3), ('j1', 'j2'), ('a',),
                     0.1, memory)
    out = tmp_path_factory.mktemp('nan_model')
    save_model_dir(out, spec, LogOfFirstJoint(8), AuraMemLayer(memory))
    return out


def observation(seed, shape=(30, 40, 3)):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, shape, dtype=np.uint8), rng.normal(size=2)


def run(rt, steps, seed=0):
    return [rt.step(*observation(seed + i)[:1], 'rgb8', observation(seed + i)[1])
            for i in range(steps)]


@pytest.fixture(params=ENGINES)
def runtime(request, model_dir):
    return AuraRuntime.from_model_dir(model_dir, device='cpu', engine=request.param, threads=1)


def test_attributes_and_result(runtime):
    assert runtime.device == 'cpu' and runtime.provider == 'CPUExecutionProvider'
    assert runtime.spec.joint_names == ('j1', 'j2')
    result = run(runtime, 1)[0]
    assert result.action.shape == (2, 2) and result.action.dtype == np.float32
    assert result.gate.step == 1 and result.gate.writes == int(result.gate.wrote)
    assert set(result.timings) == {'preprocess', 'backbone', 'memory', 'total'}
    assert all(v >= 0 for v in result.timings.values())
    assert result.timings['total'] >= result.timings['memory']


def test_counts_and_reset_is_exact(runtime, model_dir):
    results = run(runtime, 30)
    writes = sum(r.gate.wrote for r in results)
    assert writes > 0 and runtime.steps == 30 and runtime.writes == writes
    assert [r.gate.step for r in results] == list(range(1, 31))
    assert runtime.reset() == EpisodeSummary(steps=30, writes=writes)
    assert runtime.steps == runtime.writes == 0
    assert all(np.array_equal(v, np.zeros_like(v)) for v in runtime.state_dict().values())
    fresh = AuraRuntime.from_model_dir(model_dir, device='cpu', engine=runtime.engine, threads=1)
    image, joints = observation(99)
    a, b = runtime.step(image, 'rgb8', joints), fresh.step(image, 'rgb8', joints)
    assert np.array_equal(a.action, b.action) and a.gate == b.gate


BAD_INPUTS = [
    ('encoding', lambda img, j: (img, 'yuyv', j)),
    ('shape', lambda img, j: (img[:, :, :2], 'rgb8', j)),
    ('shape', lambda img, j: (img, 'rgba8', j)),
    ('empty', lambda img, j: (img[:0], 'rgb8', j)),
    ('dtype', lambda img, j: (img.astype(np.float32), 'rgb8', j)),
    ('joint_count', lambda img, j: (img, 'rgb8', j[:1])),
    ('joint_count', lambda img, j: (img, 'rgb8', np.append(j, 0.0))),
    ('joint_count', lambda img, j: (img, 'rgb8', 'elbow')),
    ('nonfinite_joints', lambda img, j: (img, 'rgb8', np.array([np.nan, 0.0]))),
    ('nonfinite_joints', lambda img, j: (img, 'rgb8', np.array([0.0, -np.inf]))),
    ('nonfinite_joints', lambda img, j: (img, 'rgb8', np.array([0.0, 1e300]))),  # inf in fp32
]


@pytest.mark.parametrize('reason, make', BAD_INPUTS)
def test_bad_input_leaves_state_bit_identical(runtime, reason, make):
    run(runtime, 5)
    before, counts = runtime.state_dict(), (runtime.steps, runtime.writes)
    assert not np.all(before['W'] == 0)
    with pytest.raises(InputError) as info:
        runtime.step(*make(*observation(7)))
    assert info.value.reason == reason
    after = runtime.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert (runtime.steps, runtime.writes) == counts
    # and the runtime carries on exactly as if nothing had happened
    twin = AuraRuntime.from_model_dir(runtime.model_dir, device='cpu', engine=runtime.engine,
                                      threads=1)
    twin.load_state(before)
    image, joints = observation(8)
    assert np.array_equal(runtime.step(image, 'rgb8', joints).action,
                          twin.step(image, 'rgb8', joints).action)


@pytest.mark.parametrize('engine', ENGINES)
def test_nonfinite_features_refused_before_the_memory(nan_model_dir, engine):
    rt = AuraRuntime.from_model_dir(nan_model_dir, device='cpu', engine=engine, threads=1)
    image = np.full((8, 8, 3), 128, np.uint8)
    for _ in range(3):
        rt.step(image, 'rgb8', [2.0, 0.0])
    before = rt.state_dict()
    with pytest.raises(InputError) as info:
        rt.step(image, 'rgb8', [-1.0, 0.0])            # finite joints, NaN features
    assert info.value.reason == 'nonfinite_features'
    assert all(np.array_equal(before[k], v) for k, v in rt.state_dict().items())
    assert rt.steps == 3


def test_state_round_trip(runtime):
    run(runtime, 10)
    saved = runtime.state_dict()
    later = [r.action for r in run(runtime, 5, seed=50)]
    runtime.load_state(saved)
    again = [r.action for r in run(runtime, 5, seed=50)]
    assert all(np.array_equal(a, b) for a, b in zip(later, again, strict=True))


@pytest.mark.parametrize('bad', [
    {'W': np.zeros((1, 32, 32), np.float32)},
    {'W': np.zeros((1, 32, 32), np.float32), 'b': np.zeros((1, 31), np.float32)},
    {'W': np.zeros((1, 32, 32), np.float64), 'b': np.zeros((1, 32), np.float32)},
    {'W': np.full((1, 32, 32), np.nan, np.float32), 'b': np.zeros((1, 32), np.float32)},
])
def test_load_state_refuses_bad_state(runtime, bad):
    run(runtime, 3)
    before = runtime.state_dict()
    with pytest.raises(InputError) as info:
        runtime.load_state(bad)
    assert info.value.reason == 'state'
    assert all(np.array_equal(before[k], v) for k, v in runtime.state_dict().items())


def test_threshold_one_never_writes_zero_always_writes(runtime):
    runtime.set_gate_threshold(1.0)
    assert not any(r.gate.wrote for r in run(runtime, 10))
    assert all(np.array_equal(v, np.zeros_like(v)) for v in runtime.state_dict().values())
    runtime.set_gate_threshold(0.0)
    assert all(r.gate.wrote for r in run(runtime, 10))
    assert runtime.gate_threshold == 0.0
    for bad in (1.5, -0.1, float('nan'), 'high'):
        with pytest.raises(ValueError, match='threshold'):
            runtime.set_gate_threshold(bad)


def test_gate_threshold_override(model_dir):
    rt = AuraRuntime.from_model_dir(model_dir, device='cpu', gate_threshold=1.0, threads=1)
    assert rt.gate_threshold == 1.0 and not any(r.gate.wrote for r in run(rt, 5))


def test_bad_options_refused(model_dir):
    with pytest.raises(ValueError, match='engine'):
        AuraRuntime.from_model_dir(model_dir, device='cpu', engine='tensorrt')
    with pytest.raises(ValueError, match='device'):
        AuraRuntime.from_model_dir(model_dir, device='tpu')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='no CUDA'):
            AuraRuntime.from_model_dir(model_dir, device='cuda')
        with pytest.raises(ValueError, match='cuda_graph'):
            AuraRuntime.from_model_dir(model_dir, device='cpu', cuda_graph=True)
