"""Closed-loop cue-reach evaluation: `python -m aura_ros eval cue-reach [--tasks 200]`.

Every method drives the simulated arm itself (its first chunk point is executed each frame) in
`--envs` long episodes of chained tasks, never reset, with the SAME episode seeds for every
method, until each episode has finished its share of the tasks. The frozen backbone runs through
ONNX Runtime (CPU provider) from the model directory's `backbone.onnx`, exactly what the node
runs; AURA is the directory's `memory.safetensors`, the baselines (always-write, GRU, no memory)
are `baselines/*.safetensors`, trained by `train cue-reach` on the same frozen features.

Metrics per method: task success rate with a Wilson 95% interval; writes per task (frames of
the task whose gate wrote; a GRU writes every frame, no memory never) with a normal 95% interval;
the write rate on cue, distractor and dark-lamp frames. The scripted expert with and without
memory of the cue runs on the same seeds as the upper bound and the memoryless reference.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from aura_ros.memory import load_checkpoint, read_checkpoint
from aura_ros.runtime import load_model_dir
from aura_ros.runtime.model_dir import BACKBONE_FILE, load_memory
from aura_ros.tasks.cue_reach import (
    COLOUR_NAMES,
    N_PADS,
    CueReach,
    CueReachConfig,
    TaskResult,
    run_expert,
)
from aura_ros.training.cue_reach import BASELINES, build_baseline, rollout

METHODS = ('aura',) + BASELINES
LABELS = {'aura': 'AURA (learned gate)', 'always_write': 'always-write', 'gru': 'GRU (dense)',
          'no_memory': 'no memory', 'expert': 'scripted expert (true goal)',
          'expert_no_memory': 'scripted expert, forgets the cue'}
EVAL_SEED_BASE = 7_000_000     # evaluation episodes never share a seed with training ones
LONG_SEED_BASE = 9_000_000     # long-episode section (`--long-tasks`); training never uses these
LONG_METHODS = ('aura', 'always_write')
LONG_BLOCK = 10                # tasks per block of the success-by-block curve


def wilson(successes: int, n: int, z: float = 1.96) -> list[float]:
    """Wilson score 95% interval of a proportion."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def mean_ci(values) -> dict:
    """Mean and normal-approximation 95% interval."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return {'mean': float('nan'), 'ci95': [float('nan'), float('nan')]}
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else 0.0
    return {'mean': float(x.mean()), 'ci95': [float(x.mean() - half), float(x.mean() + half)]}


class Backbone:
    """The model directory's backbone.onnx in ONNX Runtime, with the spec's preprocessing."""

    def __init__(self, model_dir: Path, spec):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(model_dir / BACKBONE_FILE), options,
                                            providers=['CPUExecutionProvider'])
        self.provider = self.session.get_providers()[0]
        self.mean = np.array(spec.image.mean, np.float32)[:, None, None]
        self.std = np.array(spec.image.std, np.float32)[:, None, None]

    def __call__(self, images: np.ndarray, joints: np.ndarray) -> torch.Tensor:
        x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        x = (x - self.mean) / self.std
        (z,) = self.session.run(['features'], {'image': x, 'joints': joints.astype(np.float32)})
        return torch.from_numpy(z)


def load_methods(model_dir: Path, spec) -> dict:
    """AURA from the model directory and the baselines from its baselines/ folder."""
    models = {'aura': load_memory(model_dir, spec)}
    for method in BASELINES:
        path = model_dir / 'baselines' / f'{method}.safetensors'
        _, _, _, meta = read_checkpoint(path)
        model = build_baseline(method, spec.memory, int(meta.get('hidden', 0)) or None)
        models[method] = load_checkpoint(path, model.float()).eval()
    return models


def task_config(spec) -> CueReachConfig:
    return CueReachConfig(width=spec.image.width, height=spec.image.height,
                          chunk=spec.chunk, action_period_s=spec.action_period_s)


def summarise(results: list[TaskResult], lamp_writes: dict = None) -> dict:
    n = len(results)
    wins = sum(r.success for r in results)
    out = {'success': {'mean': wins / n if n else float('nan'), 'ci95': wilson(wins, n)},
           'writes_per_task': mean_ci([r.writes or 0 for r in results]),
           'steps_per_task': mean_ci([r.steps for r in results]),
           'tasks': n}
    if lamp_writes is not None:
        out['write_rate_by_lamp'] = {k: (w / c if c else None)
                                     for k, (w, c) in lamp_writes.items()}
    return out


def expert_reference(task: CueReachConfig, seeds: list[int], tasks_per_env: int) -> dict:
    out = {}
    for name, memory in (('expert', True), ('expert_no_memory', False)):
        results = []
        for s in seeds:
            results += run_expert(CueReach(task, seed=s), tasks_per_env, memory=memory,
                                  rng=np.random.default_rng(s))
        for r in results:
            r.writes = 0
        summary = summarise(results)
        del summary['writes_per_task']
        out[name] = summary
    return out


def long_episodes(models: dict, backbone, task: CueReachConfig, seeds: list[int],
                  tasks_per_env: int, log=print) -> dict:
    """Success and writes by block of `LONG_BLOCK` tasks over a few very long episodes."""
    out = {}
    for method in LONG_METHODS:
        results, _, _ = rollout(models[method], backbone, task, seeds, tasks_per_env,
                                desc=f'{method} long')
        success = np.array([r.success for r in results], np.float64).reshape(len(seeds), -1)
        writes = np.array([r.writes or 0 for r in results], np.float64).reshape(len(seeds), -1)
        blocks = [(b, min(b + LONG_BLOCK, tasks_per_env))
                  for b in range(0, tasks_per_env, LONG_BLOCK)]
        out[method] = {
            'success': summarise(results)['success'],
            'success_by_block': [float(success[:, a:b].mean()) for a, b in blocks],
            'writes_per_task_by_block': [float(writes[:, a:b].mean()) for a, b in blocks],
            'blocks': [[a + 1, b] for a, b in blocks]}
        log(f'{method:>13} long: success {fmt_ci(out[method]["success"])}, by block '
            + ' '.join(f'{v:.2f}' for v in out[method]['success_by_block']))
    return out


def long_markdown(report: dict) -> list[str]:
    long, meta = report.get('long'), report['meta']
    if not long:
        return []
    first = next(iter(long.values()))
    head = '| method | overall [95% CI] | ' + ' | '.join(
        f'tasks {a}-{b}' for a, b in first['blocks']) + ' |'
    rows = [head, '|---|---|' + '---|' * len(first['blocks'])]
    for m, r in long.items():
        rows.append(f'| {LABELS[m]} | {fmt_ci(r["success"])} | '
                    + ' | '.join(f'{v:.2f}' for v in r['success_by_block']) + ' |')
    rows.append(f'| {LABELS["aura"]}: writes / task | - | '
                + ' | '.join(f'{v:.1f}' for v in long['aura']['writes_per_task_by_block'])
                + ' |')
    return [f'## Long episodes ({meta["long_envs"]} x {meta["long_tasks_per_env"]} tasks, '
            'never reset)', '',
            f'Success by block of {LONG_BLOCK} tasks along {meta["long_envs"]} episodes of '
            f'{meta["long_tasks_per_env"]} chained tasks each (seeds {meta["long_seeds"][0]}..'
            f'{meta["long_seeds"][-1]}), the memory never emptied: the robot use case.', '',
            *rows, '']


def fmt_ci(entry: dict, digits: int = 3) -> str:
    lo, hi = entry['ci95']
    return f'{entry["mean"]:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]'


def markdown(report: dict) -> str:
    rows = ['| method | success [95% CI] | writes / task [95% CI] | frames / task | '
            'write rate: cue / distractor / dark | tasks |',
            '|---|---|---|---|---|---|']
    for m in METHODS:
        r = report['methods'][m]
        rates = r['write_rate_by_lamp']
        rate = ' / '.join('-' if rates[k] is None else f'{rates[k]:.3f}'
                          for k in ('cue', 'distractor', 'dark'))
        rows.append(f'| {LABELS[m]} | {fmt_ci(r["success"])} | '
                    f'{fmt_ci(r["writes_per_task"], 1)} | {r["steps_per_task"]["mean"]:.0f} | '
                    f'{rate} | {r["tasks"]} |')
    for m in ('expert', 'expert_no_memory'):
        r = report['reference'][m]
        rows.append(f'| {LABELS[m]} | {fmt_ci(r["success"])} | - | '
                    f'{r["steps_per_task"]["mean"]:.0f} | - | {r["tasks"]} |')
    aura, always = report['methods']['aura'], report['methods']['always_write']
    ratio = always['writes_per_task']['mean'] / max(aura['writes_per_task']['mean'], 1e-9)
    meta = report['meta']
    return '\n'.join([
        '# Cue-reach closed-loop evaluation', '',
        f'Command: `{meta["command"]}`  ',
        f'Model: `{meta["model_dir"]}` (backbone through ONNX Runtime, {meta["provider"]}); '
        f'{meta["envs"]} long episodes (chained tasks, never reset), seeds '
        f'{meta["seeds"][0]}..{meta["seeds"][-1]}, the same for every method; '
        f'{meta["wall_s"]:.0f} s.', '',
        *rows, '',
        f'Chance for a policy that cannot remember the cue: 1/7 = {1 / 7:.3f} (the goal is one of '
        'the 7 pads the arm is not on). Success: the tip stays within the success radius of the '
        'goal pad for 6 frames before the timeout. Writes per task: frames of the task on which '
        'the memory wrote. Success intervals are Wilson, writes intervals normal.', '',
        f'AURA writes {ratio:.1f}x less than always-write per task.', '',
        *long_markdown(report),
        '![success vs writes](cue_reach_success_vs_writes.png)', '',
        '![one AURA task](cue_reach_task.png)', ''])


def plot(report: dict, record: list, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in METHODS:
        r = report['methods'][m]
        x = max(r['writes_per_task']['mean'], 0.5)
        y = r['success']['mean']
        lo, hi = r['success']['ci95']
        xlo, xhi = r['writes_per_task']['ci95']
        ax.errorbar([x], [y], yerr=[[max(y - lo, 0)], [max(hi - y, 0)]],
                    xerr=[[max(x - max(xlo, 0.5), 0)], [max(xhi - x, 0)]], fmt='o', capsize=4,
                    label=LABELS[m])
    ax.axhline(1 / 7, ls=':', c='grey', label='chance (1/7)')
    ax.set_xscale('log')
    ax.set_xlabel('memory writes per task (log; no memory drawn at 0.5)')
    ax.set_ylabel('task success rate')
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc='lower right')
    ax.set_title('cue-reach, closed loop (95% intervals)')
    fig.tight_layout()
    path = out_dir / 'cue_reach_success_vs_writes.png'
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(path)

    if record:
        path = out_dir / 'cue_reach_task.png'
        plot_task(record, path)
        paths.append(path)
    return paths


def plot_task(record: list, path: Path) -> None:
    """Frames of one AURA task (one with a distractor if any) and its gate over time."""
    import matplotlib.pyplot as plt

    by_task = {}
    for r in record:
        by_task.setdefault(r['task'], []).append(r)
    tasks = [t for t in by_task if t > 0] or list(by_task)   # task 0 starts from an empty memory
    pick = next((t for t in tasks if any(r['lamp'] == 'distractor' for r in by_task[t])),
                tasks[0])
    frames = by_task[pick]
    n = len(frames)
    key = [0, 1, 3]
    key += [i for i, r in enumerate(frames) if r['lamp'] == 'distractor'][:2]
    key += [i for i, r in enumerate(frames) if r['g']][:2]
    go = next((i for i, r in enumerate(frames) if r['go']), n - 1)
    key += [max(go - 1, 0), min(go + 15, n - 1), n - 1]
    key = sorted(set(key))[:10]
    fig = plt.figure(figsize=(2 * len(key), 4.6))
    grid = fig.add_gridspec(2, len(key), height_ratios=[1.3, 1])
    for j, i in enumerate(key):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(frames[i]['image'], interpolation='nearest')
        wrote = frames[i]['g']
        ax.set_title(f'frame {i}' + (' WRITE' if wrote else ''), fontsize=8,
                     color='red' if wrote else 'black')
        for side in ax.spines.values():
            side.set_color('red' if wrote else 'black')
            side.set_linewidth(3 if wrote else 1)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(grid[1, :])
    t = np.arange(n)
    ax.plot(t, [r['p'] for r in frames], label='gate probability p')
    writes = [i for i, r in enumerate(frames) if r['g']]
    ax.scatter(writes, [1.02] * len(writes), marker='v', c='red', label='write')
    for i, r in enumerate(frames):
        if r['lamp'] == 'cue':
            ax.axvspan(i - 0.5, i + 0.5, color='gold', alpha=0.5, lw=0)
        elif r['lamp'] == 'distractor':
            ax.axvspan(i - 0.5, i + 0.5, color='grey', alpha=0.4, lw=0)
    ax.axvline(go, c='green', ls='--', label='GO')
    ax.set_xlim(-1, n)
    ax.set_ylim(-0.05, 1.1)
    ax.set_xlabel(f'frame of task {pick} (goal pad {frames[0]["goal"]}, '
                  f'{COLOUR_NAMES[frames[0]["goal"]]} cue; gold: cue, grey: distractor)')
    ax.legend(fontsize=7, loc='center right')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


CARD_SECTION = '## Closed-loop evaluation'


def update_card(model_dir: Path, report: dict) -> None:
    """Replace the model card's evaluation section with this run's table (if the card has one)."""
    card = model_dir / 'MODEL_CARD.md'
    if not card.is_file() or CARD_SECTION not in card.read_text():
        return
    head = card.read_text().split(CARD_SECTION)[0]
    long = long_markdown(report)
    table = [line for line in markdown(report).splitlines()
             if line.startswith('|') and line not in long]
    meta = report['meta']
    card.write_text(head + CARD_SECTION + '\n\n' + '\n'.join([
        f'`{meta["command"]}`: {meta["envs"]} long episodes, ONNX Runtime backbone '
        f'({meta["provider"]}), gate threshold {meta["gate_threshold"]}. Details and plots: '
        '`docs/results/cue_reach.md`.', '', *table, '',
        *[line.replace('## ', '### ', 1) for line in long]]).rstrip('\n') + '\n')


def evaluate(model_dir: Path, tasks: int, envs: int, seed: int, out: Path, command: str,
             log=print, long_tasks: int = 0, long_envs: int = 4) -> dict:
    torch.set_num_threads(1)
    start = time.time()
    spec = load_model_dir(model_dir)
    backbone = Backbone(model_dir, spec)
    models = load_methods(model_dir, spec)
    task = task_config(spec)
    per_env = math.ceil(tasks / envs)
    seeds = [EVAL_SEED_BASE + seed * 1000 + i for i in range(envs)]
    report = {'methods': {}, 'meta': {}}
    record = []
    for method, model in models.items():
        results, lamp_writes, rec = rollout(model, backbone, task, seeds, per_env,
                                            record_env=0 if method == 'aura' else -1,
                                            desc=method)
        if method == 'aura':
            record = rec
        report['methods'][method] = summarise(results, lamp_writes)
        r = report['methods'][method]
        log(f'{method:>13}: success {fmt_ci(r["success"])}, writes/task '
            f'{fmt_ci(r["writes_per_task"], 1)} over {r["tasks"]} tasks')
    report['reference'] = expert_reference(task, seeds, per_env)
    long_seeds = [LONG_SEED_BASE + seed * 1000 + 1 + i for i in range(long_envs)]
    if long_tasks > 0:
        report['long'] = long_episodes(models, backbone, task, long_seeds, long_tasks, log)
    report['meta'] = {'command': command, 'model_dir': str(model_dir),
                      'provider': backbone.provider, 'engine': 'onnxruntime backbone + torch '
                      'memory step (batched over episodes, fp32, CPU)', 'envs': envs,
                      'tasks_per_env': per_env, 'seeds': seeds, 'chance': 1 / (N_PADS - 1),
                      'gate_threshold': models['aura'].gate_policy.threshold,
                      'memory_bytes': models['aura'].memory_bytes(1),
                      'long_envs': long_envs, 'long_tasks_per_env': long_tasks,
                      'long_seeds': long_seeds,
                      'wall_s': time.time() - start}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + '\n')
    out.with_suffix('.md').write_text(markdown(report))
    plot(report, record, out.parent)
    update_card(model_dir, report)
    log(f'wrote {out}, {out.with_suffix(".md")} and plots in {time.time() - start:.0f} s')
    return report


def main(args: argparse.Namespace) -> int:
    if args.tasks < 1 or args.envs < 1:
        print('error: --tasks and --envs must be positive')
        return 2
    command = 'python -m aura_ros ' + ' '.join(sys.argv[1:]) \
        if sys.argv[1:3] == ['eval', 'cue-reach'] else 'python -m aura_ros eval cue-reach'
    if args.long_tasks < 0 or args.long_envs < 1:
        print('error: --long-tasks must be >= 0 and --long-envs positive')
        return 2
    evaluate(Path(args.model_dir), args.tasks, args.envs, args.seed, Path(args.out), command,
             long_tasks=args.long_tasks, long_envs=args.long_envs)
    return 0

