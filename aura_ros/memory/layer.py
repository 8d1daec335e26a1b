"""AURA memory layer: a gated fast-weight (delta-rule) memory with an action head.

This is our reconstruction of AURA (Action-Utility Recurrent Adaptive Memory, arXiv 2606.02775)
from its model card and abstract: the paper body was not available to us, so the exact equations
below are ours (docs/design.md section 3). Per step t:

    x = LayerNorm(z);  k = l2norm(W_K x);  q = l2norm(W_Q x);  v = W_V x;  beta = sigmoid(w_b . x)
    e = W k + b - v;  s = ||e||^2;  p = sigmoid(gate_mlp([log1p(s), proj(x)]))
    g = gate_policy(p, s, t)   (AURA: 1[p > threshold])
    W <- W - beta g e k^T;  b <- b - beta g e;  r = W q + b;  action = head([x, r])

The state is only (W, b): d_key * d_val + d_val floats per row, for any episode length. With g = 0
the state is left bit-identical (inference selects the old tensors; training scales the update
by 0). The surprise enters the gate as log1p(s) so its scale does not swamp the gate's input.

The gate is trained with a straight-through estimator: the forward pass uses the same hard decision
as inference (so training sees exactly the memory contents the robot will have), and the backward
pass lets d(loss)/d(g) flow into p as if g were p. A relaxation would train on soft writes that
never happen at inference; the hard forward keeps train and deploy identical.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MemoryConfig
from .gates import GatePolicy, LearnedGate

State = dict[str, Tensor]


def state_bytes(state: State) -> int:
    """Bytes actually held by the tensors of a memory state."""
    return sum(t.numel() * t.element_size() for t in state.values())


class AuraMemLayer(nn.Module):
    """Gated fast-weight memory + action head: `forward` for sequences, `step` for inference."""

    kind = 'aura'

    def __init__(self, config: MemoryConfig, gate_policy: Optional[GatePolicy] = None):
        super().__init__()
        self.config = config
        c = config
        self.norm = nn.LayerNorm(c.d_model)
        self.to_k = nn.Linear(c.d_model, c.d_key, bias=False)
        self.to_q = nn.Linear(c.d_model, c.d_key, bias=False)
        self.to_v = nn.Linear(c.d_model, c.d_val, bias=False)
        self.to_beta = nn.Linear(c.d_model, 1)
        self.gate_proj = nn.Linear(c.d_model, c.gate_proj)
        self.gate_in = nn.Linear(1 + c.gate_proj, c.gate_hidden)
        self.gate_out = nn.Linear(c.gate_hidden, 1)
        self.head_x = nn.Linear(c.d_model, c.head_hidden)
        self.head_r = nn.Linear(c.d_val, c.head_hidden, bias=False)
        self.head_out = nn.Linear(c.head_hidden, c.chunk * c.d_action)
        with torch.no_grad():
            self.to_beta.bias.fill_(c.beta_init_bias)
            self.gate_out.bias.fill_(c.gate_init_bias)
        self.gate_policy = gate_policy or LearnedGate(c.gate_threshold)

    # -- state ------------------------------------------------------------------------------------

    def init_state(self, batch_size: int, device=None) -> State:
        c = self.config
        return {'W': torch.zeros(batch_size, c.d_val, c.d_key, device=device),
                'b': torch.zeros(batch_size, c.d_val, device=device)}

    def memory_bytes(self, batch_size: int = 1) -> int:
        return self.config.memory_bytes(batch_size)

    # -- per-step pieces shared by the sequence and step forms ------------------------------------

    def _project(self, z: Tensor) -> dict[str, Tensor]:
        """Everything that depends on z_t alone; works on [B, d] and [B, T, d] alike."""
        x = self.norm(z)
        return {'x': x,
                'k': F.normalize(self.to_k(x), dim=-1),
                'q': F.normalize(self.to_q(x), dim=-1),
                'v': self.to_v(x),
                'beta': torch.sigmoid(self.to_beta(x)).squeeze(-1),
                'gate_x': self.gate_in(torch.cat(
                    [torch.zeros_like(x[..., :1]), self.gate_proj(x)], dim=-1)),
                'head_x': self.head_x(x)}

    def _advance(self, state: State, proj: dict[str, Tensor], t: int):
        """One delta-rule step from projections of a single time step ([B, ...])."""
        W, b, k = state['W'], state['b'], proj['k']
        e = torch.einsum('bvk,bk->bv', W, k) + b - proj['v']
        surprise = (e * e).sum(-1)
        gate_h = proj['gate_x'] + self.gate_in.weight[:, 0] * torch.log1p(surprise)[:, None]
        p = torch.sigmoid(self.gate_out(torch.tanh(gate_h))).squeeze(-1)
        g_hard = self.gate_policy(p, surprise, t)
        scale = proj['beta'] * g_hard
        if torch.is_grad_enabled():
            if self.gate_policy.learned:
                scale = proj['beta'] * (g_hard + p - p.detach())   # straight-through
            W_new = W - scale[:, None, None] * e[:, :, None] * k[:, None, :]
            b_new = b - scale[:, None] * e
        else:
            wrote = g_hard > 0
            W_new = torch.where(wrote[:, None, None],
                                W - scale[:, None, None] * e[:, :, None] * k[:, None, :], W)
            b_new = torch.where(wrote[:, None], b - scale[:, None] * e, b)
        read = torch.einsum('bvk,bk->bv', W_new, proj['q']) + b_new
        return {'W': W_new, 'b': b_new}, read, p, g_hard, surprise, e

    def act(self, head_x: Tensor, read: Tensor) -> Tensor:
        """Action chunk from the precomputed x-part of the head and a memory read."""
        c = self.config
        out = self.head_out(F.gelu(head_x + self.head_r(read)))
        return out.reshape(*out.shape[:-1], c.chunk, c.d_action)

    # -- public forms -----------------------------------------------------------------------------

    def step(self, z_t: Tensor, state: State, t: int = 0) -> dict:
        """O(1) inference form: z_t [B, d_model] and the state -> action [B, chunk, d_action]."""
        proj = self._project(z_t)
        new_state, read, p, g, surprise, _ = self._advance(state, proj, t)
        return {'action': self.act(proj['head_x'], read), 'g': g, 'p': p, 'surprise': surprise,
                'read': read, 'state': new_state}

    def forward(self, z: Tensor, state: Optional[State] = None, t0: int = 0,
                counterfactual: bool = False) -> dict:
        """Sequence form over z [B, T, d_model]; the same numbers as calling `step` T times.

        With `counterfactual=True` it also returns, for every step t, the reads that the next
        `ib_horizon` steps would see if step t wrote (`cf_read_write`) or skipped (`cf_read_skip`),
        both from the state before t: [B, T, H, d_val], plus `cf_valid` [T, H]. The information
        bottleneck loss turns them into the utility of writing.
        """
        B, T, _ = z.shape
        if state is None:
            state = self.init_state(B, z.device)
        proj = self._project(z)
        H = self.config.ib_horizon
        reads, ps, gs, ss, cf_w, cf_s = [], [], [], [], [], []
        for t in range(T):
            proj_t = {k: v[:, t] for k, v in proj.items()}
            prev = state
            state, read, p, g, s, e = self._advance(state, proj_t, t0 + t)
            reads.append(read)
            ps.append(p)
            gs.append(g)
            ss.append(s)
            if counterfactual:
                q_next = proj['q'][:, t + 1:t + 1 + H]
                q_next = F.pad(q_next, (0, 0, 0, H - q_next.shape[1]))
                beta = proj_t['beta'][:, None, None]
                W_w = prev['W'] - beta * e[:, :, None] * proj_t['k'][:, None, :]
                b_w = prev['b'] - beta[:, :, 0] * e
                cf_w.append(torch.einsum('bvk,bhk->bhv', W_w, q_next) + b_w[:, None])
                cf_s.append(torch.einsum('bvk,bhk->bhv', prev['W'], q_next) + prev['b'][:, None])
        read = torch.stack(reads, 1)
        out = {'action': self.act(proj['head_x'], read), 'g': torch.stack(gs, 1),
               'p': torch.stack(ps, 1), 'surprise': torch.stack(ss, 1), 'read': read,
               'state': state, 'x': proj['x'], 'head_x': proj['head_x']}
        if counterfactual:
            steps = torch.arange(T)[:, None] + torch.arange(1, H + 1)[None, :]
            out.update(cf_read_write=torch.stack(cf_w, 1), cf_read_skip=torch.stack(cf_s, 1),
                       cf_valid=(steps < T).to(z.device))
        return out
