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
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aura_ros.checks import is_int, is_num, need

from . import parallel
from .gates import ForcedWrites, GatePolicy, LearnedGate, RandomSchedule
from .losses import action_loss, ib_loss, sparsity_loss
from .scan import augment

PHASES = ('warmup', 'gate', 'carry')


class TrainingError(ValueError):
    """Training data or settings do not fit the model; the message names what is wrong."""


class GateCollapseWarning(UserWarning):
    """The learned gate stopped deciding: it never writes, or writes every step."""


def _positive_int(name: str, value, zero_ok: bool = False) -> None:
    kind = 'a non-negative' if zero_ok else 'a positive'
    need(is_int(value, 0 if zero_ok else 1), TrainingError,
         f'TrainingConfig.{name} must be {kind} integer, got {value!r}')


def _number(name: str, value, low: float = -math.inf, high: float = math.inf) -> float:
    need(is_num(value, low, high), TrainingError,
         f'TrainingConfig.{name} must be a number in [{low}, {high}], got {value!r}')
    return float(value)


@dataclass(frozen=True)
class TrainingConfig:
    """How a memory model is trained; checked on creation, every field named in errors."""

    # IB: the steps ahead at which a write's utility is scored (~1.5x apart, up to 256)
    offsets: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
    # steps per training window (the BPTT length): a cue and the steps that use it must often
    # fall in one window, or the head never learns to read the memory (docs/training.md)
    window: int = 512
    batch: int = 16                # windows per update
    warmup_iters: int = 300
    gate_iters: int = 300
    carry_iters: int = 100
    lr: float = 2e-3
    carry_lr: float = 5e-4
    warmup_write_rate: float = 0.5  # write dropout of the warm-up (learned gates only)
    # what teaches the gate: 'ib' (the action loss's counterfactual, the default) or 'hint'
    # (the episodes' hint flags: warm-up writes on them, the gate learns them, see `train`)
    gate_target: str = 'ib'
    w_ib: float = 1.0
    w_sparse: float = 0.1
    margin: float = 0.2            # a write must cut the later loss by this fraction
    ib_reduce: str = 'mean'        # over offsets: 'mean' loss, or the 'best' offset
    target_rate: Optional[float] = None   # sparsity: hinge above this write rate instead of mean p
    threshold: float = 0.5         # gate threshold used outside the jittered updates
    threshold_jitter: tuple[float, float] = (0.3, 0.7)
    loss: str = 'mse'              # 'mse' (continuous chunks) or 'ce' (class indices, chunk 1)
    start_at_episode_start: float = 0.5   # share of windows that start at an episode's step 0
    carry_reset: float = 0.02      # chance per carried update that a stream restarts empty
    grad_clip: float = 1.0
    collapse_patience: int = 25    # last updates of a phase at write rate 0 (or 1): a collapse
    seed: int = 0

    def __post_init__(self) -> None:
        offsets = self.offsets
        if isinstance(offsets, (str, bytes)) or not isinstance(offsets, (list, tuple)) \
                or not offsets:
            raise TrainingError(f'TrainingConfig.offsets must be a list of positive step '
                                f'offsets, got {offsets!r}')
        need(all(is_int(o, 1) for o in offsets), TrainingError,
             f'TrainingConfig.offsets must be positive integers, got {offsets!r}')
        object.__setattr__(self, 'offsets', tuple(sorted(set(offsets))))
        for name in ('window', 'batch', 'collapse_patience'):
            _positive_int(name, getattr(self, name))
        for name in ('warmup_iters', 'gate_iters', 'carry_iters', 'seed'):
            _positive_int(name, getattr(self, name), zero_ok=True)
        for name, low, high in (('lr', 0.0, 10.0), ('carry_lr', 0.0, 10.0),
                                ('warmup_write_rate', 0.0, 1.0), ('w_ib', 0.0, math.inf),
                                ('w_sparse', 0.0, math.inf), ('margin', 0.0, math.inf),
                                ('threshold', 0.0, 1.0), ('start_at_episode_start', 0.0, 1.0),
                                ('carry_reset', 0.0, 1.0), ('grad_clip', 0.0, math.inf)):
            object.__setattr__(self, name, _number(name, getattr(self, name), low, high))
        if self.target_rate is not None:
            object.__setattr__(self, 'target_rate',
                               _number('target_rate', self.target_rate, 0.0, 1.0))
        jitter = self.threshold_jitter
        if isinstance(jitter, (str, bytes)) or not isinstance(jitter, (list, tuple)) \
                or len(jitter) != 2:
            raise TrainingError(f'TrainingConfig.threshold_jitter must be [low, high], got '
                                f'{jitter!r}')
        lo, hi = (_number('threshold_jitter', v, 0.0, 1.0) for v in jitter)
        if lo > hi:
            raise TrainingError(f'TrainingConfig.threshold_jitter must be [low, high] with low '
                                f'<= high, got {jitter!r}')
        object.__setattr__(self, 'threshold_jitter', (lo, hi))
        if self.ib_reduce not in ('mean', 'best'):
            raise TrainingError(f"TrainingConfig.ib_reduce must be 'mean' or 'best', got "
                                f'{self.ib_reduce!r}')
        if self.gate_target not in ('ib', 'hint'):
            raise TrainingError(f"TrainingConfig.gate_target must be 'ib' or 'hint', got "
                                f'{self.gate_target!r}')
        if self.loss not in ('mse', 'ce'):
            raise TrainingError(f"TrainingConfig.loss must be 'mse' or 'ce', got {self.loss!r}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out['offsets'] = list(self.offsets)
        out['threshold_jitter'] = list(self.threshold_jitter)
        return out


@dataclass
class FeatureEpisode:
    """One episode of backbone features and the actions to predict from them."""

    features: Tensor               # [T, d_model] float
    targets: Tensor                # [T, chunk, d_action] float ('mse') or [T] int ('ce')
    mask: Optional[Tensor] = None  # [T] bool: steps whose action is scored (None: all)
    name: str = ''
    hint: Optional[Tensor] = None  # [T] bool: frames worth remembering (gate_target 'hint')

    def __post_init__(self) -> None:
        self.features = torch.as_tensor(np.asarray(self.features)
                                        if not isinstance(self.features, Tensor)
                                        else self.features).float()
        self.targets = torch.as_tensor(self.targets)
        T = len(self.features)
        if self.features.dim() != 2 or T == 0:
            raise TrainingError(f'episode {self.name or "?"}: features must be [T, d_model] '
                                f'with T >= 1, got shape {list(self.features.shape)}')
        if len(self.targets) != T:
            raise TrainingError(f'episode {self.name or "?"}: {len(self.targets)} targets for '
                                f'{T} feature steps (one per step expected)')
        if self.mask is None:
            self.mask = torch.ones(T, dtype=torch.bool)
        else:
            self.mask = torch.as_tensor(self.mask)
            if self.mask.shape != (T,):
                raise TrainingError(f'episode {self.name or "?"}: mask must be [T] = [{T}], got '
                                    f'{list(self.mask.shape)}')
            self.mask = self.mask.bool()
        if self.hint is not None:
            self.hint = torch.as_tensor(self.hint)
            if self.hint.shape != (T,):
                raise TrainingError(f'episode {self.name or "?"}: hint must be [T] = [{T}], got '
                                    f'{list(self.hint.shape)}')
            self.hint = self.hint.bool()

    def hints(self, sl: slice) -> Tensor:
        """The hint flags of steps `sl` (all False without hints)."""
        if self.hint is None:
            return torch.zeros(len(range(*sl.indices(len(self)))), dtype=torch.bool)
        return self.hint[sl]

    def __len__(self) -> int:
        return len(self.features)


def as_episodes(data: Iterable) -> list[FeatureEpisode]:
    """FeatureEpisodes from FeatureEpisodes or (features, targets[, mask]) tuples."""
    out = []
    for i, item in enumerate(data):
        if isinstance(item, FeatureEpisode):
            out.append(item)
        elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
            out.append(FeatureEpisode(*item, name=str(i)))
        else:
            raise TrainingError(f'episode {i}: expected a FeatureEpisode or (features, targets'
                                f'[, mask]), got {type(item).__name__}')
    if not out:
        raise TrainingError('no episodes to train on')
    return out


def check_episodes(model: nn.Module, episodes: Sequence[FeatureEpisode], loss: str) -> None:
    """Refuse data that does not fit the model or the loss, naming the episode and the shape."""
    c = model.config
    for index, ep in enumerate(episodes):
        where = f'episode {ep.name or index}'
        if ep.features.shape[1] != c.d_model:
            raise TrainingError(f'{where}: features are {ep.features.shape[1]} wide, the model '
                                f'expects d_model = {c.d_model}')
        if not torch.isfinite(ep.features).all():
            raise TrainingError(f'{where}: features contain NaN or inf')
        if loss == 'mse':
            if ep.targets.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8,
                                    torch.bool) and ep.targets.dim() == 1:
                raise TrainingError(f"{where}: targets are class indices {list(ep.targets.shape)}"
                                    f" but the loss is 'mse'; use loss='ce' for classes, or give "
                                    f'[T, chunk, d_action] float action chunks')
            if tuple(ep.targets.shape[1:]) != (c.chunk, c.d_action):
                raise TrainingError(f"{where}: targets have shape {list(ep.targets.shape)}; "
                                    f"the 'mse' loss needs [T, chunk, d_action] = "
                                    f'[{len(ep)}, {c.chunk}, {c.d_action}]')
            if not ep.targets.is_floating_point():
                raise TrainingError(f"{where}: 'mse' targets must be floats, got "
                                    f'{ep.targets.dtype}')
            if not torch.isfinite(ep.targets).all():
                raise TrainingError(f'{where}: targets contain NaN or inf')
        else:
            if ep.targets.is_floating_point() or ep.targets.dim() != 1:
                raise TrainingError(f"{where}: the 'ce' loss needs [T] integer class indices, "
                                    f'got {ep.targets.dtype} {list(ep.targets.shape)}')
            if c.chunk != 1:
                raise TrainingError(f"{where}: the 'ce' loss needs a model with chunk = 1, "
                                    f'got chunk = {c.chunk}')
            bad = (ep.targets < 0) | (ep.targets >= c.d_action)
            if bad.any():
                raise TrainingError(f'{where}: class index {int(ep.targets[bad][0])} outside '
                                    f'[0, d_action = {c.d_action})')


