"""Helpers for the tabular tests: paths of the fraud example, small trained models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.data.core import Dataset
from bastion.models import BastionModel
from bastion.tabular.loading import load_constrained_csv
from bastion.tabular.training import build_tabular_mlp

ROOT = Path(__file__).resolve().parents[2]
FRAUD_CSV = ROOT / "examples" / "data" / "fraud.csv"
FRAUD_SCHEMA = ROOT / "examples" / "data" / "fraud-schema.yaml"


def fit_mlp(
    x: Tensor, y: Tensor, *, classes: int = 2, steps: int = 100, seed: int = 0
) -> BastionModel:
    """A small tabular MLP fitted full-batch with Adam (deterministic for a seed), in eval mode."""
    mean = tuple(float(v) for v in x.mean(dim=0))
    std = tuple(max(float(v), 1e-3) for v in x.std(dim=0))
    model = build_tabular_mlp(x.shape[1], classes, mean=mean, std=std, hidden=(32,), seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
        opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    return model


@dataclass
class Fraud:
    """The fraud example split, an MLP, a gradient-boosting and a random-forest classifier."""

    data: Dataset
    mlp: BastionModel
    gbm: Any
    forest: Any


def load_fraud() -> Fraud:
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    data = load_constrained_csv(FRAUD_CSV, FRAUD_SCHEMA, seed=0)
    x, y = data.train.x, data.train.y
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mlp = fit_mlp(x, y)
    finally:
        torch.set_num_threads(before)
    gbm = GradientBoostingClassifier(n_estimators=25, max_depth=3, random_state=0)
    gbm.fit(x.numpy(), y.numpy())
    forest = RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0, n_jobs=1)
    forest.fit(x.numpy(), y.numpy())
    return Fraud(data=data, mlp=mlp, gbm=gbm, forest=forest)
