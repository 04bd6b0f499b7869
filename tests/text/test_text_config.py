from __future__ import annotations

import pytest

from bastion.errors import ConfigError
from bastion.text import InvisibleCharAttack, SynonymLexicon, parse_text_config
from bastion.text.experiment import build_attacks


def test_defaults() -> None:
    cfg = parse_text_config({"dataset": "movie_review"})
    assert cfg.model.arch == "word_cnn" and cfg.vocab.max_length == 40
    assert "combined" in cfg.attacks


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"dataset": "imdb"}, "text.dataset"),
        ({"dataset": "sms_spam", "epochs": 3}, "text.epochs"),
        ({"dataset": "sms_spam", "training": {"epochs": "3"}}, "text.training.epochs"),
        ({"dataset": "sms_spam", "attack": {"max_share": 1.5}}, "text.attack.max_share"),
        ({"dataset": "sms_spam", "attacks": ["word_substitution", "word_substitution"]}, "once"),
        ({"dataset": "sms_spam", "vocab": {"max_length": 3}}, "widest filter"),
        ({"dataset": "sms_spam", "attack": {"invisible_family": "emoji"}}, "invisible_family"),
        ({"dataset": "sms_spam", "attack": {"invisible_characters": ["ab"]}}, "single"),
        ({"dataset": "sms_spam", "attack": {"invisible_characters": []}}, "invisible_characters"),
    ],
)
def test_errors_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_text_config(data)


def test_invisible_attack_settings_reach_the_attack() -> None:
    def invisible(attack: dict[str, object]) -> InvisibleCharAttack:
        cfg = parse_text_config({"dataset": "sms_spam", "attacks": ["invisible"], "attack": attack})
        built = build_attacks(cfg, SynonymLexicon())["invisible"]
        assert isinstance(built, InvisibleCharAttack)
        return built

    assert invisible({}).family == "all"
    assert invisible({"invisible_family": "space"}).family == "space"
    former = invisible({"invisible_characters": ["\u200b"]})
    assert former.family is None and former.characters == ("\u200b",)
