"""A GRU layer over a whole sequence whose backward computes the weight gradients in one product.

`torch.nn.GRU` on the CPU trains through autograd of its per-step operations, so its backward
adds a rank-B update to the [3H, H] recurrent weight gradient at every step: with the
state-matched GRU (H = 1,056, B = 16) that is 13 MB read and written 512 times per window, more
than the products themselves. Here the backward keeps the per-step gate gradients and does
dW_hh, dW_ih and the biases as one matrix product each over all B x T steps; only dh, which
the recurrence needs, stays per step. The parameters are nn.GRU's own (`weight_ih_l0`, ...), so
checkpoints of either form load into the other; `test_memory_baselines` holds the outputs and
every gradient to nn.GRU's.

`product_dtype=torch.bfloat16` does the two per-step recurrent products (h W_hh^T forward,
dgates W_hh backward) in bfloat16 (mixed precision: weights, state, every other operation and
the weight gradients stay float32). Those products read the 13 MB W_hh at every step, so half
the bytes make them faster on a CPU with bfloat16 instructions (`bench train-scale` times
both); the price is bfloat16's rounding of h and of the products (what it changes in training,
measured by bench/gru_precision.py: docs/results/gru_precision.md).
"""

from typing import Optional

import torch
from torch import Tensor, nn


class _SequenceGRU(torch.autograd.Function):
    """h_seq, h_last = GRU(x [B, T, I], h0 [B, H]) with PyTorch's gate equations."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, product_dtype):
        B, T, _ = x.shape
        H = h0.shape[-1]
        gi = torch.addmm(b_ih, x.reshape(B * T, -1), w_ih.t()).reshape(B, T, 3 * H)
        h = h0
        hs = x.new_empty(T, B, H)                # time-major: one contiguous write per step
        saved = x.new_empty(T, 4, B, H)          # r, z, n, the recurrent part of n
        w_hh_t = w_hh.t() if product_dtype is None else w_hh.t().to(product_dtype)
        for t in range(T):
            gh = torch.addmm(b_hh, h, w_hh_t) if product_dtype is None else \
                torch.mm(h.to(product_dtype), w_hh_t).to(h.dtype).add_(b_hh)
            i_r, i_z, i_n = gi[:, t].chunk(3, -1)
            h_r, h_z, h_n = gh.chunk(3, -1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(torch.addcmul(i_n, r, h_n))
            h = torch.lerp(n, h, z)               # (1 - z) n + z h
            hs[t] = h
            torch.stack((r, z, n, h_n), out=saved[t])
        ctx.save_for_backward(x, h0, w_ih, w_hh, hs, saved)
        ctx.product_dtype = product_dtype
        return hs.transpose(0, 1), h

    @staticmethod
    def backward(ctx, d_hs, d_last):
        x, h0, w_ih, w_hh, hs, saved = ctx.saved_tensors
        T, B, H = hs.shape
        h_prev = torch.cat([h0[None], hs[:-1]])                    # [T, B, H]
        d_gi = x.new_empty(T, B, 3 * H)     # gradients of the gates' inputs (pre-activation)
        d_gh = x.new_empty(T, B, 3 * H)     # ... and of the recurrent products
        d_h = d_last.clone() if d_last is not None else x.new_zeros(B, H)
        d_out = d_hs.transpose(0, 1) if d_hs is not None else None
        dtype = ctx.product_dtype
        w_hh_low = w_hh if dtype is None else w_hh.to(dtype)
        for t in range(T - 1, -1, -1):
            if d_out is not None:
                d_h = d_h + d_out[t]
            r, z, n, h_n = saved[t]
            d_n = d_h * (1 - z) * (1 - n * n)
            d_z = d_h * (h_prev[t] - n) * z * (1 - z)
            d_r = d_n * h_n * r * (1 - r)
            torch.cat((d_r, d_z, d_n), -1, out=d_gi[t])
            torch.cat((d_r, d_z, d_n * r), -1, out=d_gh[t])
            d_h = torch.addmm(d_h * z, d_gh[t], w_hh) if dtype is None else \
                d_h * z + torch.mm(d_gh[t].to(dtype), w_hh_low).to(d_h.dtype)
        d_gi = d_gi.transpose(0, 1).reshape(B * T, 3 * H)         # batch-major, as x
        d_gh = d_gh.reshape(T * B, 3 * H)
        d_x = (d_gi @ w_ih).reshape(x.shape) if ctx.needs_input_grad[0] else None
        d_w_ih = d_gi.t() @ x.reshape(B * T, -1)
        d_w_hh = d_gh.t() @ h_prev.reshape(T * B, H)
        return d_x, d_h, d_w_ih, d_w_hh, d_gi.sum(0), d_gh.sum(0), None


def gru_sequence(gru: nn.GRU, x: Tensor, h0: Tensor,
                 product_dtype: Optional[torch.dtype] = None) -> tuple[Tensor, Tensor]:
    """(outputs [B, T, H], last state [B, H]) of a one-layer batch-first `gru` from `h0` [B, H]:
    nn.GRU's result, with the backward above when a gradient is needed on the CPU (on CUDA
    nn.GRU's cuDNN kernel already does the whole sequence at once). `product_dtype` (None: the
    weights' own) applies to that CPU training path only; without a gradient it is unused."""
    if not torch.is_grad_enabled() or x.device.type != 'cpu':
        out, h = gru(x, h0[None].contiguous())
        return out, h[0]
    return _SequenceGRU.apply(x, h0, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0,
                              gru.bias_hh_l0, product_dtype)
