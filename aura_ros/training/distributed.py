"""`train` under torchrun: the process group from torchrun's environment, and rank 0 first.

    torchrun --nproc_per_node 2 -m aura_ros train --data BAGS --out DIR
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m aura_ros train --data /shared/BAGS --out /shared/DIR

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `session()` joins the
group they describe (backend gloo on the CPU, nccl on CUDA) and leaves it at the end. A plain
`python -m aura_ros train` has no WORLD_SIZE: nothing is initialised and the run is the one
process it always was. The training loops' data parallelism itself is in
`aura_ros.memory.parallel` (re-exported here).
"""

import contextlib
import datetime
import os
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from aura_ros.memory.parallel import (  # noqa: F401  (the trainer's one import for all of it)
    active,
    barrier,
    data_parallel,
    gather_list,
    is_main,
    mean_record,
    rank,
    rows,
    world,
)

T = TypeVar('T')


def launched() -> bool:
    """True when torchrun (or another launcher) asked for more than one rank."""
    return int(os.environ.get('WORLD_SIZE', '1')) > 1


def backend_for(device: torch.device) -> str:
    """nccl for CUDA tensors, gloo for CPU ones (what the trainer trains on now)."""
    return 'nccl' if torch.device(device).type == 'cuda' else 'gloo'


@contextlib.contextmanager
def session(device: str = 'cpu', timeout_s: float = 1800.0):
    """The process group of a torchrun launch for the block (nothing without one). The
    timeout bounds how long a rank waits for the others at a barrier: rank 0 decoding a large
    dataset into the cache keeps them waiting that long."""
    if not launched() or dist.is_initialized():
        yield
        return
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', '0')))
    dist.init_process_group(backend_for(device),
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield
    finally:
        dist.destroy_process_group()


def main_first(fn: Callable[[], T]) -> T:
    """`fn()` on rank 0, then on the other ranks: a step that builds something on disk (the
    decode cache) is done once, and the others only read what it left."""
    if is_main():
        try:
            return fn()
        finally:        # on an error too: the others then meet it themselves, none waits
            barrier()
    barrier()
    return fn()
