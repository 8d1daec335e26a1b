"""Per-stage step latency of AuraRuntime, torch engine vs ONNX engine, on this machine's device.

    python bench/runtime_step.py [--device cpu|cuda] [--d-model 128] [--steps 2000]

Builds a random model directory (init-model) unless --model-dir is given, feeds the same camera
sized frames to each engine and prints p50/p99 per stage (preprocess, backbone, memory, total)
in microseconds. A benchmark, not a test: numbers depend on the machine and its load.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aura_ros.runtime import AuraRuntime  # noqa: E402
from aura_ros.runtime.init_model import init_model_dir  # noqa: E402

STAGES = ('preprocess', 'backbone', 'memory', 'total')


def percentiles(seconds) -> dict:
    us = np.asarray(seconds) * 1e6
    return {'p50_us': float(np.percentile(us, 50)), 'p99_us': float(np.percentile(us, 99)),
            'n': int(us.size)}


def time_runtime(rt: AuraRuntime, steps: int, frame_shape=(480, 640, 3), warmup: int = 200,
                 seed: int = 0) -> dict:
    """p50/p99 per stage over `steps` steps (after `warmup`) on random frames and joints."""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, frame_shape, dtype=np.uint8) for _ in range(8)]
    joints = rng.normal(size=(8, rt.spec.n_joints))
    timings = {k: [] for k in STAGES}
    for i in range(warmup + steps):
        result = rt.step(frames[i % 8], 'rgb8', joints[i % 8])
        if i >= warmup:
            for k in STAGES:
                timings[k].append(result.timings[k])
    rt.reset()
    return {k: percentiles(v) for k, v in timings.items()}


def time_memory_only(rt: AuraRuntime, steps: int, warmup: int = 200) -> dict:
    """The memory engine alone on fixed features (results copied to the host included)."""
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        rt.memory.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    rt.reset()
    return percentiles(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model-dir', help='model directory (default: a random one)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--d-model', type=int, default=128)
    parser.add_argument('--image-size', type=int, default=64)
    parser.add_argument('--steps', type=int, default=2000)
    parser.add_argument('--threads', type=int, default=1,
                        help='torch and ONNX Runtime threads (the CPU here is shared)')
    parser.add_argument('--out', help='also write the results as JSON here')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            model_dir = Path(tmp) / 'model'
            init_model_dir(model_dir, image_size=args.image_size, d_model=args.d_model)
        results = {}
        for engine in ('torch', 'onnx'):
            rt = AuraRuntime.from_model_dir(model_dir, device=args.device, engine=engine,
                                            threads=args.threads)
            results[engine] = {'device': rt.device, 'provider': rt.provider,
                               'stages': time_runtime(rt, args.steps),
                               'memory_only': time_memory_only(rt, args.steps)}
    for engine, r in results.items():
        stages = '  '.join(f'{k} {v["p50_us"]:.0f}/{v["p99_us"]:.0f}'
                           for k, v in r['stages'].items())
        m = r['memory_only']
        print(f'{engine:5s} [{r["device"]}, backbone {r["provider"]}] p50/p99 us: {stages}  '
              f'| memory step alone {m["p50_us"]:.0f}/{m["p99_us"]:.0f}')
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({'args': vars(args), 'results': results},
                                             indent=2) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
