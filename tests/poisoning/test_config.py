"""The ``poisoning:`` section of a run config: validated, errors naming the field."""

from __future__ import annotations

import pytest

from bastion.config import parse_config
from bastion.errors import ConfigError

BASE = {"name": "x", "models": [{"name": "b", "objective": {"name": "standard"}}]}


def test_poisoning_section_is_optional_and_parsed():
    assert parse_config(BASE).poisoning_config() is None
    cfg = parse_config({**BASE, "poisoning": {"attack": {"rate": 0.1, "size": 2}}})
    p = cfg.poisoning_config()
    assert p is not None and p.attack is not None
    assert (
        p.attack.rate == 0.1 and p.attack.size == 2 and p.scan.methods == ["activation-clustering"]
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"attack": {"rate": 1.5}},
            r"poisoning\.attack\.rate: Input should be less than or equal to 1",
        ),
        ({"attack": {"rate": -0.1}}, r"poisoning\.attack\.rate"),
        ({"attack": {"name": "nope"}}, r"poisoning\.attack\.name"),
        ({"scan": {"methods": ["magic"]}}, r"poisoning\.scan\.methods\.0"),
        ({"scan": {"eps": 0.9}}, r"poisoning\.scan\.eps"),
        ({"surprise": 1}, r"poisoning\.surprise: Extra inputs are not permitted"),
        ([1, 2], r"poisoning: Input should be a valid dictionary"),
    ],
)
def test_bad_poisoning_settings_get_one_line_naming_the_field(section, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_config({**BASE, "poisoning": section}, source="run.yaml")
    assert "\n" not in str(info.value)
