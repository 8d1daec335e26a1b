"""Held-out action error of a model trained from SO-101 bags, on every frame and after GO.

    python bench/so101_heldout.py --data BAGS --model-dir DIR [--out docs/results/so101_heldout]

Any world whose bags carry the SO-101 world's `/task_events` ('start', 'cue', 'distractor', 'go',
'success'/'failure') is scored the same way: the Pusher world's bags of `record-demos pusher`
too (docs/pusher.md). The cue and distractor lengths come from the recorded 'start' event.

DIR is what `python -m aura_ros train --data BAGS --out DIR` wrote (its checkpoints/ keeps the
frozen backbone's features, its baselines/ the always-write and no-memory models). The held-out
episodes are the trainer's own split (same config, same seed). Besides the trainer's every-frame
error, the error is scored on the frames from each task's GO to its end: there the goal decides
the action and only a memory of the cue can tell it, so this is where memory must show. The
frames come from the simulator's `/task_events` recorded in each bag. Intervals are 95%
bootstrap intervals over blocks of 256 frames (aura_ros.memory.training.evaluate).

`--forced cue cue+distractor unexplained` also trains, on the same frozen features, an AURA layer
whose writes are forced onto chosen frames (no gate is learned), once per schedule and training
window (`--forced-windows`, default 512), and scores it with the same schedule on the held-out
episodes: what the memory and its read-out can do when the writes are right. Schedules: `cue`,
the 5 frames from each cue event (told by /task_events: what a gate that wrote the cue frames
would get); `cue+distractor`, those and the 5 frames from each distractor flash (a gate that
wrote every lamp); `unexplained`, the 5% of frames whose change the joint states explain least
(`unexplained_change`; no labels: what a novelty-driven write would give).

For AURA it also counts the held-out cue frames its gate wrote, and the other frames, and gives its
gate's mean write probability on cue (also by goal: a gate can learn to skip one goal's cue),
distractor (also by kind of flash: the SO-101 world's lamp, the Pusher's kind) and other frames,
and, for a run trained with the label-free default, what its gate's target asks for on each kind
(the gradient utility of a write and the share each write budget picks: a cue the target never asks
for, the gate never learns; `--target-with JSON` scores another target). And it says whether one
frame's features can tell a cue from each kind of flash at all (`feature_probe`: a logistic
regression fitted with the labels on the training episodes, its held-out AUC): a gate sees one
frame, so what the features cannot tell apart it cannot either.

`--variants raw whiten whiten_nobias ...` trains, on the same frozen features, each memory
variant of `VARIANTS` (MemoryConfig changes: `input_map`, `write_bias`) as always-write and
no-memory (`--variant-methods`) with the trainer's own recipe for a baseline (action loss,
`--variant-iters` window updates of the run's window and batch), its input map fitted on the
training features; each is saved to DIR/variants/ and scored like the trainer's models, with its
keys' cosine at initialisation. `--gate-from VARIANT` then starts AURA's gate phase (and carried
phase) from that variant's always-write memory (`--gate-iters`, `--carry-iters`, `--ib-reduce`)
and reports the gate's mean write probability and writes on cue, distractor and other frames
held out. `--ib-utility VARIANT` reports, per kind of held-out frame, the gate phase's IB target
against that variant's always-write memory before any gate update (the mean utility of a write,
and the share of frames the binary target of `losses.ib_loss` asks to write). `--skip-trained`
leaves out the trainer's own models. `--synthetic` scores bags of
`bench/write_synthetic_bags.py` instead (no /task_events: the cue frames and "after GO", from the
reach's start, come from the known timing of aura_ros.data.synthetic).

It also reports how alike the memory's keys are at initialisation (mean cosine of a cue frame's
key with every other frame's key): a delta-rule write moves every key's read by that cosine, so
with alike keys any later write overwrites most of an earlier one.
"""

import argparse
import functools
import json
import platform
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import yaml
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aura_ros.data import load_demonstrations  # noqa: E402
from aura_ros.data.align import hint_flags  # noqa: E402
from aura_ros.data.synthetic import CUE_WINDOW_S, MOVE_WINDOW_S  # noqa: E402
from aura_ros.memory import (  # noqa: E402
    AuraMemLayer,
    MemoryConfig,
    build_model,
    fit_input_map,
    load_checkpoint,
    save_checkpoint,
)
from aura_ros.memory.batches import Windows  # noqa: E402
from aura_ros.memory.gates import EitherWrites, ForcedWrites, LearnedGate  # noqa: E402
from aura_ros.memory.losses import action_loss, budget_target  # noqa: E402
from aura_ros.memory.objective import (  # noqa: E402
    gated_forward,
    gradient_utility,
    offset_utility,
    reference_writes,
)
from aura_ros.memory.training import (  # noqa: E402
    FeatureEpisode,
    TrainingConfig,
    evaluate,
    train,
)
from aura_ros.memory.training_config import mixture_can_score  # noqa: E402
from aura_ros.training import trainer  # noqa: E402


def task_events(bag: Path) -> list[dict]:
    from rosbags.highlevel import AnyReader

    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == '/task_events']
        return [json.loads(reader.deserialize(raw, c.msgtype).data)
                for c, _, raw in reader.messages(connections=conns)]


