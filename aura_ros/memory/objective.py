"""The loss of one update: action loss, plus a learned gate's IB (or hint) and sparsity terms."""

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import parallel
from .batches import Batch
from .gates import AlwaysWrite, GatePolicy
from .losses import action_loss, budget_ib_loss, ib_loss, sparsity_loss
from .scan import augment
from .training_config import TrainingConfig


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
    if 'decay' in proj:         # the write also keeps only 1 - beta gamma of the old state
        fade = (proj['beta'] * proj['decay']).detach()[:, :, None, None]
        hidden_write = hidden_write - fade * layer.head_r(read_skip)
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


def head_loss(layer: nn.Module, head_x: Tensor, read: Tensor, target: Tensor,
              kind: str = 'mse') -> Tensor:
    """Per-step loss [B, T] of the head over reads [B, T, d_val]: `action_loss` of its chunk
    (`kind` 'mse' or 'ce'), or 'mixture': the NLL of the layer's training-only mixture head."""
    if kind == 'mixture':
        return layer.mixture_loss(head_x + layer.head_r(read), target)
    return action_loss(layer.act(head_x, read), target, kind)


def gradient_utility(layer: nn.Module, out: dict, target: Tensor,
                     mask: Optional[Tensor] = None, kind: str = 'mse',
                     writes: Optional[Tensor] = None) -> Tensor:
    """u [B, T]: how much the window's later action loss falls per unit of extra write strength
    at each step, -dL/da_t with the writes `writes` [B, T] (default: those `out` made; a_t =
    beta_t g_t; the state before the window, the projections and every other write held);
    `kind` names the loss (`head_loss`: 'mixture' scores by the mixture head's NLL).

    Unlike `offset_utility` ("t written into the state before it, nothing written after") this
    is the memory the read-out was trained on: a write that later writes overwrite, or that
    overwrites a useful one, scores low; a skipped step scores what a small write would give.
    One more scan forward and backward, no parameter gradients (`utility: gradient`)."""
    proj = {k: v.detach() for k, v in out['proj'].items()}
    Wa0 = torch.cat([out['W'][:, 0], out['b'][:, 0, :, None]], -1).detach()
    extra = torch.zeros_like(out['g'], dtype=proj['beta'].dtype, requires_grad=True)
    with torch.enable_grad():
        g = out['g'] if writes is None else writes
        # AlwaysWrite makes every write's strength exactly beta (g + extra): 0 where g was 0
        _, read = layer.scan(proj, Wa0, AlwaysWrite(), beta=proj['beta'] * (g.detach() + extra))
        loss = head_loss(layer, proj['head_x'], read.transpose(0, 1), target, kind)
        weight = torch.ones_like(loss) if mask is None else mask.to(loss.dtype)
        (grad,) = torch.autograd.grad((loss * weight).sum(), extra)
    return -grad


def reference_writes(g: Tensor, rate: float) -> Tensor:
    """Random writes [B, T] at `rate`, g's shape and dtype; under torchrun each rank takes its
    rows of the global batch's draws (the same writes as one process with the whole batch)."""
    B = g.shape[0]
    draw = torch.rand((B * parallel.world(), *g.shape[1:]))[parallel.rows(B)]
    return (draw < rate).to(device=g.device, dtype=g.dtype)


def _masked_mean(values: Tensor, weight: Tensor) -> Tensor:
    w = weight.to(values.dtype)
    return (values * w).sum() / parallel.per_rank(w.sum()).clamp(min=1)


def objective(model: nn.Module, out: dict, batch: Batch, config: TrainingConfig,
              gated: bool, budget: Optional[float] = None,
              own_writes: bool = False) -> tuple[Tensor, dict]:
    """The loss of one update and its logged terms: the masked action loss, plus for a gated
    update the IB (at `config.offsets`; towards the top `budget` of each window if given) and
    sparsity terms over the real steps. `own_writes`: the gradient utility holds the gate's own
    writes instead of random reference writes."""
    act = _masked_mean(action_loss(out['action'], batch.target, config.loss), batch.mask)
    g = out['g'].float()
    record = {'action': act.item(), 'write_rate': _masked_mean(g, batch.valid).item()}
    if getattr(model, 'mixture_out', None) is not None:   # its head learns in every update
        nll = _masked_mean(head_loss(model, out['head_x'], out['read'], batch.target,
                                     'mixture'), batch.mask)
        record['mixture'] = nll.item()
        act = act + config.w_mixture * nll
    if not gated:
        return act, record
    if config.gate_target == 'hint':
        return hint_objective(out, batch, config, record)
    if config.utility == 'gradient':
        # scored under the warm-up's sparse random writes, the memory the read-out learned to
        # use, not the gate's own (dense at first: there no write stands out), unless the
        # caller asks for the gate's own (`carry_utility_writes: gate`, the carried phase)
        reference = None if own_writes else reference_writes(out['g'],
                                                              config.warmup_write_rate)
        utility = gradient_utility(model, out, batch.target, batch.mask, config.utility_kind,
                                   reference)
    else:
        utility, skip = offset_utility(model, out, batch.target, config.offsets, batch.mask,
                                       config.loss, config.ib_reduce, config.margin)
    if budget is None:
        ib = ib_loss(out['p'], utility, skip, config.margin, weight=batch.valid)
    else:
        ib = budget_ib_loss(out['p'], utility, budget, weight=batch.valid,
                             balance=config.budget_balance)
        record['budget'] = budget
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
