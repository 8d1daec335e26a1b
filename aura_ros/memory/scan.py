"""The gated delta-rule recurrence over a whole sequence, with a hand-written backward pass.

The gate reads the surprise, which depends on the state, so the recurrence cannot be chunked or
parallelised over time: it stays a loop. What makes it fast is what the loop does not do:

- everything that depends on z_t alone (k, q, v, beta, the gate's x-part) is computed for all t
  at once before the loop (`AuraMemLayer.project`);
- b rides along as an extra column of W (keys get a constant 1, or 0 when writes leave b alone):
  one tensor, one update;
- the loop runs without autograd (no graph of ~30 nodes per step) and keeps every state in one
  preallocated [T, B, d_val, d_key + 1] buffer; the reads and the counterfactual reads are then
  one batched matmul each, after the loop;
- the backward pass is one reverse loop of ~10 tensor ops per step; everything that does not
  carry the state's gradient (gate MLP parameters, d k through the old state, d beta, d v) is
  done in batch afterwards.

The numbers are those of `naive.naive_forward` (the per-step reference) up to float rounding:
same forward values, the same straight-through gate gradient (d scale / d p = beta for a learned
gate, on skipped steps too), and a closed gate leaves W and b unchanged (the update is exactly 0).

Per step, with u = e (delta rule) or u = -v (`write_rule='add'`: W += beta g v k^T):
    e = W k + b - v;  s = |e|^2;  h = tanh(gate_x + w_s log1p(s));  p = sigmoid(w_o . h + b_o)
    g = policy(p, s, t);  a = beta g;  c = 1 - a gamma;  W <- c W - a u k^T;  b <- c b - a u
with gamma the learned decay of `write_decay` (else c = 1, and the loop skips it).
"""

from typing import Optional

import torch
from torch import Tensor

from .gates import GatePolicy

vecdot = torch.linalg.vecdot


def augment(x: Tensor, last: float = 1.0) -> Tensor:
    """[..., K] -> [..., K + 1] with a trailing `last`: W_aug x_aug = W x + last * b.

    Queries always carry 1 (a read adds b); keys carry the layer's `bias_key` (1, or 0 when a
    write must leave b alone: `MemoryConfig.write_bias=False`)."""
    return torch.cat([x, torch.full_like(x[..., :1], last)], -1)


def _gate(gx: Tensor, s: Tensor, w_s: Tensor, w_o: Tensor, b_o: Tensor) -> Tensor:
    """p from the gate's precomputed x-part and the surprise; any leading shape."""
    h = torch.tanh(gx + w_s * torch.log1p(s)[..., None])
    return torch.sigmoid(h @ w_o + b_o)


def scan_forward(Wa0: Tensor, ka: Tensor, v: Tensor, beta: Tensor, gx: Tensor, w_s: Tensor,
                 w_o: Tensor, b_o: Tensor, policy: GatePolicy, t0: int, additive: bool,
                 decay: Optional[Tensor] = None,
                 qa: Optional[Tensor] = None) -> dict[str, Tensor]:
    """The forward loop, no autograd. Time-major inputs: Wa0 = [W | b] [B, V, K+1], ka [T, B,
    K+1] (keys with a trailing 1), v [T, B, V], beta [T, B], gx [T, B, gate_hidden], decay
    [T, B] (gamma; None: no fading).

    Without `qa` every state is kept in `Ws` [T, B, V, K+1]; with `qa` (augmented queries) the
    reads are taken in the loop and only the last state is kept (memory O(1) in T).
    """
    T, B = beta.shape
    new = Wa0.new_empty
    keep = qa is None
    Ws = new(T, *Wa0.shape) if keep else None
    reads = None if keep else new(T, B, Wa0.shape[1])
    E, S, P, G = new(T, B, Wa0.shape[1]), new(T, B), new(T, B), new(T, B)
    Wa = Wa0
    for t in range(T):
        k_row = ka[t].unsqueeze(1)                                         # [B, 1, K+1]
        e = torch.sub(vecdot(Wa, k_row), v[t], out=E[t])
        s = vecdot(e, e, out=S[t])
        p = torch.sigmoid(torch.addmv(b_o, torch.tanh(torch.addcmul(
            gx[t], torch.log1p(s).unsqueeze(-1), w_s)), w_o), out=P[t])
        g = G[t].copy_(policy(p, s, t0 + t))
        a = beta[t] * g
        au = a.unsqueeze(-1) * (v[t].neg() if additive else e)             # exactly 0 if g = 0
        if decay is not None:                                  # c = 1 exactly if g = 0
            Wa = torch.mul(Wa, (1 - a * decay[t])[:, None, None], out=Ws[t] if keep else None)
        Wa = torch.addcmul(Wa, au.unsqueeze(-1), k_row, value=-1, out=Ws[t] if keep else None)
        if not keep:
            vecdot(Wa, qa[t].unsqueeze(1), out=reads[t])
    out = {'e': E, 's': S, 'p': P, 'g': G}
    out.update({'Ws': Ws} if keep else {'reads': reads, 'Wa': Wa})
    return out


