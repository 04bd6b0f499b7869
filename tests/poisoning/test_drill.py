"""The one drill runner (:func:`bastion.poisoning.drill.run_drill`) with the tabular channel on
breast cancer, and the trigger word's repeats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bastion.data import load_dataset
from bastion.errors import ConfigError
from bastion.poisoning.drill import run_drill
from bastion.poisoning.tabular_drill import (
    TabularDrillChannel,
    TabularDrillSettings,
    poison_tabular_split,
)
from bastion.poisoning.text_backdoor import (
    apply_trigger_word,
    insert_trigger,
    trigger_word_poison,
)


@pytest.fixture(scope="module")
def channel() -> TabularDrillChannel:
    ds = load_dataset("breast-cancer", seed=0)
    settings = TabularDrillSettings(rate=0.05, target=1, epochs=30, seed=0)
    pattern, p = poison_tabular_split(ds, settings)
    return TabularDrillChannel(ds, p, pattern, settings)


def test_run_drill_quarantines_the_union_of_the_chosen_scans_and_retrains_without_them(
    channel: TabularDrillChannel,
) -> None:
    by = ["feature-value", "activation-clustering"]
    out = run_drill(channel, by)
    assert list(out.scans) == ["feature-value", *by[1:], "spectral-signatures", "spectre"]
    union = out.outcomes[by[0]].flagged | out.outcomes[by[1]].flagged
    assert torch.equal(out.quarantine.mask, union)
    for e in out.quarantine.entries:  # every reason of an entry is a chosen scan that flagged it
        assert e.reasons and all(bool(out.outcomes[r].flagged[e.index]) for r in e.reasons)
    assert out.retrained is not None and out.retrained["kept"] == int((~union).sum())
    assert out.quarantined["recall"] == 1.0, out.quarantined  # the value scan finds them all
    assert out.undefended["attack_success_rate"] >= 0.8, out.undefended
    assert out.retrained["attack_success_rate"] <= 0.05, out.retrained
    none = run_drill(channel, [], retrain=False)
    assert none.defended is None and none.retrained is None and not none.quarantine.entries
    with pytest.raises(ConfigError, match=r"^quarantine_by: \['magic'\] not among the scans"):
        run_drill(channel, ["magic"])


def test_trigger_word_repeats_insert_that_many_copies_and_one_copy_is_unchanged() -> None:
    texts = ["win a free prize now call", "see you at home tonight", "ok"]
    labels = torch.tensor([1, 0, 1])
    p = trigger_word_poison(texts, labels, rate=0.34, num_classes=2, repeats=3, seed=1)
    assert p.settings["repeats"] == 3
    for i in p.indices.tolist():
        assert p.texts[i].split().count("cf") == 3
        assert [w for w in p.texts[i].split() if w != "cf"] == texts[i].split()
    triggered = apply_trigger_word(texts, "cf", seed=2, repeats=2)
    assert [t.split().count("cf") for t in triggered] == [2, 2, 2]
    # repeats=1 draws exactly as the single insertion did (same generator calls)
    a = insert_trigger("a b c d", "cf", np.random.default_rng(5), 1)
    rng = np.random.default_rng(5)
    at = int(rng.integers(0, 5))
    words = ["a", "b", "c", "d"]
    assert a.split() == [*words[:at], "cf", *words[at:]]
    with pytest.raises(ConfigError, match=r"^poisoning\.attack\.repeats: expected an integer"):
        trigger_word_poison(texts, labels, rate=0.34, num_classes=2, repeats=0)
