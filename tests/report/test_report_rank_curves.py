"""A model trained under torchrun carries each process's loss per epoch
(``train_loss_rank<r>``); the report reads them and draws them dotted under the model's curve,
saying so in the caption. Models without them are drawn as before."""

from __future__ import annotations

import copy
import math
from typing import Any

from bastion.report import render_html
from bastion.report._view import parse_scorecard
from bastion.report.plots import plot_training_curves


def _with_ranks(scorecard: dict[str, Any]) -> dict[str, Any]:
    """The first model's history with two processes' losses, the first epoch on one process."""
    doc = copy.deepcopy(scorecard)
    name = next(iter(doc["models"]))
    for i, record in enumerate(doc["models"][name]["training"]["history"]):
        if i == 0:
            continue  # an epoch run before a resume with two processes
        record["train_loss_rank0"] = record["train_loss"] * 0.98
        record["train_loss_rank1"] = record["train_loss"] * 1.02
    return doc


def test_rank_losses_are_parsed_per_process(scorecard: dict[str, Any]) -> None:
    view = parse_scorecard(_with_ranks(scorecard))
    first, second = view.models[0], view.models[1]
    assert first.history is not None and second.history is not None
    assert len(first.history.rank_loss) == 2
    r0, r1 = first.history.rank_loss
    assert math.isnan(r0[0]) and math.isnan(r1[0])
    assert r0[1] == first.history.train_loss[1] * 0.98
    assert len(r0) == len(first.history)
    assert second.history.rank_loss == ()


def test_report_draws_and_explains_them(scorecard: dict[str, Any]) -> None:
    plain = render_html(scorecard)
    ranked = render_html(_with_ranks(scorecard))
    assert "each process&#x27;s loss" in ranked or "each process's loss" in ranked
    assert "each process" not in plain
    assert plot_training_curves(_with_ranks(scorecard)) != plot_training_curves(scorecard)
