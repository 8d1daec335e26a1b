"""GPU check of the runtime: run on a machine with a CUDA GPU; refuses to run without one.

    python bench/gpu_check.py [--d-model 4096] [--steps 1000] [--out docs/results/gpu_check.json]

Checks, each recorded as pass/fail with its numbers (exit 1 if any fails, 2 if there is no GPU):
  state_on_device      the torch engine's W and b are CUDA tensors, same addresses after stepping
  cuda_graph_parity    CUDA-graph replay == eager, step by step (gates equal, actions 1e-5)
  onnx_on_device       backbone and memory step both on ONNX Runtime's CUDA provider, features
                       and both ping-pong state buffers CUDA tensors bound by pointer (the memory
                       engine reads the very tensor the backbone writes), addresses stable
  onnx_parity          ONNX engine == torch eager on the GPU (gates equal, actions 1e-4)
  host_copies          device->host copies per step seen by the CUDA profiler: only the
                       results (action, g, p, surprise) and the finite-features flag, never
                       the features or the state
  fleet_rows           a runtime of 8 rows (one batched state on CUDA): random subsets of rows
                       stepped together match one-row runtimes (gates equal, actions 1e-4), rows
                       not stepped stay bit-identical, the state keeps its address
and per-step latency p50/p99 for torch eager, torch CUDA graph and the ONNX engine (the memory
engine alone, and the whole step with a 640x480 frame). Then `python -m aura_ros bench
train-scale` at 1, 2, 4 and 8 ranks (--train-scale-ranks; torchrun, DDP) on the lent machine's
cores (the trainer trains on the CPU: this is the rank scaling the 2-core dev machine cannot
show), written to docs/results/train_scale_gpu_machine.json/.md; check `train_scale` passes
when it exits 0. Then `python -m aura_ros bench fleet --device cuda` (N = 1..64 robots at 30 Hz,
the memory step alone to 1,024 rows) into docs/results/fleet_gpu.json unless --skip-fleet;
check `fleet_bench` passes when it exits 0.
"""

import argparse
import json
import platform
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime_step import time_memory_only, time_runtime  # noqa: E402

from aura_ros.runtime import AuraRuntime  # noqa: E402
from aura_ros.runtime.init_model import init_model_dir  # noqa: E402


