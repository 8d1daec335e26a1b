"""Training throughput at 1 and N ranks (torchrun, DDP) and the state-matched GRU's update time.

`python -m aura_ros bench train-scale` launches, for each rank count, `torchrun --nproc_per_node
R -m aura_ros.bench.train_scale --worker` on loopback; the ranks time the trainer's own code:

- memory stages: `memory.training.train` (warm-up phase: window updates, AURA writing at random)
  of AURA and of the state-matched GRU (1,056 state floats, `baselines.DenseGRU`, trained
  through `gru.gru_sequence`)
  at the SO-101 recipe's shape (d_model 128, d_key = d_val = 32, 8x6 action chunks, window
  512, 16 windows per update), the global batch split over the ranks (the same budget);
- the backbone stage: `trainer.train_backbone` (SmallCNN autoencoder + action read-out) on
  96x96 frames, 64 images per update split over the ranks (its rarity pass over the frames
  included).

and one-rank variants of the GRU, to see which change cuts its update time: through nn.GRU's
own autograd (before gru_sequence), 2 threads, truncated BPTT at window 64 with 8x the
windows (the same frames per update), and bfloat16 recurrent products (mixed precision; what
they change in training: bench/gru_precision.py). Each rank runs one thread (as the
trainer's default). Writes docs/results/train_scale.json and .md.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aura_ros import provenance

D_MODEL, D_KEY, D_VAL, CHUNK, D_ACTION = 128, 32, 32, 8, 6
# (name, method, window, global batch, threads, GRU through gru_sequence, its recurrent
# products' dtype): the runs at every rank count, then the one-rank variants of the GRU
SCALED = (('aura', 'aura', 512, 16, 1, True, 'float32'),
          ('gru', 'gru', 512, 16, 1, True, 'float32'))
ONE_RANK = (('gru before (nn.GRU autograd)', 'gru', 512, 16, 1, False, 'float32'),
            ('gru, 2 threads', 'gru', 512, 16, 2, True, 'float32'),
            ('gru, window 64 x 128', 'gru', 64, 128, 1, True, 'float32'),
            ('gru, bfloat16 products', 'gru', 512, 16, 1, True, 'bfloat16'),
            ('gru, bfloat16 products, 2 threads', 'gru', 512, 16, 2, True, 'bfloat16'))
IMAGES, IMAGE_BATCH = 96, 64


def _episodes(n: int = 8, length: int = 1024):
    from aura_ros.memory.training import FeatureEpisode

    rng = np.random.default_rng(0)
    return [FeatureEpisode(rng.normal(size=(length, D_MODEL)).astype(np.float32),
                           rng.normal(size=(length, CHUNK, D_ACTION)).astype(np.float32))
            for _ in range(n)]


def _time_memory(method: str, window: int, batch: int, updates: int,
                 sequence_backward: bool = True, recurrent_dtype: str = 'float32') -> float:
    """Seconds of one warm-up update, the best of `updates` (after one untimed): the least
    load-sensitive figure on a shared machine."""
    from aura_ros.memory import MemoryConfig, build_model
    from aura_ros.memory.training import TrainingConfig, train
    from aura_ros.training import distributed

    config = MemoryConfig(d_model=D_MODEL, d_key=D_KEY, d_val=D_VAL, d_action=D_ACTION,
                          chunk=CHUNK, head_hidden=256)
    episodes = _episodes()
    per_rank = batch // distributed.world()

    def run() -> float:
        torch.manual_seed(0)
        model = build_model(method, config)
        if method == 'gru':
            model.sequence_backward = sequence_backward
        cfg = TrainingConfig(window=window, batch=per_rank, warmup_iters=1, gate_iters=0,
                             carry_iters=0, recurrent_dtype=recurrent_dtype)
        distributed.barrier()
        start = time.perf_counter()
        train(model, episodes, cfg, phases=('warmup',))
        distributed.barrier()
        return time.perf_counter() - start

    run()                                   # untimed: first-call costs
    return min(run() for _ in range(updates))


def _time_backbone(steps: int) -> float:
    """Seconds per update of the backbone stage (its one-off rarity pass spread over them)."""
    from aura_ros.data import Demonstrations, Episode
    from aura_ros.training import distributed
    from aura_ros.training.trainer import Frames, TrainerConfig, train_backbone

    rng = np.random.default_rng(0)
    frames, n = 256, 4
    episodes = [Episode(name=f'e{i}', stamps=np.arange(frames) * 0.1,
                        images={'image': rng.integers(0, 256, (frames, IMAGES, IMAGES, 3),
                                                      dtype=np.uint8)},
                        joints=rng.normal(size=(frames, D_ACTION)).astype(np.float32),
                        actions=rng.normal(size=(frames, CHUNK, D_ACTION)).astype(np.float32))
                for i in range(n)]
    demos = Demonstrations(source='random frames', cameras=('image',),
                           image_size=(IMAGES, IMAGES),
                           joint_names=tuple(f'j{i}' for i in range(D_ACTION)),
                           action_names=tuple(f'j{i}' for i in range(D_ACTION)),
                           action_period_s=0.1, chunk=CHUNK, episodes=episodes)
    cfg = TrainerConfig(cnn_steps=steps, cnn_batch=IMAGE_BATCH // distributed.world())
    stats = {'mean': [0.0] * D_ACTION, 'std': [1.0] * D_ACTION}
    data = Frames(episodes, demos.cameras, stats, lambda e: e.actions)
    distributed.barrier()
    start = time.perf_counter()
    train_backbone(cfg, demos, data, lambda *_: None)
    distributed.barrier()
    return (time.perf_counter() - start) / steps


def worker(args: argparse.Namespace) -> int:
    """One rank of a timed run (under torchrun, or alone for 1 rank)."""
    from aura_ros.training import distributed

    rows = []
    with distributed.session():
        ranks = distributed.world()
        runs = SCALED + (ONE_RANK if ranks == 1 else ())
        for name, method, window, batch, threads, sequence, dtype in runs:
            torch.set_num_threads(threads)
            s = _time_memory(method, window, batch, args.updates, sequence, dtype)
            rows.append({'stage': 'memory', 'name': name, 'ranks': ranks, 'threads': threads,
                         'window': window, 'batch': batch, 's_per_update': s,
                         'frames_per_s': window * batch / s})
        torch.set_num_threads(1)
        s = _time_backbone(args.backbone_steps)
        rows.append({'stage': 'backbone', 'name': 'backbone', 'ranks': ranks, 'threads': 1,
                     'batch': IMAGE_BATCH, 's_per_update': s, 'images_per_s': IMAGE_BATCH / s})
        if distributed.is_main():
            Path(args.worker_out).write_text(json.dumps(rows))
    return 0


def _launch(ranks: int, args: argparse.Namespace, out: Path) -> list:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'GLOO_SOCKET_IFNAME': 'lo'}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(ranks),
           '--master_addr', '127.0.0.1', '--master_port', str(port),
           '-m', 'aura_ros.bench.train_scale', '--worker', '--worker-out', str(out),
           '--updates', str(args.updates), '--backbone-steps', str(args.backbone_steps)]
    subprocess.run(cmd, env=env, check=True)
    return json.loads(out.read_text())


def report(result: dict) -> str:
    m = result['machine']
    lines = ['# Training throughput at 1 and 2 ranks (torchrun, DDP), and the GRU update time',
             '', f'Command: `{result["command"]}`  ', f'Commit: `{result["commit"] or "n/a"}`  ',
             f'Machine: {m["platform"]}, {m["cpus"]} CPUs, no GPU, torch {m["torch"]}; '
             f'{result["note"]}', '',
             '| stage | run | ranks | threads/rank | window x global batch | s / update | '
             'frames/s (memory) or images/s (backbone) |', '|---|---|---|---|---|---|---|']
    for r in result['rows']:
        shape = f'{r["window"]} x {r["batch"]}' if r['stage'] == 'memory' else f'{r["batch"]}'
        rate = r.get('frames_per_s', r.get('images_per_s'))
        lines.append(f'| {r["stage"]} | {r["name"]} | {r["ranks"]} | {r["threads"]} | {shape} | '
                     f'{r["s_per_update"]:.3f} | {rate:,.0f} |')
    lines += ['', result['reading'], '']
    return '\n'.join(lines)


READING = (
    'The global batch is the same at every rank count (strong scaling: each of R ranks trains '
    'on 1/R of it), so s / update is what a run of the same budget pays per update. Two ranks on '
    'a 2-core machine can show that the ranks train together (the gradients are all-reduced '
    'every update) and what that costs; they cannot show the speed-up of a machine with a core '
    'per rank: the two ranks share two cores with each other and with whatever else runs (this '
    'machine was shared with other jobs while it ran), so the ratio is a floor, not a '
    'forecast. The trainer keeps its tensors on the CPU (one thread per rank), so on a machine '
    'with more cores the same command shows ranks that each have a core; GPUs do not enter it '
    '(bench/gpu_check.py runs it on the 16-core GPU machine when one is lent). The GRU rows: it '
    'was already `torch.nn.GRU` (no per-step Python cell), whose CPU backward adds a rank-16 '
    'update to the 3,168 x 1,056 recurrent weight gradient at every step; `gru.gru_sequence` '
    '(now used) does those in one product (before: the nn.GRU autograd row; after: the gru '
    'rows). What remains is the recurrent product at every step; the input projection '
    '(3,168 x 128) is about an eighth of it, so a smaller one cannot cut much; window 64 with '
    '8x the windows (truncated BPTT, the same frames) shows whether larger products per step '
    "pay, but its gradient reaches back 64 steps instead of AURA's 512: not the same training.")


def main(args: argparse.Namespace) -> int:
    if args.worker:
        return worker(args)
    command = ' '.join(['python -m aura_ros bench train-scale --ranks', *map(str, args.ranks),
                        '--updates', str(args.updates), '--backbone-steps',
                        str(args.backbone_steps)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in args.ranks:
            got = _launch(ranks, args, Path(tmp) / f'{ranks}.json')
            for r in got:
                rate = r.get('frames_per_s', r.get('images_per_s'))
                print(f'{r["stage"]:8s} {r["name"]:22s} ranks {r["ranks"]} threads '
                      f'{r["threads"]}: {r["s_per_update"]:.3f} s/update, {rate:,.0f}/s',
                      flush=True)
            rows += got
    loaded = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    result = {**provenance.header(command, detailed=True), 'rows': rows,
              'load_average_1min': loaded,
              'note': f'1-minute load average {loaded:.1f} when it finished (shared machine)',
              'reading': READING}
    out = provenance.write_results(args.out, result, report(result))
    print(f'wrote {out} and {out.with_suffix(".md")}')
    return 0


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--ranks', type=int, nargs='+', default=[1, 2],
                        help='rank counts to time (default 1 2)')
    parser.add_argument('--updates', type=int, default=3,
                        help='timed updates per memory run, the best kept, after one untimed '
                             '(default 3)')
    parser.add_argument('--backbone-steps', type=int, default=20,
                        help='backbone updates timed (default 20)')
    parser.add_argument('--out', default='docs/results/train_scale.json',
                        help='results JSON; the .md goes beside it')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--worker-out', default='', help=argparse.SUPPRESS)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_args(parser)
    sys.exit(main(parser.parse_args()))