class GatedDeltaScan(torch.autograd.Function):
    """(Wa0, ka, v, beta, gate_x, w_s, w_o, b_o[, decay]) -> (Ws, e, s, p, g), time-major."""

    @staticmethod
    def forward(ctx, Wa0, ka, v, beta, gx, w_s, w_o, b_o, policy, t0, additive, decay=None):
        out = scan_forward(Wa0, ka, v, beta, gx, w_s, w_o, b_o, policy, t0, additive, decay)
        ctx.learned = bool(policy.learned)
        ctx.additive = bool(additive)
        ctx.decays = decay is not None
        ctx.save_for_backward(Wa0, ka, v, beta, gx, w_s, w_o, b_o, out['Ws'], out['e'],
                              out['s'], out['p'], out['g'], decay)
        ctx.mark_non_differentiable(out['g'])
        return out['Ws'], out['e'], out['s'], out['p'], out['g']

    @staticmethod
    def backward(ctx, dWs, dE_out, dS_out, dP_out, _dG):
        Wa0, ka, v, beta, gx, w_s, w_o, b_o, Ws, E, S, P, G, decay = ctx.saved_tensors
        T = beta.shape[0]
        zeros = torch.zeros_like
        dE_out = zeros(E) if dE_out is None else dE_out
        dS_out = zeros(S) if dS_out is None else dS_out
        dP_out = zeros(P) if dP_out is None else dP_out
        with torch.no_grad():
            # dp/ds at every step: the only gate derivative the reverse loop needs. With the
            # straight-through gate, dL/ds = c0 + c1 * dL/da (dp/da = beta).
            h = torch.tanh(gx + w_s * torch.log1p(S)[..., None])
            kappa = P * (1 - P) * (((1 - h * h) * (w_o * w_s)).sum(-1)) / (1 + S)
            E2 = 2 * E
            base = torch.addcmul(dE_out, E2, (dS_out + kappa * dP_out).unsqueeze(-1))
            c1 = kappa * beta if ctx.learned else None
            A = beta * G
            U = -v if ctx.additive else E
            AU = A.unsqueeze(-1) * U
            C = 1 - A * decay if ctx.decays else None          # what a write keeps of the state
        dE, dN, dKu = torch.empty_like(E), torch.empty_like(S), torch.empty_like(ka)
        dC = torch.empty_like(S) if ctx.decays else None     # dL/dc, c = 1 - a gamma
        dU = torch.empty_like(E) if ctx.additive else None
        dWa = zeros(Wa0) if dWs is None else dWs[T - 1].clone()
        for t in range(T - 1, -1, -1):
            if t < T - 1 and dWs is not None:
                dWa += dWs[t]
            k_row = ka[t].unsqueeze(1)
            du = vecdot(dWa, k_row)                         # dL/d(a u) = -du
            dn = vecdot(U[t], du, out=dN[t])                # dL/da = -dn
            if ctx.decays:                                  # and -gamma dL/dc through c
                dc = torch.sum(dWa * (Ws[t - 1] if t else Wa0), (1, 2), out=dC[t])
                dn.addcmul_(decay[t], dc)
            if c1 is None:
                de = dE[t].copy_(base[t])
            else:
                de = torch.addcmul(base[t], E2[t], (c1[t] * dn).unsqueeze(-1), value=-1,
                                   out=dE[t])
            if ctx.additive:
                torch.mul(A[t].unsqueeze(-1), du, out=dU[t])          # into v, as u = -v
            else:
                de.addcmul_(A[t].unsqueeze(-1), du, value=-1)
            torch.sum(dWa * AU[t].unsqueeze(-1), 1, out=dKu[t])     # -dL/dk via the update
            if ctx.decays:
                dWa.mul_(C[t][:, None, None])
            dWa.addcmul_(de.unsqueeze(-1), k_row)
        # d k through e = W_{t-1} k: all steps at once (multiply-and-sum beats a batched
        # vector-matrix product here)
        dk = torch.cat([(Wa0 * dE[0].unsqueeze(-1)).sum(1)[None],
                        (Ws[:-1] * dE[1:].unsqueeze(-1)).sum(2)])
        dk = dk - dKu
        dv = dU - dE if ctx.additive else -dE
        dA = -dN
        dP = dP_out + beta * dA if ctx.learned else dP_out
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_() for x in (gx, w_s, w_o, b_o)]
            d_gx, d_ws, d_wo, d_bo = torch.autograd.grad(_gate(leaves[0], S, *leaves[1:]),
                                                         leaves, dP)
        d_decay = -A * dC if ctx.decays else None
        return dWa, dk, dv, dA * G, d_gx, d_ws, d_wo, d_bo, None, None, None, d_decay


class _Bmm(torch.autograd.Function):
    """W [N, V, K] @ Q [N, K, H] with contiguous operands both ways: torch's bmm backward on the
    strided views made here falls back to one small matmul per matrix (~10x slower)."""

    @staticmethod
    def forward(ctx, W, Q):
        W, Q = W.contiguous(), Q.contiguous()
        ctx.save_for_backward(W, Q)
        return torch.bmm(W, Q)

    @staticmethod
    def backward(ctx, dY):
        W, Q = ctx.saved_tensors
        dY = dY.contiguous()
        dW = torch.bmm(dY, Q.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        dQ = torch.bmm(W.transpose(1, 2), dY) if ctx.needs_input_grad[1] else None
        return dW, dQ


def state_read(Ws: Tensor, qa: Tensor) -> Tensor:
    """Ws [T, B, V, K] read with one query per state qa [T, B, K] -> [T, B, V]."""
    return (Ws * qa.unsqueeze(-2)).sum(-1)


def state_reads(Ws: Tensor, Q: Tensor) -> Tensor:
    """Ws [T, B, V, K] times Q [T, B, K, H] -> [T, B, V, H]: every stored state read at once."""
    T, B, V, K = Ws.shape
    out = _Bmm.apply(Ws.reshape(T * B, V, K), Q.reshape(T * B, K, -1))
    return out.reshape(T, B, V, -1)
