"""`python -m aura_ros bench fleet`: one runtime serving N robots, batched, against N runtimes.

In one process, without DDS (what the batching itself costs; the node adds its hand-over and
publishing, docs/results/perf.md): N simulated robots each give a frame at `rate_hz`, their
phases spread over the period; a worker steps every robot with a new frame since its last step
in one `AuraRuntime.step_rows` call (as aura_node's worker does). Per N: latency from a frame's
time to its step's end (p50/p99/max over all robots' frames), frames dropped (replaced before
they were stepped), the process's CPU use, the state bytes (checked to be N x one robot's). For
the bundled camera model and a features-in model of the same memory (no backbone). The memory
step alone (one batched compute + commit of all rows) up to 1,024 rows; beside it the bytes a
same-width KV-cache would hold for N robots after 10^3, 10^4, 10^5 steps. The alternative of
today, N separate aura_node processes, is shown by its memory: the RSS of one process holding a
one-robot runtime, measured, times N, against this process's RSS.

With --dds, over real DDS instead (aura_ros/ros/bench/fleet_client.py): a client process
publishing every robot's frames at `rate_hz` from its own publishers, against ONE aura_node with
`robots` and, for the smaller N, against N aura_node processes (one per robot) run at once:
per-robot latency (frame stamp -> its answer received) p50/p99/max, frames dropped per robot,
the server processes' CPU and RSS, and the machine's load average during each run
(docs/results/fleet_dds.md).
"""

import argparse
import dataclasses
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from aura_ros import provenance
from aura_ros.bench.fleet_plot import plot_fleet

DEFAULT_OUT = Path('docs/results/fleet.json')
DDS_OUT = Path('docs/results/fleet_dds.json')
DDS_ROBOTS = (1, 2, 4, 8, 16)
DDS_SEPARATE = (1, 2, 4)          # N aura_node processes at once: what this machine holds
ROBOTS = (1, 2, 4, 8, 16, 32, 64)
MEMORY_ROWS = (1, 4, 16, 64, 256, 1024)
KV_STEPS = (1_000, 10_000, 100_000)


def rss_bytes() -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def features_in_dir(model_dir: Path, out: Path) -> Path:
    """The memory of `model_dir` as a features-in model (no backbone): the memory's own cost."""
    from aura_ros.runtime import load_model_dir, save_model_dir
    from aura_ros.runtime.model_dir import load_memory

    spec = load_model_dir(model_dir)
    layer = load_memory(model_dir, spec)
    features = dataclasses.replace(spec, cameras=(), name=f'{spec.name}_features_in')
    save_model_dir(out, features, None, layer)
    return out


