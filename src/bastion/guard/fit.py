"""Fitting a guard on a run directory and clean calibration data.

The calibration data is split (seeded) in two: the *fit* part estimates the Mahalanobis class
statistics and trains the adversarial-input detector (clean rows vs the same rows attacked with
PGD/APGD from the attack library); the *held-out* part fits the softmax temperature and the
clean score distribution every threshold is read from, so thresholds meet their target
false-positive rate on data the detectors never saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml  # type: ignore[import-untyped, unused-ignore]
from torch import Tensor, nn

from bastion.attacks.registry import build_attack
from bastion.data.schema import TabularSchema
from bastion.errors import ConfigError, DataError, yaml_error_line
from bastion.guard.calibration import fit_temperature
from bastion.guard.config import GuardConfig
from bastion.guard.core import Guard
from bastion.guard.ood import Mahalanobis
from bastion.guard.scorer import CONFIDENCE, AdversarialDetector, GuardScorer, PredictiveLogits
from bastion.guard.validation import InputValidator, Sanitizer
from bastion.models.io import load_model
from bastion.models.zoo import BastionModel
from bastion.threat import ThreatModel


def run_threat(run_dir: Path) -> ThreatModel:
    """The threat model in ``run_dir/config.yaml`` (the default one when absent)."""
    cfg_path = Path(run_dir) / "config.yaml"
    if not cfg_path.is_file():
        return ThreatModel()
    try:
        doc = yaml.safe_load(cfg_path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{cfg_path}: not valid YAML: {yaml_error_line(e)}") from None
    threat = doc.get("threat", {}) if isinstance(doc, dict) else {}
    return ThreatModel.from_dict(threat or {})


def load_run_models(run_dir: Path, names: tuple[str, ...]) -> list[BastionModel]:
    """The named models of a run directory (``run_dir/models/<name>``), frozen, in eval mode."""
    models = []
    for name in names:
        model = load_model(Path(run_dir) / "models" / name)
        for p in model.parameters():
            p.requires_grad_(False)
        models.append(model)
    return models


def _check_calibration(x: Tensor, y: Tensor, input_shape: tuple[int, ...], classes: int) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise DataError("x_cal: expected a floating-point tensor")
    if tuple(x.shape[1:]) != input_shape:
        raise DataError(
            f"x_cal: expected shape (N, {', '.join(map(str, input_shape))}), got {tuple(x.shape)}"
        )
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],) or y.dtype != torch.int64:
        raise DataError(f"y_cal: expected an int64 tensor of shape ({x.shape[0]},)")
    if x.shape[0] < 40:
        raise DataError(f"x_cal: expected at least 40 calibration examples, got {x.shape[0]}")
    if int(y.min()) < 0 or int(y.max()) >= classes:
        raise DataError(f"y_cal: class indices must lie in [0, {classes})")


def _batched(fn: Any, x: Tensor, size: int = 2048) -> list[Any]:
    return [fn(x[i : i + size]) for i in range(0, x.shape[0], size)]


def build_guard(
    models: list[BastionModel],
    config: GuardConfig,
    x_cal: Tensor,
    y_cal: Tensor,
    *,
    threat: ThreatModel,
    classes: tuple[str, ...] | None = None,
    schema: TabularSchema | None = None,
    sanitize: Sanitizer | None = None,
    seed: int,
) -> Guard:
    """Fit a guard around in-memory ``models`` (first = primary) on clean calibration data.

    Args:
        x_cal, y_cal: clean labelled data ``(N, *input_shape)``, ``(N,)``, not used in training.
        threat: the attack budget the adversarial detector trains against (``config.adversarial
            .eps`` overrides its eps) and the default validation bounds.
        seed: the split, detector initialisation and attack randomness all come from it.
    """
    spec = models[0].spec
    input_shape = tuple(spec.input_shape)
    n_classes = spec.num_classes
    _check_calibration(x_cal, y_cal, input_shape, n_classes)
    classes = tuple(classes) if classes is not None else tuple(str(i) for i in range(n_classes))
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x_cal.shape[0], generator=gen)
    n_fit = max(10, round(config.fit_fraction * x_cal.shape[0]))
    fit_idx, hold_idx = perm[:n_fit], perm[n_fit:]
    x_fit, y_fit = x_cal[fit_idx].float(), y_cal[fit_idx]
    x_hold, y_hold = x_cal[hold_idx].float(), y_cal[hold_idx]

    scorer, validator = guard_parts(
        models,
        config,
        config.validation.bounds or threat.bounds,
        input_shape=input_shape,
        schema=schema if config.validation.check_schema else None,
        sanitize=sanitize,
    )
    scorer.eval()
    # class statistics on the penultimate features of the fit split (Lee et al. 2018)
    if (config.ood.enabled and config.ood.method == "mahalanobis") or config.adversarial.enabled:
        with torch.inference_mode():
            feats = torch.cat(_batched(lambda b: scorer.features(b).flatten(1), x_fit))
        scorer.mahalanobis = Mahalanobis.fit(feats.clone(), y_fit, n_classes)
    if config.adversarial.enabled:
        _fit_detector(scorer, config, x_fit, y_fit, threat=threat, seed=seed)
    cal, firing = _calibrate(scorer, config, x_hold, y_hold)
    return Guard(
        config=config,
        scorer=scorer,
        validator=validator,
        classes=classes,
        cal_scores=cal.clone(),
        firing=tuple(firing),
        fpr=config.fpr,
        models=models,
        seed=seed,
    )


def guard_parts(
    models: list[BastionModel],
    config: GuardConfig,
    bounds: tuple[float, float],
    *,
    input_shape: tuple[int, ...],
    schema: TabularSchema | None,
    sanitize: Sanitizer | None,
    temperature: float = 1.0,
    mahalanobis: Mahalanobis | None = None,
    detector: AdversarialDetector | None = None,
) -> tuple[GuardScorer, InputValidator]:
    """The guard's scorer over ``models`` (with the configured squeezing and OOD score) and
    its input validator, as :func:`build_guard` fits them and :func:`~bastion.guard.io.
    load_guard` restores them (the fitted temperature, statistics and detector given)."""
    squeeze = (
        (config.squeezing.bit_depth, config.squeezing.median_size)
        if config.squeezing.enabled
        else None
    )
    scorer = GuardScorer(
        list(models),
        temperature=temperature,
        squeeze=squeeze,
        bounds=bounds,
        mahalanobis=mahalanobis,
        ood=config.ood.method if config.ood.enabled else None,
        ood_temperature=config.ood.temperature,
        detector=detector,
    )
    validator = InputValidator(
        input_shape=input_shape,
        bounds=bounds,
        atol=config.validation.atol,
        clip=config.validation.out_of_range == "clip",
        schema=schema,
        sanitize=sanitize,
    )
    return scorer, validator


def _fit_detector(
    scorer: GuardScorer,
    config: GuardConfig,
    x_fit: Tensor,
    y_fit: Tensor,
    *,
    threat: ThreatModel,
    seed: int,
) -> None:
    """The adversarial-input detector: trained on the fit split ``(N, *input_shape)`` clean
    against the same inputs attacked by each of ``guard.adversarial.attacks`` (attack ``i``
    seeded ``seed + 1 + i``, the detector ``seed + 100``); set frozen on ``scorer``."""
    eps = config.adversarial.eps if config.adversarial.eps is not None else threat.eps
    atk_threat = threat.with_eps(eps)
    target = PredictiveLogits(scorer)
    x_atk = []
    for i, name in enumerate(config.adversarial.attacks):
        params: dict[str, Any] = {} if name == "fgsm" else {"steps": config.adversarial.steps}
        if name == "pgd":
            params["early_stop"] = False
        attack = build_attack(name, params, where=f"guard.adversarial.attacks[{i}]")
        ag = torch.Generator().manual_seed(seed + 1 + i)
        x_atk.append(attack(target, x_fit, y_fit, atk_threat, generator=ag).x_adv)
    with torch.inference_mode():
        clean_stat = scorer.detector_features(x_fit)[0]
        adv_stat = torch.cat([scorer.detector_features(xa)[0] for xa in x_atk])
    detector = AdversarialDetector(clean_stat.shape[1], config.adversarial.hidden)
    scorer.detector = detector.fit(
        clean_stat.clone(),
        adv_stat.clone(),
        epochs=config.adversarial.epochs,
        generator=torch.Generator().manual_seed(seed + 100),
    )
    for p in detector.parameters():
        p.requires_grad_(False)


def _calibrate(
    scorer: GuardScorer, config: GuardConfig, x_hold: Tensor, y_hold: Tensor
) -> tuple[Tensor, list[str]]:
    """Fit the scorer's temperature on the held-out split (Guo et al. 2017) and return the
    clean held-out scores ``(N_hold, len(firing))`` of the layers that fire, and their names."""
    with torch.inference_mode():
        logits = torch.cat(_batched(lambda b: scorer(b)[1], x_hold))
    scorer.temperature = fit_temperature(logits.clone(), y_hold)
    with torch.inference_mode():
        parts = _batched(lambda b: scorer(b)[2], x_hold)
    firing = [k for k in ("squeezing", "ood", "adversarial", "disagreement") if k in parts[0]]
    # a smoothed classifier's confidence is its vote share, not the scorer's; it abstains on
    # its own, so it gets a confidence floor only when one is given explicitly
    smoothing = config.prediction.kind == "smoothing"
    if config.postcheck.enabled and config.postcheck.min_confidence is None and not smoothing:
        firing.append(CONFIDENCE)
    cal = (
        torch.stack([torch.cat([p[k] for p in parts]) for k in firing], dim=1)
        if firing
        else torch.zeros(x_hold.shape[0], 0)
    )
    return cal, firing


def fit_guard(
    run_dir: Path,
    config: GuardConfig,
    x_cal: Tensor,
    y_cal: Tensor,
    *,
    seed: int,
    schema: TabularSchema | None = None,
    sanitize: Sanitizer | None = None,
) -> Guard:
    """Fit a guard for the models of ``run_dir`` named in ``config.prediction.models``; the
    threat model and class names come from the run's ``config.yaml`` and model sidecar."""
    run_dir = Path(run_dir)
    models = load_run_models(run_dir, config.prediction.models)
    from bastion.models.io import read_sidecar

    meta = read_sidecar(run_dir / "models" / config.prediction.models[0]).get("metadata", {})
    classes = meta.get("classes") if isinstance(meta, dict) else None
    return build_guard(
        models,
        config,
        x_cal,
        y_cal,
        threat=run_threat(run_dir),
        classes=tuple(str(c) for c in classes) if isinstance(classes, list) else None,
        schema=schema,
        sanitize=sanitize,
        seed=seed,
    )


def freeze(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with every parameter frozen (returned for chaining)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
