"""Memory engines: the exported ONNX step and the torch step agree over long runs, on real
ONNX Runtime sessions; the state is allocated once, never grows, and keeps its addresses."""

import numpy as np
import onnx
import onnxruntime as ort
import psutil
import pytest
import torch

from aura_ros.memory import LearnedGate, fit_input_map, save_checkpoint
from aura_ros.runtime import AuraRuntime
from aura_ros.runtime.export import INPUTS, OUTPUTS, MemoryStep, memory_step_path
from aura_ros.runtime.init_model import init_model_dir
from aura_ros.runtime.model_dir import MEMORY_FILE, load_memory, load_model_dir

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason='needs a CUDA GPU; none on this machine')


pytestmark = pytest.mark.usefixtures('one_torch_thread', 'isolated_export_cache')


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    """Small model; gate bias 0 puts p near 0.5 so that thresholds near it mix writes and skips."""
    out = tmp_path_factory.mktemp('model')
    init_model_dir(out, image_size=16, d_model=32, joints=('j1', 'j2', 'j3'), chunk=3,
                   memory=dict(head_hidden=32, gate_init_bias=0.0))
    return out


def observations(n, seed, n_joints=3):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield (rng.integers(0, 256, (12, 20, 3), dtype=np.uint8),
               rng.normal(size=n_joints).astype(np.float32))


def test_exported_step_has_gate_as_arithmetic(model_dir, tmp_path):
    spec = load_model_dir(model_dir)
    layer = load_memory(model_dir, spec)
    path = memory_step_path(model_dir, layer)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == list(INPUTS)
    assert [o.name for o in graph.output] == list(OUTPUTS)
    ops = {node.op_type for node in graph.node}
    assert not ops & {'If', 'Loop'} and {'Greater', 'Where'} <= ops
    # The threshold is an input, not a constant: the same state and z, two thresholds.
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    c = spec.memory
    feed = {'z': np.random.default_rng(0).normal(size=(1, c.d_model)).astype(np.float32),
            'W': np.zeros((1, c.d_val, c.d_key), np.float32),
            'b': np.zeros((1, c.d_val), np.float32)}
    p = session.run(['p'], {**feed, 'threshold': np.array([0.5], np.float32)})[0][0]
    for threshold, wrote in ((p - 0.01, True), (p + 0.01, False)):
        out = dict(zip(OUTPUTS, session.run(None, {
            **feed, 'threshold': np.array([threshold], np.float32)}), strict=True))
        assert bool(out['g'][0]) is wrote
        assert bool(np.any(out['W_new'] != 0)) is wrote     # a skip leaves W exactly as it was
        with torch.no_grad():
            want = MemoryStep(layer)(*(torch.from_numpy(feed[k]) for k in ('z', 'W', 'b')),
                                     torch.tensor([threshold], dtype=torch.float32))
        np.testing.assert_allclose(out['action'], want[0].numpy(), atol=1e-5)


def test_export_cache_follows_the_checkpoint(model_dir, tmp_path):
    import shutil

    from aura_ros.cli import main
    from aura_ros.memory import AuraMemLayer, save_checkpoint

    d = tmp_path / 'model'
    shutil.copytree(model_dir, d)
    assert main(['export', '--model-dir', str(d)]) == 0
    spec = load_model_dir(d)
    assert memory_step_path(d, load_memory(d, spec)) == d / 'memory_step.onnx'
    torch.manual_seed(1)                              # retrain: the exported step is now stale
    save_checkpoint(AuraMemLayer(spec.memory), d / 'memory.safetensors')
    fresh = memory_step_path(d, load_memory(d, spec))
    assert fresh != d / 'memory_step.onnx' and fresh.parent == tmp_path / 'cache'
    rt = AuraRuntime.from_model_dir(d, device='cpu', engine='onnx', threads=1)
    assert rt.memory.path == fresh


def run_pair(model_dir, steps, seed, probe_threshold=None):
    """Torch and ONNX runtimes fed the same observations; per-step records of both."""
    rts = [AuraRuntime.from_model_dir(model_dir, device='cpu', engine=e, threads=1)
           for e in ('torch', 'onnx')]
    if probe_threshold is not None:
        rts[0].set_gate_threshold(probe_threshold)
    probe = [rts[0].step(img, 'rgb8', j).gate.p for img, j in observations(100, seed + 1)]
    rts[0].reset()
    threshold = float(np.median(probe))         # writes and skips both common
    for rt in rts:
        rt.set_gate_threshold(threshold)
    records = []
    for i, (img, joints) in enumerate(observations(steps, seed)):
        if i == steps // 2:                     # a run-time threshold change, same for both
            for rt in rts:
                rt.set_gate_threshold(threshold + 0.01)
        records.append([rt.step(img, 'rgb8', joints) for rt in rts])
    return rts, records


