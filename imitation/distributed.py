"""Data-parallel meta-training with torch.distributed: process group from torchrun (or a SLURM job), gradient averaging.

Each process meta-learns on its share of the meta-batch; ``average_gradients`` is the ``reduce_grads`` hook of
``MetaLearner.meta_step`` (one all-reduce of all gradients flattened, then divided by the number of processes), so
every process applies the same Adam update to the same parameters. Only rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _export_slurm_env() -> None:
    """Under a multi-task SLURM job without torchrun (Hydra's submitit launcher), set the variables torchrun would."""
    if "RANK" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export()


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group when launched as several processes (NCCL on CUDA, gloo otherwise); else a single process."""
    _export_slurm_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world_size)
    if not dist.is_initialized():
        if device_kind == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return info


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(grads: list[Tensor]) -> None:
    """Average gradients across processes in place, with a single all-reduce of one flat buffer."""
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def average_stats(stats: dict[str, float], device: torch.device) -> dict[str, float]:
    """Means across processes of per-process statistics (same keys everywhere)."""
    keys = sorted(stats)
    values = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    values /= dist.get_world_size()
    return dict(zip(keys, values.tolist()))


def broadcast_object(value: object, info: DistInfo) -> object:
    """Rank 0's ``value`` in every process."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
