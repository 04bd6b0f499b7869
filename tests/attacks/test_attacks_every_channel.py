"""The conformance suite over every registered tabular and text attack, parametrised from the
registry (the image channel's run is ``test_attacks_every_registered.py``): an attack that
enters any channel with ``@register`` is checked without anyone adding it.

Tabular attacks run on a small MLP fitted to the fraud example (constraints, costs, one-hot
groups) under a cost-weighted linf threat; text attacks on a lexicon classifier (a text is
positive when it holds a positive word), so every kind of edit of that word fools it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from attack_toy import single_thread
from test_attacks_every_registered import CHEAP, _train_tiny
from torch import Tensor, nn

from bastion.attacks import ATTACKS
from bastion.attacks.conformance import (
    AttackConformanceError,
    check_queries,
    check_tabular_attack,
    check_text_attack,
)
from bastion.attacks.registry import CHANNELS, build_attack, channel_attacks
from bastion.tabular import TabularThreat
from bastion.tabular.loading import load_constrained_csv
from bastion.tabular.training import build_tabular_mlp
from bastion.text.attack_base import build_text_attack
from bastion.text.threat import TextThreat

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"

#: name -> cheap settings (an attack missing here runs with its defaults)
TABULAR_CHEAP: dict[str, dict[str, Any]] = {
    "cpgd": {"steps": 10},
    "capgd": {"steps": 10},
    "random-search": {"queries": 40},
    "hopskipjump": {"iterations": 3, "probes": 10, "init_tries": 30, "binary_steps": 6},
}
#: composite text attacks: their later attacks re-check texts without counting them again
COMPOSITE = {"combined"}


@dataclass(frozen=True)
class Rows:
    model: nn.Module
    x: Tensor
    y: Tensor
    threat: TabularThreat


def _fit(x: Tensor, y: Tensor) -> nn.Module:
    mean = tuple(float(v) for v in x.mean(dim=0))
    std = tuple(max(float(v), 1e-3) for v in x.std(dim=0))
    model = build_tabular_mlp(x.shape[1], 2, mean=mean, std=std, hidden=(16,), seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def rows() -> Iterator[Rows]:
    with single_thread():
        data = load_constrained_csv(EXAMPLES / "fraud.csv", EXAMPLES / "fraud-schema.yaml", seed=0)
        with torch.random.fork_rng():
            model = _fit(data.train.x, data.train.y)
        assert data.schema is not None
        threat = TabularThreat(norm="linf", eps=0.1, schema=data.schema)
        yield Rows(model, data.test.x[:16], data.test.y[:16], threat)


POSITIVE = frozenset({"good", "great"})
NEGATIVE = frozenset({"bad", "dull"})
TEXTS = [
    "the film was good",
    "a great story and fine actors",
    "the plot was bad",
    "good music but a dull ending overall",
    "really great",
    "the ending was dull",
]
LABELS = [1, 1, 0, 0, 1, 0]


def lexicon_classifier(texts: Sequence[str]) -> Tensor:
    """``(N, 2)`` probabilities: positive words count +1, negative ones -1, a text without
    either is (narrowly) negative."""
    rows = []
    for text in texts:
        words = [w.strip(".,!?").lower() for w in text.split()]
        score = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
        p = torch.sigmoid(torch.tensor(3.0 * score - 0.2))
        rows.append(torch.stack([1 - p, p]))
    return torch.stack(rows) if rows else torch.zeros(0, 2)


def test_every_channel_is_covered_by_a_conformance_run() -> None:
    assert set(CHANNELS) == {"image", "tabular", "text"}
    assert channel_attacks("image") is ATTACKS  # test_attacks_every_registered.py
    assert set(TABULAR_CHEAP) == set(channel_attacks("tabular"))
    assert set(channel_attacks("text")) >= COMPOSITE


def test_the_fixtures_are_attackable(rows: Rows) -> None:
    acc = float((rows.model(rows.x).argmax(1) == rows.y).float().mean())
    assert acc >= 0.6
    assert [int(p.argmax()) for p in lexicon_classifier(TEXTS)] == LABELS


@pytest.mark.parametrize(
    "name", [n for n, c in ATTACKS.items() if c.knowledge in ("score-based", "label-only")]
)
def test_every_black_box_image_attack_counts_its_queries(name: str) -> None:
    with single_thread():
        tiny = _train_tiny()
        settings, threat, _ = CHEAP[name]
        passed = check_queries(
            lambda: build_attack(name, settings), tiny.model, tiny.x, tiny.y, threat
        )
    assert passed == ["queries-counted"]


@pytest.mark.parametrize("name", list(channel_attacks("tabular")))
def test_every_tabular_attack_conforms(rows: Rows, name: str) -> None:
    def make() -> Any:
        return build_attack(name, TABULAR_CHEAP.get(name, {}), channel="tabular")

    with single_thread():
        passed = check_tabular_attack(make, rows.model, rows.x, rows.y, rows.threat, seed=2)
    assert {"feasible", "admissible", "repeatable", "stronger-than-clean"} <= set(passed)
    black_box = channel_attacks("tabular")[name].knowledge != "white-box"
    assert ("queries-counted" in passed) == black_box


@pytest.mark.parametrize("name", list(channel_attacks("text")))
def test_every_text_attack_conforms(name: str) -> None:
    threat = TextThreat(max_word_share=0.5)
    passed = check_text_attack(
        lambda: build_text_attack(name),
        lexicon_classifier,
        TEXTS,
        LABELS,
        threat,
        seed=3,
        exact_queries=name not in COMPOSITE,
    )
    assert passed == [
        "shapes",
        "inputs-untouched",
        "within-threat",
        "success-consistent",
        "repeatable",
        "stronger-than-clean",
        "queries-counted",
        "empty-batch",
    ]


def test_the_text_checks_catch_a_broken_attack() -> None:
    """An attack whose edits leave the threat is reverted by the threat, so it fools nothing;
    one that under-counts its queries is caught."""
    typos_only = TextThreat(max_word_share=0.5, edits=("typo",))
    with pytest.raises(AttackConformanceError, match="no stronger than no attack"):
        check_text_attack(
            lambda: build_text_attack("homoglyph"), lexicon_classifier, TEXTS, LABELS, typos_only
        )
    with pytest.raises(AttackConformanceError, match="queries add up to"):
        check_text_attack(
            lambda: build_text_attack("combined"), lexicon_classifier, TEXTS, LABELS, typos_only
        )
