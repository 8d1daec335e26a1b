"""Training batches: random windows of episodes, or streams of consecutive windows (carried)."""

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .episodes import FeatureEpisode


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


def batch_rows(batch: Batch, sl: slice) -> Batch:
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
