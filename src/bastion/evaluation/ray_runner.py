"""Spread an evaluation's attack batches over Ray workers (``bastion evaluate --ray``).

The evaluator cuts each (attack, eps) pair's examples into batches, each with its own seed
(:func:`bastion.evaluation.evaluator.robust_mask`); :class:`RayBatchRunner` sends them to Ray
tasks of one CPU each and collects the per-example masks in batch order. The model is put in
Ray's object store once per evaluation. A task whose worker dies is retried by Ray (``retries``
times); a batch's result is written once, by its index, so nothing is counted twice, and the
scorecard is the one a single process writes.

Every call is timed: :attr:`RayBatchRunner.calls` holds, per (attack, eps) pass, the wall time
of the call and each shard's (batch's) time inside its task, from which a benchmark separates
Ray's start-up from the work and projects a larger cluster (``benchmarks/scale.py``).

Ray is an optional extra (``pip install 'bastion[distributed]'``). Without an address a local
Ray instance is started with ``workers`` CPUs and shut down by :meth:`RayBatchRunner.close`;
with one (``ray://host:10001`` or ``host:6379``) the runner joins that cluster.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks.base import Attack
from bastion.errors import ConfigError
from bastion.evaluation.evaluator import AttackBatch, attack_batch
from bastion.threat import ThreatModel

__all__ = ["RayBatchRunner", "RayCall", "lpt_makespan", "project_seconds"]


@dataclass(frozen=True)
class RayCall:
    """One call of the runner (one attack at one eps): its wall time in the driver, and per
    shard (batch, in batch order) the examples attacked and the seconds spent in its task."""

    wall_seconds: float
    shard_examples: tuple[int, ...]
    shard_seconds: tuple[float, ...]


def _task(
    model: nn.Module, attack: Attack, threat: ThreatModel, batch: AttackBatch
) -> tuple[Tensor, float]:
    torch.set_num_threads(1)  # one CPU per task: Ray runs as many tasks as it has CPUs
    t0 = time.perf_counter()
    mask = attack_batch(model, attack, threat, batch)
    return mask, time.perf_counter() - t0


def lpt_makespan(seconds: Sequence[float], workers: int) -> float:
    """The finishing time of independent shards of the given durations on ``workers`` equal
    workers, scheduled longest first onto the least-loaded worker (Graham 1969, within 4/3 of
    the optimum). At least the longest shard and the total divided by ``workers``."""
    if workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers}")
    loads = [0.0] * min(workers, max(1, len(seconds)))
    heapq.heapify(loads)
    for s in sorted(seconds, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + s)
    return max(loads)


def project_seconds(calls: Sequence[RayCall], workers: int, *, measured_workers: int) -> float:
    """The Ray work of ``calls`` projected onto ``workers`` CPUs: per call, the shards'
    longest-first makespan there plus the call's own overhead (its measured wall time minus the
    makespan on the ``measured_workers`` it ran on, at least 0: scheduling, transfers). Assumes
    each shard takes on the larger cluster the time it took here; start-up is not included."""
    total = 0.0
    for call in calls:
        overhead = max(0.0, call.wall_seconds - lpt_makespan(call.shard_seconds, measured_workers))
        total += lpt_makespan(call.shard_seconds, workers) + overhead
    return total


class RayBatchRunner:
    """A :data:`~bastion.evaluation.evaluator.BatchRunner` on Ray.

    Args:
        address: a Ray cluster to join; ``None`` starts a local instance.
        workers: CPUs of the local instance (default: all); ignored with an address.
        retries: how often Ray re-runs a task whose worker process died.
    """

    def __init__(self, address: str | None = None, *, workers: int | None = None, retries: int = 3):
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "--ray: Ray is not installed; pip install 'bastion[distributed]'"
            ) from None
        if workers is not None and workers < 1:
            raise ConfigError(f"--ray-workers: expected an integer >= 1, got {workers}")
        self._ray: Any = ray
        self._started = False
        if not ray.is_initialized():
            try:
                ray.init(
                    address=address,
                    num_cpus=None if address else workers,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            except Exception as e:  # Ray raises ConnectionError, RuntimeError, ...
                where = address or "a local instance"
                raise ConfigError(
                    f"--ray-address: cannot reach Ray at {where} ({type(e).__name__})"
                ) from None
            self._started = True
        self.workers = int(self._ray.cluster_resources().get("CPU", 1))
        self.address = address
        self._remote = ray.remote(num_cpus=1, max_retries=retries)(_task)
        self._model_refs: dict[int, tuple[nn.Module, Any]] = {}
        self.calls: list[RayCall] = []

    def _model_ref(self, model: nn.Module) -> Any:
        held = self._model_refs.get(id(model))
        if held is None or held[0] is not model:
            held = (model, self._ray.put(model))
            self._model_refs[id(model)] = held
        return held[1]

    def __call__(
        self, model: nn.Module, attack: Attack, threat: ThreatModel, batches: list[AttackBatch]
    ) -> list[Tensor]:
        t0 = time.perf_counter()
        ref = self._model_ref(model)
        futures = [self._remote.remote(ref, attack, threat, b) for b in batches]
        done = self._ray.get(futures)
        self.calls.append(
            RayCall(
                wall_seconds=time.perf_counter() - t0,
                shard_examples=tuple(int(b[0].shape[0]) for b in batches),
                shard_seconds=tuple(float(seconds) for _, seconds in done),
            )
        )
        return [mask.cpu() for mask, _ in done]

    def describe(self) -> dict[str, Any]:
        """For the scorecard's ``runtime``: the engine, its CPUs and whether it was local."""
        return {"engine": "ray", "workers": self.workers, "cluster": self.address is not None}

    def close(self) -> None:
        """Shut down the local Ray instance this runner started (a joined cluster stays)."""
        self._model_refs.clear()
        if self._started:
            self._ray.shutdown()
            self._started = False
