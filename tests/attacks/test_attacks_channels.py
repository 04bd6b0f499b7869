"""The registry's channels: image, tabular and text attacks in one registry, looked up by
``(channel, name)``, each with its knowledge, kind and settings model; the text threat model."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from typer.testing import CliRunner

from bastion.attacks import ATTACKS, HopSkipJump, register, unregister
from bastion.attacks.registry import (
    CHANNELS,
    REGISTRY,
    attack_knowledge,
    build_attack,
    build_channel_attack,
    channel_attacks,
    parse_attack_params,
    recorded_settings,
    settings_model,
)
from bastion.attacks.settings import AttackSettings, expectation
from bastion.cli import app
from bastion.errors import ConfigError
from bastion.tabular import ConstrainedHopSkipJump, ConstrainedPGD
from bastion.text import DeepWordBug
from bastion.text.attack_base import TextAttack, build_text_attack
from bastion.text.threat import TextThreat, char_edits, edit_kind, text_words
from bastion.text.word_attacks import AttackChain, CombinedAttack, WordSubstitution

TABULAR = ["cpgd", "capgd", "random-search", "hopskipjump"]
TEXT = ["deepwordbug", "homoglyph", "invisible", "word_substitution", "combined"]
OTHER = [("tabular", n) for n in TABULAR] + [("text", n) for n in TEXT]


def test_every_channel_holds_its_attacks_and_names_are_per_channel() -> None:
    assert CHANNELS == ("image", "tabular", "text")
    assert REGISTRY["image"] is ATTACKS
    assert list(channel_attacks("tabular")) == TABULAR
    assert list(channel_attacks("text")) == TEXT
    assert ATTACKS["hopskipjump"] is HopSkipJump
    assert channel_attacks("tabular")["hopskipjump"] is ConstrainedHopSkipJump
    for channel in CHANNELS:
        for name, cls in channel_attacks(channel).items():
            assert (cls.name, cls.channel) == (name, channel)
            assert cls.kind in ("fixed-budget", "minimum-norm")
    assert [channel_attacks("tabular")[n].knowledge for n in TABULAR] == [
        "white-box",
        "white-box",
        "score-based",
        "label-only",
    ]
    assert {channel_attacks("text")[n].knowledge for n in TEXT} == {"score-based"}


def test_knowledge_comes_from_the_registry_and_the_settings() -> None:
    assert attack_knowledge("hopskipjump", channel="tabular") == ["label-only"]
    assert attack_knowledge("random-search", channel="tabular") == ["score-based"]
    assert attack_knowledge("combined", {"ranking": "delete"}, channel="text") == ["score-based"]
    assert attack_knowledge("combined", {"ranking": "gradient"}, channel="text") == ["white-box"]
    assert attack_knowledge("deepwordbug", {"scoring": "gradient"}, channel="text") == ["white-box"]
    assert attack_knowledge("cpgd") == []  # not an image attack


@pytest.mark.parametrize(("channel", "name"), OTHER)
def test_the_settings_model_matches_the_constructor(channel: str, name: str) -> None:
    model = settings_model(name, channel=channel)
    sig = inspect.signature(channel_attacks(channel)[name].__init__)
    params = {p: v for p, v in sig.parameters.items() if p != "self"}
    forwarded = [p for p, v in params.items() if v.kind is inspect.Parameter.VAR_KEYWORD]
    if forwarded:  # combined: its own settings, the rest forwarded to the word substitution
        assert forwarded == ["word"] and name == "combined"
        del params["word"]
        word = settings_model("word_substitution", channel="text").model_fields
        assert set(model.model_fields) == set(params) | set(word)
    else:
        assert set(params) == set(model.model_fields)
    for field, info in model.model_fields.items():
        if field in params:
            assert params[field].default == info.get_default(call_default_factory=True), field
        assert info.description and "\n" not in info.description, field


@pytest.mark.parametrize(("channel", "name"), OTHER)
def test_defaults_build_and_bounds_are_refused_naming_the_field(channel: str, name: str) -> None:
    attack = build_channel_attack(name, channel=channel)
    assert type(attack) is channel_attacks(channel)[name]
    model = settings_model(name, channel=channel)
    for field, info in model.model_fields.items():
        bound = next((m for m in info.metadata if getattr(m, "gt", None) is not None), None)
        low = next((m.ge for m in info.metadata if getattr(m, "ge", None) is not None), None)
        bad: Any = bound.gt if bound is not None else (low - 1 if low is not None else None)
        if bad is None:
            continue
        where = f"{channel}.attacks[0]"
        with pytest.raises(ConfigError) as e:
            build_channel_attack(name, {field: bad}, channel=channel, where=where)
        assert str(e.value) == f"{where} ({name}).{field}: expected {expectation(info)}, got {bad}"


def test_built_attacks_equal_hand_built_ones() -> None:
    tab = build_attack("cpgd", {"steps": 7, "restarts": 2}, channel="tabular")
    assert (
        isinstance(tab, ConstrainedPGD)
        and tab.params() == ConstrainedPGD(steps=7, restarts=2).params()
    )
    text = build_text_attack("deepwordbug", {"max_share": 0.5, "ops": ["swap", "delete"]})
    assert (
        isinstance(text, DeepWordBug)
        and text.params() == DeepWordBug(max_share=0.5, ops=("swap", "delete")).params()
    )
    combined = build_text_attack("combined", {"max_share": 0.2, "char_max_share": 0.4})
    assert isinstance(combined, CombinedAttack) and isinstance(combined, AttackChain)
    word, typos, glyphs = combined.attacks
    assert isinstance(word, WordSubstitution) and word.max_share == 0.2
    assert (typos.name, typos.params()["max_share"], glyphs.name) == (
        "deepwordbug",
        0.4,
        "homoglyph",
    )
    assert recorded_settings("random-search", {"queries": 9}, channel="tabular") == {
        "queries": 9,
        "p_init": 0.3,
    }
    assert parse_attack_params("hopskipjump", ["probes=8"], where="-p", channel="tabular") == {
        "probes": 8
    }


def test_unknown_names_list_the_channel_s_attacks() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^tabular\.attacks\[0\]\.name: expected one of the tabular attacks capgd, cpgd, "
        r"hopskipjump, random-search, got 'pgd'$",
    ):
        build_attack("pgd", channel="tabular", where="tabular.attacks[0]")
    with pytest.raises(
        ConfigError, match=r"expected one of the text attacks combined, deepwordbug"
    ):
        build_text_attack("textfooler")
    with pytest.raises(ConfigError, match=r"^channel: expected one of image, tabular, text"):
        channel_attacks("audio")


def test_register_checks_the_channel_s_base_class_and_unregister_the_channel() -> None:
    class NoSettings(AttackSettings):
        pass

    @register("test-only-text", knowledge="score-based", settings=NoSettings, channel="text")
    class Upper(TextAttack):
        def _attack_words(self, ex: Any, classifier: Any, generator: Any) -> list[str]:
            return [w.upper() for w in ex.words]

    try:
        assert (
            channel_attacks("text")["test-only-text"] is Upper and "test-only-text" not in ATTACKS
        )
        assert isinstance(build_text_attack("test-only-text"), Upper)
    finally:
        unregister("test-only-text", channel="text")
    assert "test-only-text" not in channel_attacks("text")
    with pytest.raises(ValueError, match=r"expected a TextAttackBase subclass"):
        register("x", knowledge="white-box", channel="text")(ConstrainedPGD)
    with pytest.raises(ValueError, match=r"channel: expected one of image, tabular, text"):
        register("x", knowledge="white-box", channel="audio")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="no text attack registered as 'x'"):
        unregister("x", channel="text")


def test_attacks_list_shows_the_channel_column_and_one_channel() -> None:
    everything = CliRunner().invoke(app, ["attacks", "list"])
    assert everything.exit_code == 0, everything.output
    lines = everything.output.splitlines()
    assert lines[0].split() == ["channel", "name", "kind", "knowledge"]
    assert ["tabular", "hopskipjump", "fixed-budget", "label-only"] in [ln.split() for ln in lines]
    assert ["image", "hopskipjump", "minimum-norm", "label-only"] in [ln.split() for ln in lines]
    one = CliRunner().invoke(app, ["attacks", "list", "hopskipjump", "--channel", "tabular"])
    assert one.output.splitlines()[0] == "hopskipjump (fixed-budget, label-only)"
    assert "probes" in one.output and "queries" not in one.output
    text = CliRunner().invoke(app, ["attacks", "list", "--channel", "text"])
    assert text.output.startswith("== text attacks") and "\ncombined (" in text.output


# -- the text threat model --------------------------------------------------------------------
def test_edit_kinds_are_told_apart() -> None:
    assert edit_kind("great", "great") is None
    assert edit_kind("great", "gr\u200beat") == "invisible"
    assert edit_kind("great", "gr\u202feat") == "invisible"  # an in-word narrow space
    assert edit_kind("great", "gr\u0435at") == "homoglyph"
    assert edit_kind("great", "graet") == "typo"
    assert edit_kind("great,", "grat,") == "typo"
    assert edit_kind("great", "fine") == "word"
    assert text_words("a gr\u202feat  film") == ["a", "gr\u202feat", "film"]


def test_the_text_threat_bounds_the_share_and_the_kinds_of_edits() -> None:
    threat = TextThreat(max_word_share=0.25, edits=("typo", "homoglyph"))
    text = "a really great film"  # 4 words: one may be edited
    assert threat.budget(text) == 1
    assert threat.allows(text, "a really graet film")
    assert not threat.allows(text, "a raelly graet film")  # two words
    assert not threat.allows(text, "a really fine film")  # a word substitution
    assert not threat.allows(text, "a really great")  # a word dropped
    assert TextThreat(edits=("word",)).allows(text, "a really graet film")  # word allows any
    assert threat.enforce([text, text], ["a really gr\u0435at film", "a really fine film"]) == [
        "a really gr\u0435at film",
        text,
    ]
    assert TextThreat.from_dict({"max_word_share": 0.5, "edits": ["typo"]}) == TextThreat(
        0.5, ("typo",)
    )
    assert threat.to_dict() == {
        "channel": "text",
        "max_word_share": 0.25,
        "edits": ["typo", "homoglyph"],
        "max_char_edits": None,
    }


def test_the_text_threat_can_bound_the_characters_edited() -> None:
    assert char_edits("great", "graet") == 2 and char_edits("great", "gr\u200beat") == 1
    threat = TextThreat(max_word_share=1.0, max_char_edits=2)
    text = "a great film"
    assert threat.allows(text, "a graet film")  # two substitutions
    assert threat.allows(text, "a gr\u200beat fiim")  # one insertion, one substitution
    assert not threat.allows(text, "a g\u200br\u200be\u200bat film")  # three insertions
    assert TextThreat.from_dict({"max_char_edits": 2}) == TextThreat(max_char_edits=2)
    with pytest.raises(ConfigError, match=r"^threat\.max_char_edits: expected an integer >= 1"):
        TextThreat(max_char_edits=0)


@pytest.mark.parametrize(
    ("given", "pattern"),
    [
        ({"max_word_share": 0}, r"^threat\.max_word_share: expected a number in \(0, 1\], got 0$"),
        ({"edits": ["emoji"]}, r"^threat\.edits: expected kinds from typo, homoglyph"),
        ({"edits": []}, r"^threat\.edits: expected kinds from"),
        ({"budget": 2}, r"^threat: unknown field\(s\) \['budget'\]"),
        ({"max_char_edits": 1.5}, r"^threat\.max_char_edits: expected an integer >= 1 or null"),
    ],
)
def test_a_bad_text_threat_names_the_field(given: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        TextThreat.from_dict(given)


def test_a_plug_in_declares_a_channel_of_its_own() -> None:
    from bastion.attacks.registry import add_channel, remove_channel

    add_channel(
        "test-only-audio", base="bastion.attacks.base:Attack", inputs="waveforms in [-1, 1]"
    )
    try:

        @register("noise", knowledge="score-based", channel="test-only-audio")
        class Noise(HopSkipJump):
            pass

        assert channel_attacks("test-only-audio") == {"noise": Noise}
        assert "noise" not in ATTACKS and ATTACKS["hopskipjump"] is HopSkipJump
        listing = CliRunner().invoke(app, ["attacks", "list"]).output
        assert ["test-only-audio", "noise", "fixed-budget", "score-based"] in [
            ln.split() for ln in listing.splitlines()
        ]
        assert "== test-only-audio attacks: waveforms in [-1, 1] ==" in listing
        with pytest.raises(ValueError, match="declared already"):
            add_channel("test-only-audio", base="bastion.attacks.base:Attack", inputs="")
    finally:
        remove_channel("test-only-audio")
    assert "test-only-audio" not in REGISTRY
    with pytest.raises(ValueError, match="a built-in channel stays"):
        remove_channel("text")
