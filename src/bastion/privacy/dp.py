"""Differentially private training (DP-SGD) through Opacus, as a defence to measure.

DP-SGD (Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar and Zhang 2016, "Deep learning with
differential privacy", CCS): each step samples a Poisson batch (every example independently
with probability ``q = batch_size / N``), clips every *per-example* gradient to l2 norm
``max_grad_norm``, adds Gaussian noise of standard deviation ``noise_multiplier *
max_grad_norm`` to their sum, and steps. The Renyi-DP accountant (Mironov 2017) then bounds the
whole run's privacy loss: the trained model is ``(epsilon, delta)``-differentially private with
respect to adding or removing one training example. Opacus (Yousefpour et al. 2021) supplies the
per-sample gradients, the sampler and the accountant; ``pip install opacus`` (1.6 works with
bastion's zoo: MLPs, CNNs and LeNet; BatchNorm models such as PreAct-ResNet are refused by
Opacus, which needs GroupNorm instead).

Randomness: the Poisson sampler and the noise draw from seeded generators, so a run is
reproducible, which is what an audit needs. That is *not* secure: an adversary who knows the
seed can subtract the noise. ``secure_mode=True`` uses Opacus's cryptographically secure
generator instead (install ``torchcsprng``), and gives up reproducibility.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.base import predict
from bastion.errors import ConfigError
from bastion.training.trainer import TrainResult

__all__ = ["DPResult", "DPSettings", "dp_settings_from", "fit_dp", "opacus_available", "train_dp"]


def opacus_available() -> bool:
    """Whether Opacus can be imported."""
    try:
        import opacus  # type: ignore[import-untyped, unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class DPSettings:
    """DP-SGD settings.

    Attributes:
        epochs: passes (in expectation) over the data; batch_size: the expected Poisson batch.
        lr, momentum: SGD; max_grad_norm: the per-example clipping bound ``C``.
        target_epsilon: calibrate the noise so that the run ends at this epsilon (with
            ``delta``); or give ``noise_multiplier`` (``sigma``) instead and read the epsilon.
        delta: the ``delta`` of the guarantee (default ``1 / (10 N)``, below ``1 / N`` as it
            must be for the guarantee to mean anything).
        secure_mode: Opacus's secure RNG instead of seeded generators (see the module docstring).
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.5
    momentum: float = 0.0
    max_grad_norm: float = 1.0
    target_epsilon: float | None = 8.0
    noise_multiplier: float | None = None
    delta: float | None = None
    secure_mode: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"dp.{name}: expected an integer >= 1, got {v!r}")
        for name in ("lr", "max_grad_norm"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ConfigError(f"dp.{name}: expected a positive number, got {v!r}")
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ConfigError(
                "dp: expected exactly one of target_epsilon and noise_multiplier, got "
                f"target_epsilon={self.target_epsilon!r}, noise_multiplier="
                f"{self.noise_multiplier!r}"
            )
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise ConfigError(f"dp.target_epsilon: expected > 0, got {self.target_epsilon!r}")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise ConfigError(f"dp.noise_multiplier: expected > 0, got {self.noise_multiplier!r}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ConfigError(f"dp.delta: expected a number in (0, 1), got {self.delta!r}")


@dataclass
class DPResult:
    """A DP-SGD run: the ``(epsilon, delta)`` it guarantees, the noise it used, per-epoch
    training loss and accuracy (on the Poisson batches), and the seconds it took."""

    epsilon: float
    delta: float
    noise_multiplier: float
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "accountant": "rdp",
            "history": self.history,
        }


def _dp_epoch(private: nn.Module, opt: Any, dl: Any) -> tuple[float, int, int, int]:
    """One epoch of DP-SGD over Opacus's Poisson-sampled loader ``dl``: the summed loss,
    the correct and seen examples, and the optimizer steps taken (an empty batch still takes
    a noise step)."""
    private.train()
    loss_sum, correct, seen, steps = 0.0, 0, 0, 0
    for xb, yb in dl:
        opt.zero_grad(set_to_none=True)
        if yb.numel() == 0:  # an empty Poisson batch still takes a (noise) step
            opt.step()
            steps += 1
            continue
        logits = private(xb)
        loss = F.cross_entropy(logits, yb)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        steps += 1
        loss_sum += float(loss.detach()) * yb.shape[0]
        correct += int((logits.detach().argmax(1) == yb).sum())
        seen += yb.shape[0]
    return loss_sum, correct, seen, steps


def _drop_grad_samples(model: nn.Module) -> None:
    """Remove Opacus's per-sample gradient attributes and the gradients from ``model``."""
    for p in model.parameters():
        for attr in ("grad_sample", "summed_grad", "_forward_counter"):
            if hasattr(p, attr):
                delattr(p, attr)
        p.grad = None


def train_dp(
    model: nn.Module, x: Tensor, y: Tensor, settings: DPSettings, *, seed: int = 0
) -> DPResult:
    """Train ``model`` in place with DP-SGD on ``x`` ``(N, ...)``, ``y`` ``(N,)`` (Opacus).

    The model's own modules are trained (Opacus's wrapper and hooks are removed afterwards) and
    left in eval mode. Raises :class:`ConfigError` when Opacus is missing or refuses the
    architecture (the message says why).
    """
    try:
        from opacus import PrivacyEngine  # type: ignore[import-untyped, unused-ignore]
        from opacus.validators import ModuleValidator  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise ConfigError("dp: Opacus is not installed; pip install 'opacus>=1.6'") from None
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ConfigError(f"dp: Opacus cannot train this model: {errors[0]}")
    s = settings
    n = int(x.shape[0])
    delta = s.delta if s.delta is not None else 1.0 / (10 * n)
    start = time.perf_counter()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=s.batch_size,
        generator=None if s.secure_mode else torch.Generator().manual_seed(seed),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum)
    with warnings.catch_warnings():
        # Opacus warns that seeded (non-secure) randomness is in use: that is documented above
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp", secure_mode=s.secure_mode)
        common: dict[str, Any] = {
            "module": model,
            "optimizer": optimizer,
            "data_loader": loader,
            "max_grad_norm": s.max_grad_norm,
            "poisson_sampling": True,
        }
        if not s.secure_mode:
            common["noise_generator"] = torch.Generator().manual_seed(seed + 1)
        if s.target_epsilon is not None:
            private, opt, dl = engine.make_private_with_epsilon(
                **common, target_epsilon=s.target_epsilon, target_delta=delta, epochs=s.epochs
            )
        else:
            private, opt, dl = engine.make_private(**common, noise_multiplier=s.noise_multiplier)
        history: list[dict[str, float]] = []
        steps = 0
        try:
            for epoch in range(1, s.epochs + 1):
                loss_sum, correct, seen, taken = _dp_epoch(private, opt, dl)
                steps += taken
                history.append(
                    {
                        "epoch": float(epoch),
                        "train_loss": loss_sum / max(seen, 1),
                        "train_accuracy": correct / max(seen, 1),
                        "epsilon": float(engine.get_epsilon(delta)),
                    }
                )
            epsilon = float(engine.get_epsilon(delta))
        finally:
            if hasattr(private, "remove_hooks"):
                private.remove_hooks()
    _drop_grad_samples(model)
    model.eval()
    return DPResult(
        epsilon=epsilon,
        delta=delta,
        noise_multiplier=float(opt.noise_multiplier),
        steps=steps,
        seconds=time.perf_counter() - start,
        history=history,
    )


