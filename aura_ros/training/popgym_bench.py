"""POPGym memory tasks: AURA variants vs always-write vs a GRU of the same state bytes vs none.

`python -m aura_ros bench popgym` trains, per environment, method and seed, a memory model on
supervised labels taken from the environment's own state, then scores it closed-loop: the
model's step runs in the real POPGym environment (argmax action), and the score is POPGym's
episode return (max 1; chance about -0.5 on the Repeat tasks).

- Observations: one-hot of every discrete component of the observation, plus (where named) the
  first-step flag of popgym's `Antialias` wrapper.
- Labels: RepeatFirst: the initial card (`env.card`, state[0]); RepeatPrevious: the card k steps
  back (state[0][0], scored from step k-1 on, as the reward is); CountRecall: the count of the
  queried value so far (`env.counts[query]`).
- Training: the package's one training loop (`aura_ros.memory.training.train`, the recipe
  `python -m aura_ros train` ships) with this task's settings as its arguments: cross-entropy
  over the scored steps, batch `batch`, `updates` updates of whole episodes, no carried phase.
  Always-write, GRU and no-memory: the action loss throughout. AURA (learned gate): a warm-up
  that writes every step for `warmup` updates, then the loop's gate phase (action CE + IB over
  step offsets + sparsity, thresholds jittered).
- Writes per episode: sum of g (GRU and always-write write every step, no-memory never).

Actions do not change what these environments show, so closed-loop = the policy's own actions
fed back, as POPGym scores it.
"""

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from aura_ros import provenance
from aura_ros.memory import MemoryConfig, build_model
from aura_ros.memory.training import FeatureEpisode, TrainingConfig
from aura_ros.memory.training import train as train_loop
from aura_ros.training.synthetic_report import summarise

ENVS = {
    # name: (popgym class, first-step flag, label kind)
    'RepeatFirstEasy+flag': ('RepeatFirstEasy', True, 'first'),
    'RepeatFirstEasy': ('RepeatFirstEasy', False, 'first'),
    'RepeatPreviousEasy': ('RepeatPreviousEasy', False, 'previous'),
    'CountRecallEasy': ('CountRecallEasy', False, 'count'),
}

# method: (model kind, MemoryConfig changes, learned gate)
METHODS = {
    'aura': ('aura', {}, True),
    'aura_time': ('aura', {'time_features': 8}, True),
    'aura_time_add': ('aura', {'time_features': 8, 'write_rule': 'add'}, True),
    'always_write': ('always_write', {}, False),
    'always_write_time': ('always_write', {'time_features': 8}, False),
    'always_write_time_add': ('always_write', {'time_features': 8, 'write_rule': 'add'}, False),
    'gru': ('gru', {}, False),
    'no_memory': ('no_memory', {}, False),
}


@dataclass(frozen=True)
class PopgymSettings:
    updates: int = 600
    warmup: int = 300
    batch: int = 32
    lr: float = 3e-3
    d_key: int = 16
    d_val: int = 16
    head_hidden: int = 64
    train_episodes: int = 1024
    eval_episodes: int = 64
    w_ib: float = 1.0
    w_sparse: float = 0.1
    margin: float = 0.1


def make_env(name: str):
    import popgym.envs as envs
    from popgym.wrappers import Antialias

    cls, flag, _ = ENVS[name]
    env = getattr(envs, cls)()
    return Antialias(env) if flag else env


def _onehot(obs, flag: Optional[int], env) -> np.ndarray:
    """One-hot of the discrete observation (Discrete or MultiDiscrete) and the flag."""
    base = env.env.observation_space if flag is not None else env.observation_space
    if hasattr(base, 'nvec'):
        sizes, values = list(base.nvec), list(np.asarray(obs).ravel())
    else:
        sizes, values = [base.n], [int(obs)]
    parts = [np.eye(n, dtype=np.float32)[int(v)] for n, v in zip(sizes, values, strict=True)]
    if flag is not None:
        parts.append(np.array([float(flag)], np.float32))
    return np.concatenate(parts)


def _label(env, kind: str) -> tuple[int, bool]:
    inner = env.unwrapped
    if kind == 'first':
        return int(inner.get_state()[0]), True
    if kind == 'previous':
        cards = inner.get_state()[0]
        return int(cards[0]), inner.deck.hand_size('player') >= inner.k
    return int(inner.counts[inner.query]), True


def _split(obs, flagged: bool):
    return (obs[0], int(obs[1])) if flagged else (obs, None)


