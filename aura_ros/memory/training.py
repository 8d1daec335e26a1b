"""Train a memory model on your own feature sequences: the AURA recipe in one call.

    history = train(model, episodes, TrainingConfig())     # AURA or any baseline, same call
    metrics = evaluate(model, held_out)                    # whole episodes, state carried
    threshold, table = select_threshold(model, held_out)   # fewest writes within tolerance

`episodes` are `FeatureEpisode`s (or (features, targets[, mask]) tuples): features [T, d_model],
targets [T, chunk, d_action] floats (loss 'mse') or [T] class indices (loss 'ce'), and an
optional bool mask [T] of the steps whose action is scored. The recipe, for a learned gate:

1. warm-up (`warmup_iters`): the gate is bypassed and writes happen at random with probability
   `warmup_write_rate` (write dropout), action loss only. Trained with a learned gate from the
   start, the gate closes before the memory is useful; warmed up writing every step, the memory
   relies on every write so no single write looks useful to the IB target.
2. gate phase (`gate_iters`): the learned gate, loss = action + w_ib * IB + w_sparse * sparsity.
   The IB target of step t is whether writing at t lowers the loss of the actions at t + each of
   `offsets` (state before t, later queries, detached). The offsets must reach as far as the
   task's longest cue-to-use gap: a contiguous 4-step horizon calls a cue shown 100 frames
   before it matters useless and closes the gate on it. They are spaced ~1.5x apart, not 2x:
   offsets past a window's end do not count, so with 60-frame episodes and a cue 45 frames
   before GO, powers of two (32, then 64) would miss every scored step after GO. The threshold
   is drawn per update from `threshold_jitter` so the head works under any threshold that
   `select_threshold` picks later.
3. carried phase (`carry_iters`): truncated BPTT over consecutive windows of whole episodes, the
   state carried (detached) from window to window and reset at episode boundaries unless the
   data is `chained`, so the head and gate learn to act with a memory that holds many old
   writes, as on the robot.

With `gate_target='hint'` the episodes say which frames are worth remembering
(`FeatureEpisode.hint`, e.g. from recorded task events) and the gate is taught them instead:
the warm-up writes exactly on the hints, the gate phase trains the gate alone to predict them
(balanced cross-entropy, writes still on the hints), and the carried phase trains everything
else under the gate's own writes, the gate frozen. Use it where the action loss cannot find the
frames: with alike keys a read-out only learns from writes that are already right
(docs/training.md).

Every other model (always-write, GRU, KV cache, no memory, budget schedules) gets the action loss
only, for warm-up + gate updates, then the carried phase: the same call, the same data.
A gate that closes (write rate 0) or sticks open (1) for `collapse_patience` updates raises a
`GateCollapseWarning` with what to try, and the history records it.
"""

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from . import parallel
from .batches import Batch, Streams, Windows, batch_rows, reset_rows
from .episodes import FeatureEpisode, as_episodes, check_episodes
from .evaluation import bootstrap_interval, evaluate, select_threshold
from .gates import (
    ForcedWrites,
    GatePolicy,
    LearnedGate,
    RandomSchedule,
    has_learned_gate,
    set_threshold,
)
from .objective import gated_forward, objective
from .training_config import TrainingConfig, TrainingError

# the front door: what callers import from here (defined in the modules above or below)
__all__ = [
    'bootstrap_interval', 'evaluate', 'FeatureEpisode', 'GateCollapseWarning', 'PHASES',
    'select_threshold', 'set_threshold', 'train', 'TrainHistory', 'TrainingConfig',
    'TrainingError',
]

PHASES = ('warmup', 'gate', 'carry')


class GateCollapseWarning(UserWarning):
    """The learned gate stopped deciding: it never writes, or writes every step."""


def _check_gated(model: nn.Module) -> None:
    missing = [m for m in ('project', 'advance', 'act', 'init_state')
               if not callable(getattr(model, m, None))]
    if missing:
        raise TrainingError(f'{type(model).__name__} has a learned gate but no '
                            f'{", ".join(missing)}: the IB counterfactual needs an AuraMemLayer')


