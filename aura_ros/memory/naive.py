"""Reference sequence form of `AuraMemLayer`: `step` called T times, with autograd on every op.

Kept short and obviously right (in the style of flash-linear-attention's naive.py) so the tests
can hold the fast scan (scan.py) to it: same outputs, same gradients. Not used for training.
"""

from typing import Optional

import torch
from torch import Tensor


def naive_forward(layer, z: Tensor, state: Optional[dict] = None, t0: int = 0,
                  gate=None) -> dict:
    """`layer.forward`'s outputs, computed one `advance` at a time."""
    B, T, _ = z.shape
    if state is None:
        state = layer.init_state(B, z.device)
    proj = layer.project(z, t0)
    reads, ps, gs, ss = [], [], [], []
    for t in range(T):
        proj_t = {k: v[:, t] for k, v in proj.items()}
        state, read, p, g, s, _ = layer.advance(state, proj_t, t0 + t, gate)
        reads.append(read)
        ps.append(p)
        gs.append(g)
        ss.append(s)
    read = torch.stack(reads, 1)
    out = {'action': layer.act(proj['head_x'], read), 'g': torch.stack(gs, 1),
           'p': torch.stack(ps, 1), 'surprise': torch.stack(ss, 1), 'read': read,
           'state': state, 'x': proj['x'], 'head_x': proj['head_x']}
    return out


def naive_gated_forward(layer, z: Tensor, state: Optional[dict] = None, t0: int = 0,
                        gate=None) -> dict:
    """`objective.gated_forward`'s outputs (the states before each step, the write vectors), one
    `advance` at a time."""
    B, T, _ = z.shape
    if state is None:
        state = layer.init_state(B, z.device)
    proj = layer.project(z, t0)
    reads, ps, gs, prev_W, prev_b, writes = [], [], [], [], [], []
    for t in range(T):
        proj_t = {k: v[:, t] for k, v in proj.items()}
        prev_W.append(state['W'].detach())
        prev_b.append(state['b'].detach())
        state, read, p, g, _, e = layer.advance(state, proj_t, t0 + t, gate)
        reads.append(read)
        ps.append(p)
        gs.append(g)
        writes.append(layer.write_vector(e.detach(), proj_t['v'].detach()))
    read = torch.stack(reads, 1)
    return {'action': layer.act(proj['head_x'], read), 'p': torch.stack(ps, 1),
            'g': torch.stack(gs, 1), 'proj': proj, 'W': torch.stack(prev_W, 1),
            'b': torch.stack(prev_b, 1), 'u': torch.stack(writes, 1), 'state': state}
