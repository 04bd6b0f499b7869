"""Spread an evaluation's attack batches over Ray workers (``bastion evaluate --ray``).

The evaluator cuts each (attack, eps) pair's examples into batches, each with its own seed
(:func:`bastion.evaluation.evaluator.robust_mask`); :class:`RayBatchRunner` sends them to Ray
tasks of one CPU each and collects the per-example masks in batch order. The model is put in
Ray's object store once per evaluation. A task whose worker dies is retried by Ray (``retries``
times); a batch's result is written once, by its index, so nothing is counted twice, and the
scorecard is the one a single process writes.

Ray is an optional extra (``pip install 'bastion[distributed]'``). Without an address a local
Ray instance is started with ``workers`` CPUs and shut down by :meth:`RayBatchRunner.close`;
with one (``ray://host:10001`` or ``host:6379``) the runner joins that cluster.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks.base import Attack
from bastion.errors import ConfigError
from bastion.evaluation.evaluator import AttackBatch, attack_batch
from bastion.threat import ThreatModel

__all__ = ["RayBatchRunner"]


def _task(model: nn.Module, attack: Attack, threat: ThreatModel, batch: AttackBatch) -> Tensor:
    torch.set_num_threads(1)  # one CPU per task: Ray runs as many tasks as it has CPUs
    return attack_batch(model, attack, threat, batch)


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

    def _model_ref(self, model: nn.Module) -> Any:
        held = self._model_refs.get(id(model))
        if held is None or held[0] is not model:
            held = (model, self._ray.put(model))
            self._model_refs[id(model)] = held
        return held[1]

    def __call__(
        self, model: nn.Module, attack: Attack, threat: ThreatModel, batches: list[AttackBatch]
    ) -> list[Tensor]:
        ref = self._model_ref(model)
        futures = [self._remote.remote(ref, attack, threat, b) for b in batches]
        return [r.cpu() for r in self._ray.get(futures)]

    def describe(self) -> dict[str, Any]:
        """For the scorecard's ``runtime``: the engine, its CPUs and whether it was local."""
        return {"engine": "ray", "workers": self.workers, "cluster": self.address is not None}

    def close(self) -> None:
        """Shut down the local Ray instance this runner started (a joined cluster stays)."""
        self._model_refs.clear()
        if self._started:
            self._ray.shutdown()
            self._started = False
