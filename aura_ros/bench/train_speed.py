"""Training throughput of the AURA layer's sequence form: the fast scan against the reference loop.

`python -m aura_ros bench train-speed` times, for each thread count and sequence length, the
frames per second of one training step (forward, then backward) of `AuraMemLayer.forward`
(scan.py) and of `naive.naive_forward` (a Python loop of `step`, the form the layer had before)
on the same layer and data, two ways:

- `layer`: the layer's forward + backward of the action loss (the layer's own cost);
- `gate_phase`: one update of the trainer's gate phase (`objective.objective`: action + IB scored
  at the default step offsets + sparsity) on `objective.gated_forward` (the scan) against
  `naive.naive_gated_forward` (the per-step loop it had before); the IB part is the same code.

Runs alternate between the two implementations and the best of `--repeats` is kept, which is the
least load-sensitive figure on a shared machine. It also checks that both give the same outputs.
Writes docs/results/train_speed.json and .md.
"""

import argparse
import time

import torch

from aura_ros import provenance
from aura_ros.memory import AuraMemLayer, MemoryConfig, action_loss
from aura_ros.memory.batches import Batch
from aura_ros.memory.naive import naive_forward, naive_gated_forward
from aura_ros.memory.objective import gated_forward, objective
from aura_ros.memory.training import TrainingConfig

BATCH, D_MODEL, D_KEY, D_VAL, CLASSES = 16, 128, 32, 32, 4


def _fast(layer, z, **kw):
    return layer(z, **kw)


def _naive(layer, z, **kw):
    return naive_forward(layer, z, **kw)


def _step(layer, forward, z, target, kind: str) -> None:
    layer.zero_grad(set_to_none=True)
    if kind == 'gate_phase':
        forward = gated_forward if forward is _fast else naive_gated_forward
        mask = torch.ones(target.shape[:2], dtype=torch.bool)
        loss, _ = objective(layer, forward(layer, z), Batch(z, target, mask, mask),
                            TrainingConfig(), gated=True)
        loss.backward()
        return
    out = forward(layer, z)
    loss = action_loss(out['action'], target, 'ce').mean() + out['p'].mean()
    loss.backward()


def time_pair(threads: int, length: int, repeats: int, kind: str) -> dict:
    """Best-of-`repeats` seconds per training step, fast and reference, alternating."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = MemoryConfig(d_model=D_MODEL, d_key=D_KEY, d_val=D_VAL, d_action=CLASSES,
                          gate_init_bias=0.0)
    layer = AuraMemLayer(config)
    z = torch.randn(BATCH, length, D_MODEL)
    target = torch.randint(CLASSES, (BATCH, length))
    if kind == 'gate_phase':                 # the trainer's action chunks: 8 steps x 6 joints
        layer = AuraMemLayer(config.replace(d_action=6, chunk=8))
        target = torch.randn(BATCH, length, 8, 6)
    best = {'scan': float('inf'), 'reference': float('inf')}
    for forward in (_fast, _naive):                       # warm-up
        _step(layer, forward, z, target, kind)
    for _ in range(repeats):
        for name, forward in (('scan', _fast), ('reference', _naive)):
            start = time.perf_counter()
            _step(layer, forward, z, target, kind)
            best[name] = min(best[name], time.perf_counter() - start)
    frames = BATCH * length
    return {'threads': threads, 'T': length, 'kind': kind,
            'scan_s': best['scan'], 'reference_s': best['reference'],
            'scan_frames_per_s': frames / best['scan'],
            'reference_frames_per_s': frames / best['reference'],
            'speedup': best['reference'] / best['scan']}


@torch.no_grad()
def check_same(length: int = 64) -> float:
    """Largest |difference| of the outputs of the two forms on one mixed-gate batch."""
    torch.manual_seed(1)
    layer = AuraMemLayer(MemoryConfig(d_model=D_MODEL, d_key=D_KEY, d_val=D_VAL,
                                      d_action=CLASSES, gate_init_bias=0.0))
    z = torch.randn(BATCH, length, D_MODEL)
    a, b = _fast(layer, z), _naive(layer, z)
    keys = ('action', 'p', 'surprise', 'read')
    return max(float((a[k] - b[k]).abs().max()) for k in keys)


def report(result: dict) -> str:
    m = result['machine']
    lines = ['# Training speed of the AURA layer', '',
             f'Command: `{result["command"]}`  ', f'Commit: `{result["commit"] or "n/a"}`  ',
             f'Machine: {m["platform"]}, {m["cpus"]} CPUs (shared with other jobs, so absolute '
             f'numbers move with the load; both forms are timed alternately, best of '
             f'{result["repeats"]}), torch {m["torch"]}  ',
             f'Batch {BATCH}, d_model {D_MODEL}, d_key = d_val = {D_KEY}. '
             f'Max |output difference| scan vs reference: {result["max_abs_diff"]:.1e}', '',
             '| measured | threads | T | reference frames/s | scan frames/s | speed-up |',
             '|---|---|---|---|---|---|']
    for r in result['rows']:
        lines.append(f'| {r["kind"]} | {r["threads"]} | {r["T"]} | '
                     f'{r["reference_frames_per_s"]:,.0f} | {r["scan_frames_per_s"]:,.0f} | '
                     f'{r["speedup"]:.2f}x |')
    lines += ['', '`layer`: forward + backward of the layer (action loss + mean p). '
              '`gate_phase`: one update of the '
              "trainer's gate phase (`objective.objective`, IB at the default offsets 1..128, "
              '8x6 action chunks), the states for the IB kept by the scan or by the per-step '
              'loop.', '']
    return '\n'.join(lines)


def main(args: argparse.Namespace) -> int:
    lengths = tuple(args.lengths)
    threads = tuple(args.threads)
    command = ' '.join(['python -m aura_ros bench train-speed --kinds', *args.kinds,
                        '--threads', *map(str, threads), '--lengths', *map(str, lengths),
                        '--repeats', str(args.repeats)])
    rows = []
    for kind in args.kinds:
        for n in threads:
            for length in lengths:
                row = time_pair(n, length, args.repeats, kind)
                print(f'{kind:9s} threads {n} T {length:4d}: reference '
                      f'{row["reference_frames_per_s"]:8.0f} frames/s, scan '
                      f'{row["scan_frames_per_s"]:8.0f} frames/s, x{row["speedup"]:.2f}',
                      flush=True)
                rows.append(row)
    torch.set_num_threads(1)
    result = {**provenance.header(command, detailed=True),
              'repeats': args.repeats, 'max_abs_diff': check_same(), 'rows': rows}
    out = provenance.write_results(args.out, result, report(result))
    print(f'wrote {out} and {out.with_suffix(".md")}')
    return 0
