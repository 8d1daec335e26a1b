"""Per-step latency and state bytes of one memory step vs the horizon (docs/design.md section 8).

Batch 1, d_model 4096, d_key = d_val = 32. For every horizon T the state is brought to T steps
and then `samples` further steps are timed one by one:

- AURA, torch and ONNX Runtime engines of the runtime (what aura_node runs): T real steps with
  the gate threshold at 0, so every step writes (the worst case for AURA);
- KV-cache of the same width: the cache is filled with T random (key, value) pairs — what T writes
  leave behind — and each timed step appends one pair into a preallocated buffer and attends over
  all of them (the cheapest honest KV-cache step: no re-allocation, only the O(T) attention);
- GRU with as many state floats as AURA (1,056): its cost does not depend on T either.
"""

import os
import tempfile
import time

import numpy as np
import psutil
import torch
import torch.nn.functional as F

from aura_ros.memory import (
    AuraMemLayer,
    DenseGRU,
    KVCacheMemory,
    MemoryConfig,
    state_bytes,
)
from aura_ros.runtime.engines import OnnxEngine, TorchEngine
from aura_ros.runtime.export import export_memory_step

CARD = MemoryConfig(d_model=4096, d_key=32, d_val=32, d_action=7)


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    us = np.asarray(samples_ns, dtype=np.float64) / 1e3
    return float(np.percentile(us, 50)), float(np.percentile(us, 99))


class EngineStepper:
    """A memory engine of the runtime (what aura_node runs); threshold 0: every step writes."""

    def __init__(self, engine: str, config: MemoryConfig, workdir: str):
        layer = AuraMemLayer(config).eval()
        features = torch.zeros(1, config.d_model)
        if engine == 'torch':
            self.engine = TorchEngine(layer, features, threshold=0.0)
        else:
            path = export_memory_step(layer, os.path.join(workdir, 'memory_step.onnx'))
            self.engine = OnnxEngine(path, config, features, threshold=0.0, threads=1)
        self.name = f'aura_{engine}'
        self.t = 0

    def step(self, z: torch.Tensor) -> None:
        self.engine.features.copy_(z)
        wrote = self.engine.step()[1]
        assert wrote, 'threshold 0 must write every step (the worst case for AURA)'
        self.t += 1

    def advance_to(self, horizon: int, z: torch.Tensor) -> None:
        while self.t < horizon:
            self.step(z)

    def state_bytes(self) -> int:
        return self.engine.state_bytes()


class KVStepper:
    """A same-width KV-cache with preallocated buffers; `length` pairs are live."""

    name = 'kv_cache'

    def __init__(self, config: MemoryConfig = CARD, capacity: int = 0):
        self.model = KVCacheMemory(config).eval()
        self.keys = torch.empty(1, capacity, config.d_key)
        self.values = torch.empty(1, capacity, config.d_val)
        self.length = 0

    def advance_to(self, horizon: int, z: torch.Tensor) -> None:
        fresh = horizon - self.length
        if fresh > 0:
            generator = torch.Generator().manual_seed(horizon)
            self.keys[:, self.length:horizon] = F.normalize(
                torch.randn(1, fresh, self.keys.shape[-1], generator=generator), dim=-1)
            self.values[:, self.length:horizon] = torch.randn(1, fresh, self.values.shape[-1],
                                                              generator=generator)
        self.length = horizon

    @torch.inference_mode()
    def step(self, z: torch.Tensor) -> None:
        m = self.model
        x = m.norm(z)
        self.keys[:, self.length] = F.normalize(m.to_k(x), dim=-1)
        self.values[:, self.length] = m.to_v(x)
        self.length += 1
        q = F.normalize(m.to_q(x), dim=-1)
        scores = torch.einsum('bk,bnk->bn', q, self.keys[:, :self.length])
        weights = (scores * m.log_temperature.exp()).softmax(-1)
        read = torch.einsum('bn,bnv->bv', weights, self.values[:, :self.length])
        m.act(m.head_x(x), read)

    def state_bytes(self) -> int:
        return self.model.memory_bytes(1, writes=self.length)


