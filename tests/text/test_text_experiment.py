from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from text_fixtures import DATASETS, synthetic_corpus

from bastion.errors import ConfigError
from bastion.text import load_text_model, parse_text_config, run_text_experiment


def _write_sms(folder: Path) -> None:
    texts, labels = synthetic_corpus(200, seed=2)
    lines = [f"{'spam' if y else 'ham'}\t{t}" for t, y in zip(texts, labels, strict=True)]
    (folder / "SMSSpamCollection").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _config(**extra: object):  # type: ignore[no-untyped-def]
    return parse_text_config(
        {
            "dataset": "sms_spam",
            "vocab": {"max_length": 16},
            "model": {"embed_dim": 16, "num_filters": 8, "dropout": 0.1},
            "training": {"epochs": 6, "batch_size": 16, "lr": 0.01},
            "n_attack": 12,
            **extra,
        }
    )


def test_experiment_trains_attacks_and_saves(tmp_path: Path) -> None:
    _write_sms(tmp_path)
    events: list[dict[str, object]] = []
    out = run_text_experiment(
        _config(attack_classes=["spam"]), tmp_path, tmp_path / "run", seed=0, progress=events.append
    )
    json.dumps(out)
    assert out["kind"] == "text" and out["n_attacked"] == 12
    assert set(out["attacks"]) == {
        "word_substitution",
        "deepwordbug",
        "homoglyph",
        "invisible",
        "combined",
    }
    for per_target in out["attacks"].values():
        assert set(per_target) == {
            "params",
            "standard",
            "standard+sanitizer",
            "hardened",
            "hardened+sanitizer",
        }
    invisible = out["attacks"]["invisible"]
    assert invisible["hardened+sanitizer"]["n_success"] == 0
    assert out["models"]["standard"]["clean_accuracy"] > 0.9
    for role in ("standard", "hardened"):
        model, vocab, meta = load_text_model(tmp_path / "run" / "models" / f"text-{role}")
        assert meta["role"] == role and len(vocab) == model.spec.vocab_size
    assert events[-1]["stage"] == "done"
    assert any(e.get("stage") == "attack" for e in events)


def test_synonym_encoding_gives_the_hardened_model_codes(tmp_path: Path) -> None:
    _write_sms(tmp_path)
    cfg = _config(
        attacks=["word_substitution"],
        hardening={"synonym_encoding": True, "encoding_max_cluster": 4},
    )
    out = run_text_experiment(cfg, tmp_path, tmp_path / "run", seed=0)
    enc = out["synonym_encoding"]
    assert enc["method"] == "sem" and enc["largest_cluster"] <= 4 and enc["edges"] > 0
    hardened, _, _ = load_text_model(tmp_path / "run" / "models" / "text-hardened")
    standard, _, _ = load_text_model(tmp_path / "run" / "models" / "text-standard")
    assert standard.codes is None and hardened.codes is not None
    merged = int((hardened.codes != torch.arange(len(hardened.codes))).sum())
    assert merged > 0  # some words share a code


def test_typo_neighbours_widen_the_defence_table_only(tmp_path: Path) -> None:
    _write_sms(tmp_path)
    outs = {
        flag: run_text_experiment(
            _config(attacks=["word_substitution"], hardening={"typo_neighbours": flag}),
            tmp_path,
            tmp_path / f"run-{flag}",
            seed=0,
        )
        for flag in (False, True)
    }
    on, off = outs[True]["candidates"], outs[False]["candidates"]
    assert on["defence_typo_neighbours"] is True and off["defence_typo_neighbours"] is False
    # the attack on the standard model is the same: its candidates do not change
    word = {flag: out["attacks"]["word_substitution"]["standard"] for flag, out in outs.items()}
    assert word[True]["n_success"] == word[False]["n_success"]


def test_unknown_attack_class_is_a_config_error(tmp_path: Path) -> None:
    _write_sms(tmp_path)
    cfg = _config(attack_classes=["eggs"], attacks=["invisible"])
    with pytest.raises(ConfigError, match="attack_classes"):
        run_text_experiment(cfg, tmp_path, tmp_path / "run", seed=0)


@pytest.mark.slow
def test_movie_review_word_cnn_end_to_end(tmp_path: Path) -> None:
    path = DATASETS / "movie_review_polarity"
    if not (path / "rt-polarity.pos").is_file():
        pytest.skip("Movie Review polarity not available")
    cfg = parse_text_config({"dataset": "movie_review", "n_attack": 100, "training": {"epochs": 4}})
    out = run_text_experiment(cfg, path, tmp_path, seed=0)
    assert out["models"]["standard"]["clean_accuracy"] > 0.70
    assert out["attacks"]["invisible"]["standard+sanitizer"]["success_rate"] <= 0.05
