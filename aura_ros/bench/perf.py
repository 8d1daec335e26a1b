"""`python -m aura_ros bench perf`: memory step vs horizon, and aura_node end to end.

Writes docs/results/perf.json (machine, `memory_step` rows, `node_e2e`, `max_rate_hz`), a markdown
report with the ratios beside it, and perf.png (step latency and state bytes against the horizon,
log axes, AURA vs KV-cache). Numbers depend on the machine and its load: run it on a quiet one.
"""

import argparse
from pathlib import Path

import torch

from aura_ros import provenance
from aura_ros.bench import memory_step

DEFAULT_OUT = Path('docs/results/perf.json')




def report(result: dict) -> str:
    """The markdown report: the table, the ratios and the node figures."""
    m = result['machine']
    lines = [f'# Performance ({result["mode"]} run)', '',
             f'Command: `{result["command"]}`  ', f'Commit: `{result["commit"] or "n/a"}`  ',
             f'Machine: {m["platform"]}, {m["cpus"]} CPUs, torch {m["torch"]} '
             f'({m["torch_threads"]} thread(s)); no GPU.', '',
             '## Memory step (batch 1, d_model 4096, d_k = d_v = 32)', '',
             '| method | horizon | p50 (us) | p99 (us) | state bytes |',
             '|---|---:|---:|---:|---:|']
    for r in result['memory_step']:
        lines.append(f'| {r["method"]} | {r["horizon"]:,} | {r["p50_us"]:,.1f} | '
                     f'{r["p99_us"]:,.1f} | {r["state_bytes"]:,} |')
    lines += ['', '| horizon | KV-cache p50 / AURA (torch) p50 | KV-cache bytes / AURA bytes |',
              '|---:|---:|---:|']
    for h, r in result['ratios'].items():
        if isinstance(r, dict):
            lines.append(f'| {int(h):,} | {r["kv_over_aura_p50"]}x | {r["kv_over_aura_bytes"]}x |')
    lines += ['', f'AURA (torch) p50 at the last horizon / first horizon: '
              f'{result["ratios"].get("aura_p50_last_over_first")}.', '']
    lines += [f'Process RSS around {g["steps"]:,} AURA steps ({g["engine"]}, after 1,000 warm-up '
              f'steps, before any other method allocated): {g["rss_before_bytes"]:,} -> '
              f'{g["rss_after_bytes"]:,} bytes ({g["rss_growth_bytes"]:+,}); state '
              f'{g["state_bytes"]:,} bytes.  ' for g in result['aura_process_memory']]
    e2e = result.get('node_e2e')
    if e2e:
        lines += ['', '## aura_node end to end', '',
                  f'{e2e["frames"]} frames of {result["image"]} at {e2e["rate_hz"]} Hz '
                  f'(model: {result["model"]}): image stamp -> action chunk received p50 '
                  f'{e2e.get("p50_ms")} ms, p99 {e2e.get("p99_ms")} ms, max {e2e.get("max_ms")} '
                  f'ms; {e2e["dropped"]} frames dropped.', '',
                  '| stage | p50 (ms) |', '|---|---:|']
        lines += [f'| {k} | {v:.3f} |' for k, v in e2e['stages'].items()]
        lines += ['', f'Highest input rate with under 5% dropped frames (sweep '
                  f'{", ".join(str(r["rate_hz"]) for r in result["rate_sweep"])} Hz): '
                  f'{result["max_rate_hz"]} Hz.']
    ab = result.get('inference_threads_ab')
    if ab:
        lines += ['', '## aura_node inference threads (same 30 Hz run, interleaved)', '',
                  '| inference_threads | p50 (ms) | p99 (ms) | max (ms) | memory stage p50 (ms) '
                  '| dropped |', '|---:|---:|---:|---:|---:|---:|']
        lines += [f'| {r["inference_threads"]} | {r.get("p50_ms")} | {r.get("p99_ms")} | '
                  f'{r.get("max_ms")} | {r["stages"].get("memory", float("nan")):.3f} | '
                  f'{r["dropped"]} |' for r in ab]
    return '\n'.join(lines) + '\n'


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for method in ('aura_torch', 'aura_onnx', 'kv_cache', 'gru'):
        rows = [r for r in result['memory_step'] if r['method'] == method]
        if rows:
            ax1.plot([r['horizon'] for r in rows], [r['p50_us'] for r in rows], 'o-', label=method)
            ax2.plot([r['horizon'] for r in rows], [r['state_bytes'] for r in rows], 'o-',
                     label=method)
    for ax, label in ((ax1, 'step latency p50 (us)'), (ax2, 'state bytes')):
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('horizon (steps so far)')
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(True, which='both', alpha=0.3)
    fig.suptitle('Memory step vs horizon (batch 1, d_model 4096, d_k = d_v = 32)')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    quick = args.quick
    horizons = (100, 1_000, 10_000) if quick else (100, 1_000, 10_000, 100_000)
    out = Path(args.out) if args.out else (
        Path('docs/results/quick/perf.json') if quick else DEFAULT_OUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = 'python -m aura_ros bench perf' + (' --quick' if quick else '')
    result = {**provenance.header(command, detailed=True), 'mode': 'quick' if quick else 'full'}
    print(f'memory step at horizons {horizons}', flush=True)
    result.update(memory_step.run(horizons, samples=100 if quick else 300,
                                  progress=lambda row: print(f'  {row}', flush=True)))
    if not args.skip_node:
        from aura_ros.ros.bench import latency
        from aura_ros.ros.params import BUNDLED_MODEL

        result['model'] = args.model_dir or f'bundled (models/{BUNDLED_MODEL})'
        result['image'] = '224x224 rgb8'
        result.update(latency.run(args.model_dir, rate_hz=30.0,
                                  duration_s=10.0 if quick else 60.0,
                                  sweep_s=5.0 if quick else 10.0))
        print('aura_node with 2 vs 1 inference threads', flush=True)
        result['inference_threads_ab'] = latency.compare_threads(
            args.model_dir, repeats=1 if quick else 2, duration_s=10.0 if quick else 30.0)
    provenance.write_results(out, result, report(result))
    plot(result, out.with_suffix('.png'))
    print(f'wrote {out}, {out.with_suffix(".md")}, {out.with_suffix(".png")}')
    return 0
