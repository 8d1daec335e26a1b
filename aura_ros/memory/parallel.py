"""Data parallelism for the training loops: no-ops in one process, DDP under torchrun.

A run of N ranks (torch.distributed initialised, e.g. by `aura_ros.training.distributed`)
trains on the same batches a single process with an N times larger batch would: every rank
draws the global batch from the same seeded sampler and keeps its own rows (`rows`),
`DistributedDataParallel` averages the gradients, losses divide by the global count of scored
steps (`per_rank`), and `mean_record` averages the logged terms. So the per-rank batch is
`TrainingConfig.batch` and the global one `world() * batch`. Without torch.distributed (a plain
`python -m aura_ros train`) every function here is the identity and nothing is initialised.
"""

from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn


def active() -> bool:
    """True inside a torch.distributed run of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """The rank that writes files (checkpoints, the model directory, the report)."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def rows(batch: int) -> slice:
    """This rank's rows of a global batch of `world() * batch` rows."""
    return slice(rank() * batch, (rank() + 1) * batch)


class _Step(nn.Module):
    """The modules of one training stage behind one forward: `step(fn, *args)` runs `fn(*args)`
    (which uses the modules and returns the loss first) through DDP, so the gradients of every
    parameter the loss reached are all-reduced, and a parameter it did not reach (a gate the
    warm-up bypasses) is not waited for."""

    def __init__(self, *modules: nn.Module):
        super().__init__()
        self.parts = nn.ModuleList(modules)

    def forward(self, fn: Callable, *args):
        return fn(*args)


def data_parallel(*modules: nn.Module) -> Callable:
    """`step(fn, *args)`: `fn(*args)` in one process; under torchrun the same through
    `DistributedDataParallel` over `modules` (built when called: after any `requires_grad`
    change of the stage). `fn` must return the loss, or a tuple whose first item is the loss,
    and nothing else that holds a graph."""
    if not active():
        return lambda fn, *args: fn(*args)
    from torch.nn.parallel import DistributedDataParallel

    device = next(modules[0].parameters()).device
    ids = [device.index] if device.type == 'cuda' else None
    return DistributedDataParallel(_Step(*modules), device_ids=ids, find_unused_parameters=True)


def all_true(flag: bool) -> bool:
    """`flag` on every rank (so all ranks skip an update together)."""
    if not active():
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=_device())
    dist.all_reduce(t)
    return bool(t.item() == 0)


def any_rows(flags):
    """Row flags (numpy bool) of the global batch, each rank having set its own rows: the union."""
    if not active():
        return flags
    import numpy as np

    t = torch.from_numpy(np.asarray(flags, np.float32)).to(_device())
    dist.all_reduce(t)
    return t.cpu().numpy() > 0


def per_rank(count: Tensor) -> Tensor:
    """The mean over the ranks of a count (the steps a loss averages over): a rank dividing its
    sum by it makes DDP's average of the ranks' losses the global batch's mean, also when the
    ranks' windows hold different numbers of real steps (padding)."""
    if not active():
        return count
    total = count.detach().clone()
    dist.all_reduce(total)
    return total / world()


def mean_record(record: dict) -> dict:
    """The logged terms of one update averaged over the ranks: the global batch's values (each
    rank scores as many steps when windows are full)."""
    if not active() or not record:
        return record
    keys = sorted(record)
    t = torch.tensor([float(record[k]) for k in keys], dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    t /= world()
    return dict(zip(keys, t.tolist(), strict=True))


def gather_list(items: list, owner: Callable[[int], int]) -> list:
    """A list whose item i was computed by rank `owner(i)` (others hold None there): every rank
    gets every item."""
    if not active():
        return items
    parts: list = [None] * world()
    dist.all_gather_object(parts, {i: x for i, x in enumerate(items) if owner(i) == rank()})
    merged = {k: v for part in parts for k, v in part.items()}
    return [merged[i] for i in range(len(items))]


def _device() -> torch.device:
    """The device collectives run on: CUDA for nccl, else the CPU."""
    if dist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')
