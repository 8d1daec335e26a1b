"""Does training the state-matched GRU with bfloat16 recurrent products change what it learns?

    python bench/gru_precision.py --data BAGS --model-dir RUN [--updates 150]

RUN is what `python -m aura_ros train --data BAGS --out RUN` wrote, finished or still training
the memories (its checkpoints keep the config and the frozen backbone's features); the split
and the GRU's initialisation are the trainer's. The GRU of AURA's state size
(1,056 floats) is trained twice on the training features, from the same initialisation on the
same seeded windows (the run's recipe: window, batch, learning rate), once with float32 and
once with bfloat16 per-step recurrent products (`TrainingConfig.recurrent_dtype`, mixed
precision: weights, state and gradients stay float32). Reported: the action loss of each
update for both, the mean relative gap over the last quarter of the updates, the held-out
action error after the updates (95% bootstrap intervals) and the seconds per update.
Writes OUT.json and OUT.md. One seed, a short run: it can show a gap, not prove parity over a
whole budget.
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aura_ros import provenance  # noqa: E402
from aura_ros.data import load_demonstrations  # noqa: E402
from aura_ros.memory import MemoryConfig, build_model, fit_input_map  # noqa: E402
from aura_ros.memory.training import FeatureEpisode, evaluate, train  # noqa: E402
from aura_ros.training import trainer  # noqa: E402


def _train_one(dtype: str, config: MemoryConfig, tcfg, train_eps, held_eps, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_model('gru', config)
    fit_input_map(model, [ep.features for ep in train_eps])
    start = time.perf_counter()
    history = train(model, train_eps, replace(tcfg, recurrent_dtype=dtype), phases=('warmup',))
    seconds = time.perf_counter() - start
    held = evaluate(model, held_eps)
    return {'loss': [r['action'] for r in history.phases['warmup']],
            's_per_update': seconds / tcfg.warmup_iters,
            'held_out_error': held['action_error'], 'held_out_ci': held['action_error_ci']}


def report(result: dict) -> str:
    f32, b16 = result['float32'], result['bfloat16']
    lines = ['# The state-matched GRU trained with float32 vs bfloat16 recurrent products', '',
             f'Command: `{result["command"]}`  ', f'Commit: `{result["commit"] or "n/a"}`  ',
             f'Machine: {result["machine"]["platform"]}, {result["machine"]["cpus"]} CPUs, no '
             f'GPU, torch {result["machine"]["torch"]}; {result["threads"]} thread(s)  ',
             f'Run: `{result["model_dir"]}` ({result["train_episodes"]} training, '
             f'{result["held_out_episodes"]} held-out episodes); {result["updates"]} updates of '
             f'{result["window"]} steps x {result["batch"]} windows from the same '
             'initialisation on the same windows; one seed.', '',
             '| products | s / update | loss, first update | loss, mean of the last quarter | '
             'held-out action error [95% CI] |', '|---|---:|---:|---:|---|']
    for name, r in (('float32', f32), ('bfloat16', b16)):
        tail = r['loss'][-max(1, len(r['loss']) // 4):]
        lo, hi = r['held_out_ci']
        lines.append(f'| {name} | {r["s_per_update"]:.2f} | {r["loss"][0]:.4f} | '
                     f'{np.mean(tail):.4f} | {r["held_out_error"]:.4f} [{lo:.4f}, {hi:.4f}] |')
    lines += ['', f'Mean relative gap of the loss over the last quarter of the updates: '
              f'{result["last_quarter_gap"]:+.2%} (bfloat16 against float32); largest gap of '
              f'one update: {result["largest_gap"]:+.2%}.', '']
    return '\n'.join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', type=Path, required=True)
    ap.add_argument('--model-dir', type=Path, required=True)
    ap.add_argument('--updates', type=int, default=150)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--out', type=Path, default=Path('docs/results/gru_precision.json'))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    checkpoints = args.model_dir / trainer.CHECKPOINTS
    cfg = trainer.TrainerConfig.from_saved(
        json.loads((checkpoints / 'state.json').read_text())['config'])
    demos = load_demonstrations(args.data, cfg.data, progress=False)
    prepared = trainer.prepare(demos, cfg)
    split, target = prepared.split, prepared.targets
    z_train, z_held = trainer.saved_features(
        checkpoints / 'features.safetensors', split)
    train_eps = [FeatureEpisode(z_train[i], target(ep), name=ep.name)
                 for i, ep in enumerate(split.train)]
    held_eps = [FeatureEpisode(z_held[i], target(ep), name=ep.name)
                for i, ep in enumerate(split.held_out)]
    tcfg = replace(cfg.training_config('gru'), warmup_iters=args.updates, gate_iters=0,
                   carry_iters=0)
    config = trainer.memory_config(cfg, demos, z_train[0].shape[-1], tcfg.threshold)
    runs = {d: _train_one(d, config, tcfg, train_eps, held_eps, cfg.seed)
            for d in ('float32', 'bfloat16')}
    f32, b16 = (np.asarray(runs[d]['loss']) for d in ('float32', 'bfloat16'))
    gap = (b16 - f32) / f32
    quarter = max(1, len(gap) // 4)
    command = ' '.join(['python bench/gru_precision.py', *sys.argv[1:]])
    result = {**provenance.header(command, detailed=True), **runs,
              'model_dir': str(args.model_dir), 'updates': args.updates,
              'threads': args.threads, 'window': tcfg.window, 'batch': tcfg.batch,
              'train_episodes': len(train_eps), 'held_out_episodes': len(held_eps),
              'last_quarter_gap': float(b16[-quarter:].mean() / f32[-quarter:].mean() - 1),
              'largest_gap': float(gap[np.argmax(np.abs(gap))])}
    out = provenance.write_results(args.out, result, report(result))
    print(report(result))
    print(f'wrote {out} and {out.with_suffix(".md")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