def after_go(stamps: np.ndarray, events: list[dict], goal: Optional[int] = None) -> np.ndarray:
    """Frames from each task's GO up to its outcome (only the tasks of `goal` if given)."""
    go = {e['task']: e['stamp'] for e in events
          if e['event'] == 'go' and (goal is None or e.get('goal') == goal)}
    mask = np.zeros(len(stamps), bool)
    for e in events:
        if e['event'] in ('success', 'failure') and e.get('task') in go:
            mask |= (stamps >= go[e['task']]) & (stamps <= e['stamp'])
    return mask


def cue_frames(stamps: np.ndarray, events: list[dict], frames: int = 5,
               kinds: tuple = ('cue',), sub: Optional[str] = None) -> np.ndarray:
    """The frames that show an event of `kinds` (a cue by default): from each such event on,
    `frames` long, placed as the data layer places hints; with `sub`, only the events of that
    `sub_kind`."""
    return hint_flags(stamps, [e['stamp'] for e in events if e['event'] in kinds
                               and (sub is None or sub_kind(e) == sub)], frames)


def sub_kind(event: dict) -> Optional[str]:
    """Which kind of its event an event is: a distractor flash by the SO-101 world's lamp
    ('lamp cue': the cue lamp in a decoy colour, 'lamp decoy': the decoy lamp in a pad colour)
    or the Pusher's kind ('kind lamp', 'kind target'); a cue by its goal ('goal 1'); None if it
    says none of these."""
    field = next((f for f in ('lamp', 'kind', 'goal') if f in event), None)
    return None if field is None else f'{field} {event[field]}'


def feature_probe(train: tuple, held: tuple, negatives: dict) -> dict:
    """How well one frame's features tell a cue frame from each kind of flash, held out: AUC
    of a logistic regression fitted on the training episodes' cue and flash frames, with their
    labels (a diagnostic of the backbone only: no gate ever sees a label). `train`/`held` are
    (features [N, D], {kind: bool [N]}) with 'cue' among the kinds; `negatives` names the
    kinds to tell apart from it; None where a side has no frame of one of the two."""
    def rows(part, kind):
        z, flags = part
        pick = flags['cue'] | flags[kind]
        return z[pick].float(), flags['cue'][pick]

    out = {}
    for name, kind in negatives.items():
        (x, y), (xh, yh) = rows(train, kind), rows(held, kind)
        if all(v.any() and (~v).any() for v in (y, yh)):
            out[name] = logistic_auc(x, y, xh, yh)
        else:
            out[name] = None
    return out


def logistic_auc(x: Tensor, y: Tensor, x_held: Tensor, y_held: Tensor) -> Optional[float]:
    """AUC on (x_held, y_held) of a logistic regression (standardised inputs, a little L2)
    fitted on (x, y); y are bool."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn='strong_wolfe')

    def loss():
        opt.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(
            (x - mean) / std @ w + b, y.float()) + 1e-3 * w.square().sum()
        value.backward()
        return value
    opt.step(loss)
    with torch.no_grad():
        return auc((x_held - mean) / std @ w + b, y_held, ~y_held)


def shown_frames(events: list[dict], kind: str) -> int:
    """How many frames an event of `kind` shows, from the recorded 'start' event's world config
    (cue_frames, distractor_frames); 5, the SO-101 world's, when the bag has no 'start'."""
    start = next((e for e in events if e['event'] == 'start'), {})
    return int(start.get('config', {}).get(f'{kind}_frames', 5))


