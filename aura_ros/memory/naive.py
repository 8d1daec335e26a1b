"""Reference sequence form of `AuraMemLayer`: `step` called T times, with autograd on every op.

Kept short and obviously right (in the style of flash-linear-attention's naive.py) so the tests
can hold the fast scan (scan.py) to it: same outputs, same gradients. Not used for training.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def naive_forward(layer, z: Tensor, state: Optional[dict] = None, t0: int = 0,
                  counterfactual: bool = False) -> dict:
    """`layer.forward`'s outputs, computed one `_advance` at a time."""
    B, T, _ = z.shape
    if state is None:
        state = layer.init_state(B, z.device)
    proj = layer.project(z, t0)
    H = layer.config.ib_horizon
    reads, ps, gs, ss, cf_w, cf_s = [], [], [], [], [], []
    for t in range(T):
        proj_t = {k: v[:, t] for k, v in proj.items()}
        prev = state
        state, read, p, g, s, e = layer.advance(state, proj_t, t0 + t)
        reads.append(read)
        ps.append(p)
        gs.append(g)
        ss.append(s)
        if counterfactual:
            q_next = proj['q'][:, t + 1:t + 1 + H]
            q_next = F.pad(q_next, (0, 0, 0, H - q_next.shape[1]))
            beta = proj_t['beta'][:, None, None]
            u = layer.write_vector(e, proj_t['v'])
            W_w = prev['W'] - beta * u[:, :, None] * proj_t['k'][:, None, :]
            b_w = prev['b'] - beta[:, :, 0] * u * layer.bias_key
            cf_w.append(torch.einsum('bvk,bhk->bhv', W_w, q_next) + b_w[:, None])
            cf_s.append(torch.einsum('bvk,bhk->bhv', prev['W'], q_next) + prev['b'][:, None])
    read = torch.stack(reads, 1)
    out = {'action': layer.act(proj['head_x'], read), 'g': torch.stack(gs, 1),
           'p': torch.stack(ps, 1), 'surprise': torch.stack(ss, 1), 'read': read,
           'state': state, 'x': proj['x'], 'head_x': proj['head_x']}
    if counterfactual:
        steps = torch.arange(T)[:, None] + torch.arange(1, H + 1)[None, :]
        out.update(cf_read_write=torch.stack(cf_w, 1), cf_read_skip=torch.stack(cf_s, 1),
                   cf_valid=(steps < T).to(z.device))
    return out


def naive_gated_forward(layer, z: Tensor, state: Optional[dict] = None, t0: int = 0) -> dict:
    """`training.gated_forward`'s outputs (the states before each step, the write vectors), one
    `_advance` at a time."""
    B, T, _ = z.shape
    if state is None:
        state = layer.init_state(B, z.device)
    proj = layer.project(z, t0)
    reads, ps, gs, prev_W, prev_b, writes = [], [], [], [], [], []
    for t in range(T):
        proj_t = {k: v[:, t] for k, v in proj.items()}
        prev_W.append(state['W'].detach())
        prev_b.append(state['b'].detach())
        state, read, p, g, _, e = layer.advance(state, proj_t, t0 + t)
        reads.append(read)
        ps.append(p)
        gs.append(g)
        writes.append(layer.write_vector(e.detach(), proj_t['v'].detach()))
    read = torch.stack(reads, 1)
    return {'action': layer.act(proj['head_x'], read), 'p': torch.stack(ps, 1),
            'g': torch.stack(gs, 1), 'proj': proj, 'W': torch.stack(prev_W, 1),
            'b': torch.stack(prev_b, 1), 'u': torch.stack(writes, 1), 'state': state}
