"""Process-group setup for one process, one GPU, or many processes under ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; without them the run is a single
process. Backend: NCCL on CUDA, gloo on CPU. SyncBatchNorm is CUDA-only in PyTorch, so BN
layers are converted only for multi-GPU runs; on CPU each process keeps its own BN statistics
(DDP broadcasts rank 0's buffers at every forward).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    """Where this process runs: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: Optional[str] = None) -> DistEnv:
    """Read the torchrun environment, pick the device (``device``: ``cpu``, ``cuda`` or None for
    CUDA when available) and join the process group when there are several processes.

    Process-wide by design (a torchrun worker's setup): it selects the CUDA device and, for several
    CPU processes on one machine, splits the cores with ``torch.set_num_threads``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ValueError(f"--device {device} was asked for but CUDA is not available here (no GPU or no CUDA "
                         "build of torch): use --device cpu")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        where = torch.device("cuda", local_rank)
    else:
        where = torch.device("cpu")
        if world_size > 1:  # share the cores between the processes of this machine
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return DistEnv(rank, world_size, local_rank, where)


def cleanup() -> None:
    """Leave the process group, if any."""
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(module: nn.Module, env: DistEnv) -> nn.Module:
    """``module`` on the device; under several processes with SyncBN (CUDA only) and DDP."""
    if env.distributed and env.device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    module = module.to(env.device)
    if not env.distributed:
        return module
    ids = [env.device.index] if env.device.type == "cuda" else None
    # CLIP's logit_scale is never used by CRIS: DDP must not wait for its gradient.
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum ``values`` over processes (identity for a single process)."""
    if dist.is_initialized():
        dist.all_reduce(values)
    return values


def gather_objects(obj: Any) -> list:
    """Every process's ``obj``, in rank order (``[obj]`` for a single process)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
