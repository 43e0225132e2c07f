"""Data-parallel meta-training: ``torchrun --nproc_per_node N -m ebmm_rl.recall train ...``.

Every process draws the same batch of memories from the same generator (the data and the random numbers are those of
one process, so a run resumes under any process count), meta-trains on its own contiguous share of the memories, and
the gradients are averaged over the processes before clipping and the optimiser step: with equal shares that is the
gradient of the whole batch's mean loss, as one process computes it (up to the order of floating-point sums). Only
process 0 writes the run directory, checkpoints and TensorBoard.

The gradients are averaged with one ``all_reduce`` of the flattened gradients after ``backward`` rather than by
``torch.nn.parallel.DistributedDataParallel``, whose hooks follow a module's ``forward``: the meta-loss is not a
forward pass, and its inner loops take their own ``torch.autograd.grad``. Backends: gloo on CPUs, nccl on GPUs (each
process on ``cuda:<LOCAL_RANK>``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch import distributed as dist


@dataclass(frozen=True)
class Workers:
    """The processes of a data-parallel run (one process: ``rank`` 0 of ``world_size`` 1, and every method is a no-op).

    :param rank: this process's index.
    :param world_size: the number of processes.
    """

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files."""
        return self.rank == 0

    def shard(self, batch: Tensor) -> Tensor:
        """This process's contiguous share of ``[batch, ...]``.

        :raises ValueError: if the batch does not split into equal shares.
        """
        if batch.shape[0] % self.world_size:
            raise ValueError(f"a batch of {batch.shape[0]} memories does not split over {self.world_size} processes")
        size = batch.shape[0] // self.world_size
        return batch[self.rank * size : (self.rank + 1) * size]

    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Replace every parameter's gradient by its mean over the processes (one ``all_reduce``)."""
        if self.world_size == 1:
            return
        grads = [parameter.grad for parameter in parameters if parameter.grad is not None]
        flat = torch.cat([grad.reshape(-1) for grad in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the processes (the logged loss)."""
        if self.world_size == 1:
            return value
        total = torch.tensor(value, dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.item() / self.world_size

    def any(self, flag: bool) -> bool:
        """Whether any process raised ``flag``: how the processes agree to stop together."""
        if self.world_size == 1:
            return flag
        raised = torch.tensor(float(flag), device=self.device)
        dist.all_reduce(raised)
        return raised.item() > 0

    def broadcast(self, value: Any) -> Any:
        """Process 0's ``value``, on every process."""
        if self.world_size == 1:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    @property
    def device(self) -> torch.device:
        """Where collectives put their tensors: this process's GPU under nccl, else the CPU."""
        if dist.is_initialized() and dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


def join(device: str) -> tuple[Workers, str]:
    """Join the process group that ``torchrun`` set up (``WORLD_SIZE`` > 1 in the environment), or run alone.

    :param device: the run's device setting (``cpu`` or ``cuda``).
    :return: the workers, and the device this process trains on (``cuda:<LOCAL_RANK>`` under nccl).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Workers(), device
    cuda = torch.device(device).type == "cuda"
    if cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Workers(dist.get_rank(), dist.get_world_size()), device


def leave() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
