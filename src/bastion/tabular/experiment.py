"""The ``tabular:`` evaluation section: train, attack under constraints, score.

:func:`run_tabular_experiment` trains three models on a constrained CSV data set (a standard
tabular MLP, a constrained-PGD-AT tabular MLP and a scikit-learn gradient-boosting classifier),
attacks each with the constrained attacks that apply to it (white-box CPGD/CAPGD on the MLPs,
score-based random search and label-only HopSkipJump on the GBM, through
:class:`~bastion.attacks.targets.SklearnTarget` / :class:`~bastion.attacks.targets.LabelTarget`),
checks every adversarial row with :func:`~bastion.tabular.constraints.check_feasible`, saves the
models and returns a JSON-ready scorecard section.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from bastion.attacks.base import Attack, predict
from bastion.attacks.targets import LabelTarget, SklearnTarget
from bastion.data.core import Dataset
from bastion.errors import ConfigError
from bastion.models import save_model
from bastion.models.estimators import save_estimator
from bastion.tabular.blackbox import ConstrainedHopSkipJump, ConstrainedRandomSearch
from bastion.tabular.constraints import check_feasible
from bastion.tabular.loading import load_constrained_csv
from bastion.tabular.threat import TabularThreat
from bastion.tabular.training import build_tabular_mlp, tabular_train_settings, train_tabular_mlp
from bastion.tabular.whitebox import ConstrainedAPGD, ConstrainedPGD

TabularAttackName = Literal["cpgd", "capgd", "random-search", "hopskipjump"]
WHITE_BOX: tuple[str, ...] = ("cpgd", "capgd")
BLACK_BOX: tuple[str, ...] = ("random-search", "hopskipjump")


def _all_attacks() -> list[TabularAttackName]:
    return ["cpgd", "capgd", "random-search", "hopskipjump"]


class TabularConfig(BaseModel):
    """The ``tabular:`` section (strict types, unknown keys rejected).

    Threat: ``norm``, ``eps`` (cost-weighted, unit space), ``use_costs``. Attacks: which to
    run (white-box ones on the MLPs, black-box ones on the GBM), their ``attack_steps``,
    ``restarts``, ``queries`` (random search), ``hsj_iterations`` and ``hsj_probes``
    (HopSkipJump), on the first ``examples``
    test rows. Training: ``epochs``, ``batch_size``, ``lr``, ``hidden``, ``train_attack_steps``
    (constrained PGD-AT); GBM: ``gbm_estimators``, ``gbm_depth``. Data: ``val_fraction``,
    ``test_fraction``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    norm: Literal["linf", "l2", "l1"] = "linf"
    eps: float = Field(default=0.1, gt=0, le=1)
    use_costs: bool = True
    attacks: list[TabularAttackName] = Field(default_factory=_all_attacks)
    attack_steps: int = Field(default=30, ge=1)
    restarts: int = Field(default=1, ge=1)
    queries: int = Field(default=200, ge=1)
    hsj_iterations: int = Field(default=10, ge=1)
    hsj_probes: int = Field(default=40, ge=1)
    examples: int = Field(default=200, ge=1)
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    hidden: list[int] = Field(default_factory=lambda: [64, 64])
    train_attack_steps: int = Field(default=7, ge=1)
    gbm_estimators: int = Field(default=100, ge=1)
    gbm_depth: int = Field(default=3, ge=1)
    val_fraction: float = Field(default=0.1, ge=0, lt=1)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)


def parse_tabular_config(doc: Any, *, source: str = "tabular") -> TabularConfig:
    """Validate a parsed ``tabular:`` mapping; :class:`ConfigError` names the field, e.g.
    ``"tabular.eps: Input should be greater than 0"``."""
    if isinstance(doc, TabularConfig):
        return doc
    try:
        return TabularConfig.model_validate(doc if doc is not None else {})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{source}.{where}: {first['msg']}") from None


def _attack(name: str, config: TabularConfig) -> Attack:
    if name == "cpgd":
        return ConstrainedPGD(steps=config.attack_steps, restarts=config.restarts)
    if name == "capgd":
        return ConstrainedAPGD(steps=config.attack_steps, restarts=config.restarts)
    if name == "random-search":
        return ConstrainedRandomSearch(queries=config.queries)
    return ConstrainedHopSkipJump(iterations=config.hsj_iterations, probes=config.hsj_probes)


