"""The ``tabular:`` evaluation section: train, attack under constraints, score.

:func:`run_tabular_experiment` trains three models on a constrained CSV data set (a standard
tabular MLP, a constrained-PGD-AT tabular MLP and a scikit-learn gradient-boosting classifier),
attacks each with the constrained attacks that apply to it (white-box CPGD/CAPGD on the MLPs,
score-based random search and label-only HopSkipJump on the GBM, through
:class:`~bastion.attacks.targets.SklearnTarget` / :class:`~bastion.attacks.targets.LabelTarget`),
checks every adversarial row with :func:`~bastion.tabular.constraints.check_feasible`, saves the
models and returns a JSON-ready scorecard section. The attacks are those of the registry's
tabular channel, named in ``attacks``; what each knows (from the registry) decides the models
it runs on: white-box ones on the MLPs, score-based ones on the GBM's scores, label-only ones
on its labels.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from bastion.attacks.base import Attack, predict
from bastion.attacks.registry import build_attack, channel_attacks, registered_name
from bastion.attacks.targets import LabelTarget, SklearnTarget
from bastion.data.core import Dataset
from bastion.errors import ConfigError
from bastion.models import save_model
from bastion.models.estimators import save_estimator
from bastion.tabular.constraints import check_feasible
from bastion.tabular.loading import load_constrained_csv
from bastion.tabular.threat import TabularThreat
from bastion.tabular.training import build_tabular_mlp, tabular_train_settings, train_tabular_mlp

#: The name of an attack in the registry's tabular channel (``bastion attacks list --channel
#: tabular``); another name is an error listing them.
TabularAttackName = Annotated[str, AfterValidator(registered_name("tabular"))]


def _all_attacks() -> list[str]:
    return ["cpgd", "capgd", "random-search", "hopskipjump"]


def _white_box(name: str) -> bool:
    return bool(channel_attacks("tabular")[name].knowledge == "white-box")


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


def attack_settings(name: str, config: TabularConfig) -> dict[str, Any]:
    """The registered settings of the tabular attack ``name`` that ``config`` sets (its
    ``attack_steps``, ``restarts``, ``queries``, ``hsj_iterations``, ``hsj_probes``); an attack
    the section does not describe gets none (its defaults)."""
    gradient = {"steps": config.attack_steps, "restarts": config.restarts}
    by_name: dict[str, dict[str, Any]] = {
        "cpgd": gradient,
        "capgd": gradient,
        "random-search": {"queries": config.queries},
        "hopskipjump": {"iterations": config.hsj_iterations, "probes": config.hsj_probes},
    }
    return dict(by_name.get(name, {}))


def _attack(name: str, config: TabularConfig) -> Attack:
    return build_attack(name, attack_settings(name, config), channel="tabular", where="tabular")


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


@dataclass(frozen=True)
class _Run:
    """What every model of one tabular run shares: the section, the data, the threat, the
    attacked test rows ``(N, D)`` and labels ``(N,)``, the output folder and the seed."""

    config: TabularConfig
    data: Dataset
    threat: TabularThreat
    x_test: Tensor
    y_test: Tensor
    out: Path
    seed: int


def _described(
    entry: dict[str, Any], kind: str, objective: str, seconds: float, path: Path
) -> dict[str, Any]:
    entry.update(kind=kind, objective=objective, train_seconds=round(seconds, 3), path=str(path))
    return entry


def _mlp_entries(run: _Run) -> dict[str, Any]:
    """Train the standard and the constrained-AT MLP, save them, and attack each with the
    white-box attacks of ``config.attacks``; their scorecard entries by label."""
    config, data, threat, seed = run.config, run.data, run.threat, run.seed
    white = [a for a in config.attacks if _white_box(a)]
    train, val = data.train, data.val
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
            run.out / label,
            metadata={"fingerprint": data.fingerprint, "threat": threat.to_dict(), "seed": seed},
        )
        entry = _evaluate(result.model, white, config, run.x_test, run.y_test, threat, seed)
        objective = "constrained-pgd-at" if adversarial else "standard"
        models[label] = _described(entry, "tabular-mlp", objective, train_seconds, path)
    return models


def _gbm_entry(run: _Run) -> dict[str, Any]:
    """Fit and save the gradient-boosting classifier and attack it with the black-box attacks
    of ``config.attacks`` (score-based ones on its scores, label-only ones on its labels); its
    scorecard entry."""
    from sklearn.ensemble import GradientBoostingClassifier  # deferred: slow to import

    config, data, x_test, y_test = run.config, run.data, run.x_test, run.y_test
    t0 = time.perf_counter()
    gbm = GradientBoostingClassifier(
        n_estimators=config.gbm_estimators, max_depth=config.gbm_depth, random_state=run.seed
    )
    gbm.fit(data.train.x.numpy(), data.train.y.numpy())
    train_seconds = time.perf_counter() - t0
    gbm_path = save_estimator(gbm, run.out / "gbm.skops")
    targets: dict[str, nn.Module] = {
        "score-based": SklearnTarget(gbm, name="gbm"),
        "label-only": LabelTarget(gbm.predict, len(data.classes), name="gbm-labels"),
    }
    predicted = gbm.predict(x_test.numpy())
    entry: dict[str, Any] = {
        "clean_accuracy": round(float(np.mean(predicted == y_test.numpy())), 4),
        "attacks": {},
    }
    broken = torch.from_numpy(predicted != y_test.numpy())
    for name in (a for a in config.attacks if not _white_box(a)):
        knowledge = channel_attacks("tabular")[name].knowledge
        target = targets["score-based" if knowledge == "score-based" else "label-only"]
        attack = _attack(name, config)
        figures, success = _score_attack(attack, target, x_test, y_test, run.threat, seed=run.seed)
        entry["attacks"][name] = figures
        broken |= success
    entry["robust_accuracy"] = round(float((~broken).float().mean()), 4)
    return _described(entry, "sklearn-gbm", "standard", train_seconds, gbm_path)


def _threat_summary(threat: TabularThreat) -> dict[str, Any]:
    cs = threat.constraints
    return {
        "norm": threat.norm,
        "eps": threat.eps,
        "use_costs": threat.use_costs,
        "columns": cs.dim,
        "immutable_columns": int((~cs.mutable).sum()),
        "integer_features": int(cs.integer_columns.numel()),
        "categorical_features": len(cs.groups),
        "relations": list(cs.relation_names),
    }


def run_tabular_dataset(
    config: TabularConfig, data: Dataset, out_dir: str | os.PathLike[str], *, seed: int
) -> dict[str, Any]:
    """:func:`run_tabular_experiment` on an already loaded tabular data set."""
    if data.schema is None:
        raise ConfigError("tabular: the data set has no schema (expected a tabular data set)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    threat = TabularThreat(
        norm=config.norm, eps=config.eps, schema=data.schema, use_costs=config.use_costs
    )
    x_test, y_test = data.test.x[: config.examples], data.test.y[: config.examples]
    run = _Run(config, data, threat, x_test, y_test, out, seed)
    models = _mlp_entries(run)
    models["gbm"] = _gbm_entry(run)
    return {
        "seed": seed,
        "config": config.model_dump(mode="json"),
        "threat": _threat_summary(threat),
        "data": {
            "fingerprint": data.fingerprint,
            "train": len(data.train.y),
            "val": len(data.val.y),
            "test": len(data.test.y),
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