def collect(name: str, episodes: int, seed: int):
    """Observations [N, T, d], labels [N, T] and scored mask [N, T] of `episodes` episodes."""
    env = make_env(name)
    flagged, kind = ENVS[name][1], ENVS[name][2]
    xs, ys, ms = [], [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=int(seed * 100_003 + i))
        x, y, m, done = [], [], [], False
        while not done:
            o, f = _split(obs, flagged)
            x.append(_onehot(o, f, env))
            label, scored = _label(env, kind)
            y.append(label)
            m.append(scored)
            obs, _, term, trunc, _ = env.step(label)      # actions do not change the obs
            done = term or trunc
        xs.append(x)
        ys.append(y)
        ms.append(m)
    T = min(len(x) for x in xs)
    return (torch.tensor(np.array([x[:T] for x in xs])), torch.tensor([y[:T] for y in ys]),
            torch.tensor([m[:T] for m in ms]))


def n_actions(name: str) -> int:
    return int(make_env(name).action_space.n)


def build(method: str, config: MemoryConfig) -> nn.Module:
    kind, changes, _ = METHODS[method]
    return build_model(kind, config.replace(**changes))


def training_config(s: PopgymSettings, length: int, seed: int) -> TrainingConfig:
    """The shipped loop's config with this benchmark's settings (whole episodes as windows)."""
    return TrainingConfig(loss='ce', window=length, batch=s.batch, lr=s.lr,
                          warmup_iters=s.warmup, gate_iters=s.updates - s.warmup,
                          carry_iters=0, warmup_write_rate=1.0, w_ib=s.w_ib,
                          w_sparse=s.w_sparse, margin=s.margin, seed=seed)


def train(model: nn.Module, data, s: PopgymSettings, seed: int) -> nn.Module:
    """`memory.training.train` on the collected episodes: a learned gate warms up writing every
    step, then adds IB + sparsity; every other model gets the action CE throughout."""
    x, y, m = data
    episodes = [FeatureEpisode(x[i], y[i], m[i]) for i in range(len(x))]
    train_loop(model, episodes, training_config(s, x.shape[1], seed))
    return model


@torch.no_grad()
def closed_loop(model: nn.Module, name: str, episodes: int, seed: int) -> dict:
    """POPGym return and writes per episode, the model's step driving the real environment."""
    flagged = ENVS[name][1]
    envs = [make_env(name) for _ in range(episodes)]
    obs = [e.reset(seed=int(seed + i))[0] for i, e in enumerate(envs)]
    state = model.init_state(episodes)
    returns = np.zeros(episodes)
    writes = np.zeros(episodes)
    live = np.ones(episodes, bool)
    t = 0
    while live.any():
        x = torch.tensor(np.array([_onehot(*_split(o, flagged), e)
                                   for o, e in zip(obs, envs, strict=True)]))
        out = model.step(x, state, t)
        state = out['state']
        actions = out['action'][:, 0].argmax(-1).numpy()
        writes += out['g'].numpy() * live
        for i, env in enumerate(envs):
            if not live[i]:
                continue
            obs[i], reward, term, trunc, _ = env.step(int(actions[i]))
            returns[i] += reward
            live[i] = not (term or trunc)
        t += 1
    return {'return': float(returns.mean()), 'writes': float(writes.mean()), 'steps': t}


def run(envs: list[str], methods: list[str], seeds: int, s: PopgymSettings, log=print,
        on_row=None) -> dict:
    """Every (env, seed, method); seeds outermost, so a cut-short run has every method.

    `on_row(rows)` is called after each run (the CLI saves the partial results there).
    """
    rows = []
    for name in envs:
        data = collect(name, s.train_episodes, seed=1)
        d_model, classes = data[0].shape[-1], n_actions(name)
        config = MemoryConfig(d_model=d_model, d_key=s.d_key, d_val=s.d_val, d_action=classes,
                              chunk=1, head_hidden=s.head_hidden)
        for seed in range(seeds):
            for method in methods:
                torch.manual_seed(seed)
                model = build(method, config)
                start = time.perf_counter()
                train(model, data, s, seed)
                seconds = time.perf_counter() - start
                score = closed_loop(model, name, s.eval_episodes, seed=1_000_000 + seed * 1000)
                row = {'env': name, 'method': method, 'seed': seed, **score,
                       'state_bytes': model.memory_bytes(1), 'train_s': seconds}
                rows.append(row)
                log(f'{name:22s} {method:18s} seed {seed}: return {score["return"]:+.3f}, '
                    f'writes {score["writes"]:5.1f}/{score["steps"]}, '
                    f'{row["state_bytes"]} B, {seconds:5.1f} s')
                if on_row is not None:
                    on_row(rows)
    return {'rows': rows, 'summary': summary(rows)}


def summary(rows: list[dict]) -> dict:
    out: dict = {}
    for row in rows:
        out.setdefault(row['env'], {}).setdefault(row['method'], []).append(row)
    return {env: {method: {'return': summarise([r['return'] for r in rs]),
                           'writes': summarise([r['writes'] for r in rs]),
                           'steps': rs[0]['steps'], 'state_bytes': rs[0]['state_bytes'],
                           'train_s': summarise([r['train_s'] for r in rs]), 'seeds': len(rs)}
                  for method, rs in by.items()} for env, by in out.items()}


