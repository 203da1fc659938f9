"""Data-parallel training on PyTorch's own engine: torch.distributed + DistributedDataParallel.

`rnnedge train --nproc N` spawns N local processes (torch.multiprocessing; gloo: the trainer runs on CPU);
under `torchrun` (RANK / WORLD_SIZE / MASTER_ADDR in the environment) `rnnedge train` is one rank of a job
that may span machines (README: "Training on several processes or machines").

Same results as one process, up to float reduction order: every rank draws the same seeded permutation and
cuts the same global batches as trainer.train_epoch does; rank r takes sequences r, r+N, ... of each batch
(`shard`; torch's DistributedSampler would shuffle per rank and change which sequences share a batch). The
loss is normalised by the *global* batch (sequence count or valid steps) and scaled by N, so DDP's gradient
average is exactly the single-process gradient. Windows are cut on the global batch's length, every rank runs
every window (a zero loss where its shard has nothing to score), and an optimiser step happens only where some
rank had a loss, as in one process. Rank 0 evaluates, decides early stopping for everyone (broadcast), and is
the only one to touch the run folder.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as td
from rnnedge.runtime.errors import TrainError
from torch.nn.parallel import DistributedDataParallel

from .trainer import TrainConfig


class DistContext:
    """This process's place in the job, and the few collectives the trainer needs."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def wrap(self, model):
        return DistributedDataParallel(model)

    def shard(self, idx):
        """This rank's part of a global batch (a numpy index array)."""
        return idx[self.rank :: self.world]

    def any(self, flag: bool) -> bool:
        t = torch.tensor([1.0 if flag else 0.0])
        td.all_reduce(t)
        return bool(t.item() > 0)

    def sum(self, x: float) -> float:
        t = torch.tensor([x], dtype=torch.float64)
        td.all_reduce(t)
        return float(t.item())

    def mean(self, x: float) -> float:
        return self.sum(x) / self.world

    def from_lead(self, obj):
        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self):
        td.barrier()


def backend() -> str:
    """gloo: the trainer keeps its tensors on the CPU (nccl would need them on each rank's GPU)."""
    return "gloo"


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def run(cfg: TrainConfig, out, nproc: int, force: bool = False, progress: bool = True):
    """`rnnedge train --nproc N`: this process is rank 0 of N (spawned here), or one rank under torchrun."""
    if launched_by_torchrun():
        return _worker(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), cfg, out, force, progress)
    if nproc < 2:
        raise TrainError("--nproc must be >= 2 for distributed training (1 is the ordinary `rnnedge train`)")
    if cfg.stream:
        raise TrainError("--stream-train runs in one process: drop --nproc")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    torch.multiprocessing.spawn(
        _spawned, args=(nproc, cfg, str(out), force, progress), nprocs=nproc, join=True
    )
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(rank: int, world: int, cfg, out, force, progress):
    _worker(rank, world, cfg, out, force, progress)


def _worker(rank: int, world: int, cfg: TrainConfig, out, force: bool, progress: bool):
    from .trainer import train

    td.init_process_group(backend(), rank=rank, world_size=world)
    try:
        ctx = DistContext(rank, world)
        cfg.nproc = world
        log = print if ctx.lead else (lambda *a, **k: None)
        return train(cfg, Path(out), force=force, progress=progress and ctx.lead, log=log, dist=ctx)
    finally:
        td.destroy_process_group()
