"""The AURA training objective, one function per term.

    L = L_action + w_ib * L_ib + w_sparse * L_sparse     (summed by `objective.objective`)

Chosen forms (our reconstruction; the paper body was not available):

- L_action: mean squared error of the action chunk (continuous actions) or cross-entropy over the
  action classes (`kind='ce'`, chunk of 1, the synthetic benchmark).
- L_ib, the action information bottleneck: the gate should write exactly when writing changes the
  actions that follow. For every step t the counterfactual utility
      u_t = mean_{o in offsets} [loss(a_{t+o} | skipped t) - loss(a_{t+o} | wrote t)]
  (both memories from the state before t, read with the later queries, detached) is computed by
  `objective.offset_utility`, and `ib_loss` trains p_t with binary cross-entropy towards
  1[u_t > margin * loss_skip_t]: a write must cut the loss of the actions it serves by a relative
  `margin`. Distractors (writing hurts) and filler (writing does nothing) get target 0; events 1.
  With a write budget (`budget_ib_loss`) the target is instead the `budget` share of each
  window's steps with the largest utility (> 0): the rank keeps the utility's size, where the
  margin throws it away (docs/training.md, "A gate without labels").
- L_sparse: the mean write probability, or with `target_rate` a hinge max(0, mean p - target_rate).
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

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


# the mixture's standard deviations, per action element: wide enough to start, never a spike
LOG_SIGMA_RANGE = (-4.0, 2.0)


def mixture_outputs(components: int, chunk: int, d_action: int) -> int:
    """Width of a mixture head's output: the logits, one log standard deviation, the means."""
    return components * (1 + chunk * d_action) + 1


def mixture_nll(out: Tensor, target: Tensor, components: int) -> Tensor:
    """Per-step negative log-likelihood [..., T], per action element, of action chunks target
    [..., T, chunk, d_action] under a mixture of `components` isotropic Gaussians with one
    standard deviation; out [..., T, `mixture_outputs`] holds their logits, that log standard
    deviation and their means.

    Unlike the MSE, whose best guess without information is the mean action, the mixture puts
    weight on each mode: knowing which mode is worth the same whether or not it is the mean.
    The shared deviation makes the components split by where the actions go: with one each,
    a narrow and a wide component around the mean fit heavy tails instead (measured on SO-101)."""
    n = target.shape[-2] * target.shape[-1]
    logits, log_sigma, means = out.split([components, 1, components * n], -1)
    log_sigma = log_sigma.clamp(*LOG_SIGMA_RANGE)
    means = means.reshape(*means.shape[:-1], components, n)
    sq = ((target.flatten(-2)[..., None, :] - means) ** 2).mean(-1)         # [..., T, K]
    per_element = -0.5 * math.log(2 * math.pi) - log_sigma - sq / (2 * torch.exp(2 * log_sigma))
    return -torch.logsumexp(F.log_softmax(logits, -1) + n * per_element, -1) / n


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


def budget_target(utility: Tensor, budget: float, weight: Optional[Tensor] = None) -> Tensor:
    """1 on the `budget` share of each row's steps (of those `weight` marks) whose write helps
    most, among those where it helps at all (utility > 0); 0 elsewhere.

    Unlike a fixed margin, the rank keeps the utility's size: a cue worth ten distractors is
    chosen before them, and a budget above zero never asks for no write at all."""
    valid = torch.ones_like(utility, dtype=torch.bool) if weight is None else weight > 0
    count = valid.sum(-1, keepdim=True)
    k = (count.to(utility.dtype) * budget).ceil().clamp(min=1).long()
    score = utility.masked_fill(~valid, -math.inf)
    order = score.argsort(-1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(utility.shape[-1], device=utility.device)
                  .expand_as(order))
    return ((rank < k) & (utility > 0) & valid).to(utility.dtype)


def budget_ib_loss(p: Tensor, utility: Tensor, budget: float,
                   weight: Optional[Tensor] = None, balance: float = 1.0) -> Tensor:
    """BCE of the write probability towards `budget_target`, the rare positives weighted up by
    (negatives / positives) ** `balance`, so the gate learns a rank, not a rate of 0.

    At `balance` 1 (as a hinted gate's) p is a likelihood ratio: a frame in the top share one
    window in a hundred already gets p ~ 0.5 at a 1% budget. Below 1 p keeps nearer the chance
    of being chosen; on the SO-101 distractor bags that did not make the gate more selective
    (docs/training.md, "Which frames a gate can tell apart")."""
    target = budget_target(utility, budget, weight)
    valid = torch.ones_like(p) if weight is None else weight.to(p.dtype)
    positives = parallel.per_rank((target * valid).sum())
    balance = (((parallel.per_rank(valid.sum()) - positives)
                / positives.clamp(min=1.0 / parallel.world())).clamp(min=1.0)) ** balance
    w = valid * (1.0 + (balance - 1.0) * target)
    bce = F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), target, weight=w, reduction='sum')
    return bce / parallel.per_rank(w.sum()).clamp(min=1)


def sparsity_loss(p: Tensor, target_rate: Optional[float] = None,
                  weight: Optional[Tensor] = None) -> Tensor:
    """Mean write probability (weighted by `weight` if given), or its excess over `target_rate`."""
    mean = _weighted_mean(p, weight)
    if target_rate is None:
        return mean
    return F.relu(mean - target_rate)