def forced(config: MemoryConfig, train_eps: list, held: dict, window: int, iters: int) -> dict:
    """AURA trained (action loss, Adam) with its writes forced onto the flagged frames, which ride
    in each episode's `mask` here; evaluated on `held` {name: (episodes, flags)} the same way."""
    policy = ForcedWrites()
    torch.manual_seed(0)
    model = AuraMemLayer(config, policy)           # its writes follow the flags
    windows = Windows(train_eps, window, 0.5, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(iters):
        batch = windows.sample(16)
        policy.flags = batch.mask
        err = action_loss(model(batch.z)['action'], batch.target)
        loss = (err * batch.valid).sum() / batch.valid.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    rows = {}
    for name, (episodes, flags) in held.items():
        policy.queue = list(flags)
        rows[name] = evaluate(model, episodes)
    return rows


@torch.no_grad()
def cue_writes(model, episodes: list, cues: list) -> dict:
    """How many of the held-out cue frames a gated model writes, and how many other frames."""
    wrote = [model(ep.features[None])['g'][0] > 0 for ep in episodes]
    pairs = list(zip(wrote, cues, strict=True))
    return {'on_cue_frames': sum(int((w & c).sum()) for w, c in pairs),
            'elsewhere': sum(int((w & ~c).sum()) for w, c in pairs),
            'cue_frames': sum(int(c.sum()) for c in cues)}


def top_share(scores: list, flags: list, top: float = 0.05) -> dict:
    """How many of the `top` highest-scoring frames are cue frames, against the cue share, and
    how many cues (runs of cue frames) have at least one frame among them."""
    score, cue = torch.cat(scores), torch.cat(flags)
    chosen = score > torch.quantile(score, 1.0 - top)
    onset = cue & ~torch.cat([cue.new_zeros(1), cue[:-1]])
    run = torch.cumsum(onset.long(), 0)            # cue k's frames carry k (1-based)
    hit = torch.unique(run[chosen & cue])
    return {'top': top, 'chosen': int(chosen.sum()), 'cue_chosen': int((chosen & cue).sum()),
            'cue_frames': int(cue.sum()), 'frames': len(cue), 'cues': int(onset.sum()),
            'cues_hit': len(hit)}


def unexplained_change(train: list, ridge: float = 1.0):
    """A scorer fitted on `train` [(features [T, d], joints [T, n]) per episode]: a ridge
    regression that predicts a frame's features from the previous frame's features and the
    joint states of both frames. score(features, joints) -> [T]: each frame's squared residual
    (0 for the first). The change the arm's own motion explains scores low; lamps, flashes,
    anything the joints cannot predict, high."""
    def design(z, joints):
        j = torch.tensor(np.asarray(joints), dtype=z.dtype)     # a copy: memmaps are read-only
        return torch.cat([z[:-1], j[:-1], j[1:]], -1), z[1:]

    x, y = (torch.cat(parts) for parts in zip(*(design(z, j) for z, j in train), strict=True))
    mx, sx, my, sy = x.mean(0), x.std(0) + 1e-4, y.mean(0), y.std(0) + 1e-4
    xn, yn = (x - mx) / sx, (y - my) / sy
    w = torch.linalg.solve(xn.T @ xn + ridge * torch.eye(xn.shape[1], dtype=x.dtype), xn.T @ yn)

    def score(z, joints):
        x, y = design(z, joints)
        residual = (((x - mx) / sx) @ w - (y - my) / sy).pow(2).mean(-1)
        return torch.cat([residual.new_zeros(1), residual])

    return score


#: forced-write schedules -> the /task_events kinds they write ('unexplained' uses no events:
#: it writes the top 5% of frames by unexplained_change)
SCHEDULES = {'cue': ('cue',), 'cue+distractor': ('cue', 'distractor'), 'unexplained': ()}


#: memory variants of `--variants`: MemoryConfig changes on the trainer's config
VARIANTS = {'raw': {'input_map': 'none', 'write_bias': True},
            'nobias': {'input_map': 'none', 'write_bias': False},
            'center': {'input_map': 'center', 'write_bias': True},
            'center_nobias': {'input_map': 'center', 'write_bias': False},
            'whiten': {'input_map': 'whiten', 'write_bias': True},
            'whiten_nobias': {'input_map': 'whiten', 'write_bias': False}}


@torch.no_grad()
def key_cosine(config: MemoryConfig, features: list, cues: list, frames: int = 3000,
               fit_on: tuple = ()) -> dict:
    """Mean cosine between the keys of a freshly initialised AURA layer (seed 0), its input map
    fitted on `fit_on` (training features): of cue frames with all other frames, and over all
    pairs, on the first `frames` held-out frames."""
    torch.manual_seed(0)
    layer = build_model('aura', config)
    fit_input_map(layer, fit_on)
    z, cue = torch.cat(features)[:frames], torch.cat(cues)[:frames]
    k = layer.project(z[None])['k'][0]
    cos = k @ k.T
    pairs = ~torch.eye(len(k), dtype=torch.bool)
    return {'cue_vs_other': float(cos[cue][:, ~cue].mean()), 'all_pairs': float(cos[pairs].mean()),
            'frames': len(k)}


def variant_model(method: str, config: MemoryConfig, train_eps: list, tcfg: TrainingConfig,
                  iters: int, seed: int):
    """A baseline of `method` on `config`, its input map fitted on the training features, trained
    as the trainer trains a baseline: `iters` window updates of the action loss."""
    torch.manual_seed(seed)
    model = build_model(method, config)
    fit_input_map(model, [ep.features for ep in train_eps])
    train(model, train_eps, replace(tcfg, warmup_iters=iters, gate_iters=0, carry_iters=0))
    return model


@torch.no_grad()
def write_probability(model, episodes: list, flags: dict) -> dict:
    """The gate's mean write probability p, and its writes, on each kind of held-out frame
    (`flags` {kind: [bool [T] per episode]}; 'other' is every frame of no kind)."""
    outs = [model(ep.features[None]) for ep in episodes]
    p = torch.cat([o['p'][0] for o in outs])
    g = torch.cat([o['g'][0] for o in outs]) > 0
    masks = {kind: torch.cat(f) for kind, f in flags.items()}
    masks['other'] = ~functools.reduce(torch.logical_or, masks.values())
    return {kind: {'frames': int(m.sum()), 'mean_p': float(p[m].mean()) if m.any() else None,
                   'writes': int(g[m].sum())} for kind, m in masks.items()}


def error_by_goal(model, episodes: list, go_by_goal: dict, chained: bool,
                  cues: Optional[list] = None) -> dict:
    """The action error after GO of each goal's tasks {goal: evaluate's result}, with the
    model's own writes, or with `cues` (bool [T] per episode) the learned gate's writes and a
    write on every cue frame besides: a goal whose error falls only then has a read-out that
    uses a cue its gate skips; one whose error stays has a read-out with no use for it."""
    out = {}
    for goal, masks in go_by_goal.items():
        scored = [replace(ep, mask=m) for ep, m in zip(episodes, masks, strict=True)]
        gate = None
        if cues is not None:
            forced = ForcedWrites()
            forced.queue = list(cues)
            gate = EitherWrites(LearnedGate(model.config.gate_threshold), forced)
        out[goal] = evaluate(model, scored, chained=chained, gate=gate)
    return out


def gate_table(by_frame: dict) -> list[str]:
    """Markdown rows of `write_probability`'s result."""
    lines = ['| frames | count | mean write probability | writes |', '|---|---:|---:|---:|']
    for kind, r in by_frame.items():
        p = 'n/a' if r['mean_p'] is None else f'{r["mean_p"]:.3f}'
        lines.append(f'| {kind} | {r["frames"]} | {p} | {r["writes"]} |')
    return lines


def synthetic_frames(stamps: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    """Frames of a synthetic cue-then-reach episode (aura_ros.data.synthetic, one per bag, its
    first frame at t = 0) with start_s <= t < end_s."""
    t = stamps - stamps[0]
    return (t >= start_s - 1e-6) & (t < end_s - 1e-6)


def auc(scores: Tensor, positive: Tensor, negative: Tensor) -> Optional[float]:
    """The chance that a positive frame scores above a negative one (ties count half)."""
    pos, neg = scores[positive], scores[negative]
    if not len(pos) or not len(neg):
        return None
    ranks = torch.cat([pos, neg]).argsort().argsort().double()
    # average ranks of ties are not needed for a guide; utility ties are rare (floats)
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) - 1) / 2) / (len(pos) * len(neg)))


