"""Held-out evaluation of a trained memory, and the choice of its learned gate's threshold."""

import math
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .episodes import as_episodes, check_episodes
from .gates import GatePolicy, LearnedGate, has_learned_gate, set_threshold
from .losses import action_loss
from .training_config import TrainingError


@torch.no_grad()
def evaluate(model: nn.Module, episodes: Iterable, threshold: Optional[float] = None,
             loss: str = 'mse', chained: bool = False, block: int = 256,
             gate: Optional[GatePolicy] = None) -> dict:
    """Whole episodes, the state carried from their first step (and on across episodes when
    `chained`): mean action error over scored steps, writes per episode, write rate, and a 95%
    bootstrap interval of the action error (`action_error_ci`) over blocks of `block`
    consecutive steps (steps next to each other are not independent samples).

    `threshold` runs a learned gate at that threshold, `gate` any policy (a schedule, a
    teacher): both for this call only, passed to the forward, the model untouched.
    """
    episodes = as_episodes(episodes)
    check_episodes(model, episodes, loss)
    was_training = model.training
    model.eval()
    if threshold is not None and has_learned_gate(model, gate):
        gate = LearnedGate(threshold)
    kw = {} if gate is None else {'gate': gate}
    device = next(model.parameters()).device
    try:
        err_sum, err_n, writes, steps, hits = 0.0, 0, 0.0, 0, 0
        block_sums, block_counts = [], []
        groups = [episodes] if chained else [[ep] for ep in episodes]
        state = model.init_state(1, device) if chained else None
        for group in groups:
            for ep in group:
                out = model(ep.features[None].to(device), state=state if chained else None,
                            **kw)
                if chained:
                    state = out['state']
                err = action_loss(out['action'][0], ep.targets.to(device), loss)
                m = ep.mask.to(device)
                err_sum += float(err[m].sum())
                err_n += int(m.sum())
                for start in range(0, len(ep), block):
                    part = m[start:start + block]
                    block_sums.append(float(err[start:start + block][part].sum()))
                    block_counts.append(int(part.sum()))
                writes += float(out['g'][0].float().sum())
                steps += len(ep)
                if loss == 'ce':
                    pred = out['action'][0, :, 0].argmax(-1)
                    hits += int((pred == ep.targets.to(device))[m].sum())
        result = {'action_error': err_sum / max(err_n, 1),
                  'writes_per_episode': writes / len(episodes),
                  'write_rate': writes / max(steps, 1), 'episodes': len(episodes),
                  'steps': steps,
                  'action_error_ci': bootstrap_interval(block_sums, block_counts)}
        if loss == 'ce':
            result['accuracy'] = hits / max(err_n, 1)
        return result
    finally:
        model.train(was_training)


def bootstrap_interval(sums: Sequence[float], counts: Sequence[int], level: float = 0.95,
                       draws: int = 2000, seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of sum(sums) / sum(counts), resampling the blocks."""
    sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.float64)
    keep = counts > 0
    sums, counts = sums[keep], counts[keep]
    if len(sums) == 0:
        return [float('nan'), float('nan')]
    pick = np.random.default_rng(seed).integers(0, len(sums), (draws, len(sums)))
    means = sums[pick].sum(1) / counts[pick].sum(1)
    tail = (1.0 - level) / 2
    return [float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))]


DEFAULT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def select_threshold(model: nn.Module, episodes: Iterable,
                     thresholds: Sequence[float] = DEFAULT_THRESHOLDS, tolerance: float = 0.05,
                     loss: str = 'mse', chained: bool = False,
                     apply: bool = True) -> tuple[float, list[dict]]:
    """Sweep gate thresholds on held-out episodes; pick the fewest writes whose action error is
    within `tolerance` (relative) of the best error. Ties go to the higher threshold.

    Returns (threshold, one row per threshold: threshold, action_error, writes_per_episode,
    write_rate). With `apply` the model is left at the chosen threshold (policy and config).
    """
    if not has_learned_gate(model):
        raise TrainingError(f'{getattr(model, "kind", type(model).__name__)} has no learned '
                            'gate: there is no threshold to select')
    if not thresholds or any(not 0.0 <= float(t) <= 1.0 for t in thresholds):
        raise TrainingError(f'thresholds must be numbers in [0, 1], got {thresholds!r}')
    episodes = as_episodes(episodes)
    table = []
    for th in thresholds:
        row = evaluate(model, episodes, float(th), loss, chained)
        table.append({'threshold': float(th), **{k: row[k] for k in
                                                 ('action_error', 'writes_per_episode',
                                                  'write_rate')}})
    broken = [r['threshold'] for r in table if not math.isfinite(r['action_error'])]
    if broken:
        raise TrainingError(f'the action error is not finite at threshold(s) {broken}: the '
                            "model's weights or memory state are not finite")
    best = min(r['action_error'] for r in table)
    ok = [r for r in table if r['action_error'] <= best * (1.0 + tolerance) + 1e-12]
    chosen = min(ok, key=lambda r: (r['writes_per_episode'], -r['threshold']))['threshold']
    if apply:
        set_threshold(model, chosen)
    return chosen, table
