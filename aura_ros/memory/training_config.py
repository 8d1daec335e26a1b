"""How a memory model is trained (`TrainingConfig`) and `TrainingError` for what does not fit."""

import math
from dataclasses import asdict, dataclass
from typing import Optional

from aura_ros.checks import is_int, is_num, need


class TrainingError(ValueError):
    """Training data or settings do not fit the model; the message names what is wrong."""


def mixture_can_score(utility: str, loss: str) -> bool:
    """Whether a mixture head's NLL can score writes for this target (`utility_loss: mixture`):
    only the gradient utility of continuous chunks (squared error)."""
    return utility == 'gradient' and loss == 'mse'


def _positive_int(name: str, value, zero_ok: bool = False) -> None:
    kind = 'a non-negative' if zero_ok else 'a positive'
    need(is_int(value, 0 if zero_ok else 1), TrainingError,
         f'TrainingConfig.{name} must be {kind} integer, got {value!r}')


def _number(name: str, value, low: float = -math.inf, high: float = math.inf) -> float:
    need(is_num(value, low, high), TrainingError,
         f'TrainingConfig.{name} must be a number in [{low}, {high}], got {value!r}')
    return float(value)


def _shares(name: str, value, what: str) -> tuple[float, float]:
    """A pair of numbers in [0, 1] given as a list or tuple, else an error naming `name`."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) \
            or len(value) != 2:
        raise TrainingError(f'TrainingConfig.{name} must be {what}, got {value!r}')
    low, high = (_number(name, v, 0.0, 1.0) for v in value)
    return low, high


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
    # the IB target: None, a write must cut the later loss by `margin`; [start, end], the share
    # of each window whose writes help most (losses.budget_target), annealed geometrically from
    # start to end over the gate phase and held at end in the carried phase
    write_budget: Optional[tuple[float, float]] = None
    # how far the budget target's rare positives are weighted up: (negatives / positives) **
    # budget_balance; 1 balances them (losses.budget_ib_loss says what lower values change)
    budget_balance: float = 1.0
    # what a write is worth, for the budget target: 'counterfactual' (t written into the state
    # before it, read later with nothing written between: objective.offset_utility) or
    # 'gradient' (-dL/d write strength, the writes held drawn at random at warmup_write_rate:
    # objective.gradient_utility)
    utility: str = 'counterfactual'
    # the writes the gradient utility holds in the carried phase: 'reference' (random, as in the
    # gate phase) or 'gate' (the gate's own on the carried state: the memory the robot will
    # have; on SO-101 it did not teach the gate the centre pad's cue, docs/training.md)
    carry_utility_writes: str = 'reference'
    # the loss by which the gradient utility scores a write: 'action' (the action loss) or
    # 'mixture' (the NLL of the model's training-only mixture head, MemoryConfig.mixture: a cue
    # whose answer is the mean action is worth writing too, docs/training.md)
    utility_loss: str = 'action'
    # weight of that head's NLL in every update of a model with one (0.1 made the SO-101 gate
    # misread the centre cue with distractors: 60% closed loop against 74% at 0.03)
    w_mixture: float = 0.03
    # a dense GRU's per-step recurrent products while it trains on the CPU: 'float32', or
    # 'bfloat16' (mixed precision, faster updates here; gru.gru_sequence); others ignore it
    recurrent_dtype: str = 'float32'
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
                                ('budget_balance', 0.0, 1.0), ('w_mixture', 0.0, math.inf),
                                ('w_sparse', 0.0, math.inf), ('margin', 0.0, math.inf),
                                ('threshold', 0.0, 1.0), ('start_at_episode_start', 0.0, 1.0),
                                ('carry_reset', 0.0, 1.0), ('grad_clip', 0.0, math.inf)):
            object.__setattr__(self, name, _number(name, getattr(self, name), low, high))
        if self.target_rate is not None:
            object.__setattr__(self, 'target_rate',
                               _number('target_rate', self.target_rate, 0.0, 1.0))
        if self.write_budget is not None:
            start, end = _shares('write_budget', self.write_budget, '[start, end] shares of a '
                                 'window')
            if not 0.0 < end <= start:
                raise TrainingError(f'TrainingConfig.write_budget must be [start, end] with '
                                    f'0 < end <= start <= 1, got {self.write_budget!r}')
            object.__setattr__(self, 'write_budget', (start, end))
        jitter = self.threshold_jitter
        lo, hi = _shares('threshold_jitter', jitter, '[low, high]')
        if lo > hi:
            raise TrainingError(f'TrainingConfig.threshold_jitter must be [low, high] with low '
                                f'<= high, got {jitter!r}')
        object.__setattr__(self, 'threshold_jitter', (lo, hi))
        if self.recurrent_dtype not in ('float32', 'bfloat16'):
            raise TrainingError(f"TrainingConfig.recurrent_dtype must be 'float32' or 'bfloat16', "
                                f'got {self.recurrent_dtype!r}')
        if self.utility not in ('counterfactual', 'gradient'):
            raise TrainingError(f"TrainingConfig.utility must be 'counterfactual' or 'gradient', "
                                f'got {self.utility!r}')
        if self.carry_utility_writes not in ('reference', 'gate'):
            raise TrainingError("TrainingConfig.carry_utility_writes must be 'reference' or "
                                f"'gate', got {self.carry_utility_writes!r}")
        if self.utility_loss not in ('action', 'mixture'):
            raise TrainingError("TrainingConfig.utility_loss must be 'action' or 'mixture', "
                                f'got {self.utility_loss!r}')
        if self.utility_loss == 'mixture' and not mixture_can_score(self.utility, self.loss):
            raise TrainingError("TrainingConfig.utility_loss 'mixture' scores the gradient "
                                "utility of continuous chunks: it needs utility 'gradient' and "
                                f"loss 'mse' (got {self.utility!r}, {self.loss!r}); set "
                                "utility_loss 'action' to score writes by the action loss")
        if self.utility == 'gradient' and self.write_budget is None:
            raise TrainingError("TrainingConfig.utility 'gradient' ranks writes for a write "
                                'budget: set write_budget [start, end], or utility '
                                "'counterfactual' for the margin target")
        if self.ib_reduce not in ('mean', 'best'):
            raise TrainingError(f"TrainingConfig.ib_reduce must be 'mean' or 'best', got "
                                f'{self.ib_reduce!r}')
        if self.gate_target not in ('ib', 'hint'):
            raise TrainingError(f"TrainingConfig.gate_target must be 'ib' or 'hint', got "
                                f'{self.gate_target!r}')
        if self.loss not in ('mse', 'ce'):
            raise TrainingError(f"TrainingConfig.loss must be 'mse' or 'ce', got {self.loss!r}")

    @property
    def utility_kind(self) -> str:
        """The `objective.head_loss` kind the gradient utility scores writes by."""
        return 'mixture' if self.utility_loss == 'mixture' else self.loss

    def budget_at(self, done: float) -> Optional[float]:
        """The write budget when a share `done` of the gate phase is done (None: no budget)."""
        if self.write_budget is None:
            return None
        start, end = self.write_budget
        return start * (end / start) ** min(max(done, 0.0), 1.0)

    def to_dict(self) -> dict:
        out = asdict(self)
        out['offsets'] = list(self.offsets)
        out['threshold_jitter'] = list(self.threshold_jitter)
        if self.write_budget is not None:
            out['write_budget'] = list(self.write_budget)
        return out