def observations(n, n_joints, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield (rng.integers(0, 256, (120, 160, 3), dtype=np.uint8),
               rng.normal(size=n_joints))


def pointers(engine):
    buffers = getattr(engine, 'buffers', None) or [engine.state]
    return [t.data_ptr() for b in buffers for t in b.values()]


def parity(a: AuraRuntime, b: AuraRuntime, steps: int, atol: float) -> dict:
    """Step both on the same observations with a threshold that mixes writes and skips."""
    probe = [a.step(img, 'rgb8', j).gate.p for img, j in observations(100, a.spec.n_joints, 1)]
    a.reset()
    threshold = float(np.median(probe))
    a.set_gate_threshold(threshold)
    b.set_gate_threshold(threshold)
    gates_equal, worst, writes = 0, 0.0, 0
    for img, j in observations(steps, a.spec.n_joints, 2):
        ra, rb = a.step(img, 'rgb8', j), b.step(img, 'rgb8', j)
        gates_equal += ra.gate.wrote == rb.gate.wrote
        writes += ra.gate.wrote
        worst = max(worst, float(np.abs(ra.action - rb.action).max()))
    a.reset()
    b.reset()
    return {'pass': gates_equal == steps and worst < atol and 0 < writes < steps,
            'steps': steps, 'gates_equal': gates_equal, 'writes': writes,
            'threshold': threshold, 'max_action_diff': worst, 'atol': atol}


def device_to_host_copies(rt: AuraRuntime, steps: int = 20) -> dict:
    """Device->host memcpys per step seen by the CUDA profiler (CUPTI sees torch's and ORT's).

    Expected 2 per step: the results buffer (action, g, p, surprise) and the finite-features
    flag. A copy of the features or of the state would add more.
    """
    from torch.profiler import ProfilerActivity, profile

    image, joints = next(observations(1, rt.spec.n_joints, 3))
    rt.step(image, 'rgb8', joints)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            rt.step(image, 'rgb8', joints)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    memcpys = [e.name for e in prof.events() if 'memcpy' in e.name.lower()]
    dtoh = [n for n in memcpys if 'dtoh' in n.lower() or 'device -> p' in n.lower()]
    rt.reset()
    per_step = len(dtoh) / steps
    return {'pass': None if not memcpys else per_step <= 2.0, 'dtoh_per_step': per_step,
            'expected_per_step': 2, 'memcpy_kinds': sorted(set(memcpys)),
            'note': 'pass=None: the profiler saw no memcpy at all (CUPTI unavailable)'}


def train_scale(ranks) -> dict:
    """`bench train-scale` at these rank counts, in its own processes (torchrun)."""
    import subprocess

    out = Path('docs/results/train_scale_gpu_machine.json')
    cmd = [sys.executable, '-m', 'aura_ros', 'bench', 'train-scale', '--ranks',
           *map(str, ranks), '--out', str(out)]
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=1800)
    if done.returncode != 0:
        return {'pass': False, 'error': done.stderr[-2000:]}
    rows = json.loads((Path(__file__).resolve().parents[1] / out).read_text())['rows']
    return {'pass': True, 'out': str(out), 'rows': rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model-dir', help='model directory (default: a random one)')
    parser.add_argument('--d-model', type=int, default=4096,
                        help='feature width of the random model (the card: 4096)')
    parser.add_argument('--image-size', type=int, default=64)
    parser.add_argument('--steps', type=int, default=1000)
    parser.add_argument('--out', default='docs/results/gpu_check.json')
    parser.add_argument('--train-scale-ranks', type=int, nargs='*', default=[1, 2, 4, 8],
                        help='rank counts of bench train-scale (none: skip it)')
    parser.add_argument('--cpu-dry-run', action='store_true',
                        help='run the same code on the CPU (device checks fail by design): '
                             'exercises this script where there is no GPU')
    parser.add_argument('--skip-fleet', action='store_true',
                        help='do not run `bench fleet --device cuda` after the checks')
    args = parser.parse_args(argv)
    device = 'cpu' if args.cpu_dry_run else 'cuda'
    if not torch.cuda.is_available() and not args.cpu_dry_run:
        print('gpu_check: no CUDA: torch sees no CUDA GPU on this machine '
              f'(torch {torch.__version__}); nothing checked, no results written.')
        return 2
    import onnxruntime as ort

    report = {'device': torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu (dry run)',
              'torch': torch.__version__,
              'onnxruntime': ort.__version__, 'ort_providers': ort.get_available_providers(),
              'python': platform.python_version(), 'steps': args.steps, 'checks': {},
              'timings': {}}
    checks, timings = report['checks'], report['timings']

    def check(name, fn):
        try:
            checks[name] = fn()
        except Exception as err:  # record and go on: one broken path must not hide the others
            checks[name] = {'pass': False, 'error': f'{type(err).__name__}: {err}',
                            'traceback': traceback.format_exc()}
        state = checks[name].get('pass')
        print(f'{name:20s} {"PASS" if state else "UNVERIFIED" if state is None else "FAIL"}  '
              f'{ {k: v for k, v in checks[name].items() if k not in ("traceback",)} }')

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            model_dir = Path(tmp) / 'model'
            init_model_dir(model_dir, image_size=args.image_size, d_model=args.d_model,
                           memory=dict(gate_init_bias=0.0))
        report['model'] = {'dir': str(args.model_dir or 'random (init-model)'),
                           'd_model': args.d_model}
        make = lambda **kw: AuraRuntime.from_model_dir(model_dir, device=device, **kw)  # noqa: E731

        def state_on_device():
            rt = make(engine='torch')
            before = pointers(rt.memory)
            for img, j in observations(50, rt.spec.n_joints):
                rt.step(img, 'rgb8', j)
            devices = {k: str(v.device) for k, v in rt.memory.state.items()}
            print(f'state tensors: {devices}, memory_bytes {rt.memory_bytes()}')
            return {'pass': all(v.is_cuda for v in rt.memory.state.values())
                    and pointers(rt.memory) == before and rt.device.startswith('cuda'),
                    'state_devices': devices, 'runtime_device': rt.device,
                    'backbone_provider': rt.provider, 'memory_bytes': rt.memory_bytes()}

        def cuda_graph_parity():
            eager, graph = make(engine='torch'), make(engine='torch', cuda_graph=True)
            before = pointers(graph.memory)
            result = parity(eager, graph, args.steps, atol=1e-5)
            result['graph_captured'] = graph.memory.graph is not None
            result['pass'] = result['pass'] and result['graph_captured'] \
                and pointers(graph.memory) == before
            return result

        def onnx_on_device():
            rt = make(engine='onnx')
            m = rt.memory
            before = pointers(m)
            for img, j in observations(50, rt.spec.n_joints):
                rt.step(img, 'rgb8', j)
            facts = {'backbone_provider': rt.provider, 'memory_provider': m.provider,
                     'staged_through_host': m.staged,
                     'features_device': str(rt.backbone.features.device),
                     'memory_reads_backbone_tensor': m.features is rt.backbone.features,
                     'state_devices': sorted({str(t.device) for b in m.buffers
                                              for t in b.values()}),
                     'addresses_stable': pointers(m) == before}
            facts['pass'] = (rt.provider == m.provider == 'CUDAExecutionProvider'
                             and not m.staged and rt.backbone.features.is_cuda
                             and facts['memory_reads_backbone_tensor']
                             and all(t.is_cuda for b in m.buffers for t in b.values())
                             and facts['addresses_stable'])
            return facts

        def onnx_parity():
            return parity(make(engine='torch'), make(engine='onnx'), args.steps, atol=1e-4)

        def host_copies():
            return {engine: device_to_host_copies(make(engine=engine))
                    for engine in ('torch', 'onnx')} | {'pass': None}

        check('state_on_device', state_on_device)
        check('cuda_graph_parity', cuda_graph_parity)
        check('onnx_on_device', onnx_on_device)
        check('onnx_parity', onnx_parity)
        def fleet_rows():
            fleet = make(engine='torch', robots=8)
            singles = [make(engine='torch') for _ in range(8)]
            before = pointers(fleet.memory)
            rng = np.random.default_rng(1)
            frames = observations(40, fleet.spec.n_joints)
            worst, gates_equal, untouched = 0.0, True, True
            for img, joints in frames:
                rows = sorted(rng.choice(8, size=int(rng.integers(1, 9)), replace=False).tolist())
                idle = {r: fleet.state_dict(r) for r in range(8) if r not in rows}
                out = fleet.step_rows({r: ({'image': (img, 'rgb8')}, joints) for r in rows})
                for r in rows:
                    ref = singles[r].step(img, 'rgb8', joints)
                    worst = max(worst, float(np.abs(out[r].action - ref.action).max()))
                    gates_equal &= out[r].gate.wrote == ref.gate.wrote
                untouched &= all(np.array_equal(v[k], fleet.state_dict(r)[k])
                                 for r, v in idle.items() for k in v)
            return {'pass': worst < 1e-4 and gates_equal and untouched
                    and pointers(fleet.memory) == before
                    and all(t.is_cuda for t in fleet.memory.state.values()),
                    'max_action_diff': worst, 'gates_equal': gates_equal,
                    'rows_not_stepped_bit_identical': untouched,
                    'state_bytes': fleet.memory_bytes()}

        check('host_copies', host_copies)
        check('fleet_rows', fleet_rows)
        hc = checks['host_copies']
        verdicts = [hc[e].get('pass') for e in ('torch', 'onnx') if isinstance(hc.get(e), dict)]
        if verdicts and all(v is not None for v in verdicts):
            hc['pass'] = all(verdicts)

        for name, kw in (('torch_eager', dict(engine='torch')),
                         ('torch_cuda_graph', dict(engine='torch', cuda_graph=True)),
                         ('onnx', dict(engine='onnx'))):
            try:
                rt = make(**kw)
                timings[name] = {'memory_only': time_memory_only(rt, args.steps),
                                 'step_640x480': time_runtime(rt, args.steps)}
                m, s = timings[name]['memory_only'], timings[name]['step_640x480']['total']
                print(f'{name:17s} memory step p50 {m["p50_us"]:7.1f} us  p99 '
                      f'{m["p99_us"]:7.1f} us | whole step p50 {s["p50_us"]:7.1f} us  '
                      f'p99 {s["p99_us"]:7.1f} us')
            except Exception as err:  # a timing failure is a failed check too
                timings[name] = {'error': f'{type(err).__name__}: {err}'}
                checks[f'timing_{name}'] = {'pass': False, 'error': timings[name]['error']}
                print(f'{name}: FAIL {timings[name]["error"]}')

    if args.train_scale_ranks:
        check('train_scale', lambda: train_scale(args.train_scale_ranks))
    if not args.skip_fleet:
        import subprocess
        done = subprocess.run([sys.executable, '-m', 'aura_ros', 'bench', 'fleet', '--device',
                               device, '--duration', '1', '--out',
                               str(Path(args.out).with_name('fleet_gpu.json'))])
        checks['fleet_bench'] = {'pass': done.returncode == 0, 'returncode': done.returncode}

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + '\n')
    failed = [k for k, v in checks.items() if v.get('pass') is False]
    print(f'wrote {out}; ' + (f'FAILED: {", ".join(failed)}' if failed else 'all checks passed'
                             + (' (host copies unverified)' if checks['host_copies'].get('pass')
                                is None else '')))
    return 1 if failed else 0


if __name__ == '__main__':
    raise SystemExit(main())
