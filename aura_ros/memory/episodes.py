"""Training data: feature episodes, checked against the model and the loss before any update."""

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .training_config import TrainingError


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
