"""`bench fleet` on a tiny model: the served run counts every frame, the state is N rows."""

from pathlib import Path

import numpy as np
import pytest

from aura_ros.bench.fleet import kv_cache_bytes, largest_served, memory_alone, serve
from aura_ros.runtime import AuraRuntime

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def test_serve_steps_robots_in_batches_and_accounts_for_every_frame(tiny_model_dir):
    rt = AuraRuntime.from_model_dir(tiny_model_dir, device='cpu', robots=3, threads=1)
    row = serve(rt, 3, rate_hz=30.0, duration_s=0.5)
    assert row['frames'] >= 3 and row['stepped'] + row['dropped'] <= row['frames']
    assert row['frames'] - row['stepped'] - row['dropped'] <= 3       # the last still pending
    assert row['state_bytes'] == 3 * AuraRuntime.from_model_dir(
        tiny_model_dir, device='cpu').memory_bytes()
    assert sum(c.steps for c in rt.counters) == row['stepped']
    assert np.isfinite([row['p50_ms'], row['p99_ms'], row['max_ms']]).all()


def test_memory_alone_and_the_kv_cache_beside_it(tiny_model_dir):
    rows = memory_alone(tiny_model_dir, (1, 8), samples=5)
    assert [r['state_bytes'] for r in rows] == [rows[0]['state_bytes'] * n for n in (1, 8)]
    config = AuraRuntime.from_model_dir(tiny_model_dir, device='cpu').spec.memory
    assert kv_cache_bytes(config, 2)['1000'] == 2 * 1000 * (config.d_key + config.d_val) * 4
    assert largest_served([{'robots': 1, 'p99_ms': 10.0, 'dropped_pct': 0.0},
                           {'robots': 2, 'p99_ms': 40.0, 'dropped_pct': 0.0}], 30.0) == 1


@pytest.mark.parametrize('separate', [False, True])
def test_dds_fleet_measure_answers_every_robot_over_real_dds(tiny_model_dir, separate):
    """`bench fleet --dds` rows: a client publishing 2 robots at 30 Hz against one fleet
    aura_node (or two aura_node processes): every frame is answered or counted dropped, per
    robot, and the server processes' CPU and RSS are read."""
    pytest.importorskip('rclpy', reason='rclpy not installed (pip install .[ros])')
    from aura_ros.ros.bench.fleet_client import measure

    row = measure(tiny_model_dir, 2, separate, rate_hz=30.0, duration_s=1.0, warmup_s=0.5,
                  windows=2)
    assert row['processes'] == (2 if separate else 1) and row['exit_codes'] == [0] * \
        row['processes']
    assert set(row['per_robot']) == {'arm1', 'arm2'}
    for robot in row['per_robot'].values():
        assert robot['frames'] == 30 and robot['answered'] + robot['dropped'] == 30
        assert robot['answered'] > 0 and 0 < robot['p50_ms'] <= robot['max_ms']
    assert row['frames'] == 60 and row['rss_bytes'] > 0 and row['cpu_pct'] > 0
    assert row['client_cpu_pct'] > 0
    assert len(row['loadavg_1min']) == 2 and len(row['window_p99_ms']) == 2
    assert row['p99_ms'] in row['window_p99_ms']


def test_the_fleet_picture_is_drawn_from_the_committed_results(tmp_path):
    """`bench fleet --plot`: p99 and RSS against N from docs/results' fleet JSONs; with none
    there it says which files it needs."""
    import shutil

    from aura_ros.bench.fleet_plot import plot_fleet

    results = Path(__file__).resolve().parents[1] / 'docs' / 'results'
    for name in ('fleet.json', 'fleet_dds.json'):
        shutil.copy(results / name, tmp_path / name)
    out = plot_fleet(tmp_path, tmp_path / 'fleet.png')
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and out.stat().st_size > 10_000
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match='fleet_dds.json'):
        plot_fleet(empty, empty / 'fleet.png')