def test_torch_and_onnx_engines_agree_step_by_step(model_dir):
    rts, records = run_pair(model_dir, 1200, seed=0)
    wrote = np.array([[r.gate.wrote for r in pair] for pair in records])
    assert np.array_equal(wrote[:, 0], wrote[:, 1]), \
        f'gates differ first at step {np.flatnonzero(wrote[:, 0] != wrote[:, 1])[0]}'
    rate = wrote[:, 0].mean()
    assert 0.1 < rate < 0.9, f'write rate {rate}: the test needs both writes and skips'
    actions = np.array([[r.action for r in pair] for pair in records])
    assert np.abs(actions[:, 0] - actions[:, 1]).max() < 1e-4
    p = np.array([[r.gate.p for r in pair] for pair in records])
    assert np.abs(p[:, 0] - p[:, 1]).max() < 1e-5
    assert [r.gate.writes for r in records[-1]] == [int(wrote[:, 0].sum())] * 2
    a, b = (rt.state_dict() for rt in rts)
    assert not np.all(a['W'] == 0)
    np.testing.assert_allclose(a['W'], b['W'], atol=1e-4)
    np.testing.assert_allclose(a['b'], b['b'], atol=1e-4)


@pytest.mark.parametrize('engine', ['torch', 'onnx'])
def test_state_allocated_once_and_rss_flat(model_dir, engine):
    rt = AuraRuntime.from_model_dir(model_dir, device='cpu', engine=engine, threads=1)
    spec = rt.spec
    assert rt.memory_bytes() == spec.memory.memory_bytes(1) == (32 * 32 + 32) * 4
    assert sum(v.nbytes for v in rt.state_dict().values()) == rt.memory_bytes()
    buffers = rt.memory.buffers if engine == 'onnx' else [rt.memory.state]
    pointers = [t.data_ptr() for b in buffers for t in b.values()]
    image, joints = next(observations(1, 3))
    for _ in range(2000):                                 # warm up allocators and caches
        rt.step(image, 'rgb8', joints)
    process = psutil.Process()
    before = process.memory_info().rss
    for img, j in observations(10_000, 4):
        rt.step(img, 'rgb8', j)
    grown = process.memory_info().rss - before
    # Allocator arenas move in ~1 MiB chunks now and then; a leak of even one state copy
    # (4 KiB) per step would be 40 MiB here.
    assert grown < 4 * 2**20, f'RSS grew by {grown / 2**20:.1f} MiB over 10^4 steps'
    assert [t.data_ptr() for b in buffers for t in b.values()] == pointers
    assert rt.memory_bytes() == spec.memory.memory_bytes(1)
    assert rt.steps == 12_000


@NEEDS_CUDA
def test_cuda_graph_matches_eager(model_dir):
    eager = AuraRuntime.from_model_dir(model_dir, device='cuda', engine='torch')
    graph = AuraRuntime.from_model_dir(model_dir, device='cuda', engine='torch', cuda_graph=True)
    assert graph.memory.graph is not None and graph.memory.state['W'].is_cuda
    for img, joints in observations(1000, 5):
        a, b = eager.step(img, 'rgb8', joints), graph.step(img, 'rgb8', joints)
        assert a.gate.wrote == b.gate.wrote
        np.testing.assert_allclose(a.action, b.action, atol=1e-5)


@NEEDS_CUDA
def test_onnx_engine_binds_device_memory(model_dir):
    rt = AuraRuntime.from_model_dir(model_dir, device='cuda', engine='onnx')
    assert rt.memory.provider == 'CUDAExecutionProvider' and not rt.memory.staged
    assert rt.backbone.features.is_cuda and rt.memory.features is rt.backbone.features
    pointers = [t.data_ptr() for b in rt.memory.buffers for t in b.values()]
    for img, joints in observations(10, 6):
        rt.step(img, 'rgb8', joints)
    assert [t.data_ptr() for b in rt.memory.buffers for t in b.values()] == pointers
    assert all(t.is_cuda for b in rt.memory.buffers for t in b.values())


