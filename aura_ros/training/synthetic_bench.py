"""Synthetic event-recall benchmark: AURA against every baseline on identical data.

Every method is trained by the package's one training loop, `aura_ros.memory.training.train`
(the recipe `python -m aura_ros train` ships: its windows, its IB over step offsets, its
threshold jitter), on the same pool of `pool` training episodes and the same window draws, with
the task's settings as its arguments (`Setting.training`: cross-entropy loss, lr, batch,
warm-up write rate, IB and sparsity weights). Per setting and seed:

1. warm-up: AURA's layer, `warmup_steps` updates of the loop's warm-up phase (writes at random
   at `warmup_write_rate`, 1 = every step; action loss only). The warm-up keeps AURA's gate
   from closing before the memory is useful (the known failure mode, docs/design.md section 4);
   write dropout keeps the memory from relying on every write, which would make every write
   look useful to the IB term.
2. from that warm-up, `gate_steps` updates of the loop's gate phase each for: always_write
   (action loss, AlwaysWrite; trained from scratch instead when the warm-up used write dropout),
   aura (learned gate: action + IB + sparsity), the ablations aura_no_ib and aura_no_sparse,
   and the budget-matched random_budget, periodic_budget and surprise_budget (action loss,
   their fixed schedule at the write rate AURA's gate realises on the evaluation set). Every
   layer-based method thus gets warmup_steps + gate_steps updates.
3. gru, kv_cache and no_memory from scratch for warmup_steps + gate_steps updates.

The loop's carried phase is not run (`carry_iters` 0): the episodes are independent and each
is scored from an empty memory. Training runs at `train_len` steps per episode and the
evaluation at the setting's horizons, on a held-out batch. Accuracy = argmax(logits) == target
over the scored steps (every step once every object is bound: t >= n_objects). Writes per
episode = sum of g over the episode (gru and kv_cache write every step, no_memory never).
Budget matching is redone at each evaluation horizon: random/periodic run at AURA's realised
rate there, and the surprise threshold is re-matched on the trained surprise layer's own
surprises on a calibration batch (so its realised budget is AURA's, not just its training tau).
Confidence intervals: mean +- t_{0.975, n-1} * std / sqrt(n) over seeds. The statistics, the
claims against the paper, the markdown and the plots: synthetic_report.py.
"""

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from aura_ros import provenance
from aura_ros.memory import (
    AlwaysWrite,
    AuraMemLayer,
    LearnedGate,
    MemoryConfig,
    PeriodicSchedule,
    RandomSchedule,
    SurpriseThreshold,
    build_model,
)
from aura_ros.memory.training import FeatureEpisode, TrainingConfig
from aura_ros.memory.training import train as train_loop
from aura_ros.tasks.synthetic import EASY, HARD, StreamConfig, sample
from aura_ros.training.synthetic_report import (  # noqa: F401 - ORDER, summarise: re-exported
    GATED,
    ORDER,
    BenchResult,
    aggregate,
    markdown,
    plots,
    summarise,
)

SCHEDULES = ('random_budget', 'periodic_budget', 'surprise_budget')
EVAL_SEED = 10_000_019     # evaluation batches never overlap training batches (seeds < 1e7)
CALIB_SEED = 20_000_003


@dataclass(frozen=True)
class Setting:
    """One trained configuration: a task, how it is trained, and the horizons it is scored at."""

    name: str
    stream: StreamConfig
    train_len: int
    horizons: tuple[int, ...]
    batch: int = 64
    warmup_steps: int = 500
    gate_steps: int = 400
    lr: float = 3e-3
    eval_batch: int = 256
    d_key: int = 16
    d_val: int = 16
    head_hidden: int = 64
    threshold: float = 0.5
    warmup_write_rate: float = 1.0   # < 1: warm up with random writes at this rate (see run_seed)
    pool: int = 8192                 # training episodes (drawn once per seed)
    w_ib: float = 1.0
    w_sparse: float = 0.5
    margin: float = 0.1
    target_rate: Optional[float] = None
    sweep: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)

    def memory_config(self) -> MemoryConfig:
        return MemoryConfig(d_model=self.stream.d_feature, d_key=self.d_key, d_val=self.d_val,
                            d_action=self.stream.n_classes, chunk=1, head_hidden=self.head_hidden,
                            gate_threshold=self.threshold)

    def training(self, seed: int, **changes) -> TrainingConfig:
        """The shipped loop's config with this task's settings (no carried phase)."""
        base = dict(loss='ce', window=self.train_len, batch=self.batch, lr=self.lr,
                    warmup_iters=self.warmup_steps, gate_iters=self.gate_steps, carry_iters=0,
                    warmup_write_rate=self.warmup_write_rate, w_ib=self.w_ib,
                    w_sparse=self.w_sparse, margin=self.margin, target_rate=self.target_rate,
                    threshold=self.threshold, seed=seed)
        return TrainingConfig(**{**base, **changes})


