"""A fixed map on the features before a memory model's LayerNorm: centring or ZCA whitening.

Why: a backbone's features are far from isotropic (on the SO-101 bags the keys of a freshly
initialised AURA layer have a mean cosine of ~0.8 between any two frames), so every delta-rule
write lands on nearly the same key and overwrites most of the last one: the memory holds about
one thing. Centring and whitening the features, fitted once on the training features, spreads
the keys apart. The map is two buffers of the model (`input_mean` [d], `input_map` [d, d]),
saved in its checkpoint and in its exported ONNX step, so the run time needs nothing new.
"""

from typing import Sequence

import torch
from torch import Tensor, nn

#: ridge added to the covariance's eigenvalues, relative to their mean: directions with almost
#: no variance are not blown up into noise
WHITEN_RIDGE = 1e-2


def add_input_map(module: nn.Module, kind: str, d_model: int) -> None:
    """Register the identity map (mean 0, map I) on `module` unless `kind` is 'none'."""
    if kind != 'none':
        module.register_buffer('input_mean', torch.zeros(d_model))
        module.register_buffer('input_map', torch.eye(d_model))


def input_mapped(model: nn.Module, z: Tensor) -> Tensor:
    """z through the model's fixed input map, (z - input_mean) @ input_map, if it has one."""
    if getattr(model, 'input_map', None) is None:
        return z
    return (z - model.input_mean) @ model.input_map


@torch.no_grad()
def fit_input_map(model: nn.Module, features: Sequence[Tensor],
                  ridge: float = WHITEN_RIDGE) -> None:
    """Fit the model's input map on training features ([T, d] per episode), in place.

    'center': the mean only; 'whiten': also the ZCA whitening U diag(1 / sqrt(l + r)) U^T of
    their covariance (r = `ridge` times the mean eigenvalue). A model without a map is left
    alone."""
    kind = model.config.input_map
    if kind == 'none' or getattr(model, 'input_map', None) is None:
        return
    z = torch.cat([f.reshape(-1, f.shape[-1]) for f in features]).double()
    mean = z.mean(0)
    model.input_mean.copy_(mean.to(model.input_mean.dtype))
    if kind == 'whiten':
        zc = z - mean
        cov = zc.T @ zc / max(len(zc) - 1, 1)
        eigval, eigvec = torch.linalg.eigh(cov)
        eigval = eigval.clamp(min=0.0)
        scale = 1.0 / torch.sqrt(eigval + ridge * eigval.mean().clamp(min=1e-12))
        model.input_map.copy_(((eigvec * scale) @ eigvec.T).to(model.input_map.dtype))
    else:
        model.input_map.copy_(torch.eye(len(mean), dtype=model.input_map.dtype))