VARIANTS = {'time': dict(time_features=4), 'add': dict(write_rule='add'),
            'time_add': dict(time_features=3, time_period=7, write_rule='add'),
            'whiten_no_bias': dict(input_map='whiten', write_bias=False),
            'whiten_no_bias_decay': dict(input_map='whiten', write_bias=False, write_decay=True)}


@pytest.fixture(scope='module', params=sorted(VARIANTS))
def variant_dir(request, tmp_path_factory):
    """A model directory per layer variant (the same small model otherwise)."""
    out = tmp_path_factory.mktemp(f'variant_{request.param}')
    init_model_dir(out, image_size=16, d_model=32, joints=('j1', 'j2', 'j3'), chunk=3,
                   memory=dict(head_hidden=32, gate_init_bias=0.0, **VARIANTS[request.param]))
    spec = load_model_dir(out)
    layer = load_memory(out, spec)
    if spec.memory.input_map != 'none':      # a fitted map, not the identity, must be exported
        gen = torch.Generator().manual_seed(4)
        z = torch.randn(500, spec.memory.d_model, generator=gen)
        fit_input_map(layer, [0.2 + 0.5 * z @ torch.randn(len(z.T), len(z.T), generator=gen)])
        assert not torch.equal(layer.input_map, torch.eye(spec.memory.d_model))
        save_checkpoint(layer, out / MEMORY_FILE)
    return out


def test_every_variant_runs_the_same_in_torch_and_onnx(variant_dir):
    spec = load_model_dir(variant_dir)
    layer = load_memory(variant_dir, spec)
    names = [i.name for i in onnx.load(str(memory_step_path(variant_dir, layer))).graph.input]
    assert names == list(INPUTS) + (['t'] if spec.memory.time_features else [])
    # threshold from a probe without writes: with write_rule='add' p grows with every write
    rts, records = run_pair(variant_dir, 400, seed=7, probe_threshold=1.0)
    wrote = np.array([[r.gate.wrote for r in pair] for pair in records])
    assert np.array_equal(wrote[:, 0], wrote[:, 1])
    assert 0 < wrote[:, 0].sum() < len(wrote), 'the test needs writes and skips'
    actions = np.array([[r.action for r in pair] for pair in records])
    assert np.abs(actions[:, 0] - actions[:, 1]).max() < 1e-4
    a, b = (rt.state_dict() for rt in rts)
    assert sum(v.nbytes for v in a.values()) == spec.memory.memory_bytes(1) \
        == rts[1].memory_bytes()
    np.testing.assert_allclose(a['W'], b['W'], atol=1e-4)


def test_time_variant_follows_the_step_counter(variant_dir):
    """Both engines give the layer's own `step` at t = the runtime's step index (from a held
    state, gate closed, so only t moves the read), and a reset starts the counter again at 0."""
    spec = load_model_dir(variant_dir)
    if not spec.memory.time_features:
        pytest.skip('only the time-feature variants read the step counter')
    c = spec.memory
    layer = load_memory(variant_dir, spec).eval()
    closed = LearnedGate(1.0)                       # p < 1: never writes
    rng = np.random.default_rng(3)
    state = {'W': rng.normal(size=(1, c.d_val, c.d_key)).astype(np.float32),
             'b': rng.normal(size=(1, c.d_val)).astype(np.float32)}
    img, joints = next(observations(1, 9))
    steps = c.period + 3
    for engine in ('torch', 'onnx'):
        rt = AuraRuntime.from_model_dir(variant_dir, device='cpu', engine=engine, threads=1)
        rt.set_gate_threshold(1.0)                  # p < 1: never writes
        runs = []
        for _ in range(2):
            rt.reset()
            rt.load_state(state)
            runs.append(np.array([rt.step(img, 'rgb8', joints).action for _ in range(steps)]))
        np.testing.assert_allclose(runs[0], runs[1], atol=1e-6)
        z = rt.backbone.features.clone()
        with torch.no_grad():
            held = {k: torch.from_numpy(v) for k, v in state.items()}
            want = np.array([layer.step(z, held, t, gate=closed)['action'][0].numpy()
                             for t in range(steps)])
        np.testing.assert_allclose(runs[0], want, atol=1e-5)
        np.testing.assert_allclose(runs[0][0], runs[0][c.period], atol=1e-5)
        assert np.abs(runs[0][0] - runs[0][1]).max() > 1e-4, 'the step counter moves the read'
