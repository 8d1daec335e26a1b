"""AURA memory layer: a gated fast-weight (delta-rule) memory with an action head.

This is our reconstruction of AURA (Action-Utility Recurrent Adaptive Memory, arXiv 2606.02775)
from its model card and abstract: the paper body was not available to us, so the exact equations
below are ours (docs/design.md section 3). Per step t:

    x = LayerNorm(M (z - m))
    k = l2norm(W_K x);  q = l2norm(W_Q x);  v = W_V x;  beta = sigmoid(w_b . x)
    e = W k + b - v;  s = ||e||^2;  p = sigmoid(gate_mlp([log1p(s), proj(x)]))
    g = gate_policy(p, s, t)   (AURA: 1[p > threshold])
    W <- W - beta g e k^T;  b <- b - beta g e;  r = W q + b;  action = head([x, r])

M and m are fixed (not trained): the identity and 0 unless `input_map` fits them on the training
features (`fit_input_map`: centring or ZCA whitening, so the keys of different frames are not all
alike). With `write_bias=False` a write leaves b alone (the b update above is dropped, and e = W k
- v): b is read with a constant 1 by every key, so writing it makes even an orthogonal key's read
move with every write. With `write_decay=True` a write first fades the whole state,
W <- (1 - beta g gamma) W and b likewise, gamma = sigmoid(w_g . x) learned: what the new key does
not erase (an old task's writes under other keys) fades with every write, never without one.

The state is only (W, b): d_key * d_val + d_val floats per row, for any episode length. With g = 0
the state is left bit-identical (inference selects the old tensors; training scales the update
by 0). The surprise enters the gate as log1p(s) so its scale does not swamp the gate's input.

The gate policy is an argument: `step(..., gate=...)` and `forward(..., gate=...)` decide the
writes of that call with any `GatePolicy` (a baseline schedule, a threshold, a teacher); without
one the layer's own policy (given at construction, AURA's `LearnedGate`) decides. Nothing outside
the layer assigns it.

The layer's contract, the pieces every form is built from (the scan, the per-step reference in
`naive.py`, the ONNX export, the IB target in `objective.offset_utility`):

    project(z, t0)                -> everything that depends on z_t alone (x, k, q, v, beta, ...)
    advance(state, proj, t, gate) -> one delta-rule step: new state, read, p, g, surprise, error
    scan(proj, Wa0, policy, ...)  -> the same steps over a whole sequence (scan.py), the reads
    write_vector(e, v)            -> the vector u a write stores (W <- W - beta g u k^T)
    act(head_x, read) / head_from -> the action chunk from the head's two parts

The gate is trained with a straight-through estimator: the forward pass uses the same hard decision
as inference (so training sees exactly the memory contents the robot will have), and the backward
pass lets d(loss)/d(g) flow into p as if g were p. A relaxation would train on soft writes that
never happen at inference; the hard forward keeps train and deploy identical.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MemoryConfig
from .gates import GatePolicy, LearnedGate
from .input_map import add_input_map, input_mapped
from .losses import mixture_nll, mixture_outputs
from .scan import GatedDeltaScan, augment, scan_forward, state_read

State = dict[str, Tensor]

# gamma starts near sigmoid(-2) ~ 0.12: a write at beta ~ 0.73 keeps ~91% of the state, so the
# layer starts close to the plain delta rule and learns how much to forget
DECAY_INIT_BIAS = -2.0


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
        if c.mixture:        # training only (losses.mixture_nll); act() never reads it
            self.mixture_out = nn.Linear(c.head_hidden,
                                         mixture_outputs(c.mixture, c.chunk, c.d_action))
        if c.time_features:
            # addresses that know the step: a key written at t can be found by a query at t + d
            # (a fixed rotation of the sin/cos features), which x_t alone cannot express
            self.time_k = nn.Linear(2 * c.time_features, c.d_key, bias=False)
            self.time_q = nn.Linear(2 * c.time_features, c.d_key, bias=False)
        if c.write_decay:
            self.to_decay = nn.Linear(c.d_model, 1)
        with torch.no_grad():
            self.to_beta.bias.fill_(c.beta_init_bias)
            self.gate_out.bias.fill_(c.gate_init_bias)
            if c.write_decay:
                self.to_decay.bias.fill_(DECAY_INIT_BIAS)
        add_input_map(self, c.input_map, c.d_model)     # fixed, set by `fit_input_map`
        self.gate_policy = gate_policy or LearnedGate(c.gate_threshold)

    @property
    def bias_key(self) -> float:
        """What keys carry in b's slot: 1 (a write moves b) or 0 (`write_bias=False`)."""
        return 1.0 if self.config.write_bias else 0.0

    # -- state ------------------------------------------------------------------------------------

    def init_state(self, batch_size: int, device=None) -> State:
        c = self.config
        return {'W': torch.zeros(batch_size, c.d_val, c.d_key, device=device),
                'b': torch.zeros(batch_size, c.d_val, device=device)}

    def memory_bytes(self, batch_size: int = 1) -> int:
        return self.config.memory_bytes(batch_size)

    def set_threshold(self, threshold: float) -> None:
        """Deploy a learned gate at `threshold`: its own policy and the config saved with it."""
        self.gate_policy = LearnedGate(threshold)
        self.config = self.config.replace(gate_threshold=float(threshold))

    # -- per-step pieces shared by the sequence and step forms ------------------------------------

    def time_encoding(self, z: Tensor, t0) -> Tensor:
        """sin/cos of 2 pi j t / period, j = 1..time_features: [2 n] for a step z [B, d]
        (t0 its index, an int or a tensor holding one), [T, 2 n] for a sequence z [B, T, d].

        The step is reduced modulo the period first, so it stays exact in float32 however long
        the episode (the exported step does the same with its `t` input).
        """
        c = self.config
        if isinstance(t0, Tensor):       # a graph input (export, CUDA graph): never a constant
            t0 = t0.to(z.dtype).reshape(-1)[:1]
        else:
            t0 = torch.full((1,), float(t0), dtype=z.dtype, device=z.device)
        steps = t0 if z.dim() == 2 else t0 + torch.arange(z.shape[1], dtype=z.dtype,
                                                            device=z.device)
        phase = torch.remainder(steps, c.period) * (2 * math.pi / c.period)
        harmonics = torch.arange(1, c.time_features + 1, dtype=z.dtype, device=z.device)
        angle = phase[:, None] * harmonics
        enc = torch.cat([torch.sin(angle), torch.cos(angle)], -1)
        return enc[0] if z.dim() == 2 else enc

    def policy(self, gate: Optional[GatePolicy]) -> GatePolicy:
        """The policy that decides this call's writes: `gate`, or the layer's own."""
        return self.gate_policy if gate is None else gate

    def project(self, z: Tensor, t0: int = 0) -> dict[str, Tensor]:
        """Everything that depends on z_t alone; works on [B, d] and [B, T, d] alike.

        `t0` is the step index of z (of z[:, 0] for a sequence): the time-aware variants use it.
        """
        x = self.norm(input_mapped(self, z))
        k, q = self.to_k(x), self.to_q(x)
        if self.config.time_features:
            phi = self.time_encoding(z, t0)
            k, q = k + self.time_k(phi), q + self.time_q(phi)
        decay = ({'decay': torch.sigmoid(self.to_decay(x)).squeeze(-1)}
                 if self.config.write_decay else {})
        return {'x': x, **decay,
                'k': F.normalize(k, dim=-1),
                'q': F.normalize(q, dim=-1),
                'v': self.to_v(x),
                'beta': torch.sigmoid(self.to_beta(x)).squeeze(-1),
                'gate_x': self.gate_in(torch.cat(
                    [torch.zeros_like(x[..., :1]), self.gate_proj(x)], dim=-1)),
                'head_x': self.head_x(x)}

    def advance(self, state: State, proj: dict[str, Tensor], t: int,
                gate: Optional[GatePolicy] = None):
        """One delta-rule step from projections of a single time step ([B, ...]) under `gate`
        (the layer's own policy if None): (new state, read, p, g, surprise, error e).

        With grad enabled the write is scaled by g (straight-through into p for a learned gate);
        without, a row that does not write keeps its old tensors bit for bit."""
        policy = self.policy(gate)
        W, b, k = state['W'], state['b'], proj['k']
        e = torch.einsum('bvk,bk->bv', W, k) - proj['v']
        if self.config.write_bias:
            e = e + b
        surprise = (e * e).sum(-1)
        gate_h = proj['gate_x'] + self.gate_in.weight[:, 0] * torch.log1p(surprise)[:, None]
        p = torch.sigmoid(self.gate_out(torch.tanh(gate_h))).squeeze(-1)
        g_hard = policy(p, surprise, t)
        scale = proj['beta'] * g_hard
        u = self.write_vector(e, proj['v'])
        if torch.is_grad_enabled():
            if policy.learned:
                scale = proj['beta'] * (g_hard + p - p.detach())   # straight-through
            W_new, b_new = self.written(W, b, scale, u, k, proj)
        else:
            wrote = g_hard > 0
            W_w, b_w = self.written(W, b, scale, u, k, proj)
            W_new = torch.where(wrote[:, None, None], W_w, W)
            # b changes only if writes move it or fade it: no op on the step's path otherwise
            b_new = torch.where(wrote[:, None], b_w, b) \
                if self.config.write_bias or self.config.write_decay else b
        read = torch.einsum('bvk,bk->bv', W_new, proj['q']) + b_new
        return {'W': W_new, 'b': b_new}, read, p, g_hard, surprise, e

    def written(self, W: Tensor, b: Tensor, scale: Tensor, u: Tensor, k: Tensor,
                proj: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The state after a write of strength `scale` [B] (beta g): faded by 1 - scale gamma
        (`write_decay`), then W - scale u k^T, and b - scale u (`write_bias`)."""
        if self.config.write_decay:
            keep = 1 - scale * proj['decay']
            W, b = keep[:, None, None] * W, keep[:, None] * b
        W = W - scale[:, None, None] * u[:, :, None] * k[:, None, :]
        return W, (b - scale[:, None] * u if self.config.write_bias else b)

    def write_vector(self, e: Tensor, v: Tensor) -> Tensor:
        """u in W <- W - beta g u k^T: the error e (delta rule) or -v (`write_rule='add'`)."""
        return -v if self.config.write_rule == 'add' else e

    def act(self, head_x: Tensor, read: Tensor) -> Tensor:
        """Action chunk from the precomputed x-part of the head and a memory read."""
        return self.head_from(head_x + self.head_r(read))

    def head_from(self, hidden: Tensor) -> Tensor:
        """Action chunk from the head's hidden pre-activation (x-part + r-part)."""
        c = self.config
        out = self.head_out(F.gelu(hidden))
        return out.reshape(*out.shape[:-1], c.chunk, c.d_action)

    def mixture_loss(self, hidden: Tensor, target: Tensor) -> Tensor:
        """The training-only mixture head's per-step NLL [..., T] of target chunks, from the
        head's hidden pre-activation (as `head_from`)."""
        if not self.config.mixture:
            raise ValueError('this layer has no mixture head (MemoryConfig.mixture is 0)')
        return mixture_nll(self.mixture_out(F.gelu(hidden)), target, self.config.mixture)

    # -- public forms -----------------------------------------------------------------------------

    def step(self, z_t: Tensor, state: State, t: int = 0,
             gate: Optional[GatePolicy] = None) -> dict:
        """O(1) inference form: z_t [B, d_model] and the state -> action [B, chunk, d_action];
        `gate` decides the writes (the layer's own policy if None)."""
        proj = self.project(z_t, t)
        new_state, read, p, g, surprise, _ = self.advance(state, proj, t, gate)
        return {'action': self.act(proj['head_x'], read), 'g': g, 'p': p, 'surprise': surprise,
                'read': read, 'state': new_state}

    def scan(self, proj: dict[str, Tensor], Wa0: Tensor, policy: GatePolicy, t0: int = 0,
             keep_states: bool = True, beta: Optional[Tensor] = None) -> tuple[dict, Tensor]:
        """The recurrence over projections [B, T, ...] from the state Wa0 = [W | b]: the scan's
        time-major outputs (`Ws` every state with autograd or `keep_states`, e, s, p, g) and the
        reads [T, B, d_val]. `beta` [B, T] replaces the projected write strengths (with
        `AlwaysWrite`, the strength of every write: `objective.gradient_utility`)."""
        beta = proj['beta'] if beta is None else beta
        gate_w = (self.gate_in.weight[:, 0], self.gate_out.weight[0], self.gate_out.bias[0])
        tm = {k: v.transpose(0, 1).contiguous()
              for k, v in (('v', proj['v']), ('beta', beta), ('gate_x', proj['gate_x']))}
        qa = augment(proj['q'].transpose(0, 1))
        decay = proj['decay'].transpose(0, 1).contiguous() if self.config.write_decay else None
        args = (augment(proj['k'].transpose(0, 1), self.bias_key), tm['v'], tm['beta'],
                tm['gate_x'], *gate_w, policy, t0, self.config.write_rule == 'add', decay)
        if torch.is_grad_enabled():
            scan = dict(zip(('Ws', 'e', 's', 'p', 'g'), GatedDeltaScan.apply(Wa0, *args),
                                 strict=True))
        else:
            scan = scan_forward(Wa0, *args, qa=None if keep_states else qa)
        read = state_read(scan['Ws'], qa) if 'Ws' in scan else scan['reads']
        return scan, read

    def forward(self, z: Tensor, state: Optional[State] = None, t0: int = 0,
                keep_states: bool = False, gate: Optional[GatePolicy] = None) -> dict:
        """Sequence form over z [B, T, d_model]; the same numbers as calling `step` T times.
        `gate` decides the writes (the layer's own policy if None).

        With `keep_states=True` it also returns, detached, the state before every step (`W`
        [B, T, d_val, d_key], `b` [B, T, d_val]), the vector a write at that step stores (`u`
        [B, T, d_val]) and the projections (`proj`): what the IB target over any step offsets
        (`objective.offset_utility`) needs.

        The loop over time is `scan.py` (no autograd inside, a hand-written backward);
        `naive.naive_forward` is the per-step reference it is tested against.
        """
        B, T, _ = z.shape
        if state is None:
            state = self.init_state(B, z.device)
        proj = self.project(z, t0)
        Wa0 = torch.cat([state['W'], state['b'].unsqueeze(-1)], -1)         # [W | b]
        scan, read = self.scan(proj, Wa0, self.policy(gate), t0, keep_states)
        last = scan['Ws'][-1] if 'Ws' in scan else scan['Wa']
        final = {'W': last[..., :-1].contiguous(), 'b': last[..., -1].contiguous()}
        read = read.transpose(0, 1)
        out = {'action': self.act(proj['head_x'], read), 'g': scan['g'].transpose(0, 1),
               'p': scan['p'].transpose(0, 1), 'surprise': scan['s'].transpose(0, 1),
               'read': read, 'state': final, 'x': proj['x'], 'head_x': proj['head_x']}
        if keep_states:
            before = torch.cat([Wa0[None], scan['Ws'][:-1]]).detach().transpose(0, 1)
            u = -proj['v'] if self.config.write_rule == 'add' else scan['e'].transpose(0, 1)
            out.update(W=before[..., :-1], b=before[..., -1], u=u.detach(), proj=proj)
        return out