def report(result: dict) -> str:
    m = result['machine']
    lines = ['# POPGym: AURA variants vs always-write vs GRU vs no memory', '',
             f'Command: `{result["command"]}`  ', f'Commit: `{result["commit"] or "n/a"}`  ',
             f'Machine: {m["platform"]}, {m["cpus"]} CPUs shared with other jobs, torch '
             f'{m["torch"]}, 1 thread per process. Wall time {result["wall_s"] / 60:.1f} min'
             f'{" (longest of the merged runs, run side by side)" if "parts" in result else ""}'
             '.  ',
             f'Settings: {json.dumps(result["settings"])}', '',
             'Closed-loop POPGym return (max 1, chance about -0.5), mean and 95% t-interval '
             'over seeds; writes per episode; state bytes per robot.', '',
             '| env | method | return | 95% CI | writes / steps | state B | train s |',
             '|---|---|---|---|---|---|---|']
    for env, by in result['summary'].items():
        for method, r in by.items():
            ci = r['return']['ci95']
            lines.append(f'| {env} | {method} | {r["return"]["mean"]:+.3f} | '
                         f'[{ci[0]:+.3f}, {ci[1]:+.3f}] | {r["writes"]["mean"]:.1f} / '
                         f'{r["steps"]} | {r["state_bytes"]} | {r["train_s"]["mean"]:.0f} |')
    return '\n'.join(lines) + '\n'


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    envs = list(result['summary'])
    methods = list(dict.fromkeys(m for by in result['summary'].values() for m in by))
    fig, ax = plt.subplots(figsize=(2.6 * len(envs) + 2, 4))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        xs, ys, err = [], [], [[], []]
        for i, env in enumerate(envs):
            r = result['summary'][env].get(method)
            if r is None:
                continue
            mean, (lo, hi) = r['return']['mean'], r['return']['ci95']
            xs.append(i + j * width - 0.4 + width / 2)
            ys.append(mean)
            err[0].append(mean - lo)
            err[1].append(hi - mean)
        ax.bar(xs, ys, width, yerr=err, label=method, capsize=2)
    ax.set_xticks(range(len(envs)), envs, fontsize=8)
    ax.axhline(0, color='k', lw=0.5)
    ax.set_ylabel('closed-loop return (max 1)')
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(parts: list[Path], out: Path) -> dict:
    """One report from several runs (e.g. split over processes): rows joined, summary redone."""
    loaded = [json.loads(Path(p).read_text()) for p in parts]      # .partial.json files too
    rows = [r for part in loaded for r in part['rows']]
    result = {'rows': rows, 'summary': summary(rows),
              'command': ' ; '.join(part['command'] for part in loaded),
              'commit': loaded[0]['commit'], 'machine': loaded[0]['machine'],
              'settings': loaded[0]['settings'],
              'wall_s': max(part['wall_s'] for part in loaded),
              'parts': [str(p) for p in parts]}
    _write(result, out)
    return result


def _write(result: dict, out: Path) -> None:
    provenance.write_results(out, result, report(result))
    plot(result, out.with_suffix('.png'))
    print(f'wrote {out}, {out.with_suffix(".md")}, {out.with_suffix(".png")}')


def main(args: argparse.Namespace) -> int:
    if args.merge:
        merge([Path(p) for p in args.merge], Path(args.out))
        return 0
    torch.set_num_threads(args.threads)
    s = PopgymSettings(updates=args.updates, warmup=args.updates // 2,
                       eval_episodes=args.eval_episodes)
    envs = args.envs or list(ENVS)
    methods = args.methods or list(METHODS)
    unknown = [e for e in envs if e not in ENVS] + [m for m in methods if m not in METHODS]
    if unknown:
        print(f'error: unknown env/method {unknown}; envs: {list(ENVS)}; methods: '
              f'{list(METHODS)}')
        return 2
    command = (f'python -m aura_ros bench popgym --seeds {args.seeds} --updates {args.updates} '
               f'--eval-episodes {args.eval_episodes} --envs {" ".join(envs)} '
               f'--methods {" ".join(methods)}')
    start = time.perf_counter()
    meta = dict(command=command, commit=provenance.commit(), machine=provenance.machine(),
                settings=asdict(s))
    partial = Path(args.out).with_suffix('.partial.json')

    def save(rows):
        partial.write_text(json.dumps({'rows': rows, 'summary': summary(rows), **meta,
                                       'wall_s': time.perf_counter() - start}, indent=2))

    partial.parent.mkdir(parents=True, exist_ok=True)
    result = run(envs, methods, args.seeds, s, on_row=save)
    result.update(meta, wall_s=time.perf_counter() - start)
    _write(result, Path(args.out))
    return 0