_FIELDS = {f for f in DPSettings.__dataclass_fields__}


def dp_settings_from(doc: Any, *, where: str = "dp") -> DPSettings:
    """:class:`DPSettings` from a config mapping (a model entry's ``dp`` section); errors name
    ``<where>.<field>``."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping of DP-SGD settings, got {doc!r}")
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: not a DP-SGD setting; expected some of "
            f"{', '.join(sorted(_FIELDS))}"
        )
    doc = dict(doc)
    if "noise_multiplier" in doc and "target_epsilon" not in doc:
        doc["target_epsilon"] = None
    try:
        return DPSettings(**doc)
    except ConfigError as e:
        raise ConfigError(str(e).replace("dp", where, 1)) from None
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def fit_dp(
    model: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    x_val: Tensor,
    y_val: Tensor,
    settings: DPSettings,
    *,
    seed: int = 0,
) -> TrainResult:
    """:func:`train_dp` as a :class:`~bastion.training.trainer.TrainResult`, for the pipeline
    (a model entry with a ``dp`` section). Each history record carries the accountant's
    ``epsilon`` so far and ``delta``; the validation accuracy is measured once, on the last
    epoch, which is the model kept (the guarantee covers the run as trained). The result's
    ``warnings`` state the final guarantee, so the scorecard and the model card show it."""
    res = train_dp(model, x_train, y_train, settings, seed=seed)
    val = float((predict(model, x_val) == y_val).float().mean()) if x_val.shape[0] else 0.0
    history = []
    for h in res.history:
        history.append(
            {
                **h,
                "val_clean_accuracy": float("nan"),
                "val_robust_accuracy": float("nan"),
                "delta": res.delta,
            }
        )
    if history:
        history[-1]["val_clean_accuracy"] = val
    return TrainResult(
        model=model,
        history=history,
        best_epoch=len(history),
        seconds=res.seconds,
        selection="last",
        warnings=[
            f"DP-SGD (Opacus): ({res.epsilon:.3g}, {res.delta:.3g})-differentially private, "
            f"noise multiplier {res.noise_multiplier:.3g}, clipping {settings.max_grad_norm:g}, "
            f"{res.steps} steps"
        ],
    )