@torch.no_grad()
def ib_utility(model, episodes: list, flags: dict, tcfg: TrainingConfig,
               budgets: Sequence[float] = (0.01, 0.02, 0.05)) -> dict:
    """The gate phase's IB target: the utility of a write at every held-out frame against
    `model`'s memory, in windows of the run's length from an empty memory, averaged per kind of
    frame; `tcfg.utility` says which: 'counterfactual' (`offset_utility`: the action loss at t +
    offsets had t skipped, minus had it written, the writes as the model makes them; also the
    share of frames the IB loss asks to write, u > margin * skip loss) or 'gradient'
    (`gradient_utility` under random writes at the warm-up's rate, seeded: what the trainer's
    label-free gate is taught; with `carry_utility_writes: gate`, under the gate's own writes,
    the state carried from window to window; by `tcfg.utility_kind`'s loss). With the share
    each write budget's target asks for (`budget_target`: the top `budget` of a window by
    utility) and how well the utility ranks cue frames above the others (AUC)."""
    torch.manual_seed(0)
    own = tcfg.utility == 'gradient' and tcfg.carry_utility_writes == 'gate'
    utils, asks, chosen = [], [], {b: [] for b in budgets}
    for ep in episodes:
        parts, wants, picks = [], [], {b: [] for b in budgets}
        state = None
        for start in range(0, len(ep.features), tcfg.window):
            z = ep.features[start:start + tcfg.window][None]
            target = ep.targets[start:start + tcfg.window][None]
            out = gated_forward(model, z, state=state, t0=start)
            if own:                      # the carried phase's: the gate's writes, state carried
                state = out['state']
                u = gradient_utility(model, out, target, kind=tcfg.utility_kind)
            elif tcfg.utility == 'gradient':
                writes = reference_writes(out['g'], tcfg.warmup_write_rate)
                u = gradient_utility(model, out, target, kind=tcfg.utility_kind, writes=writes)
            else:                                   # only this target has a margin to ask for
                u, skip = offset_utility(model, out, target, tcfg.offsets, kind=tcfg.loss,
                                         reduce=tcfg.ib_reduce, margin=tcfg.margin)
                wants.append(u[0] > tcfg.margin * skip[0].clamp(min=1e-6))
            parts.append(u[0])
            for b in budgets:
                picks[b].append(budget_target(u, b)[0] > 0)
        utils.append(torch.cat(parts))
        if wants:
            asks.append(torch.cat(wants))
        for b in budgets:
            chosen[b].append(torch.cat(picks[b]))
    u, ask = torch.cat(utils), (torch.cat(asks) if asks else None)
    chosen = {b: torch.cat(c) for b, c in chosen.items()}
    masks = {kind: torch.cat(f) for kind, f in flags.items()}
    masks['other'] = ~functools.reduce(torch.logical_or, masks.values())
    out = {kind: {'frames': int(m.sum()), 'mean_utility': float(u[m].mean()) if m.any() else None,
                  'positive_share': float((u[m] > 0).float().mean()) if m.any() else None,
                  'ib_target_share': float(ask[m].float().mean())
                  if m.any() and ask is not None else None,
                  'budget_target_share': {str(b): float(c[m].float().mean()) if m.any() else None
                                          for b, c in chosen.items()}}
           for kind, m in masks.items()}
    cue = masks.get('cue')
    if cue is not None:
        out['auc'] = {f'cue vs {kind}': auc(u, cue, m) for kind, m in masks.items()
                      if kind != 'cue'}
    return out


