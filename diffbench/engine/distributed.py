"""Sharding a run over processes started by torchrun (gloo on CPU, nccl on CUDA).

``torchrun --nproc-per-node N -m diffbench niah ...`` starts N copies of the command with RANK,
WORLD_SIZE and LOCAL_RANK set (``--nnodes`` spreads them over machines). Rank 0 owns the run
directory (lock, manifest, samples); every rank scores its share of the pending samples and appends
each record, fsynced, to its own shard file; at the end rank 0 merges the shards into records.jsonl.
A rank that dies leaves its shard on disk, and the next run merges it before deciding what is left.
Without torchrun's variables there is one rank and none of this happens.
"""

from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass
from typing import Any, TypeVar

Item = TypeVar("Item")


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


@dataclass(frozen=True)
class Ranks:
    """This process's place among the run's processes."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list[Item]) -> list[Item]:
        """Every world-th item from this rank's offset: balanced over lengths and depths."""
        return items[self.rank :: self.world]

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def from_main(self, value: Item) -> Item:
        """Rank 0's ``value`` on every rank (e.g. the run directory, which only rank 0 may choose)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Item) -> list[Item]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values


def join_ranks(device: Any) -> Ranks:
    """Join torchrun's process group when launched by it; one rank otherwise.

    The group is created once per process and lives until it exits: a command's second pass over
    the run (the attention pass after niah's) reuses it. Destroying and creating it again in one
    process races gloo's rendezvous (a rank can reach the old group's address and be refused).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    import torch.distributed as dist

    if not dist.is_initialized():
        atexit.register(_leave_group)
        if device.type == "cuda":
            import torch

            # NCCL runs a rank's collectives on its current device: without this every rank's would sit
            # on cuda:0, and the first broadcast fails or hangs. device_id binds the group to the GPU too.
            torch.cuda.set_device(device)
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    return Ranks(dist.get_rank(), dist.get_world_size())


def _leave_group() -> None:
    """The exit hook: a rank that failed leaves alone (its peers may never reach a barrier)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def leave_ranks_together() -> None:
    """End torchrun's process group once every rank has finished the command; call it on success only.

    With gloo on torch 2.6, a rank whose peers have already exited hangs in destroy_process_group, and
    a rank that skips it aborts at exit: the barrier brings every rank to destroy together.
    """
    distributed = sys.modules.get("torch.distributed")
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return  # one rank, or a command that never touched torch
    distributed.barrier()
    _leave_group()


def rank_device(choice: str) -> str:
    """Under torchrun on CUDA each local rank takes its own GPU: 'auto'/'cuda' become cuda:LOCAL_RANK.

    A local rank past the visible GPUs (``--nproc-per-node`` above the GPU count) is a usage error, not
    a device that does not exist.
    """
    local = os.environ.get("LOCAL_RANK")
    if local is None or choice not in ("auto", "cuda"):
        return choice
    import torch

    if not torch.cuda.is_available():
        return choice
    visible = torch.cuda.device_count()
    if int(local) >= visible:
        from diffbench.errors import UsageError

        raise UsageError(
            f"local rank {local} has no GPU: this machine shows {visible} CUDA device(s); "
            f"run torchrun with --nproc-per-node {visible} or fewer"
        )
    return f"cuda:{local}"
