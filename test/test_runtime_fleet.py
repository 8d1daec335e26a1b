"""A runtime of N rows (one robot each): stepping any subset of rows in one batched call gives
each row what a one-robot runtime fed the same frames gives, and leaves every other row bit for
bit as it was."""

from pathlib import Path

import numpy as np
import pytest

from aura_ros.runtime import AuraRuntime, EpisodeSummary, InputError
from aura_ros.runtime.init_model import init_model_dir

pytestmark = pytest.mark.usefixtures('one_torch_thread', 'isolated_export_cache')

ROBOTS = 4


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp('model')
    init_model_dir(out, image_size=(12, 16), d_model=32, joints=('j1', 'j2'), chunk=2,
                   memory=dict(head_hidden=32, gate_init_bias=2.0))
    return out


@pytest.fixture(scope='module')
def timed_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp('timed')
    init_model_dir(out, image_size=8, d_model=16, chunk=2,
                   memory=dict(time_features=2, time_period=5, gate_init_bias=2.0))
    return out


@pytest.fixture(scope='module')
def features_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp('features')
    init_model_dir(out, d_model=16, chunk=2, features_in=True, memory=dict(gate_init_bias=2.0))
    return out


def frame(rng, shape=(30, 40, 3)):
    return ({'image': (rng.integers(0, 256, shape, dtype=np.uint8), 'rgb8')},
            rng.normal(size=2))


def fleet_and_singles(model_dir, robots=ROBOTS, **options):
    fleet = AuraRuntime.from_model_dir(model_dir, device='cpu', robots=robots, **options)
    singles = [AuraRuntime.from_model_dir(model_dir, device='cpu', **options)
               for _ in range(robots)]
    return fleet, singles


def assert_same(batched, single):
    np.testing.assert_allclose(batched.action, single.action, rtol=1e-5, atol=1e-6)
    for group, targets in single.targets.items():
        np.testing.assert_allclose(batched.targets[group], targets, rtol=1e-5, atol=1e-6)
    assert (batched.gate.wrote, batched.gate.step, batched.gate.writes) == \
        (single.gate.wrote, single.gate.step, single.gate.writes)
    assert batched.gate.p == pytest.approx(single.gate.p, abs=1e-6)


def row_state(rt, row):
    return rt.state_dict(row)


