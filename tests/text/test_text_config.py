from __future__ import annotations

import pytest

from bastion.errors import ConfigError
from bastion.text import parse_text_config


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
    ],
)
def test_errors_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_text_config(data)