def full_settings() -> list[Setting]:
    """The full run: the easy task trained at 64 and scored at N = 64 and 256; the hard task
    trained at 64 and scored at N = 64 and 512 (~60 min on one shared CPU thread before the
    shipped loop; run one process per setting with `--settings`)."""
    sweep = (0.05, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.97)
    return [Setting('easy', EASY, train_len=64, horizons=(64, 256), warmup_steps=500,
                    gate_steps=350, sweep=sweep),
            Setting('hard', HARD, train_len=64, horizons=(64, 512), warmup_steps=500,
                    gate_steps=350, eval_batch=192, sweep=sweep, warmup_write_rate=0.5)]


def quick_settings() -> list[Setting]:
    """A few minutes on one CPU thread: short training, small evaluation."""
    return [Setting('easy', EASY, train_len=48, horizons=(64,), warmup_steps=200,
                    gate_steps=150, eval_batch=128, sweep=(0.2, 0.5, 0.8)),
            Setting('hard', HARD, train_len=48, horizons=(128,), warmup_steps=250,
                    gate_steps=150, eval_batch=128, sweep=(0.2, 0.5, 0.8),
                    warmup_write_rate=0.5)]


# -- training -------------------------------------------------------------------------------------

def training_episodes(setting: Setting, seed: int) -> list[FeatureEpisode]:
    """The seed's pool of training episodes at `train_len` (every method trains on these)."""
    stream = setting.stream.replace(world_seed=seed)
    data = sample(stream, setting.pool, seed * 1_000_003, horizon=setting.train_len)
    return [FeatureEpisode(data.z[i], data.target[i], data.score[i]) for i in range(setting.pool)]


def train(model: nn.Module, episodes: list, config: TrainingConfig, phases=('warmup', 'gate'),
          gate=None, progress=None) -> nn.Module:
    """`memory.training.train` over `phases`; `gate`: a fixed policy the writes follow."""
    train_loop(model, episodes, config, phases=phases, gate=gate)
    if progress is not None:
        progress.update(sum(getattr(config, f'{p}_iters') for p in phases))
    return model


@torch.no_grad()
def evaluate(model: nn.Module, data, gate=None) -> dict:
    """Accuracy over the scored steps, writes per episode, and the gate's records, the whole
    batch in one forward; `gate` decides the writes (the model's own policy if None)."""
    model.eval()
    out = model(data.z) if gate is None else model(data.z, gate=gate)
    hit = (out['action'][..., 0, :].argmax(-1) == data.target) & data.score
    acc_per_episode = hit.sum(1).float() / data.score.sum(1).float()
    g = out['g'].float()
    return {'accuracy': float(acc_per_episode.mean()), 'writes': float(g.sum(1).mean()),
            'rate': float(g.mean()), 'g': g, 'p': out['p'].float(),
            'surprise': out['surprise'].float()}


def _seed_everything(seed: int, salt: int) -> None:
    torch.manual_seed(seed * 7919 + salt)


def _gate_stats(res: dict, data) -> dict:
    ev, di = data.is_event, data.is_distractor
    fill = ~(ev | di)
    return {'p_write_event': float(res['g'][ev].mean()),
            'p_write_distractor': float(res['g'][di].mean()),
            'p_write_filler': float(res['g'][fill].mean()),
            'gate_p_event': float(res['p'][ev].mean()),
            'gate_p_distractor': float(res['p'][di].mean()),
            'gate_p_filler': float(res['p'][fill].mean())}