def serve(runtime, robots: int, rate_hz: float, duration_s: float, seed: int = 0) -> dict:
    """N robots at rate_hz for duration_s against one runtime of N rows; see the module doc."""
    rng = np.random.default_rng(seed)
    spec = runtime.spec
    if spec.features_in:
        inputs = [rng.normal(size=spec.memory.d_model).astype(np.float32)
                  for _ in range(robots)]
    else:
        inputs = [{c.name: (rng.integers(0, 256, (c.height, c.width, 3), np.uint8), 'rgb8')
                   for c in spec.cameras} for _ in range(robots)]
    joints = np.zeros(spec.n_joints, np.float32)
    period = 1.0 / rate_hz
    pending: dict[int, float] = {}
    lock = threading.Condition()
    latencies, steps_per_call = [], []
    counts = {'frames': 0, 'dropped': 0}
    stop = threading.Event()

    def cameras():
        start = time.perf_counter()
        k = 0
        while not stop.is_set():
            tick = start + k * period / robots        # robot k % N, phases spread
            delay = tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            with lock:
                robot = k % robots
                counts['frames'] += 1
                if robot in pending:
                    counts['dropped'] += 1
                pending[robot] = time.perf_counter()
                lock.notify()
            k += 1

    def worker():
        while not stop.is_set():
            with lock:
                while not pending and not stop.is_set():
                    lock.wait(0.1)
                taken = dict(pending)
                pending.clear()
            if not taken:
                continue
            runtime.step_rows({robot: (inputs[robot], joints) for robot in taken})
            done = time.perf_counter()
            latencies.extend(done - t for t in taken.values())
            steps_per_call.append(len(taken))

    threads = [threading.Thread(target=cameras), threading.Thread(target=worker)]
    cpu0, wall0 = _cpu_s(), time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(duration_s)
    stop.set()
    with lock:
        lock.notify_all()
    for t in threads:
        t.join()
    cpu, wall = _cpu_s() - cpu0, time.perf_counter() - wall0
    ms = np.asarray(latencies) * 1e3
    return {'robots': robots, 'frames': counts['frames'], 'stepped': len(latencies),
            'dropped': counts['dropped'],
            'dropped_pct': round(100 * counts['dropped'] / max(counts['frames'], 1), 2),
            'p50_ms': round(float(np.percentile(ms, 50)), 2) if ms.size else None,
            'p99_ms': round(float(np.percentile(ms, 99)), 2) if ms.size else None,
            'max_ms': round(float(ms.max()), 2) if ms.size else None,
            'robots_per_call_mean': round(float(np.mean(steps_per_call)), 2)
            if steps_per_call else 0,
            'cpu_pct': round(100 * cpu / wall, 1), 'rss_bytes': rss_bytes(),
            'state_bytes': runtime.memory_bytes()}


def memory_alone(model_dir: Path, rows_list, samples: int = 200,
                 device: str = 'cpu') -> list[dict]:
    """One batched compute + commit of every row, features fixed: microseconds per call."""
    from aura_ros.runtime import AuraRuntime

    out = []
    for rows in rows_list:
        rt = AuraRuntime.from_model_dir(model_dir, device=device, robots=rows, threads=1)
        every, steps = list(range(rows)), [0] * rows
        with torch.inference_mode():
            rt.features.normal_()
        times = []
        for i in range(samples + 10):
            t0 = time.perf_counter_ns()
            rt.memory.compute_rows(every, steps)
            rt.memory.commit()
            if i >= 10:
                times.append(time.perf_counter_ns() - t0)
        us = np.asarray(times) / 1e3
        out.append({'rows': rows, 'p50_us': round(float(np.percentile(us, 50)), 1),
                    'p99_us': round(float(np.percentile(us, 99)), 1),
                    'per_row_p50_us': round(float(np.percentile(us, 50)) / rows, 2),
                    'state_bytes': rt.memory_bytes()})
    return out


def single_process_rss(model_dir: Path) -> int:
    """RSS of a fresh process holding a one-robot runtime that has stepped once (what each of
    N separate aura_node processes holds at least: torch, ONNX Runtime, the model)."""
    code = ('import sys, numpy as np, torch; torch.set_num_threads(1)\n'
            'from aura_ros.runtime import AuraRuntime\n'
            'from aura_ros.bench.fleet import rss_bytes\n'
            'rt = AuraRuntime.from_model_dir(sys.argv[1], device="cpu", threads=1)\n'
            'c = rt.spec.cameras[0]\n'
            'rt.step(np.zeros((c.height, c.width, 3), np.uint8), "rgb8", '
            'np.zeros(rt.spec.n_joints))\n'
            'print(rss_bytes())\n')
    done = subprocess.run([sys.executable, '-c', code, str(model_dir)], capture_output=True,
                          text=True, check=True)
    return int(done.stdout.split()[-1])


def kv_cache_bytes(config, robots: int) -> dict:
    """A same-width KV-cache (one d_key key and one d_val value per step, float32)."""
    return {str(steps): robots * steps * (config.d_key + config.d_val) * 4 for steps in KV_STEPS}