# -- which model is this --------------------------------------------------------------------------


def has_learned_gate(model: nn.Module, gate: Optional[GatePolicy] = None) -> bool:
    """True for an AURA layer whose writes follow its trained gate (under `gate`, if given)."""
    policy = gate if gate is not None else getattr(model, 'gate_policy', None)
    return bool(policy is not None and policy.learned)


def _check_gated(model: nn.Module) -> None:
    missing = [m for m in ('project', 'advance', 'act', 'init_state')
               if not callable(getattr(model, m, None))]
    if missing:
        raise TrainingError(f'{type(model).__name__} has a learned gate but no '
                            f'{", ".join(missing)}: the IB counterfactual needs an AuraMemLayer')


def set_threshold(model: nn.Module, threshold: float) -> None:
    """Deploy `threshold` on a learned gate: the policy and the config (saved with the model)."""
    model.set_threshold(threshold)


# -- batches --------------------------------------------------------------------------------------


@dataclass
class Batch:
    """B windows: features [B, W, d], targets, scored mask [B, W], real-step mask [B, W], hint
    flags [B, W]."""

    z: Tensor
    target: Tensor
    mask: Tensor
    valid: Tensor
    hint: Optional[Tensor] = None
    t0: int = 0


def _pad(x: Tensor, length: int) -> Tensor:
    if len(x) >= length:
        return x[:length]
    return torch.cat([x, x.new_zeros((length - len(x), *x.shape[1:]))])