@dataclass
class TrainHistory:
    """Per-update records of every phase, and the gate collapses seen (also warned)."""

    phases: dict[str, list[dict]] = field(default_factory=dict)
    collapses: list[dict] = field(default_factory=list)

    def last(self, phase: str) -> dict:
        return self.phases[phase][-1] if self.phases.get(phase) else {}

    def to_dict(self) -> dict:
        return {'phases': self.phases, 'collapses': self.collapses}

    @classmethod
    def from_dict(cls, data: dict) -> 'TrainHistory':
        return cls(dict(data.get('phases', {})), list(data.get('collapses', [])))


COLLAPSE_ADVICE = {
    'closed': 'the gate never writes: try another warm-up write rate (warmup_write_rate, now '
              '{wrate}; e.g. 0.15 or 0.8: the outcome depends on the task), '
              'lower w_sparse (now {w_sparse}) or the margin (now {margin}), make the offsets '
              'reach the longest cue-to-use gap (now up to {reach}) and the window two to three '
              'times that gap (now {window}), try ib_reduce: best, and check that the features '
              'still show the cue (backbone)',
    'open': 'the gate writes every step: raise w_sparse (now {w_sparse}) or set a target_rate, '
            'raise the margin (now {margin}), and check the IB offsets are not longer than the '
            'windows (window {window})',
}


class _CollapseGuard:
    """Judges a phase by its last `collapse_patience` updates: all without a single write means
    the gate closed, all writing every step that it stuck open. Transient dips of a sparse gate
    (a batch without a cue) and the open start (gate_init_bias) are not collapses."""

    def __init__(self, config: TrainingConfig, history: TrainHistory, phase: str, name: str):
        self.config, self.history, self.phase, self.name = config, history, phase, name
        self.rates: list[float] = []

    def __call__(self, rate: float) -> None:
        self.rates.append(rate)

    def finish(self) -> None:
        if len(self.rates) < self.config.collapse_patience:   # too short a phase to judge
            return
        recent = self.rates[-self.config.collapse_patience:]
        kind = 'closed' if max(recent) <= 0.0 else 'open' if min(recent) >= 1.0 else None
        if kind is None:
            return
        c = self.config
        advice = COLLAPSE_ADVICE[kind].format(w_sparse=c.w_sparse, margin=c.margin,
                                              wrate=c.warmup_write_rate, reach=max(c.offsets),
                                              window=c.window)
        self.history.collapses.append({'model': self.name, 'phase': self.phase,
                                       'iteration': len(self.rates) - 1, 'kind': kind,
                                       'write_rate': recent[-1], 'updates': len(recent),
                                       'advice': advice})
        warnings.warn(f'{self.name}: gate collapsed ({kind}) in the {self.phase} phase: write '
                      f'rate {recent[-1]:g} on each of its last {len(recent)} updates; {advice}',
                      GateCollapseWarning, stacklevel=4)


def _optimiser(model: nn.Module, lr: float, iters: int, params=None):
    opt = torch.optim.Adam(model.parameters() if params is None else params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, iters), eta_min=lr * 0.1)
    return opt, sched


def _update(model: nn.Module, opt, sched, loss: Tensor, clip: float) -> bool:
    """One optimiser step; none (False) for a non-finite loss or gradient, so one bad batch
    (a carried state that overflowed) cannot turn every weight into NaN."""
    opt.zero_grad(set_to_none=True)
    if not parallel.all_true(bool(torch.isfinite(loss))):
        if parallel.active():     # every rank runs the backward DDP waits for, then all skip
            loss.backward()
            opt.zero_grad(set_to_none=True)
        return False
    loss.backward()     # under torchrun DDP all-reduces the gradients: the norm is the same
    norm = nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else math.inf)
    if not bool(torch.isfinite(norm)):
        opt.zero_grad(set_to_none=True)
        return False
    opt.step()
    sched.step()
    return True


