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