class GRUStepper:
    name = 'gru'

    def __init__(self, config: MemoryConfig = CARD):
        self.model = DenseGRU(config).eval()
        self.state = self.model.init_state(1)

    def advance_to(self, horizon: int, z: torch.Tensor) -> None:
        """The GRU's cost and size do not depend on how many steps came before."""

    @torch.inference_mode()
    def step(self, z: torch.Tensor) -> None:
        self.state = self.model.step(z, self.state)['state']

    def state_bytes(self) -> int:
        return state_bytes(self.state)


def time_steps(stepper, z: torch.Tensor, samples: int, warmup: int = 10) -> list[int]:
    for _ in range(warmup):
        stepper.step(z)
    times = []
    for _ in range(samples):
        start = time.perf_counter_ns()
        stepper.step(z)
        times.append(time.perf_counter_ns() - start)
    return times


def aura_memory_growth(engine: str, steps: int, workdir: str, warmup: int = 1_000) -> dict:
    """Process RSS around `steps` AURA steps, measured before any other method allocates."""
    z = torch.randn(1, CARD.d_model)
    stepper = EngineStepper(engine, CARD, workdir)
    stepper.advance_to(warmup, z)
    process = psutil.Process()
    before = process.memory_info().rss
    stepper.advance_to(warmup + steps, z)
    after = process.memory_info().rss
    return {'engine': stepper.name, 'steps': steps, 'rss_before_bytes': before,
            'rss_after_bytes': after, 'rss_growth_bytes': after - before,
            'state_bytes': stepper.state_bytes()}


def run(horizons=(100, 1_000, 10_000, 100_000), samples: int = 300, progress=None) -> dict:
    """The memory-step table: one row per (method, horizon), plus AURA's process memory."""
    torch.manual_seed(0)
    z = torch.randn(1, CARD.d_model)
    workdir = tempfile.mkdtemp(prefix='aura_bench_')
    growth = [aura_memory_growth(engine, max(horizons), workdir) for engine in ('torch', 'onnx')]
    if progress:
        for row in growth:
            progress(row)
    steppers = [EngineStepper('torch', CARD, workdir), EngineStepper('onnx', CARD, workdir),
                KVStepper(capacity=max(horizons) + 2 * samples + 50), GRUStepper()]
    rows = []
    for horizon in horizons:
        for stepper in steppers:
            if isinstance(stepper, KVStepper):
                stepper.length = 0                      # refill exactly to this horizon
            stepper.advance_to(horizon, z)
            held = stepper.state_bytes()                # what T steps leave behind
            p50, p99 = _percentiles(time_steps(stepper, z, samples))
            rows.append({'method': stepper.name, 'horizon': horizon, 'p50_us': round(p50, 2),
                         'p99_us': round(p99, 2), 'state_bytes': held})
            if progress:
                progress(rows[-1])
    return {'memory_step': rows, 'aura_process_memory': growth, 'ratios': ratios(rows)}


def ratios(rows: list[dict]) -> dict:
    """KV-cache / AURA latency and bytes at every horizon, and AURA's own drift."""
    table = {(r['method'], r['horizon']): r for r in rows}
    horizons = sorted({r['horizon'] for r in rows})
    out = {}
    for h in horizons:
        a, kv = table.get(('aura_torch', h)), table.get(('kv_cache', h))
        if a and kv:
            out[str(h)] = {'kv_over_aura_p50': round(kv['p50_us'] / a['p50_us'], 2),
                           'kv_over_aura_bytes': round(kv['state_bytes'] / a['state_bytes'], 1)}
    first, last = table.get(('aura_torch', horizons[0])), table.get(('aura_torch', horizons[-1]))
    if first and last:
        out['aura_p50_last_over_first'] = round(last['p50_us'] / first['p50_us'], 3)
    return out


if __name__ == '__main__':   # quick look: python -m aura_ros.bench.memory_step
    print(run(horizons=(100, 1_000), samples=100, progress=print)['ratios'])
