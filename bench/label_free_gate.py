"""Label-free gate experiments on a trained run's saved features: which warm-up makes the IB
utility point at the cue frames, and does a gate trained towards a write budget learn them.

    python bench/label_free_gate.py --data BAGS --model-dir RUN --warmup random:0.1 \\
        --warmup-iters 1500 --budget 0.1 0.03 --tag NAME [--synthetic] [--margin-gate] \\
        [--utility gradient] [--balance B]

RUN is what `python -m aura_ros train --data BAGS --out RUN` wrote (its checkpoints keep the
frozen backbone's features); the split is the trainer's. An AURA layer (whitened input, writes
that leave b alone) is warmed up on the training features with writes `--warmup`: `random:R`
(at random with rate R: the trainer's warm-up), `always`, or `unexplained:S` (forced onto the
share S of frames whose change the joint states explain least: no labels). Then, on the
held-out episodes with the same writes: the IB utility of a write on cue, distractor and other
frames (mean, the share each write budget's target asks for, the share of cue and distractor
events with a frame in it, AUC). With `--budget START END` (or `--margin-gate`: the margin
target) the gate phase follows and the gate is scored held out: write probability and writes
per kind of frame, error after GO and on every frame, also at thresholds 0.3-0.7. Cue and
distractor frames and "after GO" come from the bags' /task_events (with --synthetic: the
synthetic bags' known timing), never from training. Writes OUT/NAME.json. One seed: a guide.
"""

import argparse
import functools
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import so101_heldout as heldout  # noqa: E402

from aura_ros.data import load_demonstrations  # noqa: E402
from aura_ros.memory import (  # noqa: E402
    MemoryConfig,
    build_model,
    fit_input_map,
    load_checkpoint,
    save_checkpoint,
)
from aura_ros.memory.gates import AlwaysWrite, ForcedWrites, RandomSchedule  # noqa: E402
from aura_ros.memory.losses import budget_target  # noqa: E402
from aura_ros.memory.objective import (  # noqa: E402
    gated_forward,
    gradient_utility,
    offset_utility,
)
from aura_ros.memory.training import (  # noqa: E402
    FeatureEpisode,
    evaluate,
    set_threshold,
    train,
)
from aura_ros.training import trainer  # noqa: E402

BUDGETS = (0.01, 0.02, 0.05)


def runs(mask: torch.Tensor) -> torch.Tensor:
    """Each frame of a run of flagged frames carries the run's number (1-based), others 0."""
    onset = mask & ~torch.cat([mask.new_zeros(1), mask[:-1]])
    return torch.cumsum(onset.long(), 0) * mask


def warm_policy(kind: str, value: str, flags=None, seed: int = 5):
    """The writes of the warm-up, as a policy for held-out episodes (`flags`: per-episode)."""
    if kind == 'random':
        return RandomSchedule(float(value), seed=seed)
    if kind == 'always':
        return AlwaysWrite()
    policy = ForcedWrites()
    policy.queue = [f.clone() for f in flags]
    return policy