def _stack(parts: list[tuple[Tensor, Tensor, Tensor, Tensor]], window: int) -> Batch:
    zs, ts, ms, vs, hs = [], [], [], [], []
    for z, t, m, h in parts:
        zs.append(_pad(z, window))
        ts.append(_pad(t, window))
        ms.append(_pad(m, window))
        vs.append(_pad(torch.ones(len(z), dtype=torch.bool), window))
        hs.append(_pad(h, window))
    return Batch(torch.stack(zs), torch.stack(ts), torch.stack(ms), torch.stack(vs),
                 torch.stack(hs))


def _rows(batch: Batch, sl: slice) -> Batch:
    """Rows `sl` of a batch (this rank's share of the global batch under torchrun)."""
    if sl == slice(0, len(batch.z)):
        return batch
    return Batch(batch.z[sl], batch.target[sl], batch.mask[sl], batch.valid[sl],
                 None if batch.hint is None else batch.hint[sl], batch.t0)


class Windows:
    """Random training windows: a share start at step 0 of an episode (so what the memory must
    hold is inside the window), the rest anywhere; windows longer than an episode are padded."""

    def __init__(self, episodes: Sequence[FeatureEpisode], window: int, start_share: float,
                 seed: int):
        self.episodes, self.window, self.start_share = episodes, window, start_share
        self.rng = np.random.default_rng(seed)
        lengths = np.array([len(ep) for ep in episodes], np.float64)
        self.weights = lengths / lengths.sum()

    def sample(self, batch: int) -> Batch:
        parts = []
        for e in self.rng.choice(len(self.episodes), batch, p=self.weights):
            ep = self.episodes[e]
            room = len(ep) - self.window
            start = 0 if room <= 0 or self.rng.random() < self.start_share \
                else int(self.rng.integers(0, room + 1))
            sl = slice(start, start + self.window)
            parts.append((ep.features[sl], ep.targets[sl], ep.mask[sl], ep.hints(sl)))
        return _stack(parts, self.window)


