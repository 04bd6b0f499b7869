"""Data-parallel training under ``torchrun``: every process trains the same model on its share
of each batch, adversarial examples included, and the gradients are averaged before each step.

``torchrun --nproc-per-node N -m bastion.cli train CONFIG`` starts N processes; each one finds
its rank in the environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``) and :meth:`DataParallel.from_env` joins the process group
(gloo on the CPU, NCCL on GPUs). Then:

- every process draws the same permutation of the training set (the same seeded generator),
  and takes examples ``rank, rank + N, ...`` of each batch of ``training.batch_size``;
- each process crafts the adversarial examples of its share only (the expensive part of
  adversarial training is split N ways), with an attack generator seeded per rank and epoch;
- after the backward pass the gradients are summed over processes with ``all_reduce``, each
  weighted by its share of the batch, so the step is the one a single process would take on
  the whole batch (up to float rounding); the parameters therefore stay identical everywhere;
- validation, early stopping and temperature scaling run identically on every process;
  checkpoints and the saved model are written by rank 0 only;
- at the end of each epoch the processes exchange their loss sums: the history's
  ``train_loss`` is the mean over every example of the epoch (as one process reports it) and
  ``train_loss_rank<r>`` the mean over process ``r``'s share (the report overlays them).

A checkpoint holds no per-process state, so a run resumes with any number of processes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from bastion.errors import ConfigError

__all__ = ["DataParallel"]


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run: ``rank`` of ``world`` processes."""

    rank: int
    world: int

    @classmethod
    def from_env(cls, *, device: torch.device | None = None) -> DataParallel | None:
        """Join the process group ``torchrun`` describes; ``None`` when not under torchrun
        (``WORLD_SIZE`` unset or 1)."""
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return None
        rank = int(os.environ.get("RANK", "0"))
        if not dist.is_available():
            raise ConfigError("torchrun: this torch build has no torch.distributed")
        if not dist.is_initialized():
            backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
        return cls(rank=rank, world=world)

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, models and progress (rank 0)."""
        return self.rank == 0

    def shard(self, idx: Tensor) -> Tensor:
        """This process's share of a batch's indices: every ``world``-th, from ``rank``."""
        return idx[self.rank :: self.world]

    def attack_generator(self, seed: int, epoch: int) -> torch.Generator:
        """A generator for this process's adversarial examples in ``epoch``."""
        h = hashlib.sha256(f"{seed}:rank:{self.rank}:epoch:{epoch}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(h[:6], "big"))

    def average_gradients(self, model: nn.Module, local: int, total: int) -> None:
        """Replace each gradient by the batch-weighted mean over processes: each process's
        gradient (of its mean loss over ``local`` examples) counts ``local / total``."""
        weight = local / total
        for p in model.parameters():
            if not p.requires_grad:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.mul_(weight)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)

    def gather(self, values: tuple[float, ...]) -> list[tuple[float, ...]]:
        """Every process's ``values`` (the same length everywhere), indexed by rank; a
        collective call, so every process must make it at the same point."""
        device = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
        mine = torch.tensor(values, dtype=torch.float64, device=device)
        out = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(out, mine)
        return [tuple(float(v) for v in t.cpu()) for t in out]

    def check_batch(self, batch_size: int) -> None:
        if batch_size < self.world:
            raise ConfigError(
                f"training.batch_size: {batch_size} is smaller than the {self.world} processes; "
                "expected at least one example per process"
            )

    def close(self, *, wait: bool = True) -> None:
        """Leave the process group. With ``wait`` (after a run that finished) first wait until
        every process has reached this point: a process that tore its connections down while a
        peer still finished its last collective could abort that peer (gloo raises in a C++
        destructor, which ends the process with SIGABRT). Without it (after an error) leave at
        once, since the peers may never reach a barrier."""
        if dist.is_initialized():
            if wait:
                dist.barrier()
            dist.destroy_process_group()