def _score_attack(
    attack: Attack,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: TabularThreat,
    *,
    seed: int,
) -> tuple[dict[str, Any], Tensor]:
    """Run one attack; its figures and the ``(N,)`` success mask."""
    assert threat.schema is not None
    start = time.perf_counter()
    res = attack(model, x, y, threat, generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - start
    feasible = check_feasible(threat.schema, res.x_adv, x_ref=x).ok & threat.in_ball(res.x_adv, x)
    figures = {
        "robust_accuracy": round(float((~res.success).float().mean()), 4),
        "success_rate": round(res.success_rate, 4),
        "feasible_rate": round(float(feasible.float().mean()), 4),
        "mean_queries": round(float(res.queries.float().mean()), 1),
        "seconds": round(seconds, 3),
    }
    return figures, res.success


def _evaluate(
    model: nn.Module,
    names: list[str],
    config: TabularConfig,
    x: Tensor,
    y: Tensor,
    threat: TabularThreat,
    seed: int,
) -> dict[str, Any]:
    clean = predict(model, x) == y
    out: dict[str, Any] = {"clean_accuracy": round(float(clean.float().mean()), 4), "attacks": {}}
    broken = ~clean
    for name in names:
        figures, success = _score_attack(_attack(name, config), model, x, y, threat, seed=seed)
        out["attacks"][name] = figures
        broken |= success
    out["robust_accuracy"] = round(float((~broken).float().mean()), 4)
    return out


def run_tabular_dataset(
    config: TabularConfig, data: Dataset, out_dir: str | os.PathLike[str], *, seed: int
) -> dict[str, Any]:
    """:func:`run_tabular_experiment` on an already loaded tabular data set."""
    from sklearn.ensemble import GradientBoostingClassifier  # deferred: slow to import

    if data.schema is None:
        raise ConfigError("tabular: the data set has no schema (expected a tabular data set)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    threat = TabularThreat(
        norm=config.norm, eps=config.eps, schema=data.schema, use_costs=config.use_costs
    )
    train, val, test = data.train, data.val, data.test
    x_test, y_test = test.x[: config.examples], test.y[: config.examples]
    white: list[str] = [a for a in config.attacks if a in WHITE_BOX]
    black: list[str] = [a for a in config.attacks if a in BLACK_BOX]
    models: dict[str, Any] = {}
    for label, adversarial in (("standard-mlp", False), ("constrained-at-mlp", True)):
        model = build_tabular_mlp(
            data.input_shape[0],
            len(data.classes),
            mean=tuple(data.mean),
            std=tuple(data.std),
            hidden=tuple(config.hidden),
            seed=seed,
        )
        settings = tabular_train_settings(
            adversarial=adversarial,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            attack_steps=config.train_attack_steps,
        )
        t0 = time.perf_counter()
        result = train_tabular_mlp(
            model, threat, settings, (train.x, train.y, val.x, val.y), seed=seed
        )
        train_seconds = time.perf_counter() - t0
        path = save_model(
            model,
            out / label,
            metadata={"fingerprint": data.fingerprint, "threat": threat.to_dict(), "seed": seed},
        )
        entry = _evaluate(result.model, white, config, x_test, y_test, threat, seed)
        entry.update(
            kind="tabular-mlp",
            objective="constrained-pgd-at" if adversarial else "standard",
            train_seconds=round(train_seconds, 3),
            path=str(path),
        )
        models[label] = entry
    t0 = time.perf_counter()
    gbm = GradientBoostingClassifier(
        n_estimators=config.gbm_estimators, max_depth=config.gbm_depth, random_state=seed
    )
    gbm.fit(train.x.numpy(), train.y.numpy())
    train_seconds = time.perf_counter() - t0
    gbm_path = save_estimator(gbm, out / "gbm.skops")
    score_target = SklearnTarget(gbm, name="gbm")
    label_target = LabelTarget(gbm.predict, len(data.classes), name="gbm-labels")
    entry = {
        "clean_accuracy": round(float(np.mean(gbm.predict(x_test.numpy()) == y_test.numpy())), 4),
        "attacks": {},
    }
    broken = torch.from_numpy(gbm.predict(x_test.numpy()) != y_test.numpy())
    for name in black:
        target = score_target if name == "random-search" else label_target
        figures, success = _score_attack(
            _attack(name, config), target, x_test, y_test, threat, seed=seed
        )
        entry["attacks"][name] = figures
        broken |= success
    entry.update(
        robust_accuracy=round(float((~broken).float().mean()), 4),
        kind="sklearn-gbm",
        objective="standard",
        train_seconds=round(train_seconds, 3),
        path=str(gbm_path),
    )
    models["gbm"] = entry
    cs = threat.constraints
    return {
        "seed": seed,
        "config": config.model_dump(mode="json"),
        "threat": {
            "norm": threat.norm,
            "eps": threat.eps,
            "use_costs": threat.use_costs,
            "columns": cs.dim,
            "immutable_columns": int((~cs.mutable).sum()),
            "integer_features": int(cs.integer_columns.numel()),
            "categorical_features": len(cs.groups),
            "relations": list(cs.relation_names),
        },
        "data": {
            "fingerprint": data.fingerprint,
            "train": len(train.y),
            "val": len(val.y),
            "test": len(test.y),
            "attacked": int(x_test.shape[0]),
        },
        "models": models,
        "seconds": round(time.perf_counter() - start, 3),
    }


def run_tabular_experiment(
    config: TabularConfig | dict[str, Any],
    data_path: str | os.PathLike[str],
    schema_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    seed: int,
) -> dict[str, Any]:
    """Train a standard MLP, a constrained-AT MLP and a GBM on ``data_path`` (described by
    ``schema_path``), attack each under the schema's constraints, save the models under
    ``out_dir`` (``standard-mlp``, ``constrained-at-mlp`` as safetensors + sidecar,
    ``gbm.skops``) and return the JSON-ready scorecard section.

    Raises:
        ConfigError: an invalid ``config``; DataError: a missing or invalid data or schema
            file (naming the file, row and column, or the relation a row breaks).
    """
    cfg = parse_tabular_config(config)
    data = load_constrained_csv(
        data_path,
        schema_path,
        seed=seed,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
    )
    return run_tabular_dataset(cfg, data, out_dir, seed=seed)