class Streams:
    """`batch` endless streams of consecutive windows through the episodes, for the carried phase.

    A stream plays an episode from step 0 to its end; then it goes on with the next episode in
    order (`chained`: the memory is kept, and one window may span two episodes) or with a random
    episode and an empty memory (`resets` says which rows to empty before the next window).
    """

    def __init__(self, episodes: Sequence[FeatureEpisode], batch: int, window: int,
                 chained: bool, seed: int):
        self.episodes, self.window, self.chained = episodes, window, chained
        self.rng = np.random.default_rng(seed)
        self.ep = np.zeros(batch, np.int64)
        self.pos = np.zeros(batch, np.int64)
        self.resets = np.ones(batch, bool)
        for i in range(batch):
            self.restart(i)

    def restart(self, i: int, position: bool = True) -> None:
        """Stream i starts an episode (random) at a random window-aligned point (`position`)."""
        self.ep[i] = self.rng.integers(len(self.episodes))
        n = len(self.episodes[self.ep[i]])
        self.pos[i] = self.window * int(self.rng.integers(0, max(1, n // self.window))) \
            if position else 0
        self.resets[i] = True

    def next(self) -> Batch:
        parts = []
        for i in range(len(self.ep)):
            z_parts, t_parts, m_parts, h_parts, need = [], [], [], [], self.window
            while need > 0:
                ep = self.episodes[self.ep[i]]
                take = min(need, len(ep) - int(self.pos[i]))
                sl = slice(int(self.pos[i]), int(self.pos[i]) + take)
                z_parts.append(ep.features[sl])
                t_parts.append(ep.targets[sl])
                m_parts.append(ep.mask[sl])
                h_parts.append(ep.hints(sl))
                self.pos[i] += take
                need -= take
                if self.pos[i] >= len(ep):
                    if self.chained:
                        self.ep[i], self.pos[i] = (self.ep[i] + 1) % len(self.episodes), 0
                    else:   # the rest of this window is padding; the next starts a new episode
                        self.restart(i, position=False)
                        break
            parts.append((torch.cat(z_parts), torch.cat(t_parts), torch.cat(m_parts),
                          torch.cat(h_parts)))
        return _stack(parts, self.window)

    def take_resets(self) -> np.ndarray:
        """Rows whose memory must be emptied before the window `next` returns next."""
        out, self.resets = self.resets.copy(), np.zeros_like(self.resets)
        return out


def reset_rows(state: dict, rows: np.ndarray) -> dict:
    """The state with the memory of the selected rows emptied (zero, as `init_state`)."""
    if not rows.any() or not state:
        return state
    mask = torch.from_numpy(rows)
    return {k: torch.where(mask.to(v.device).view(-1, *[1] * (v.dim() - 1)),
                           torch.zeros_like(v), v) if v.shape[0] == len(rows) else v
            for k, v in state.items()}


# -- AURA's gated forward and its counterfactual over step offsets --------------------------------


def gated_forward(layer: nn.Module, z: Tensor, state: Optional[dict] = None, t0: int = 0,
                  gate: Optional[GatePolicy] = None) -> dict:
    """Sequence forward of an AuraMemLayer that also keeps what `offset_utility` needs: the
    (detached) state before every step (`W`, `b`) and the vector a write at that step would
    store (`u`: the inner prediction error for the delta rule, -v for `write_rule='add'`).

    It is the layer's fast scan (`keep_states=True`); `naive.naive_gated_forward` is the per-step
    reference the tests hold it to.
    """
    return layer(z, state=state, t0=t0, keep_states=True, gate=gate)


@torch.no_grad()
def offset_utility(layer: nn.Module, out: dict, target: Tensor, offsets: Sequence[int],
                   mask: Optional[Tensor] = None, kind: str = 'mse', reduce: str = 'mean',
                   margin: float = 0.0) -> tuple[Tensor, Tensor]:
    """u [B, T]: loss of the actions at t + offsets if t skipped minus if t wrote, and the skip
    loss [B, T]; only scored future steps (`mask`) inside the window count.

    `reduce='mean'` averages both over the offsets; `'best'` takes both at the offset where
    u - margin * skip is largest (the IB target is then: does the write help anywhere)."""
    proj = out['proj']
    B, T = target.shape[:2]
    # offsets that reach past the window score nothing: skip their heads (same result, and most
    # of the cost for windows shorter than the longest offset)
    offsets = tuple(o for o in offsets if o < T)
    if not offsets:                                   # no later step in the window to serve
        zero = proj['beta'].new_zeros((B, T))
        return zero, zero.clone()
    off = torch.tensor(offsets, device=target.device)
    idx = torch.arange(T, device=target.device)[:, None] + off[None]      # [T, O]
    inside = idx < T
    idx = idx.clamp(max=T - 1)
    valid = inside[None].expand(B, -1, -1).float()
    if mask is not None:
        valid = valid * mask[:, idx].float()
    q_f = augment(proj['q'].detach())[:, idx]                             # [B, T, O, dk+1]
    Wa_skip = torch.cat([out['W'], out['b'][..., None]], -1)              # [W | b] before t
    read_skip = torch.matmul(q_f, Wa_skip.transpose(-1, -2))              # [B, T, O, dv]
    # A write at t moves the state by -beta u [k | 1]^T: every later read by the vector u times
    # the scalar beta ([k | 1] . [q | 1]), and the head's hidden layer (linear in the read) by
    # that scalar times head_r(u). So one head_r over the skip reads serves both branches.
    kq = torch.matmul(q_f, augment(proj['k'].detach(), layer.bias_key)[..., None])  # [B,T,O,1]
    scale = proj['beta'].detach()[:, :, None, None] * kq
    hidden_skip = proj['head_x'].detach()[:, idx] + layer.head_r(read_skip)
    hidden_write = hidden_skip - scale * layer.head_r(out['u'])[:, :, None]
    future = target[:, idx]
    loss_skip = action_loss(layer.head_from(hidden_skip), future, kind)
    loss_write = action_loss(layer.head_from(hidden_write), future, kind)
    gain = loss_skip - loss_write
    if reduce == 'best':
        # the one offset where the write helps most beyond the margin: a cue is worth writing
        # if it decides the actions at some later step, however many offsets it does not help
        score = torch.where(valid > 0, gain - margin * loss_skip, torch.full_like(gain, -1e9))
        best = score.argmax(-1, keepdim=True)
        none = valid.sum(-1) == 0
        utility = gain.gather(-1, best)[..., 0].masked_fill(none, 0.0)
        return utility, loss_skip.gather(-1, best)[..., 0].masked_fill(none, 0.0)
    count = valid.sum(-1).clamp(min=1)
    utility = (gain * valid).sum(-1) / count
    skip = (loss_skip * valid).sum(-1) / count
    return utility, skip


def _masked_mean(values: Tensor, weight: Tensor) -> Tensor:
    w = weight.to(values.dtype)
    return (values * w).sum() / parallel.per_rank(w.sum()).clamp(min=1)


def objective(model: nn.Module, out: dict, batch: Batch, config: TrainingConfig,
              gated: bool) -> tuple[Tensor, dict]:
    """The loss of one update and its logged terms: the masked action loss, plus for a gated
    update the IB (at `config.offsets`) and sparsity terms over the real steps."""
    act = _masked_mean(action_loss(out['action'], batch.target, config.loss), batch.mask)
    g = out['g'].float()
    record = {'action': act.item(), 'write_rate': _masked_mean(g, batch.valid).item()}
    if not gated:
        return act, record
    if config.gate_target == 'hint':
        return hint_objective(out, batch, config, record)
    utility, skip = offset_utility(model, out, batch.target, config.offsets, batch.mask,
                                   config.loss, config.ib_reduce, config.margin)
    ib = ib_loss(out['p'], utility, skip, config.margin, weight=batch.valid)
    sparse = sparsity_loss(out['p'], config.target_rate, weight=batch.valid)
    loss = act + config.w_ib * ib + config.w_sparse * sparse
    record.update(ib=ib.item(), sparse=sparse.item(), total=loss.item())
    return loss, record


def hint_objective(out: dict, batch: Batch, config: TrainingConfig,
                   record: dict) -> tuple[Tensor, dict]:
    """The gate phase of `gate_target='hint'`: binary cross-entropy of the gate's probability
    against the hint flags, positives weighted up to balance the rare hints (the writes are the
    teacher's, so the logged write rate is the gate's own at `config.threshold`)."""
    p = out['p'].float().clamp(1e-6, 1 - 1e-6)
    hint = batch.hint.float()
    valid = batch.valid.float()
    positives = parallel.per_rank((hint * valid).sum())   # counts of the global batch / ranks
    balance = ((parallel.per_rank(valid.sum()) - positives)
               / positives.clamp(min=1.0 / parallel.world())).clamp(min=1.0)
    weight = valid * (1.0 + (balance - 1.0) * hint)
    loss = F.binary_cross_entropy(p, hint, weight=weight, reduction='sum') \
        / parallel.per_rank(weight.sum())
    own = (out['p'] > config.threshold).float()
    record.update(hint=loss.item(), total=loss.item(), write_rate=_masked_mean(own, valid).item())
    return loss, record


# -- training -------------------------------------------------------------------------------------


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
          config: TrainingConfig, gated: bool,
          gate: Optional[GatePolicy] = None) -> tuple[Tensor, dict, dict]:
    """One update's forward, writes following `gate` (None: the model's own policy): (loss,
    logged terms, the state after it, detached)."""
    out = _forward(model, batch, state, ib, gate)
    loss, record = objective(model, out, batch, config, gated)
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
    for _ in bar:
        batch = _rows(windows.sample(config.batch * parallel.world()), mine)
        policy = gate
        if teacher is not None:
            teacher.flags = batch.hint
        elif gated:
            policy = LearnedGate(float(jitter.uniform(*config.threshold_jitter)))
        ib = gated and config.gate_target == 'ib'
        loss, rec, _ = step(_loss, model, batch, None, ib, config, gated, policy)
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
        batch = _rows(streams.next(), mine)
        policy = LearnedGate(float(rng.uniform(*config.threshold_jitter))) if gated else gate
        loss, rec, after = step(_loss, model, batch, state, ib, config, ib, policy)
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
    learned = has_learned_gate(model, gate)
    if learned:
        _check_gated(model)
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


# -- evaluation and threshold selection -----------------------------------------------------------


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