def largest_served(rows: list[dict], rate_hz: float) -> int:
    """The largest N with p99 < one period and < 1 % dropped (0: none)."""
    ok = [r['robots'] for r in rows if r['p99_ms'] is not None
          and r['p99_ms'] < 1e3 / rate_hz and r['dropped_pct'] < 1.0]
    return max(ok, default=0)


def report(result: dict) -> str:
    m = result['machine']
    lines = ['# Fleet: one runtime, N robots, batched', '',
             f'Command: `{result["command"]}`  ', f'Machine: {m["platform"]}, {m["cpus"]} CPUs, '
             f'torch {m["torch"]} ({m["torch_threads"]} thread); device '
             f'{result.get("device", "cpu")}. {result["note"]}', '',
             f'In-process, no DDS: each robot a frame at {result["rate_hz"]:g} Hz, '
             f'{result["duration_s"]:g} s per N; latency = frame time -> its batched step done.',
             '']
    for kind in ('camera', 'features_in'):
        part = result[kind]
        lines += [f'## {part["model"]}', '',
                  '| N | p50 ms | p99 ms | max ms | dropped % | robots/step | CPU % | RSS MB | '
                  'state bytes |', '|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
        lines += [f'| {r["robots"]} | {r["p50_ms"]} | {r["p99_ms"]} | {r["max_ms"]} | '
                  f'{r["dropped_pct"]} | {r["robots_per_call_mean"]} | {r["cpu_pct"]} | '
                  f'{r["rss_bytes"] / 2**20:.0f} | {r["state_bytes"]:,} |' for r in part['rows']]
        lines += ['', f'Largest N served at {result["rate_hz"]:g} Hz each with p99 < '
                  f'{1e3 / result["rate_hz"]:.1f} ms and < 1 % dropped: '
                  f'**{part["largest_served"]}**.', '']
    single = result['single_process_rss_bytes']
    lines += ['## N separate processes (memory)', '',
              f'One process holding a one-robot runtime (bundled model): {single / 2**20:.0f} MB '
              'RSS. N such processes vs this one process at N:', '',
              '| N | N processes MB | one fleet process MB |', '|---:|---:|---:|']
    lines += [f'| {r["robots"]} | {r["robots"] * single / 2**20:.0f} | '
              f'{r["rss_bytes"] / 2**20:.0f} |' for r in result['camera']['rows']]
    lines += ['', '## Memory step alone (all rows, one batched call)', '',
              '| rows | p50 us | p99 us | per row p50 us | state bytes | KV-cache bytes at '
              '10^3 / 10^4 / 10^5 steps |', '|---:|---:|---:|---:|---:|---|']
    for r in result['memory_step']:
        kv = r['kv_cache_bytes']
        lines.append(f'| {r["rows"]} | {r["p50_us"]} | {r["p99_us"]} | {r["per_row_p50_us"]} | '
                     f'{r["state_bytes"]:,} | {" / ".join(f"{v:,}" for v in kv.values())} |')
    return '\n'.join(lines) + '\n'


def dds_report(result: dict) -> str:
    """The DDS table: per N, one fleet node beside N single-robot nodes."""
    m = result['machine']
    lines = ['# Fleet over DDS: one aura_node serving N robots vs N aura_node processes', '',
             f'Command: `{result["command"]}`  ',
             f'Machine: {m["platform"]}, {m["cpus"]} CPUs, no GPU: a 2-core VM shared with '
             f'other jobs while it ran (load average, 1 min, before and after each measured '
             f'run in the table; {result["note"] or "no note"}).', '',
             f"A client process publishes each robot's frames (and joint states) from its own "
             f'publishers at {result["rate_hz"]:g} Hz, phases spread; per row the servers '
             f'start, warm up {result["warmup_s"]:g} s, then {result.get("windows", 1)} windows '
             f'of {result["duration_s"]:g} s run back to back and the row shows the window of '
             "median p99 (every window's p99 and drops in the last columns). Latency = frame "
             'stamp -> its answer received by the client (the gate message the node publishes '
             'right after the robot\'s chunk), over all robots\' frames; "worst robot" is the '
             "robot with the highest p99 / most drops. CPU and RSS are the server processes' "
             "(summed over the N processes); client CPU is the publishing client's own, which "
             "shares the same cores. Node parameters are aura_node's defaults "
             '(inference_threads 1, torch engine, input QoS auto).', '']
    for kind in ('camera', 'features_in'):
        part = result[kind]
        lines += [f'## {part["model"]}', '',
                  '| N | servers | p50 ms | p99 ms | max ms | worst robot p99 ms | dropped % | '
                  'worst robot dropped % | CPU % | client CPU % | RSS MB | load avg | '
                  'p99 ms, each window | dropped %, each window |',
                  '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|']
        for r in part['rows']:
            server = '1 fleet node' if r['processes'] == 1 and not r['separate'] else \
                f'{r["processes"]} aura_node'
            lines.append(
                f'| {r["robots"]} | {server} | {r["p50_ms"]} | {r["p99_ms"]} | {r["max_ms"]} | '
                f'{r["worst_robot_p99_ms"]} | {r["dropped_pct"]} | '
                f'{r["worst_robot_dropped_pct"]} | {r["cpu_pct"]} | '
                f'{r.get("client_cpu_pct", "-")} | '
                f'{r["rss_bytes"] / 2**20:.0f} | {r["loadavg_1min"][0]} -> '
                f'{r["loadavg_1min"][1]} | {" / ".join(map(str, r.get("window_p99_ms", [])))} | '
                f'{" / ".join(map(str, r.get("window_dropped_pct", [])))} |')
        fleet_rows = [r for r in part['rows'] if not r['separate']]
        lines += ['', f'Largest N one fleet node served at {result["rate_hz"]:g} Hz each with '
                  f'p99 < {1e3 / result["rate_hz"]:.1f} ms and < 1 % dropped: '
                  f'**{largest_served(fleet_rows, result["rate_hz"])}** (of those tried).', '']
    return '\n'.join(lines) + '\n'


def dds_main(args: argparse.Namespace, model_dir: Path) -> int:
    """--dds: the rows of docs/results/fleet_dds.md (see the module doc)."""
    from aura_ros.ros.bench.fleet_client import measure

    out = Path(args.out) if args.out != str(DEFAULT_OUT) else DDS_OUT
    robots = [n for n in DDS_ROBOTS if n <= args.max_robots]
    command = (f'python -m aura_ros bench fleet --dds --duration {args.duration:g} '
               f'--windows {args.windows}'
               + (f' --max-robots {args.max_robots}' if args.max_robots < 64 else ''))
    header = provenance.header(command, detailed=True)
    result = {**header, 'note': args.note, 'rate_hz': args.rate, 'duration_s': args.duration,
              'warmup_s': 2.0, 'windows': args.windows}
    with tempfile.TemporaryDirectory() as tmp:
        models = {'camera': model_dir,
                  'features_in': features_in_dir(model_dir, Path(tmp) / 'features_in')}
        for kind, directory in models.items():
            rows = []
            plan = [(n, False) for n in robots] + [(n, True) for n in DDS_SEPARATE
                                                   if n <= args.max_robots]
            for n, separate in plan:
                row = {**measure(directory, n, separate, args.rate, args.duration,
                                 windows=args.windows), 'separate': separate}
                print(f'{kind} N={n} {"separate" if separate else "fleet"}: '
                      f'{ {k: v for k, v in row.items() if k != "per_robot"} }', flush=True)
                rows.append(row)
            result[kind] = {'model': ('bundled camera model' if kind == 'camera' else
                                      'features-in (the same memory, no backbone)'),
                            'rows': rows}
    provenance.write_results(out, result, dds_report(result))
    print(f'wrote {out} and {out.with_suffix(".md")}, {redraw(out.parent)}')
    return 0


def redraw(results_dir: Path) -> Path:
    """fleet.png beside the results (p99 and RSS against N), from what is there."""
    return plot_fleet(results_dir, results_dir / 'fleet.png')


def main(args: argparse.Namespace) -> int:
    from aura_ros.ros.params import bundled_model_dir
    from aura_ros.runtime import AuraRuntime

    if getattr(args, 'plot', False):
        print(f'wrote {redraw(Path(args.out).parent)}')
        return 0
    if getattr(args, 'dds', False):
        return dds_main(args, Path(args.model_dir or bundled_model_dir()))
    torch.set_num_threads(1)
    model_dir = Path(args.model_dir or bundled_model_dir())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    robots = tuple(n for n in ROBOTS if n <= args.max_robots)
    command = 'python -m aura_ros bench fleet' + (f' --duration {args.duration:g}'
                                                  if args.duration != 3.0 else '')
    if args.device != 'cpu':
        command += f' --device {args.device}'
    header = provenance.header(command, detailed=True)
    result = {**header, 'machine': {**header['machine'], 'torch_threads': 1},
              'device': args.device,
              'note': args.note, 'rate_hz': args.rate, 'duration_s': args.duration}
    with tempfile.TemporaryDirectory() as tmp:
        models = {'camera': model_dir,
                  'features_in': features_in_dir(model_dir, Path(tmp) / 'features_in')}
        for kind, directory in models.items():
            rows = []
            for n in robots:
                rt = AuraRuntime.from_model_dir(directory, device=args.device, robots=n,
                                                threads=1)
                one = AuraRuntime.from_model_dir(directory, device='cpu').memory_bytes()
                row = serve(rt, n, args.rate, args.duration)
                assert row['state_bytes'] == n * one, (row['state_bytes'], n, one)
                print(f'{kind} {row}', flush=True)
                rows.append(row)
                del rt
            result[kind] = {'model': ('bundled camera model' if kind == 'camera' else
                                      'features-in (the same memory, no backbone)'),
                            'rows': rows, 'largest_served': largest_served(rows, args.rate)}
        config = AuraRuntime.from_model_dir(model_dir, device='cpu').spec.memory
        result['memory_step'] = [{**r, 'kv_cache_bytes': kv_cache_bytes(config, r['rows'])}
                                 for r in memory_alone(model_dir, MEMORY_ROWS,
                                                       device=args.device)]
    result['single_process_rss_bytes'] = single_process_rss(model_dir)
    provenance.write_results(out, result, report(result))
    print(f'wrote {out} and {out.with_suffix(".md")}, {redraw(out.parent)}')
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--model-dir', default='', help='camera model (default: bundled)')
    parser.add_argument('--out', default=str(DEFAULT_OUT), help='results JSON (.md beside it)')
    parser.add_argument('--rate', type=float, default=30.0, help='frames per second per robot')
    parser.add_argument('--duration', type=float, default=3.0, help='seconds per N')
    parser.add_argument('--max-robots', type=int, default=64, help='largest N (default 64)')
    parser.add_argument('--device', default='cpu',
                        help='cpu or cuda: where the batched state lives (default cpu)')
    parser.add_argument('--windows', type=int, default=3,
                        help='--dds: measured windows per row, back to back; the row shows the '
                             'window of median p99 (default 3)')
    parser.add_argument('--plot', action='store_true',
                        help='only redraw fleet.png (p99 and RSS against N) from the results '
                             'beside --out')
    parser.add_argument('--dds', action='store_true',
                        help='over real DDS: one fleet aura_node vs N aura_node processes, a '
                             'client publishing every robot (writes docs/results/fleet_dds.*)')
    parser.add_argument('--note', default=os.environ.get('AURA_BENCH_NOTE', ''),
                        help='a line on the machine (e.g. its load) for the report')
