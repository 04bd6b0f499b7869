"""The ``text:`` section names its attacks through the registry's text channel: an unknown
name lists the channel's attacks, and the attacks it builds are the registry's, with the
settings of its ``attack:`` section."""

from __future__ import annotations

import pytest

from bastion.attacks.registry import attack_knowledge
from bastion.errors import ConfigError
from bastion.text import DeepWordBug, HomoglyphAttack, SynonymLexicon, parse_text_config
from bastion.text.config import ALL_TEXT_ATTACKS, attack_settings
from bastion.text.experiment_parts import build_attacks
from bastion.text.word_attacks import CombinedAttack, WordSubstitution


def test_an_unknown_attack_lists_the_registry_s_text_attacks() -> None:
    with pytest.raises(ConfigError) as e:
        parse_text_config({"dataset": "sms_spam", "attacks": ["textfooler"]})
    assert str(e.value) == (
        "text.attacks.0: Input should be 'deepwordbug', 'homoglyph', 'invisible', "
        "'word_substitution' or 'combined' (the text attacks), got 'textfooler'"
    )


def test_the_attack_section_reaches_the_registered_attacks() -> None:
    cfg = parse_text_config(
        {
            "dataset": "sms_spam",
            "attack": {"max_share": 0.2, "char_max_share": 0.4, "ranking": "gradient"},
        }
    )
    assert list(cfg.attacks) == list(ALL_TEXT_ATTACKS)
    source = SynonymLexicon()
    built = build_attacks(cfg, source, constraint=None)
    assert list(built) == list(ALL_TEXT_ATTACKS)
    word = built["word_substitution"]
    assert isinstance(word, WordSubstitution) and word.candidates is source
    assert (word.ranking, word.max_share) == ("gradient", 0.2)
    assert built["deepwordbug"].params() == DeepWordBug(max_share=0.4).params()
    combined = built["combined"]
    assert isinstance(combined, CombinedAttack)
    parts = [type(a) for a in combined.attacks]
    assert parts == [WordSubstitution, DeepWordBug, HomoglyphAttack]
    assert attack_settings(cfg.attack, "homoglyph") == {"max_share": 0.4}
    knowledge = {
        a: attack_knowledge(a, attack_settings(cfg.attack, a), channel="text") for a in cfg.attacks
    }
    assert knowledge == {
        "word_substitution": ["white-box"],
        "deepwordbug": ["score-based"],
        "homoglyph": ["score-based"],
        "invisible": ["score-based"],
        "combined": ["white-box"],
    }


def test_the_scorecard_states_each_channel_attack_s_knowledge_from_the_registry() -> None:
    """The scorecard's ``evaluation.attacks`` of a text-only and a tabular-only run: what each
    attack knows comes from the registry (gradient ranking makes the word attacks
    white-box)."""
    from pathlib import Path

    from bastion.config import load_config
    from bastion.pipeline import _evaluated_threat_and_attacks

    examples = Path(__file__).resolve().parents[2] / "examples"
    text, _ = load_config(examples / "text-sms-spam.yaml")
    assert text.text is not None
    gradient = text.model_copy(
        update={
            "text": text.text.model_copy(
                update={"attack": text.text.attack.model_copy(update={"ranking": "gradient"})}
            )
        }
    )
    for cfg, white in ((text, set()), (gradient, {"word_substitution", "combined"})):
        threat, attacks = _evaluated_threat_and_attacks(cfg, None)
        assert threat["channel"] == "text"
        assert {a["name"]: a["knowledge"] for a in attacks} == {
            a: "white-box" if a in white else "score-based" for a in cfg.text.attacks
        }
    fraud, _ = load_config(examples / "fraud-tabular.yaml")
    threat, attacks = _evaluated_threat_and_attacks(fraud, None)
    assert threat["channel"] == "tabular"
    assert {a["name"]: a["knowledge"] for a in attacks} == {
        "cpgd": "white-box",
        "capgd": "white-box",
        "random-search": "score-based",
        "hopskipjump": "label-only",
    }
