"""The synthetic benchmark's report: statistics over seeds, the results JSON's shape, the claims
checked against the paper, the markdown table and the plots (synthetic_bench.py runs it).
"""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

GATED = ('aura', 'aura_no_ib', 'aura_no_sparse')
ORDER = ('aura', 'always_write', 'random_budget', 'periodic_budget', 'surprise_budget', 'gru',
         'kv_cache', 'no_memory', 'aura_no_ib', 'aura_no_sparse')


@dataclass
class BenchResult:
    """One run of the benchmark: what docs/results/synthetic.json holds."""

    command: str
    commit: Optional[str]
    machine: dict
    wall_s: float
    configurations: list = field(default_factory=list)


# -- statistics over seeds ------------------------------------------------------------------------

_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def t_quantile(df: int) -> float:
    """Two-sided 95% Student-t quantile (table; the nearest smaller df above 10)."""
    if df in _T975:
        return _T975[df]
    return _T975[max(k for k in _T975 if k <= df)] if df < 120 else 1.96


def summarise(values: list[float]) -> dict:
    """Mean and 95% t-interval over seeds (a single seed gives a zero-width interval)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {'mean': mean, 'ci95': [mean, mean]}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return {'mean': mean, 'ci95': [mean - half, mean + half]}


def aggregate(setting, per_seed: list[dict], seeds: list[int]) -> list[dict]:
    """One configuration entry per horizon of `setting` (a synthetic_bench.Setting), in the
    JSON shape of docs/results/synthetic.json."""
    configs = []
    for N in setting.horizons:
        rows = [r[N] for r in per_seed]
        methods = {}
        for name in ORDER:
            entry = {key: summarise([row[name][key] for row in rows])
                     for key in ('accuracy', 'writes_per_episode')}
            entry['per_seed'] = {key: [row[name][key] for row in rows]
                                 for key in ('accuracy', 'writes_per_episode')}
            if name in GATED:
                for key in ('p_write_event', 'p_write_distractor', 'p_write_filler',
                            'gate_p_event', 'gate_p_distractor', 'gate_p_filler'):
                    entry[key] = summarise([row[name][key] for row in rows])['mean']
            methods[name] = entry
        always = methods['always_write']['writes_per_episode']['mean']
        for entry in methods.values():
            w = entry['writes_per_episode']['mean']
            entry['write_reduction_vs_always'] = (always / w) if w > 0 else None
        configs.append({
            'name': f'{setting.name}-{N}', 'task': setting.name, 'horizon': N, 'seeds': seeds,
            'train_len': setting.train_len, 'stream': setting.stream.to_dict(),
            'training': {k: v for k, v in asdict(setting).items()
                         if k not in ('name', 'stream', 'horizons')},
            'methods': methods,
            'budget_rate': [r['_budget']['rate'] for r in rows],
            'frontier': [r['_frontier'] for r in rows],
            'timeline': rows[0].get('_timeline'),
        })
    return configs


# -- paper anchors, markdown and plots ------------------------------------------------------------

PAPER = {
    'write_reduction_hard': '5.19-6.13x', 'write_reduction_n64': '9.19x',
    'budget_random_periodic': 0.366, 'gru_hard': 0.25, 'chance': 0.125,
    'p_write_event': 0.829, 'p_write_distractor': 0.318,
}


def _fmt(stat: dict, digits: int = 3) -> str:
    lo, hi = stat['ci95']
    return f'{stat["mean"]:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]'


def claims(result: BenchResult) -> list[tuple[str, str, str, str]]:
    """(claim, paper, ours, verdict) rows; the verdict criteria are stated in each row.

    Parity: AURA's mean accuracy is at most 0.03 below always-write's (overlapping intervals
    alone are not enough: with 3 seeds a failed seed widens them to cover anything). Collapse
    of a baseline: its mean is more than 0.15 below always-write's. The gate claim: AURA writes
    on events at least twice as often as on distractors.
    """
    by_task: dict[str, list[dict]] = {}
    for cfg in result.configurations:
        by_task.setdefault(cfg['task'], []).append(cfg)
    rows = []
    for cfg in result.configurations:
        m = cfg['methods']
        a, w = m['aura'], m['always_write']
        parity = a['accuracy']['mean'] >= w['accuracy']['mean'] - 0.03
        seeds_ok = sum(x >= y - 0.03 for x, y in zip(a['per_seed']['accuracy'],
                                                     w['per_seed']['accuracy'], strict=True))
        red = a['write_reduction_vs_always'] or float('inf')
        paper = PAPER['write_reduction_n64'] if cfg['horizon'] == 64 and cfg['task'] == 'easy' \
            else PAPER['write_reduction_hard'] if cfg['task'] == 'hard' else None
        rows.append((f'{cfg["name"]}: AURA matches always-write at fewer writes',
                     f'parity at {paper} fewer writes' if paper else 'parity (no number)',
                     f'AURA {_fmt(a["accuracy"])} vs always-write {_fmt(w["accuracy"])} at '
                     f'{red:.2f}x fewer writes; parity in {seeds_ok}/{len(cfg["seeds"])} seeds',
                     ('reproduced' if parity and red >= 3 else 'not reproduced')
                     + ' (parity = AURA mean >= always-write mean - 0.03; several-fold = >= 3x)'))
    for cfg in by_task.get('hard', result.configurations)[-1:]:
        m = cfg['methods']
        w = m['always_write']['accuracy']['mean']
        rp = [m[k]['accuracy']['mean'] for k in ('random_budget', 'periodic_budget')]
        rows.append((f'{cfg["name"]}: budget-matched random/periodic collapse',
                     f'about {PAPER["budget_random_periodic"]}',
                     f'random {_fmt(m["random_budget"]["accuracy"])}, periodic '
                     f'{_fmt(m["periodic_budget"]["accuracy"])}',
                     ('reproduced' if max(rp) < w - 0.15 else 'not reproduced')
                     + ' (collapse = > 0.15 below always-write)'))
        g = m['gru']['accuracy']
        rows.append((f'{cfg["name"]}: dense GRU collapses on the hard task',
                     f'about {PAPER["gru_hard"]} (chance {PAPER["chance"]})', f'GRU {_fmt(g)}',
                     ('reproduced' if g['mean'] < w - 0.15 else 'not reproduced')
                     + ' (collapse = > 0.15 below always-write)'))
        a = m['aura']
        ratio = a['p_write_event'] / max(a['p_write_distractor'], 1e-9)
        rows.append((f'{cfg["name"]}: the gate writes on events, skips distractors',
                     f'{PAPER["p_write_event"]} vs {PAPER["p_write_distractor"]} (2.61x)',
                     f'{a["p_write_event"]:.3f} vs {a["p_write_distractor"]:.3f} ({ratio:.2f}x)',
                     ('reproduced' if ratio >= 2 else 'not reproduced') + ' (>= 2x)'))
    return rows


NOTES = """\
Setup (our reconstruction; the paper's task and code were not available): streams of
`d_feature`-wide vectors with real events (object, class), look-alike distractors (same content,
a marker at cosine `distractor_similarity` to the event marker) and filler. Easy: one object,
target = class of the latest real event, scored at every step after the first. Hard: 4 objects,
every step queries one, target = latest real class of the queried object, scored once all are
bound. Every method is trained by the package's one training loop (`memory.training.train`,
the recipe `python -m aura_ros train` ships: windows drawn from a pool of `pool` training
episodes, IB over step offsets, jittered gate thresholds, no carried phase) on the same windows
for the same number of updates; the gated and budget-matched methods start from a shared warm-up
(then `gate_steps` of the loop's gate phase with their own gate), the others are trained from
scratch for warm-up + gate steps. Easy: the warm-up writes every
step (it is then also the always-write model's first phase). Hard: the warm-up writes at random
on half of the steps (`warmup_write_rate` 0.5, "write dropout") and always-write is trained from
scratch: after an every-step warm-up, one of three hard seeds got IB targets that favoured
distractors and filler over events (0.45 / 0.42 vs 0.28) and its gate closed for good (0
writes, chance accuracy); with write dropout the same seed's targets single out events.
Training at `train_len` steps, evaluation at the horizon on a held-out batch. Budget-matched
baselines use AURA's realised write rate on the evaluation set (the surprise threshold is
bisected on a calibration batch to realise it). The write reduction is a property of the task
as much as of the gate: a perfect gate writes once per real event, so it is about
1 / event_rate; the paper's exact ratios (9.19x, 5.19-6.13x) belong to its own event rates.
The frontier plot is evaluation-time only (AURA over gate thresholds, the trained always-write
layer under random/periodic schedules at the same budgets).
"""


def markdown(result: BenchResult) -> str:
    """The results table per configuration, with the paper's anchors beside ours."""
    lines = ['# Synthetic event-recall benchmark', '',
             f'Command: `{result.command}`  ', f'Commit: `{result.commit}`  ',
             f'Machine: {result.machine["platform"]}, torch {result.machine["torch"]}, '
             f'{result.machine["torch_threads"]} thread(s)  ',
             f'Wall time: {result.wall_s / 60:.1f} min', '', NOTES,
             '## Claims, paper vs ours', '', '| claim | paper | ours | verdict |',
             '|---|---|---|---|']
    lines += [f'| {c} | {p} | {o} | {v} |' for c, p, o, v in claims(result)]
    lines += ['', 'Accuracy over the scored steps, mean [95% t-interval over seeds, '
              't-distribution]; writes per episode; reduction = always-write writes / method '
              'writes. Chance = 0.125.', '']
    for cfg in result.configurations:
        m = cfg['methods']
        lines += [f'## {cfg["name"]} (horizon {cfg["horizon"]}, trained at {cfg["train_len"]}, '
                  f'seeds {cfg["seeds"]})', '',
                  '| method | accuracy | writes / episode | reduction vs always-write |',
                  '|---|---|---|---|']
        for name in ORDER:
            red = m[name]['write_reduction_vs_always']
            lines.append(f'| {name} | {_fmt(m[name]["accuracy"])} | '
                         f'{_fmt(m[name]["writes_per_episode"], 1)} | '
                         f'{"-" if red is None else f"{red:.2f}x"} |')
        lines += ['', 'Per seed (accuracy / writes per episode): ' + '; '.join(
            f'{name} ' + ', '.join(f'{x:.3f}/{y:.1f}' for x, y in zip(
                m[name]['per_seed']['accuracy'], m[name]['per_seed']['writes_per_episode'],
                strict=True)) for name in ('aura', 'always_write', 'gru')
            if 'per_seed' in m[name]) + '.']
        a = m['aura']
        lines += ['', f'AURA gate: writes on {a["p_write_event"]:.3f} of real events, '
                  f'{a["p_write_distractor"]:.3f} of distractors, {a["p_write_filler"]:.3f} of '
                  f'filler (mean p {a["gate_p_event"]:.3f} / {a["gate_p_distractor"]:.3f} / '
                  f'{a["gate_p_filler"]:.3f}).', '']
    return '\n'.join(lines) + '\n'


def plots(result: BenchResult, out_dir: Path) -> list[Path]:
    """PNG plots (matplotlib, Agg): accuracy vs writes, frontier, gate probabilities, timeline."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    configs = result.configurations
    fig, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 4), squeeze=False)
    for ax, cfg in zip(axes[0], configs, strict=True):
        for name in ORDER:
            m = cfg['methods'][name]
            w, a = m['writes_per_episode'], m['accuracy']
            ax.errorbar(max(w['mean'], 0.5), a['mean'],
                        yerr=[[a['mean'] - a['ci95'][0]], [a['ci95'][1] - a['mean']]],
                        fmt='o', capsize=3, label=name)
        ax.axhline(0.125, color='grey', ls=':', lw=1)
        ax.set_xscale('log')
        ax.set_title(cfg['name'])
        ax.set_xlabel('writes per episode (log; 0 drawn at 0.5)')
        ax.set_ylabel('accuracy')
    axes[0][-1].legend(fontsize=7, loc='lower right')
    fig.tight_layout()
    written.append(_save(fig, out_dir / 'synthetic_accuracy_vs_writes.png'))

    fig, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 4), squeeze=False)
    for ax, cfg in zip(axes[0], configs, strict=True):
        for name, style in (('aura', 'o-'), ('random', 's--'), ('periodic', '^--')):
            runs = [f[name] for f in cfg['frontier']]
            xs = [sum(r[i]['writes'] for r in runs) / len(runs) for i in range(len(runs[0]))]
            ys = [sum(r[i]['accuracy'] for r in runs) / len(runs) for i in range(len(runs[0]))]
            order = sorted(range(len(xs)), key=xs.__getitem__)
            ax.plot([xs[i] for i in order], [ys[i] for i in order], style,
                    label=f'{name} (thresholds)' if name == 'aura' else f'{name} schedule')
        always = cfg['methods']['always_write']
        ax.plot([always['writes_per_episode']['mean']], [always['accuracy']['mean']], 'k*',
                ms=10, label='always-write')
        ax.set_xscale('log')
        ax.set_title(f'{cfg["name"]}: frontier (mean over seeds)')
        ax.set_xlabel('writes per episode (log)')
        ax.set_ylabel('accuracy')
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    written.append(_save(fig, out_dir / 'synthetic_frontier.png'))

    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(configs)), 4))
    width = 0.25
    for i, (key, label) in enumerate((('p_write_event', 'real events'),
                                      ('p_write_distractor', 'distractors'),
                                      ('p_write_filler', 'filler'))):
        ax.bar([j + (i - 1) * width for j in range(len(configs))],
               [c['methods']['aura'][key] for c in configs], width, label=label)
    ax.axhline(PAPER['p_write_event'], color='C0', ls=':', lw=1, label='paper: events 0.829')
    ax.axhline(PAPER['p_write_distractor'], color='C1', ls=':', lw=1,
               label='paper: distractors 0.318')
    ax.set_xticks(range(len(configs)), [c['name'] for c in configs])
    ax.set_ylabel('AURA write probability')
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(_save(fig, out_dir / 'synthetic_gate.png'))

    cfg = configs[-1]
    tl = cfg['timeline']
    T = len(tl['g'])
    fig, ax = plt.subplots(figsize=(12, 3))
    ax.plot(range(T), tl['p'], color='grey', lw=0.8, label='gate p')
    for key, color, y, label in (('is_event', 'C0', 1.15, 'real event'),
                                 ('is_distractor', 'C3', 1.08, 'distractor'),
                                 ('g', 'C2', -0.08, 'write')):
        xs = [t for t in range(T) if tl[key][t]]
        ax.scatter(xs, [y] * len(xs), marker='|', s=80, color=color, label=label)
    ax.set_ylim(-0.15, 1.25)
    ax.set_xlabel('step')
    ax.set_title(f'{cfg["name"]}: one evaluation episode (seed {cfg["seeds"][0]})')
    ax.legend(fontsize=7, ncol=4, loc='center right')
    fig.tight_layout()
    written.append(_save(fig, out_dir / 'synthetic_timeline.png'))
    return written


def rebuild_report(path: Path) -> list[Path]:
    """Rewrite the .md and the PNGs of a results JSON (after a change to the report code)."""
    path = Path(path)
    result = BenchResult(**json.loads(path.read_text()))
    path.with_suffix('.md').write_text(markdown(result))
    return [path.with_suffix('.md'), *plots(result, path.parent)]


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path