class _Skips:
    """Counts a phase's skipped updates: a few are survivable (a warning at the end), many mean
    the phase diverged (TrainingError at once, before the weights are saved)."""

    def __init__(self, name: str, phase: str, iters: int, lr_key: str):
        self.name, self.phase, self.iters, self.lr_key = name, phase, iters, lr_key
        self.limit = max(5, iters // 20)
        self.count = 0

    def __call__(self, stepped: bool) -> None:
        self.count += not stepped
        if self.count > self.limit:
            raise TrainingError(f'{self.name}: the {self.phase} phase diverged: non-finite loss '
                                f'or gradient in {self.count} updates (at most {self.limit} '
                                f'of {self.iters} are skipped); lower {self.lr_key} or grad_clip')

    def finish(self) -> None:
        if self.count:
            warnings.warn(f'{self.name}: {self.count} of {self.iters} {self.phase} updates '
                          'skipped (non-finite loss or gradient)', stacklevel=4)


def _bar(iters: int, desc: str, progress: bool):
    """The updates of a phase; with `progress`, throttled lines with rate and ETA on stderr
    (aura_ros.progress: they reach a log file too, where a tqdm bar would be off)."""
    if not progress:
        return range(iters)
    from aura_ros.progress import Progress
    return Progress(desc, iters, 'updates')


def _phase_log(config, history, phase, name, iters, gated, progress):
    """The update loop's range (a progress bar with `progress`), and `log(record)`, which keeps
    each update's record in the history, feeds the collapse guard of a gated phase and shows the
    record on the bar; the guard's `finish()` judges the phase at its end."""
    guard = _CollapseGuard(config, history, phase, name)
    records = history.phases.setdefault(phase, [])
    bar = _bar(iters, f'{name} {phase}', progress)

    def log(record: dict) -> None:
        record = parallel.mean_record(record)
        records.append(record)
        if gated:
            guard(record['write_rate'])
        if progress:
            bar.set_postfix({k: f'{v:.4g}' for k, v in record.items()})

    return bar, log, guard


def _state_grows(model: nn.Module) -> bool:
    """True for a memory whose state grows with every step (the KV cache)."""
    one, two = model.init_state(1), None
    with torch.no_grad():
        z = torch.zeros(1, 2, model.config.d_model, device=next(model.parameters()).device)
        two = model(z, state=one)['state']
    return any(two[k].shape != one[k].shape for k in one)


def _gate_parameters(model: nn.Module) -> list:
    """The learned gate's own weights (gate_proj, gate_in, gate_out)."""
    return [p for n, p in model.named_parameters() if n.startswith('gate_')]


def _forward(model: nn.Module, batch: Batch, state: Optional[dict], gated: bool,
             gate: Optional[GatePolicy]) -> dict:
    """The model over a batch; `gate` (a GatePolicy, or None: the model's own) decides the
    writes; `gated` keeps what the IB target needs."""
    if gated:
        return gated_forward(model, batch.z, state, batch.t0, gate)
    kw = {} if gate is None else {'gate': gate}
    return model(batch.z, state=state, t0=batch.t0, **kw)


def _loss(model: nn.Module, batch: Batch, state: Optional[dict], ib: bool,
          config: TrainingConfig, gated: bool, gate: Optional[GatePolicy] = None,
          budget: Optional[float] = None, own_writes: bool = False) -> tuple[Tensor, dict, dict]:
    """One update's forward, writes following `gate` (None: the model's own policy): (loss,
    logged terms, the state after it, detached)."""
    out = _forward(model, batch, state, ib, gate)
    loss, record = objective(model, out, batch, config, gated, budget, own_writes)
    return loss, record, {k: v.detach() for k, v in out['state'].items()}


def _window_phase(model, episodes, config, history, phase, iters, gated, name, progress,
                  seed, gate: Optional[GatePolicy] = None, params=None) -> None:
    """Updates on random windows. `gate`: the policy the writes follow (a `ForcedWrites`
    teacher follows each batch's hints); a gated phase draws a jittered learned threshold per
    update instead; `params`: train only these."""
    teacher = gate if isinstance(gate, ForcedWrites) else None
    windows = Windows(episodes, config.window, config.start_at_episode_start, seed)
    jitter = np.random.default_rng(seed + 1)
    opt, sched = _optimiser(model, config.lr, iters, params)
    bar, log, guard = _phase_log(config, history, phase, name, iters, gated, progress)
    skips = _Skips(name, phase, iters, 'lr')
    step, mine = parallel.data_parallel(model), parallel.rows(config.batch)
    for i in bar:
        batch = batch_rows(windows.sample(config.batch * parallel.world()), mine)
        policy = gate
        if teacher is not None:
            teacher.flags = batch.hint
        elif gated:
            policy = LearnedGate(float(jitter.uniform(*config.threshold_jitter)))
        ib = gated and config.gate_target == 'ib'
        budget = config.budget_at(i / max(iters - 1, 1)) if ib else None
        loss, rec, _ = step(_loss, model, batch, None, ib, config, gated, policy, budget)
        skips(_update(model, opt, sched, loss, config.grad_clip))
        log(rec)
    skips.finish()
    if gated:
        guard.finish()


def _carry_phase(model, episodes, config, history, iters, gated, chained, name, progress,
                 seed, gate: Optional[GatePolicy] = None) -> None:
    """Truncated BPTT over consecutive windows, the state carried; writes follow `gate`, or
    for a learned gate a jittered threshold per update."""
    rng = np.random.default_rng(seed)
    B, mine = config.batch, parallel.rows(config.batch)
    # every rank plays the same world * B streams and trains on its own B of them
    streams = Streams(episodes, B * parallel.world(), config.window, chained, seed + 1)
    device = next(model.parameters()).device
    state = model.init_state(B, device)
    # A state that grows with every step (KV cache) is not carried: it would grow by a window
    # per update. Its windows start empty, at episode starts.
    carries = not _state_grows(model)
    # Burn in (no gradient) each stream from its episode's start to its random starting point,
    # so the first updates already see memories of every depth.
    with torch.no_grad():
        burn_in = LearnedGate(config.threshold) if gated else gate
        kw = {} if burn_in is None else {'gate': burn_in}
        for i in range(B * parallel.world()):
            ep, j = episodes[streams.ep[i]], i - mine.start
            if not carries:
                streams.pos[i] = 0
            elif streams.pos[i] > 0 and 0 <= j < B:
                row = model(ep.features[None, :streams.pos[i]].to(device),
                            state=model.init_state(1, device), **kw)['state']
                state = {k: torch.cat([v[:j], row[k], v[j + 1:]]) for k, v in state.items()}
        streams.take_resets()
    opt, sched = _optimiser(model, config.carry_lr, iters)
    bar, log, guard = _phase_log(config, history, 'carry', name, iters, gated, progress)
    # a hinted gate is already taught: here it only decides the writes the rest learns to use
    ib = gated and config.gate_target == 'ib'
    skips = _Skips(name, 'carry', iters, 'carry_lr')
    step = parallel.data_parallel(model)
    for _ in bar:
        batch = batch_rows(streams.next(), mine)
        policy = LearnedGate(float(rng.uniform(*config.threshold_jitter))) if gated else gate
        loss, rec, after = step(_loss, model, batch, state, ib, config, ib, policy,
                                config.budget_at(1.0) if ib else None,
                                config.carry_utility_writes == 'gate')
        skips(_update(model, opt, sched, loss, config.grad_clip))
        state = after if carries else model.init_state(B, device)
        restart = rng.random(B * parallel.world()) < config.carry_reset
        overflow = np.zeros_like(restart)
        overflow[mine] = ~np.logical_and.reduce([torch.isfinite(v).flatten(1).all(1).cpu()
                                                 .numpy() for v in state.values()])
        restart |= parallel.any_rows(overflow)      # a state that overflowed starts anew
        for r in np.flatnonzero(restart):
            streams.restart(int(r), position=False)
        state = reset_rows(state, streams.take_resets()[mine])
        log(rec)
    skips.finish()
    if gated:
        guard.finish()


def train(model: nn.Module, episodes: Iterable, config: TrainingConfig = TrainingConfig(), *,
          chained: bool = False, phases: Sequence[str] = PHASES, name: Optional[str] = None,
          history: Optional[TrainHistory] = None, progress: bool = False,
          on_phase_end: Optional[Callable[[str, TrainHistory], None]] = None,
          gate: Optional[GatePolicy] = None) -> TrainHistory:
    """Train `model` (AURA or any baseline of `build_model`) in place on feature episodes.

    A learned gate gets warm-up (write dropout), gate phase (action + IB over `config.offsets` +
    sparsity) and carried phase; every other model the action loss in all three phases (warm-up
    and gate phases are then simply `warmup_iters + gate_iters` window updates). `phases` runs a
    subset (resume: skip the ones done; `on_phase_end(phase, history)` is called after each, e.g.
    to save a checkpoint). `chained`: consecutive episodes are one never-reset stream.
    `gate`: a fixed policy (a budget schedule, `AlwaysWrite`, ...) that decides the writes of an
    AuraMemLayer in every phase instead of its own gate; the model then trains as a baseline
    (action loss only). The model's own policy is never reassigned. Returns the history (also
    updated in place if given). Afterwards a learned gate is deployed at `config.threshold`.
    """
    episodes = as_episodes(episodes)
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        raise TrainingError(f'unknown phase(s) {unknown}; known: {", ".join(PHASES)}')
    if not hasattr(model, 'config') or not callable(getattr(model, 'init_state', None)):
        raise TrainingError(f'{type(model).__name__} is not a memory model (needs .config and '
                            f'.init_state, as every model of aura_ros.memory.build_model)')
    check_episodes(model, episodes, config.loss)
    longest = max(len(ep) for ep in episodes)
    if not chained and config.window > longest:   # windows would be mostly padding
        config = replace(config, window=longest)
    if hasattr(model, 'product_dtype'):
        model.product_dtype = torch.bfloat16 if config.recurrent_dtype == 'bfloat16' else None
    learned = has_learned_gate(model, gate)
    if learned:
        _check_gated(model)
        if config.utility_loss == 'mixture' and getattr(model, 'mixture_out', None) is None:
            raise TrainingError("utility_loss 'mixture' scores writes by the model's mixture "
                                'head: build the model with MemoryConfig.mixture > 0')
    hinted = learned and config.gate_target == 'hint'
    if hinted and not any(ep.hint is not None and bool(ep.hint.any()) for ep in episodes):
        raise TrainingError("gate_target 'hint' needs episodes with hint flags (FeatureEpisode."
                            'hint): none of these episodes marks a frame to remember')
    teacher = ForcedWrites() if hinted else None
    writes = teacher or gate     # None: the model's own policy (its learned gate, a baseline's)
    name = name or getattr(model, 'kind', type(model).__name__)
    history = history if history is not None else TrainHistory()
    torch.manual_seed(config.seed)
    model.train()
    try:
        for index, phase in enumerate(PHASES):
            if phase not in phases:
                continue
            seed = config.seed * 1000 + 17 * index
            if phase == 'warmup' and config.warmup_iters:
                warm = teacher or (RandomSchedule(config.warmup_write_rate, seed) if learned
                                   else gate)
                _window_phase(model, episodes, config, history, phase, config.warmup_iters,
                              False, name, progress, seed, warm)
            elif phase == 'gate' and config.gate_iters:
                _window_phase(model, episodes, config, history, phase, config.gate_iters,
                              learned, name, progress, seed, writes,
                              _gate_parameters(model) if hinted else None)
            elif phase == 'carry' and config.carry_iters:
                frozen = _gate_parameters(model) if hinted else []
                for p in frozen:
                    p.requires_grad_(False)
                try:
                    _carry_phase(model, episodes, config, history, config.carry_iters, learned,
                                 chained, name, progress, seed, gate)
                finally:
                    for p in frozen:
                        p.requires_grad_(True)
            if on_phase_end is not None:
                if learned:
                    set_threshold(model, config.threshold)
                on_phase_end(phase, history)
    finally:
        if learned:
            set_threshold(model, config.threshold)
        model.eval()
    return history