@torch.no_grad()
def utility_by_kind(model, episodes, masks, window, tcfg, kind, value, flags, reduce,
                    utility='counterfactual') -> dict:
    """The IB utility of every held-out frame (writes as in the warm-up), by kind of frame."""
    utils, picks = [], {b: [] for b in BUDGETS}
    for i, ep in enumerate(episodes):
        for start in range(0, len(ep.features), window):
            z = ep.features[start:start + window][None]
            target = ep.targets[start:start + window][None]
            if kind == 'unexplained':
                gate = ForcedWrites()
                gate.flags = flags[i][start:start + window][None]
            else:
                gate = warm_policy(kind, value, seed=i * 1000 + start)
            out = gated_forward(model, z, gate=gate)
            if utility == 'gradient':
                u = gradient_utility(model, out, target, kind=tcfg.loss)
            else:
                u, _ = offset_utility(model, out, target, tcfg.offsets, kind=tcfg.loss,
                                      reduce=reduce, margin=tcfg.margin)
            utils.append(u[0])
            for b in BUDGETS:
                picks[b].append(budget_target(u, b)[0] > 0)
    u = torch.cat(utils)
    picks = {b: torch.cat(p) for b, p in picks.items()}
    result = {k: {'mean': float(u[m].mean()) if m.any() else None,
                  **{f'top{b}': float(p[m].float().mean()) if m.any() else None
                     for b, p in picks.items()}} for k, m in masks.items()}
    result['auc'] = {f'cue vs {k}': heldout.auc(u, masks['cue'], m) for k, m in masks.items()
                     if k != 'cue'}
    hit = {}
    for k in ('cue', 'distractor'):
        numbered = runs(masks[k])
        events = int(numbered.max())
        hit[k] = {'events': events, **{
            f'top{b}': len(torch.unique(numbered[p & masks[k]])) / max(events, 1)
            for b, p in picks.items()}}
    result['events_hit'] = hit
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', type=Path, required=True)
    ap.add_argument('--model-dir', type=Path, required=True)
    ap.add_argument('--warmup', default='random:0.5',
                    help='random:RATE | always | unexplained:SHARE (default random:0.5)')
    ap.add_argument('--warmup-iters', type=int, default=300)
    ap.add_argument('--warm-from', type=Path, metavar='CKPT',
                    help='a NAME_warm.safetensors an earlier run wrote with the same --warmup '
                         'on the same run: skip the warm-up')
    ap.add_argument('--gate-iters', type=int, default=200)
    ap.add_argument('--carry-iters', type=int, default=0)
    ap.add_argument('--budget', type=float, nargs=2, metavar=('START', 'END'))
    ap.add_argument('--margin-gate', action='store_true',
                    help='a gate phase towards the margin target (no budget)')
    ap.add_argument('--ib-reduce', default='best', choices=('best', 'mean'))
    ap.add_argument('--offsets', type=int, nargs='+',
                    help='the steps ahead a write is scored at (default: the training config)')
    ap.add_argument('--utility', default='counterfactual', choices=('counterfactual', 'gradient'),
                    help='what a write is worth (TrainingConfig.utility)')
    ap.add_argument('--balance', type=float, default=1.0,
                    help="how far the budget target's positives are weighted up "
                         '(TrainingConfig.budget_balance, default 1)')
    ap.add_argument('--synthetic', action='store_true')
    ap.add_argument('--tag', required=True)
    ap.add_argument('--out', type=Path, default=Path('docs/results/label_free_gate'))
    args = ap.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    cfg = trainer.TrainerConfig.from_saved(
        json.loads((args.model_dir / trainer.REPORT_FILE).read_text())['config'])
    demos = load_demonstrations(args.data, cfg.data, progress=False)
    prepared = trainer.prepare(demos, cfg)
    split, target = prepared.split, prepared.targets
    z_train, z_held = trainer.saved_features(
        args.model_dir / trainer.CHECKPOINTS / 'features.safetensors', split)
    events_of = functools.cache(lambda name: heldout.task_events(heldout.bag_of(args.data, name)))

    def go_mask(ep) -> np.ndarray:
        if args.synthetic:
            return heldout.synthetic_frames(ep.stamps, heldout.MOVE_WINDOW_S[0], np.inf)
        return heldout.after_go(ep.stamps, events_of(ep.name))

    def kind_mask(ep, kind) -> torch.Tensor:
        if args.synthetic:
            flags = heldout.synthetic_frames(ep.stamps, *heldout.CUE_WINDOW_S) \
                if kind == 'cue' else np.zeros(len(ep.stamps), bool)
        else:
            flags = heldout.cue_frames(ep.stamps, events_of(ep.name), kinds=(kind,))
        return torch.from_numpy(flags)

    every = [FeatureEpisode(z_held[i], target(ep), name=ep.name)
             for i, ep in enumerate(split.held_out)]
    go_only = [replace(e, mask=torch.from_numpy(go_mask(ep)))
               for e, ep in zip(every, split.held_out, strict=True)]
    kinds = {k: [kind_mask(ep, k) for ep in split.held_out] for k in ('cue', 'distractor')}
    masks = {k: torch.cat(v) for k, v in kinds.items()}
    masks['other'] = ~(masks['cue'] | masks['distractor'])
    spec = yaml.safe_load((args.model_dir / 'model.yaml').read_text())
    config = MemoryConfig.from_dict(spec['memory']).replace(input_map='whiten', write_bias=False)
    tcfg = cfg.training_config()
    if args.offsets:
        tcfg = replace(tcfg, offsets=tuple(args.offsets))
    train_z = [(z_train[i], ep) for i, ep in enumerate(split.train)]
    kind, _, value = args.warmup.partition(':')
    flags_train = flags_held = None
    if kind == 'unexplained':
        scorer = heldout.unexplained_change([(z, ep.joints) for z, ep in train_z])
        scores = [scorer(z, ep.joints) for z, ep in train_z]
        cut = torch.quantile(torch.cat(scores), 1 - float(value))
        flags_train = [s > cut for s in scores]
        flags_held = [scorer(z_held[i], ep.joints) > cut for i, ep in enumerate(split.held_out)]
    train_eps = [FeatureEpisode(z, target(ep), name=ep.name,
                                hint=None if flags_train is None else flags_train[i])
                 for i, (z, ep) in enumerate(train_z)]
    torch.manual_seed(cfg.seed)
    model = build_model('aura', config)
    fit_input_map(model, [ep.features for ep in train_eps])
    warm = replace(tcfg, warmup_iters=args.warmup_iters, gate_iters=0, carry_iters=0)
    # the warm-up's write rate (also what a gradient utility is scored under)
    rate = {'always': 1.0, 'random': float(value or 0)}.get(kind, tcfg.warmup_write_rate)
    if args.warm_from:
        load_checkpoint(args.warm_from, model)
    elif kind == 'unexplained':        # the warm-up writes follow the flags (as hints would)
        train(model, train_eps, warm, phases=('warmup',), gate=ForcedWrites())
    else:
        train(model, train_eps, replace(warm, warmup_write_rate=rate), phases=('warmup',))
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, args.out / f'{args.tag}_warm.safetensors')
    result = {'command': 'python ' + ' '.join(sys.argv),
              'machine': f'{platform.machine()} CPU, torch {torch.__version__}',
              'held_out': split.how,
              'warm_after_go': evaluate(model, go_only, gate=warm_policy(kind, value, flags_held))
              ['action_error'],
              'warm_every': evaluate(model, every, gate=warm_policy(kind, value, flags_held))
              ['action_error'],
              'utility': utility_by_kind(model, every, masks, tcfg.window, tcfg, kind, value,
                                         flags_held, args.ib_reduce, args.utility)}
    print(json.dumps(result, indent=1), flush=True)
    if args.budget or args.margin_gate:
        gcfg = replace(tcfg, gate_iters=args.gate_iters, carry_iters=args.carry_iters,
                       ib_reduce=args.ib_reduce, utility=args.utility, warmup_write_rate=rate,
                       write_budget=tuple(args.budget) if args.budget else None,
                       budget_balance=args.balance)
        history = train(model, [replace(e, hint=None) for e in train_eps], gcfg,
                        phases=('gate', 'carry'))
        save_checkpoint(model, args.out / f'{args.tag}_gate.safetensors')
        gate = {'by_frame': heldout.write_probability(model, every, kinds),
                'collapses': history.collapses, 'after_go': evaluate(model, go_only),
                'every': evaluate(model, every), 'last': history.last('gate')}
        for threshold in (0.3, 0.4, 0.6, 0.7):
            set_threshold(model, threshold)
            gate[f'th{threshold}'] = {
                'after_go': evaluate(model, go_only)['action_error'],
                'by_frame': heldout.write_probability(model, every, kinds)}
        set_threshold(model, gcfg.threshold)
        result['gate'] = gate
    result['wall_s'] = round(time.time() - started, 1)
    (args.out / f'{args.tag}.json').write_text(json.dumps(result, indent=1, default=str) + '\n')
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == '__main__':
    sys.exit(main())
