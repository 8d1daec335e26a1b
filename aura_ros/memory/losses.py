"""The AURA training objective, one function per term.

    L = L_action + w_ib * L_ib + w_sparse * L_sparse

Chosen forms (our reconstruction; the paper body was not available):

- L_action: mean squared error of the action chunk (continuous actions) or cross-entropy over the
  action classes (`kind='ce'`, chunk of 1, the synthetic benchmark).
- L_ib, the action information bottleneck: the gate should write exactly when writing changes the
  actions that follow. For every step t we score the counterfactual utility
      u_t = mean_{h=1..H} [ loss(a_{t+h} | memory skipped t) - loss(a_{t+h} | memory wrote t) ]
  with both memories taken from the state before t and read with the later queries (detached), and
  train p_t with binary cross-entropy towards 1[u_t > margin * loss_skip_t]: a write must cut the
  loss of the following actions by a relative `margin`. Distractors (writing hurts) and filler
  (writing does nothing) get target 0; events get 1.
- L_sparse: the mean write probability, or with `target_rate` a hinge max(0, mean p - target_rate).
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import parallel


def action_loss(pred: Tensor, target: Tensor, kind: str = 'mse') -> Tensor:
    """Per-step loss [..., T] of action chunks pred [..., chunk, d_action].

    `kind='mse'`: target has pred's shape. `kind='ce'`: target holds class indices [..., T] and
    pred's chunk is 1 with d_action logits.
    """
    if kind == 'mse':
        if target.shape != pred.shape:
            what = ' (class indices? use kind="ce")' if not target.is_floating_point() else ''
            raise ValueError(f'mse action loss: targets have shape {list(target.shape)}{what}, '
                             f"expected the prediction's {list(pred.shape)} "
                             '[..., chunk, d_action]')
        return ((pred - target) ** 2).mean(dim=(-2, -1))
    if kind == 'ce':
        if target.is_floating_point() or target.shape != pred.shape[:-2]:
            raise ValueError(f'ce action loss: targets must be integer class indices of shape '
                             f'{list(pred.shape[:-2])}, got {target.dtype} {list(target.shape)}')
        logits = pred[..., 0, :]
        flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                               reduction='none')
        return flat.reshape(target.shape)
    raise ValueError(f'action loss kind must be "mse" or "ce", got {kind!r}')


COUNTERFACTUAL_KEYS = ('cf_read_write', 'cf_read_skip', 'cf_valid', 'head_x')


def write_utility(layer: nn.Module, out: dict, target: Tensor, kind: str = 'mse'):
    """Counterfactual utility u [B, T] of writing at each step, and the skip loss [B, T].

    Needs `out = layer(z, counterfactual=True)`.
    """
    missing = [k for k in COUNTERFACTUAL_KEYS if k not in out]
    if missing:
        raise ValueError(f'the IB loss needs the counterfactual outputs ({", ".join(missing)} '
                         f'missing): call layer(z, counterfactual=True), or train with '
                         f'aura_ros.memory.training.train, which scores writes over long '
                         f'step offsets')
    with torch.no_grad():
        H = out['cf_read_write'].shape[2]
        T = target.shape[1]
        idx = (torch.arange(T)[:, None] + torch.arange(1, H + 1)[None, :]).clamp(max=T - 1)
        idx = idx.to(target.device)
        head_x = out['head_x'][:, idx]                       # [B, T, H, hidden]
        future = target[:, idx]                              # [B, T, H, ...]
        loss_write = action_loss(layer.act(head_x, out['cf_read_write']), future, kind)
        loss_skip = action_loss(layer.act(head_x, out['cf_read_skip']), future, kind)
        valid = out['cf_valid'].to(loss_write.dtype)
        count = valid.sum(-1).clamp(min=1)
        utility = ((loss_skip - loss_write) * valid).sum(-1) / count
        skip = (loss_skip * valid).sum(-1) / count
    return utility, skip


def _weighted_mean(values: Tensor, weight: Optional[Tensor]) -> Tensor:
    if weight is None:
        return values.mean()
    w = weight.to(values.dtype)
    return (values * w).sum() / parallel.per_rank(w.sum()).clamp(min=1)


def ib_loss(p: Tensor, utility: Tensor, loss_skip: Tensor, margin: float = 0.2,
            weight: Optional[Tensor] = None) -> Tensor:
    """BCE of the write probability towards 1[u_t > margin * loss_skip_t].

    `weight` (p's shape, e.g. a 0/1 mask of real, non-padding steps) weights the mean.
    """
    target = (utility > margin * loss_skip.clamp(min=1e-6)).to(p.dtype)
    bce = F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), target, reduction='none')
    return _weighted_mean(bce, weight)


def sparsity_loss(p: Tensor, target_rate: Optional[float] = None,
                  weight: Optional[Tensor] = None) -> Tensor:
    """Mean write probability (weighted by `weight` if given), or its excess over `target_rate`."""
    mean = _weighted_mean(p, weight)
    if target_rate is None:
        return mean
    return F.relu(mean - target_rate)


def aura_objective(layer: nn.Module, out: dict, target: Tensor, kind: str = 'mse',
                   w_ib: float = 1.0, w_sparse: float = 0.1, margin: float = 0.2,
                   target_rate: Optional[float] = None) -> dict[str, Tensor]:
    """Every term separately and their weighted `total`. Needs `counterfactual=True` outputs.

    The IB term here only looks `config.ib_horizon` contiguous steps ahead: a cue shown long
    before the actions that need it scores as useless and the gate closes on it. For your own
    data use `aura_ros.memory.training.train`, which scores writes at long step offsets.
    """
    terms = {'action': action_loss(out['action'], target, kind).mean()}
    utility, skip = write_utility(layer, out, target, kind)
    terms['ib'] = ib_loss(out['p'], utility, skip, margin)
    terms['sparse'] = sparsity_loss(out['p'], target_rate)
    terms['total'] = terms['action'] + w_ib * terms['ib'] + w_sparse * terms['sparse']
    terms['utility'] = utility
    return terms