def bag_of(data: Path, episode_name: str) -> Path:
    bags = [p for p in ([data] if (data / 'metadata.yaml').exists() else sorted(data.iterdir()))
            if p.is_dir() and p.name in episode_name]
    if len(bags) != 1:
        raise SystemExit(f'cannot tell the bag of episode {episode_name!r} in {data}')
    return bags[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', required=True, type=Path)
    ap.add_argument('--model-dir', required=True, type=Path)
    ap.add_argument('--out', type=Path, default=Path('docs/results/so101_heldout'))
    ap.add_argument('--forced', nargs='*', default=[], choices=sorted(SCHEDULES),
                    help='also train AURA with its writes forced by these schedules')
    ap.add_argument('--forced-windows', type=int, nargs='+', default=[512],
                    help='training window(s) of the forced runs (default 512)')
    ap.add_argument('--forced-iters', type=int, default=1500)
    ap.add_argument('--variants', nargs='*', default=[], choices=sorted(VARIANTS),
                    help='also train these memory variants as always-write and no-memory')
    ap.add_argument('--variant-methods', nargs='+', default=['always_write', 'no_memory'])
    ap.add_argument('--variant-iters', type=int, default=300,
                    help="window updates per variant model (the run's window and batch)")
    ap.add_argument('--gate-from', choices=sorted(VARIANTS),
                    help="start AURA's gate phase from this variant's always-write memory")
    ap.add_argument('--gate-iters', type=int, default=300)
    ap.add_argument('--carry-iters', type=int, default=0)
    ap.add_argument('--ib-reduce', choices=('mean', 'best'), default='best')
    ap.add_argument('--write-budget', type=float, nargs=2, metavar=('START', 'END'),
                    help="the gate phase's IB target: the top share of each window by utility, "
                         'annealed from START to END (TrainingConfig.write_budget)')
    ap.add_argument('--synthetic', action='store_true',
                    help='the data are aura_ros.data.synthetic cue-then-reach bags: cue frames '
                         'and "after GO" (from the move\'s start) from its known timing')
    ap.add_argument('--ib-utility', choices=sorted(VARIANTS),
                    help="the IB target (ib_reduce of --ib-reduce) of each held-out frame "
                         "against this variant's trained always-write memory, by frame kind")
    ap.add_argument('--notes', type=Path,
                    help='a markdown file put under the title (e.g. how the bags were recorded '
                         'and the run trained, with their times)')
    ap.add_argument('--target-with', type=json.loads, default={}, metavar='JSON',
                    help="TrainingConfig fields that replace the run's for the table of what "
                         "the gate's target asks for, e.g. '{\"utility\": \"counterfactual\"}' "
                         "or '{\"warmup_write_rate\": 0.5}': would another target ask for a cue")
    ap.add_argument('--skip-trained', action='store_true',
                    help="do not score the trainer's own AURA and baselines")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = trainer.TrainerConfig.from_saved(
        json.loads((args.model_dir / trainer.REPORT_FILE).read_text())['config'])
    demos = load_demonstrations(args.data, cfg.data, progress=False)
    episodes = trainer.prepare(demos, cfg)         # the trainer's split, statistics, targets
    split, target = episodes.split, episodes.targets
    z_train, z_held = trainer.saved_features(
        args.model_dir / trainer.CHECKPOINTS / 'features.safetensors', split)

    # /task_events of an episode's bag, read once however many schedules use them
    events_of = functools.cache(lambda name: task_events(bag_of(args.data, name)))

    def go_mask(ep) -> np.ndarray:
        if args.synthetic:
            return synthetic_frames(ep.stamps, MOVE_WINDOW_S[0], np.inf)
        return after_go(ep.stamps, events_of(ep.name))

    def kind_mask(ep, kinds=('cue',), sub: Optional[str] = None) -> np.ndarray:
        """Frames of the events of `kinds` (only those of `sub_kind` `sub` if given)."""
        if args.synthetic:                  # a cue and no distractor in those episodes
            return synthetic_frames(ep.stamps, *CUE_WINDOW_S) if 'cue' in kinds \
                else np.zeros(len(ep.stamps), bool)
        events = events_of(ep.name)
        return functools.reduce(np.logical_or, [
            cue_frames(ep.stamps, events, shown_frames(events, kind), kinds=(kind,),
                       sub=sub)
            for kind in kinds])

    # cue, distractor and each kind of either the bags hold (a cue by its goal: a gate can
    # skip one goal's cue; a flash by the SO-101 lamp or the Pusher's kind)
    frame_kinds = {kind: functools.partial(kind_mask, kinds=(kind,))
                   for kind in ('cue', 'distractor')}
    if not args.synthetic:
        for event in ('cue', 'distractor'):
            subs = sorted({sub_kind(e) for ep in split.train + split.held_out
                           for e in events_of(ep.name) if e['event'] == event} - {None})
            frame_kinds.update({f'{event} ({sub})': functools.partial(
                kind_mask, kinds=(event,), sub=sub) for sub in subs})

    every, go_only, held_cues = [], [], []
    for i, ep in enumerate(split.held_out):
        every.append(FeatureEpisode(z_held[i], target(ep), name=ep.name))
        go_only.append(FeatureEpisode(z_held[i], target(ep), name=ep.name,
                                      mask=torch.from_numpy(go_mask(ep))))
        held_cues.append(torch.from_numpy(kind_mask(ep)))
    spec = yaml.safe_load((args.model_dir / 'model.yaml').read_text())
    config = MemoryConfig.from_dict(spec['memory'])
    paths = {'aura': args.model_dir / 'memory.safetensors',
             **{m: args.model_dir / trainer.BASELINE_DIR / f'{m}.safetensors'
                for m in cfg.baselines}}
    tcfg = cfg.training_config()
    # the frames after GO of each goal's tasks (SO-101 bags: their GO events name the goal)
    goals = sorted({e['goal'] for ep in ([] if args.synthetic else split.held_out)
                    for e in events_of(ep.name) if e['event'] == 'go' and 'goal' in e})
    go_by_goal = {g: [torch.from_numpy(after_go(ep.stamps, events_of(ep.name), g))
                      for ep in split.held_out] for g in goals}
    rows = {}
    for method, path in ({} if args.skip_trained else paths).items():
        model = load_checkpoint(path, build_model(method, config), config=config)
        rows[method] = {'every_frame': evaluate(model, every, chained=demos.chained),
                        'after_go': evaluate(model, go_only, chained=demos.chained)}
        if go_by_goal:
            rows[method]['after_go_by_goal'] = error_by_goal(model, every, go_by_goal,
                                                             demos.chained)
        if method == 'aura':
            rows[method]['writes'] = cue_writes(model, every, held_cues)
            held_flags = {kind: [torch.from_numpy(flags(ep)) for ep in split.held_out]
                          for kind, flags in frame_kinds.items()}
            rows[method]['gate_by_frame'] = write_probability(model, every, held_flags)
            if go_by_goal:
                rows[method]['after_go_by_goal_cues_written'] = error_by_goal(
                    model, every, go_by_goal, demos.chained, held_cues)
            # what the label-free gate was taught (or, --target-with, another target)
            if tcfg.utility == 'gradient' or args.target_with:
                other = dict(args.target_with)
                if not mixture_can_score(other.get('utility', tcfg.utility),
                                         other.get('loss', tcfg.loss)):
                    other.setdefault('utility_loss', 'action')
                rows[method]['target_by_frame'] = ib_utility(
                    model, every, held_flags, replace(tcfg, **other))
    # would a surprise- or change-driven write pick the cue frames? (top 5% of held-out frames)
    novelty, surprise = [], []
    always = load_checkpoint(paths['always_write'], build_model('always_write', config),
                             config=config) if 'always_write' in paths else None
    for ep in every:
        x = torch.nn.functional.layer_norm(ep.features, ep.features.shape[-1:])
        novelty.append(torch.cat([x.new_zeros(1), (x[1:] - x[:-1]).norm(dim=-1)]))
        if always is not None:
            with torch.no_grad():
                surprise.append(always(ep.features[None])['surprise'][0])
    frame_scores = {'change from the previous frame': top_share(novelty, held_cues)}
    train_z = [(z_train[i], ep) for i, ep in enumerate(split.train)]
    unexplained = unexplained_change([(z, ep.joints) for z, ep in train_z])
    held_unexplained = [unexplained(z_held[i], ep.joints)
                        for i, ep in enumerate(split.held_out)]
    frame_scores['change the joint states do not explain'] = top_share(held_unexplained,
                                                                       held_cues)
    if surprise:
        frame_scores["always-write memory's surprise"] = top_share(surprise, held_cues)

    def features_by_kind(zs, eps) -> tuple:
        return torch.cat(zs), {kind: torch.from_numpy(np.concatenate([flags(ep) for ep in eps]))
                               for kind, flags in frame_kinds.items()}
    probe = feature_probe(features_by_kind(z_train, split.train),
                          features_by_kind(z_held, split.held_out),
                          {f'cue vs {kind}': kind for kind in frame_kinds
                           if not kind.startswith('cue')})
    # the model's input map (whitening by default) is fitted on the training features
    key_alike = key_cosine(config, [e.features for e in every], held_cues,
                           fit_on=[z for z, _ in train_z])
    train_eps = [FeatureEpisode(z, target(ep), name=ep.name) for z, ep in train_z]
    variant_keys = {}
    for name in args.variants:
        vconfig = config.replace(**VARIANTS[name])
        variant_keys[name] = key_cosine(vconfig, [e.features for e in every], held_cues,
                                        fit_on=[ep.features for ep in train_eps])
        for method in args.variant_methods:
            if method == 'no_memory' and not VARIANTS[name]['write_bias']:
                continue                     # no memory has no bias to write: same model
            model = variant_model(method, vconfig, train_eps, tcfg, args.variant_iters,
                                  cfg.seed)
            (args.model_dir / 'variants').mkdir(exist_ok=True)
            save_checkpoint(model, args.model_dir / 'variants' / f'{name}_{method}.safetensors')
            rows[f'{method}, {name}'] = {
                'every_frame': evaluate(model, every, chained=demos.chained),
                'after_go': evaluate(model, go_only, chained=demos.chained)}
    def saved_always_write(variant: str, method: str):
        """The always-write memory `--variants` saved for `variant`, loaded as a `method`."""
        vconfig = config.replace(**VARIANTS[variant])
        return load_checkpoint(args.model_dir / 'variants' / f'{variant}_always_write.safetensors',
                               build_model(method, vconfig), config=vconfig)

    utility = None
    if args.ib_utility:
        always_aura = saved_always_write(args.ib_utility, 'always_write')
        kinds = {kind: [torch.from_numpy(kind_mask(ep, (kind,))) for ep in split.held_out]
                 for kind in ('cue', 'distractor')}
        utility = {'from': args.ib_utility, 'ib_reduce': args.ib_reduce,
                   'by_frame': ib_utility(always_aura, every, kinds,
                                          replace(tcfg, ib_reduce=args.ib_reduce,
                                                  utility='counterfactual'))}
    gate = None
    if args.gate_from:
        aura = saved_always_write(args.gate_from, 'aura')
        gcfg = replace(tcfg, gate_iters=args.gate_iters, carry_iters=args.carry_iters,
                       ib_reduce=args.ib_reduce, write_budget=args.write_budget)
        history = train(aura, train_eps, gcfg, phases=('gate', 'carry'))
        save_checkpoint(aura, args.model_dir / 'variants' / f'{args.gate_from}_aura.safetensors')
        kinds = {kind: [torch.from_numpy(kind_mask(ep, (kind,))) for ep in split.held_out]
                 for kind in ('cue', 'distractor')}
        gate = {'from': args.gate_from, 'gate_iters': args.gate_iters,
                'carry_iters': args.carry_iters, 'ib_reduce': args.ib_reduce,
                'write_budget': args.write_budget,
                'threshold': gcfg.threshold, 'by_frame': write_probability(aura, every, kinds),
                'collapses': history.collapses}
        rows[f'aura, gate from {args.gate_from} always-write'] = {
            'every_frame': evaluate(aura, every, chained=demos.chained),
            'after_go': evaluate(aura, go_only, chained=demos.chained)}
    for name in args.forced:
        if name == 'unexplained':
            scores = [unexplained(z, ep.joints) for z, ep in train_z]
            cut = torch.quantile(torch.cat(scores), 0.95)     # the top 5% of training frames
            train_flags = [s > cut for s in scores]
            held_flags = [s > cut for s in held_unexplained]
        else:
            def flags(ep, kinds=SCHEDULES[name]):
                return torch.from_numpy(kind_mask(ep, kinds))
            train_flags = [flags(ep) for _, ep in train_z]
            held_flags = [flags(ep) for ep in split.held_out]
        # the flags ride in the mask of these training episodes (the forced loop reads them)
        flagged = [FeatureEpisode(z, target(ep), name=ep.name, mask=f)
                   for (z, ep), f in zip(train_z, train_flags, strict=True)]
        for window in args.forced_windows:
            rows[f'{name} writes, window {window}'] = forced(
                config, flagged, {'every_frame': (every, held_flags),
                                  'after_go': (go_only, held_flags)}, window, args.forced_iters)
    result = {'command': 'python ' + ' '.join(sys.argv), 'model_dir': str(args.model_dir),
              'data': str(args.data), 'split': split.how,
              'held_out': [ep.name for ep in split.held_out],
              'after_go_frames': int(sum(int(e.mask.sum()) for e in go_only)),
              'machine': f'{platform.machine()} CPU, torch {torch.__version__}',
              'gate_threshold': config.gate_threshold, 'methods': rows,
              'cue_in_top_frames': frame_scores, 'feature_probe_auc': probe,
              'key_cosine_at_init': key_alike,
              'variant_key_cosine_at_init': variant_keys, 'variant_iters': args.variant_iters,
              'gate_from_always_write': gate, 'ib_utility': utility}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix('.json').write_text(json.dumps(result, indent=1) + '\n')
    lines = [f'# Held-out action error: `{args.model_dir}`', '',
             *([args.notes.read_text().strip(), ''] if args.notes else []),
             f'Command: `{result["command"]}`  ',
             f'Machine: {result["machine"]}; held out: {split.how} '
             f'({result["after_go_frames"]} frames after GO)', '',
             '| method | every frame [95% CI] | after GO [95% CI] | writes / episode |',
             '|---|---|---|---:|']
    def error(r: dict) -> str:            # 3 significant digits: the synthetic errors are ~1e-4
        lo, hi = r['action_error_ci']
        return f'{r["action_error"]:.3g} [{lo:.3g}, {hi:.3g}]'

    for method, r in rows.items():
        lines.append(f'| {method} | {error(r["every_frame"])} | {error(r["after_go"])} | '
                     f'{r["every_frame"]["writes_per_episode"]:.1f} |')
    by_goal = [m for m, r in rows.items() if 'after_go_by_goal' in r]
    if by_goal:
        both = [m for m in by_goal if 'after_go_by_goal_cues_written' in rows[m]]
        lines += ['', 'Action error after GO by goal (a goal whose error falls only with every '
                  'cue frame written besides has a read-out that uses a cue its gate skips):',
                  '', '| goal | frames | ' + ' | '.join(by_goal) + ''.join(
                      f' | {m}, every cue frame written besides' for m in both) + ' |',
                  '|---|---:|' + '---|' * (len(by_goal) + len(both))]
        for goal, masks in go_by_goal.items():
            cells = [error(rows[m]['after_go_by_goal'][goal]) for m in by_goal]
            cells += [error(rows[m]['after_go_by_goal_cues_written'][goal]) for m in both]
            lines.append(f'| {goal} | {sum(int(m.sum()) for m in masks)} | '
                         + ' | '.join(cells) + ' |')
    for method, r in rows.items():
        if 'writes' in r:
            w = r['writes']
            lines.append(f'\n{method}: wrote {w["on_cue_frames"]} of the {w["cue_frames"]} '
                         f'held-out cue frames and {w["elsewhere"]} other frames.')
        if 'gate_by_frame' in r:
            lines += ['', f'{method}, its gate on held-out frames:', '',
                      *gate_table(r['gate_by_frame'])]
        if 'target_by_frame' in r:
            loss = ("the mixture head's NLL" if tcfg.utility_kind == 'mixture'
                    else 'the action loss')
            target = (f"the target with {json.dumps(args.target_with)} instead of the run's"
                      if args.target_with else
                      f"the trainer's gradient utility of {loss} under random writes at the "
                      "warm-up's rate")
            lines += ['', f"{method}, what its gate's target asks for on held-out frames "
                      f"({target}, against the trained model, windows of the run's length):",
                      '',
                      '| frames | count | mean utility | share > 0 | share a write budget '
                      'asks for (budget: share) |', '|---|---:|---:|---:|---|']
            for kind, t in r['target_by_frame'].items():
                if kind != 'auc' and t['mean_utility'] is not None:
                    budgets = ', '.join(f'{b}: {v:.3f}'
                                        for b, v in t['budget_target_share'].items())
                    lines.append(f'| {kind} | {t["frames"]} | {t["mean_utility"]:.3g} | '
                                 f'{t["positive_share"]:.3f} | {budgets} |')
    lines += ['', 'Cue frames among the 5% of held-out frames that score highest:', '']
    for name, r in frame_scores.items():
        lines.append(f'- {name}: {r["cue_chosen"]} of {r["chosen"]} frames, {r["cues_hit"]} of '
                     f'{r["cues"]} cues (the cue is {r["cue_frames"]} of {r["frames"]} frames)')
    lines += ['', "One frame's features, a cue against a flash: held-out AUC of a logistic "
              'regression fitted with the labels on the training episodes (the backbone only; '
              'no gate sees a label):', '']
    lines += [f'- {name}: ' + ('n/a' if v is None else f'{v:.3f}') for name, v in probe.items()]
    lines += ['', "Keys at initialisation (seed 0): mean cosine of cue frames' keys with the "
              f'other frames\' keys {key_alike["cue_vs_other"]:.2f}, over all pairs of frames '
              f'{key_alike["all_pairs"]:.2f} ({key_alike["frames"]} held-out frames).']
    for name, k in variant_keys.items():
        lines.append(f'- variant {name}: cue vs other {k["cue_vs_other"]:.2f}, all pairs '
                     f'{k["all_pairs"]:.2f}')
    if utility is not None:
        lines += ['', f'IB target against the {utility["from"]} always-write memory '
                  f'(ib_reduce {utility["ib_reduce"]}), held out:', '',
                  '| frames | count | mean utility | share > 0 | share the IB loss asks for | '
                  'share a write budget asks for (budget: share) |',
                  '|---|---:|---:|---:|---:|---|']
        for kind, r in utility['by_frame'].items():
            if kind != 'auc' and r['mean_utility'] is not None:
                budgets = ', '.join(f'{b}: {v:.3f}' for b, v in r['budget_target_share'].items())
                lines.append(f'| {kind} | {r["frames"]} | {r["mean_utility"]:.5f} | '
                             f'{r["positive_share"]:.3f} | {r["ib_target_share"]:.3f} | '
                             f'{budgets} |')
        for pair, value in utility['by_frame'].get('auc', {}).items():
            if value is not None:
                lines.append(f'\nAUC of the utility, {pair}: {value:.3f}')
    if gate is not None:
        lines += ['', f'Gate phase from the {gate["from"]} always-write memory '
                  f'({gate["gate_iters"]} gate + {gate["carry_iters"]} carried updates, '
                  f'ib_reduce {gate["ib_reduce"]}, write budget {gate["write_budget"]}), '
                  'held out:', '',
                  *gate_table(gate['by_frame'])]
    args.out.with_suffix('.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
