"""`bench fleet` on a tiny model: the served run counts every frame, the state is N rows."""

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