def run_seed(setting: Setting, seed: int, progress=None, log=print) -> dict:
    """Train every method for one seed and score it at every horizon of the setting."""
    cfg = setting.memory_config()
    evals = {N: sample(setting.stream.replace(world_seed=seed), setting.eval_batch,
                       EVAL_SEED + seed, horizon=N) for N in setting.horizons}
    calib = {N: sample(setting.stream.replace(world_seed=seed), setting.eval_batch,
                       CALIB_SEED + seed, horizon=N) for N in setting.horizons}
    config = setting.training(seed)
    episodes = training_episodes(setting, seed)
    t0 = time.time()

    # Write dropout (warmup_write_rate < 1): a memory warmed up with every write learns to rely
    # on all of them, so skipping any one looks harmful and the IB targets stop singling out
    # events (on the hard task one seed's gate then closed for good). Random skips make the
    # counterfactual utility of a write meaningful.
    _seed_everything(seed, 0)
    warm = train(build_model('aura', cfg), episodes, config, ('warmup',), progress=progress)
    models: dict[str, nn.Module] = {}
    if setting.warmup_write_rate < 1.0:
        _seed_everything(seed, 0)
        models['always_write'] = train(build_model('always_write', cfg), episodes, config,
                                       progress=progress)
    else:
        models['always_write'] = train(_from(warm, AlwaysWrite(), 'always_write'), episodes,
                                       config, ('gate',), progress=progress)
    ablations = {'aura': config, 'aura_no_ib': setting.training(seed, w_ib=0.0),
                 'aura_no_sparse': setting.training(seed, w_sparse=0.0)}
    for name, ablation in ablations.items():
        _seed_everything(seed, 1)
        layer = _from(warm, LearnedGate(setting.threshold), name)
        models[name] = train(layer, episodes, ablation, ('gate',), progress=progress)

    first = setting.horizons[0]
    aura_first = evaluate(models['aura'], evals[first])
    rate = max(aura_first['rate'], 1e-3)
    tau = SurpriseThreshold.matched_to_rate(aura_first['surprise'], rate).tau
    policies = {'random_budget': RandomSchedule(rate, seed), 'periodic_budget':
                PeriodicSchedule(rate), 'surprise_budget': SurpriseThreshold(tau)}
    for name, policy in policies.items():
        _seed_everything(seed, 2)
        models[name] = train(_from(warm, policy, name), episodes, config, ('gate',),
                             progress=progress)
    for salt, name in enumerate(('gru', 'kv_cache', 'no_memory')):
        _seed_everything(seed, 10 + salt)
        models[name] = train(build_model(name, cfg), episodes, config, progress=progress)
    train_s = time.time() - t0

    results = {}
    for N in setting.horizons:
        data = evals[N]
        row = {}
        aura_res = evaluate(models['aura'], data)
        r_n = max(aura_res['rate'], 1e-3)
        budget = {'random_budget': RandomSchedule(r_n, EVAL_SEED + seed),
                  'periodic_budget': PeriodicSchedule(r_n),
                  'surprise_budget': match_surprise_budget(models['surprise_budget'], calib[N],
                                                           r_n)}
        for name, model in models.items():
            res = aura_res if name == 'aura' else evaluate(model, data, budget.get(name))
            entry = {'accuracy': res['accuracy'], 'writes_per_episode': res['writes']}
            if name in GATED:
                entry.update(_gate_stats(res, data))
            row[name] = entry
        row['_budget'] = {'rate': r_n, 'train_rate': rate, 'train_tau': tau}
        row['_frontier'] = frontier(models['aura'], models['always_write'], setting, data, seed)
        if N == setting.horizons[-1]:
            row['_timeline'] = _timeline(aura_res, data)
        results[N] = row
    log(f'[{setting.name} seed {seed}] trained in {train_s:.0f}s; ' + '; '.join(
        f'N={N}: ' + ', '.join(f'{k} {v["accuracy"]:.3f}/{v["writes_per_episode"]:.1f}w'
                                for k, v in row.items() if not k.startswith('_'))
        for N, row in results.items()))
    return results


def match_surprise_budget(model: nn.Module, data, rate: float,
                          iterations: int = 10) -> SurpriseThreshold:
    """The raw-surprise threshold whose realised write rate on `data` is closest to `rate`.

    Surprises depend on what was written before, so a quantile of one run's surprises does not
    realise its own rate; a bisection over tau (on log scale) on the calibration batch does.
    """
    start = evaluate(model, data, AlwaysWrite())['surprise']
    lo, hi = math.log(float(start.min()) + 1e-8), math.log(float(start.max()) + 1e-8) + 2.0
    best = SurpriseThreshold.matched_to_rate(start, rate)
    best_gap = abs(evaluate(model, data, best)['rate'] - rate)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        policy = SurpriseThreshold(math.exp(mid))
        realised = evaluate(model, data, policy)['rate']
        if abs(realised - rate) < best_gap:
            best, best_gap = policy, abs(realised - rate)
        if realised > rate:
            lo = mid
        else:
            hi = mid
    return best


def _from(warm: AuraMemLayer, policy, kind: str) -> AuraMemLayer:
    """A layer with `policy` as its own gate and the warmed-up weights."""
    layer = AuraMemLayer(warm.config, policy)
    layer.load_state_dict(warm.state_dict())
    layer.kind = kind
    return layer


