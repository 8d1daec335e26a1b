"""Held-out action error of a model trained from SO-101 bags, on every frame and after GO.

    python bench/so101_heldout.py --data BAGS --model-dir DIR [--out docs/results/so101_heldout]

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

For AURA it also counts the held-out cue frames its gate wrote, and the other frames.

It also reports how alike the memory's keys are at initialisation (mean cosine of a cue frame's
key with every other frame's key): a delta-rule write moves every key's read by that cosine, so
with alike keys any later write overwrites most of an earlier one.
"""

import argparse
import functools
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aura_ros.data import load_demonstrations  # noqa: E402
from aura_ros.data.align import hint_flags  # noqa: E402
from aura_ros.memory import MemoryConfig, build_model, load_checkpoint  # noqa: E402
from aura_ros.memory.gates import ForcedWrites  # noqa: E402
from aura_ros.memory.losses import action_loss  # noqa: E402
from aura_ros.memory.training import FeatureEpisode, Windows, evaluate  # noqa: E402
from aura_ros.training import trainer  # noqa: E402


def task_events(bag: Path) -> list[dict]:
    from rosbags.highlevel import AnyReader

    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == '/task_events']
        return [json.loads(reader.deserialize(raw, c.msgtype).data)
                for c, _, raw in reader.messages(connections=conns)]


def after_go(stamps: np.ndarray, events: list[dict]) -> np.ndarray:
    """Frames from each task's GO up to its outcome."""
    go = {e['task']: e['stamp'] for e in events if e['event'] == 'go'}
    mask = np.zeros(len(stamps), bool)
    for e in events:
        if e['event'] in ('success', 'failure') and e.get('task') in go:
            mask |= (stamps >= go[e['task']]) & (stamps <= e['stamp'])
    return mask


def cue_frames(stamps: np.ndarray, events: list[dict], frames: int = 5,
               kinds: tuple = ('cue',)) -> np.ndarray:
    """The frames that show an event of `kinds` (a cue by default): from each such event on,
    `frames` long, placed as the data layer places hints."""
    return hint_flags(stamps, [e['stamp'] for e in events if e['event'] in kinds], frames)


def forced(config: MemoryConfig, train_eps: list, held: dict, window: int, iters: int) -> dict:
    """AURA trained (action loss, Adam) with its writes forced onto the flagged frames, which ride
    in each episode's `mask` here; evaluated on `held` {name: (episodes, flags)} the same way."""
    policy = ForcedWrites()
    torch.manual_seed(0)
    model = build_model('aura', config)
    model.gate_policy = policy
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


@torch.no_grad()
def key_cosine(config: MemoryConfig, features: list, cues: list, frames: int = 3000) -> dict:
    """Mean cosine between the keys of a freshly initialised AURA layer (seed 0): of cue frames
    with all other frames, and over all pairs, on the first `frames` held-out frames."""
    torch.manual_seed(0)
    layer = build_model('aura', config)
    z, cue = torch.cat(features)[:frames], torch.cat(cues)[:frames]
    k = layer._project(z[None])['k'][0]
    cos = k @ k.T
    pairs = ~torch.eye(len(k), dtype=torch.bool)
    return {'cue_vs_other': float(cos[cue][:, ~cue].mean()), 'all_pairs': float(cos[pairs].mean()),
            'frames': len(k)}


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
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = trainer.TrainerConfig.from_dict(
        json.loads((args.model_dir / trainer.REPORT_FILE).read_text())['config'])
    demos = load_demonstrations(args.data, cfg.data, progress=False)
    episodes = trainer.prepare(demos, cfg)         # the trainer's split, statistics, targets
    split, target = episodes.split, episodes.targets
    z_train, z_held = trainer.saved_features(
        args.model_dir / trainer.CHECKPOINTS / 'features.safetensors', split)

    # /task_events of an episode's bag, read once however many schedules use them
    events_of = functools.cache(lambda name: task_events(bag_of(args.data, name)))
    every, go_only, held_cues = [], [], []
    for i, ep in enumerate(split.held_out):
        events = events_of(ep.name)
        every.append(FeatureEpisode(z_held[i], target(ep), name=ep.name))
        go_only.append(FeatureEpisode(z_held[i], target(ep), name=ep.name,
                                      mask=torch.from_numpy(after_go(ep.stamps, events))))
        held_cues.append(torch.from_numpy(cue_frames(ep.stamps, events)))
    spec = yaml.safe_load((args.model_dir / 'model.yaml').read_text())
    config = MemoryConfig.from_dict(spec['memory'])
    paths = {'aura': args.model_dir / 'memory.safetensors',
             **{m: args.model_dir / trainer.BASELINE_DIR / f'{m}.safetensors'
                for m in cfg.baselines}}
    rows = {}
    for method, path in paths.items():
        model = load_checkpoint(path, build_model(method, config), config=config)
        rows[method] = {'every_frame': evaluate(model, every, chained=demos.chained),
                        'after_go': evaluate(model, go_only, chained=demos.chained)}
        if method == 'aura':
            rows[method]['writes'] = cue_writes(model, every, held_cues)
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
    key_alike = key_cosine(config, [e.features for e in every], held_cues)
    for name in args.forced:
        if name == 'unexplained':
            scores = [unexplained(z, ep.joints) for z, ep in train_z]
            cut = torch.quantile(torch.cat(scores), 0.95)     # the top 5% of training frames
            train_flags = [s > cut for s in scores]
            held_flags = [s > cut for s in held_unexplained]
        else:
            def flags(ep, kinds=SCHEDULES[name]):
                return torch.from_numpy(cue_frames(ep.stamps, events_of(ep.name), kinds=kinds))
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
              'cue_in_top_frames': frame_scores, 'key_cosine_at_init': key_alike}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix('.json').write_text(json.dumps(result, indent=1) + '\n')
    lines = [f'# Held-out action error: `{args.model_dir}`', '',
             f'Command: `{result["command"]}`  ',
             f'Machine: {result["machine"]}; held out: {split.how} '
             f'({result["after_go_frames"]} frames after GO)', '',
             '| method | every frame [95% CI] | after GO [95% CI] | writes / episode |',
             '|---|---|---|---:|']
    for method, r in rows.items():
        e, g = r['every_frame'], r['after_go']
        lines.append(f'| {method} | {e["action_error"]:.4f} [{e["action_error_ci"][0]:.4f}, '
                     f'{e["action_error_ci"][1]:.4f}] | {g["action_error"]:.4f} '
                     f'[{g["action_error_ci"][0]:.4f}, {g["action_error_ci"][1]:.4f}] | '
                     f'{e["writes_per_episode"]:.1f} |')
    for method, r in rows.items():
        if 'writes' in r:
            w = r['writes']
            lines.append(f'\n{method}: wrote {w["on_cue_frames"]} of the {w["cue_frames"]} '
                         f'held-out cue frames and {w["elsewhere"]} other frames.')
    lines += ['', 'Cue frames among the 5% of held-out frames that score highest:', '']
    for name, r in frame_scores.items():
        lines.append(f'- {name}: {r["cue_chosen"]} of {r["chosen"]} frames, {r["cues_hit"]} of '
                     f'{r["cues"]} cues (the cue is {r["cue_frames"]} of {r["frames"]} frames)')
    lines += ['', "Keys at initialisation (seed 0): mean cosine of cue frames' keys with the "
              f'other frames\' keys {key_alike["cue_vs_other"]:.2f}, over all pairs of frames '
              f'{key_alike["all_pairs"]:.2f} ({key_alike["frames"]} held-out frames).']
    args.out.with_suffix('.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