def same_state(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def drive(fleet, singles, make, ticks, seed=0):
    """Random subsets of rows step together; each row checked against its own single runtime,
    and every row not stepped is checked bit-identical."""
    rng = np.random.default_rng(seed)
    for _ in range(ticks):
        rows = sorted(rng.choice(fleet.robots, size=rng.integers(1, fleet.robots + 1),
                                 replace=False).tolist())
        rng.shuffle(rows)
        observations = {row: make(rng) for row in rows}
        idle = {row: row_state(fleet, row) for row in range(fleet.robots) if row not in rows}
        results = fleet.step_rows(observations)
        assert set(results) == set(rows)
        for row, (inputs, joints) in observations.items():
            if isinstance(inputs, dict):
                expected = singles[row].step_frames(inputs, joints)
            else:
                expected = singles[row].step_features(inputs, joints)
            assert_same(results[row], expected)
            np.testing.assert_allclose(row_state(fleet, row)['W'],
                                       singles[row].state_dict()['W'], rtol=1e-5, atol=1e-6)
        for row, before in idle.items():
            assert same_state(before, row_state(fleet, row)), f'row {row} was not stepped'


def test_subsets_of_rows_match_one_runtime_per_robot(model_dir):
    fleet, singles = fleet_and_singles(model_dir)
    drive(fleet, singles, frame, ticks=25)
    assert sum(c.writes for c in fleet.counters) > 0
    assert [c.steps for c in fleet.counters] == [s.steps for s in singles]
    assert [c.writes for c in fleet.counters] == [s.writes for s in singles]


def test_features_in_fleet_matches_single_runtimes(features_dir):
    fleet, singles = fleet_and_singles(features_dir, robots=3)
    drive(fleet, singles, lambda rng: (rng.normal(size=16).astype(np.float32),
                                       rng.normal(size=2)), ticks=20, seed=1)


def test_time_features_step_each_row_at_its_own_step(timed_dir):
    """Rows at different steps of their episodes: the time encoding is each row's own."""
    fleet, singles = fleet_and_singles(timed_dir, robots=3)
    drive(fleet, singles, lambda rng: frame(rng, (8, 8, 3)), ticks=20, seed=2)
    assert len({c.steps for c in fleet.counters}) > 1


@pytest.mark.parametrize('engine', ['torch', 'onnx'])
def test_bad_input_is_rejected_for_its_row_alone(model_dir, engine):
    fleet = AuraRuntime.from_model_dir(model_dir, device='cpu', engine=engine, robots=3)
    singles = [AuraRuntime.from_model_dir(model_dir, device='cpu') for _ in range(3)]
    rng = np.random.default_rng(3)
    for _ in range(4):
        observations = {row: frame(rng) for row in range(3)}
        fleet.step_rows(observations)
        for row, obs in observations.items():
            singles[row].step_frames(*obs)
    before = row_state(fleet, 1)
    good = {0: frame(rng), 2: frame(rng)}
    bad_frames, bad_joints = frame(rng)
    results = fleet.step_rows({**good, 1: (bad_frames, [np.nan, 0.0])})
    assert isinstance(results[1], InputError) and results[1].reason == 'nonfinite_joints'
    assert same_state(before, row_state(fleet, 1)) and fleet.counters[1].steps == 4
    for row, obs in good.items():
        assert_same(results[row], singles[row].step_frames(*obs))
    results = fleet.step_rows({0: ({'image': (bad_frames['image'][0], 'yuyv')}, bad_joints),
                               1: frame(rng)})
    assert results[0].reason == 'encoding' and fleet.counters[0].steps == 5
    assert fleet.counters[1].steps == 5


@pytest.mark.parametrize('engine', ['torch', 'onnx'])
def test_reset_of_one_row_leaves_the_others_bit_identical(model_dir, engine):
    fleet = AuraRuntime.from_model_dir(model_dir, device='cpu', engine=engine, robots=3)
    rng = np.random.default_rng(4)
    for _ in range(6):
        fleet.step_rows({row: frame(rng) for row in range(3)})
    others = {row: row_state(fleet, row) for row in (0, 2)}
    writes = fleet.counters[1].writes
    assert fleet.reset(1) == EpisodeSummary(steps=6, writes=writes)
    assert all(not v.any() for v in row_state(fleet, 1).values())
    assert all(same_state(state, row_state(fleet, row)) for row, state in others.items())
    assert fleet.counters[1].steps == 0 and fleet.counters[0].steps == 6


def test_resume_one_row(model_dir):
    fleet, singles = fleet_and_singles(model_dir, robots=2)
    rng = np.random.default_rng(5)
    for _ in range(5):
        singles[0].step_frames(*frame(rng))
    untouched = row_state(fleet, 0)
    fleet.resume(singles[0].state_dict(), singles[0].steps, singles[0].writes, row=1)
    assert same_state(row_state(fleet, 1), singles[0].state_dict())
    assert (fleet.counters[1].steps, fleet.counters[1].writes) == \
        (singles[0].steps, singles[0].writes)
    assert same_state(untouched, row_state(fleet, 0))
    obs = frame(rng)
    assert_same(fleet.step_rows({1: obs})[1], singles[0].step_frames(*obs))
    with pytest.raises(InputError, match='writes'):
        fleet.resume(singles[0].state_dict(), 2, 3, row=0)


def test_one_state_tensor_of_n_rows(model_dir):
    fleet, singles = fleet_and_singles(model_dir, robots=8)
    assert fleet.memory_bytes() == 8 * singles[0].memory_bytes()
    address = fleet.memory.state['W'].data_ptr()
    fleet.step_rows({3: frame(np.random.default_rng(6))})
    assert fleet.memory.state['W'].data_ptr() == address      # allocated once, in place
    with pytest.raises(ValueError, match='row'):
        fleet.step_rows({8: frame(np.random.default_rng(6))})
    with pytest.raises(ValueError, match='8 robots'):
        fleet.step_frames(*frame(np.random.default_rng(6)))


def test_onnx_fleet_agrees_with_torch_row_by_row(model_dir):
    """The exported step's batch is free: an ONNX engine of 3 rows steps any subset in one call,
    each row as the torch engine steps that robot alone, the rows not stepped bit-identical."""
    fleet = AuraRuntime.from_model_dir(model_dir, device='cpu', engine='onnx', robots=3)
    singles = [AuraRuntime.from_model_dir(model_dir, device='cpu') for _ in range(3)]
    drive(fleet, singles, frame, ticks=25, seed=7)
    assert sum(c.writes for c in fleet.counters) > 0
    assert [c.writes for c in fleet.counters] == [s.writes for s in singles]


def test_onnx_and_torch_fleets_of_3_agree_on_every_row(model_dir):
    onnx = AuraRuntime.from_model_dir(model_dir, device='cpu', engine='onnx', robots=3)
    torch_fleet = AuraRuntime.from_model_dir(model_dir, device='cpu', robots=3)
    rng = np.random.default_rng(8)
    for rows in ([0, 1, 2], [1], [2, 0], [0, 1, 2], [2]):
        observations = {row: frame(rng) for row in rows}
        got, want = onnx.step_rows(observations), torch_fleet.step_rows(observations)
        for row in rows:
            assert_same(got[row], want[row])
        for row in range(3):
            for name, value in torch_fleet.state_dict(row).items():
                np.testing.assert_allclose(onnx.state_dict(row)[name], value, rtol=1e-5,
                                           atol=1e-6)


def test_onnx_fleet_time_features_each_row_at_its_own_step(timed_dir):
    fleet = AuraRuntime.from_model_dir(timed_dir, device='cpu', engine='onnx', robots=3)
    singles = [AuraRuntime.from_model_dir(timed_dir, device='cpu') for _ in range(3)]
    drive(fleet, singles, lambda rng: frame(rng, (8, 8, 3)), ticks=20, seed=9)
    assert len({c.steps for c in fleet.counters}) > 1


def test_a_memory_step_exported_with_a_batch_of_one_is_exported_again(model_dir, tmp_path):
    """A memory_step.onnx of the old format (batch of one) is not used for a fleet: the step
    is exported again, with its free batch."""
    import onnx

    from aura_ros.runtime.export import FORMAT, memory_step_path, step_metadata
    from aura_ros.runtime.model_dir import MEMORY_STEP_FILE

    fleet = AuraRuntime.from_model_dir(model_dir, device='cpu', engine='onnx', robots=2)
    old = onnx.load(str(fleet.memory.path))
    for entry in old.metadata_props:
        if entry.key == 'format':
            entry.value = 'aura_ros.memory_step/1'
    own = tmp_path / 'model'
    own.mkdir()
    for item in Path(model_dir).iterdir():
        (own / item.name).symlink_to(item)
    onnx.save(old, str(own / MEMORY_STEP_FILE))
    path = memory_step_path(own, _layer(own))
    assert path != own / MEMORY_STEP_FILE and step_metadata(path)['format'] == FORMAT


def _layer(model_dir):
    from aura_ros.runtime.model_dir import load_memory, load_model_dir

    return load_memory(model_dir, load_model_dir(model_dir))