def frontier(aura: nn.Module, always: nn.Module, setting: Setting, data, seed: int) -> dict:
    """Accuracy vs writes: AURA over gate thresholds, and input-blind schedules at its budgets.

    Evaluation-time only (no retraining): AURA's trained layer with `LearnedGate(x)` for each x in
    `setting.sweep`, and the trained always-write layer run under random/periodic schedules at
    the write rate each threshold realised.
    """
    points = {'aura': [], 'random': [], 'periodic': []}
    for thr in setting.sweep:
        res = evaluate(aura, data, LearnedGate(thr))
        points['aura'].append({'threshold': thr, 'writes': res['writes'],
                               'accuracy': res['accuracy']})
        rate = min(max(res['rate'], 1e-3), 1.0)
        for name, policy in (('random', RandomSchedule(rate, EVAL_SEED + seed)),
                             ('periodic', PeriodicSchedule(rate))):
            r = evaluate(always, data, policy)
            points[name].append({'writes': r['writes'], 'accuracy': r['accuracy']})
    return points


def _timeline(res: dict, data, episode: int = 0) -> dict:
    return {'is_event': data.is_event[episode].int().tolist(),
            'is_distractor': data.is_distractor[episode].int().tolist(),
            'g': res['g'][episode].int().tolist(),
            'p': [round(float(x), 4) for x in res['p'][episode]]}


def run_bench(settings: list[Setting], seeds: list[int], progress: bool = True,
              log=print, on_seed=None) -> BenchResult:
    """Every setting x seed; a tqdm bar counts training updates. `on_seed(result)` gets the
    result so far (the seeds done of the current setting) after each seed."""
    from tqdm import tqdm

    per_setting_updates = [s.warmup_steps + 7 * s.gate_steps + 3 * (s.warmup_steps
                                                                     + s.gate_steps)
                           + (s.warmup_steps if s.warmup_write_rate < 1.0 else 0)
                           for s in settings]
    total = sum(per_setting_updates) * len(seeds)
    t0 = time.time()
    configs = []

    def result(configurations: list) -> BenchResult:
        return BenchResult(command='python -m aura_ros ' + ' '.join(sys.argv[1:])
                           if sys.argv[0].endswith('__main__.py') else ' '.join(sys.argv),
                           commit=provenance.commit() or None, machine=provenance.machine(),
                           wall_s=time.time() - t0, configurations=configurations)

    with tqdm(total=total, desc='synthetic bench', unit='upd', disable=not progress,
              file=sys.stderr, mininterval=2.0) as bar:
        for setting in settings:
            per_seed = []
            for seed in seeds:
                per_seed.append(run_seed(setting, seed, progress=bar,
                                         log=bar.write if log is print else log))
                if on_seed is not None:
                    on_seed(result(configs + aggregate(setting, per_seed, seeds[:len(per_seed)])))
            configs.extend(aggregate(setting, per_seed, seeds))
    return result(configs)


def merge(parts: list[Path]) -> BenchResult:
    """One result from runs split over processes (e.g. one per setting; .partial.json files
    too): their configurations joined, the commands joined, the longest wall time."""
    loaded = [json.loads(Path(p).read_text()) for p in parts]
    return BenchResult(command=' ; '.join(part['command'] for part in loaded),
                       commit=loaded[0]['commit'], machine=loaded[0]['machine'],
                       wall_s=max(part['wall_s'] for part in loaded),
                       configurations=[c for part in loaded for c in part['configurations']])


# -- command line ---------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> int:
    """`python -m aura_ros bench synthetic [--quick] [--out PATH] [--seeds N]` (args: cli.py)."""
    torch.set_num_threads(max(1, args.threads))
    settings = quick_settings() if args.quick else full_settings()
    if args.settings:
        known = [s.name for s in settings]
        if any(name not in known for name in args.settings):
            print(f'error: unknown setting(s) {args.settings}; known: {known}')
            return 2
        settings = [s for s in settings if s.name in args.settings]
    n_seeds = args.seeds or (1 if args.quick else 3)
    default = 'docs/results/quick/synthetic.json' if args.quick else 'docs/results/synthetic.json'
    out = Path(args.out or default)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge:
        result = merge([Path(p) for p in args.merge])
    else:
        partial = out.with_suffix('.partial.json')
        result = run_bench(settings, list(range(n_seeds)), on_seed=lambda r: partial.write_text(
            json.dumps(asdict(r), indent=1) + '\n'))
    out.write_text(json.dumps(asdict(result), indent=1) + '\n')
    out.with_suffix('.md').write_text(markdown(result))
    print(f'wrote {out} and {out.with_suffix(".md")} ({result.wall_s / 60:.1f} min)')
    if not args.no_plots:
        for path in plots(result, out.parent):
            print(f'wrote {path}')
    return 0
