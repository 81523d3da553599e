"""Several processes, one run: ``segkit train`` under ``torchrun`` trains with DistributedDataParallel.

``torchrun --nproc_per_node N -m segkit train …`` starts N copies of the same command and tells each
its place through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). ``process_group``
joins them for the run (nccl between GPUs, gloo on the CPU); ``segkit.engine.fit`` then wraps the
model in DDP, and ``segkit.loaders.build_loaders`` gives each process its share of the data:

* training: ``DistributedSampler``, shuffled from the config's seed and reshuffled every epoch;
* validation: ``ShardSampler``, every frame exactly once (``DistributedSampler`` would repeat frames
  to even out the shares, and count them twice in the scores).

Scores are summed over processes (``ConfusionMatrix.all_reduce``), so every process sees the global
result; logs, progress bars, TensorBoard and checkpoints are written by process 0 only. Without
torchrun every helper here is a no-op and ``rank() == 0``, ``world_size() == 1``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sized
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

T = TypeVar("T")


# --- where this process stands ---------------------------------------------------------------------

def launched() -> bool:
    """True when started by ``torchrun`` (or another launcher that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch_rank() -> int:
    """This process's rank as the launcher set it (0 outside torchrun), known before the process
    group is up: the process that will write a run's files."""
    return int(os.environ.get("RANK", 0))


def is_initialized() -> bool:
    """True while a ``torch.distributed`` process group is up."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's place among all processes (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """How many processes train together (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    """This process's place on its own machine: which GPU it drives."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """True for the process that prints, logs and writes checkpoints (rank 0)."""
    return rank() == 0


def process_device(name: str = "auto") -> torch.device:
    """The device of this process under torchrun: ``cuda:LOCAL_RANK`` for auto or cuda, else the CPU."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank())
    if name in ("auto", "cpu"):
        return torch.device("cpu")
    raise ValueError(f"--device {name} under torchrun: every process picks its own GPU "
                     "(cuda:LOCAL_RANK), so give --device cuda (or auto), or cpu; restrict the GPUs "
                     "with CUDA_VISIBLE_DEVICES")


# --- joining and leaving ----------------------------------------------------------------------------

@contextmanager
def process_group(device: str = "auto") -> Iterator[None]:
    """Join the process group of a torchrun launch for the duration of the ``with`` block.

    nccl when this process trains on ``cuda:LOCAL_RANK``, gloo on the CPU. Outside torchrun, or
    when the caller has set up a group already (then it is also theirs to destroy), does nothing.
    """
    if not launched() or is_initialized():
        yield
        return
    chosen = process_device(device)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
        dist.init_process_group("nccl", device_id=chosen)
    else:
        dist.init_process_group("gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def main_process_first(make: Callable[[], T]) -> T:
    """``make()`` in every process, in turn: process 0, then the first process of each other machine,
    then the rest, so that files it creates (a generated dataset, downloaded weights) are made once,
    on a shared disk or once per machine, and found by the others."""
    if not is_initialized():
        return make()
    made = []
    if rank() == 0:
        made.append(make())
    barrier()
    if not made and local_rank() == 0:
        made.append(make())
    barrier()
    return made[0] if made else make()


def barrier() -> None:
    """Wait until every process gets here (no-op without a process group)."""
    if is_initialized():
        dist.barrier()


# --- the model ---------------------------------------------------------------------------------------

def wrap(model: nn.Module, device: torch.device, *, sync_bn: bool = False,
         oom: str = "fail") -> nn.Module:
    """``model`` (already on ``device``) in DistributedDataParallel; unchanged without a process group.

    DDP copies process 0's weights to the others and averages gradients in every backward pass.
    ``sync_bn`` turns BatchNorm into SyncBatchNorm (statistics over the global batch; CUDA only).
    """
    if not is_initialized():
        return model
    if oom == "retry":
        raise ValueError("--oom retry splits a batch differently in each process, which DDP cannot "
                         "synchronise; under torchrun use a smaller --batch-size instead")
    if sync_bn:
        if device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA GPUs (torch's SyncBatchNorm does not run on "
                             f"{device.type}); drop --sync-bn there")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def no_sync(model: nn.Module, skip: bool = True) -> AbstractContextManager:
    """With ``skip``, backward passes inside keep their gradients local (DDP's ``no_sync``): the
    micro-batches of a gradient-accumulation window before its last, whose backward then averages
    the sum once. Without DDP, or without ``skip``, it changes nothing."""
    return model.no_sync() if skip and isinstance(model, DistributedDataParallel) else nullcontext()


# --- data and randomness -----------------------------------------------------------------------------

class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, rank + 2 world, …`` of a dataset: every index in exactly one process.

    Unlike ``DistributedSampler`` nothing is padded, so the shares may differ by one, and scores
    summed over processes count every frame once. For evaluation; not shuffled.
    """

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None):
        self.size = len(dataset)
        self.num_replicas = world_size() if num_replicas is None else num_replicas
        self.rank = (dist.get_rank() if is_initialized() else 0) if rank is None else rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.num_replicas))


def process_seed(seed: int, epoch: int) -> int:
    """A seed for this process in ``epoch``: different per process and epoch, the same on a rerun."""
    return int(np.random.SeedSequence([seed, epoch, rank()]).generate_state(1)[0])


# --- reductions --------------------------------------------------------------------------------------

def _comm_device() -> torch.device:
    """Where collective tensors live: the current GPU for nccl, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(value: float) -> float:
    """The mean of ``value`` over processes (``value`` itself without a process group)."""
    if not is_initialized():
        return value
    tensor = torch.tensor(value, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(tensor)
    return tensor.item() / world_size()


def all_reduce_sum(value: int) -> int:
    """The sum of an integer ``value`` over processes."""
    if not is_initialized():
        return value
    tensor = torch.tensor(value, dtype=torch.int64, device=_comm_device())
    dist.all_reduce(tensor)
    return int(tensor.item())


def smallest(value: int) -> int:
    """The smallest ``value`` over processes (``value`` itself without a process group): e.g. the
    batch every process can take."""
    if not is_initialized():
        return value
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return min(values)


def from_main(value: Any) -> Any:
    """Process 0's ``value`` in every process (``value`` itself without a process group)."""
    if not is_initialized():
        return value
    values = [value]
    dist.broadcast_object_list(values, src=0)
    return values[0]


def first_set(value: Any) -> Any:
    """The first non-None ``value`` over processes (by rank), or None: e.g. why one of them stopped."""
    if not is_initialized():
        return value
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return next((v for v in values if v is not None), None)
