"""The YAML block of docs/text-transformer.md parses as shown, is refused with a word-model
section beside it, and runs (slow) on a subset with the real MiniLM and Movie Review."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import shared_data
from bastion.errors import ConfigError
from bastion.text import parse_text_config, run_text_experiment

DOC = Path(__file__).resolve().parents[2] / "docs" / "text-transformer.md"


def _block() -> dict[str, Any]:
    (text,) = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    doc = yaml.safe_load(text)
    assert set(doc) == {"text"}
    return dict(doc["text"])


def test_the_docs_block_parses_and_word_model_sections_are_refused() -> None:
    cfg = parse_text_config(_block())
    assert cfg.transformer is not None and cfg.transformer.max_length == 64
    assert cfg.transformer.sentence_min_cosine == 0.8
    with pytest.raises(ConfigError, match=r"model: not used with a transformer"):
        parse_text_config({**_block(), "model": {"arch": "bilstm"}})
    bad = copy.deepcopy(_block())
    bad["hardening"]["smoothing"] = {"enabled": True}
    with pytest.raises(ConfigError, match="not available for a transformer"):
        parse_text_config(bad)
    bad = copy.deepcopy(_block())
    bad["transformer"]["precision"] = "fp16"
    with pytest.raises(ConfigError, match=r"text\.transformer\.precision"):
        parse_text_config(bad)


@pytest.mark.slow
@pytest.mark.skipif(
    not (shared_data.MINILM / "model.safetensors").exists()
    or not (shared_data.DATASETS / "movie_review_polarity").is_dir(),
    reason="MiniLM or Movie Review not found",
)
def test_the_docs_block_runs_on_a_subset(tmp_path: Path) -> None:
    block = _block()
    block["n_attack"] = 3
    block["transformer"].update(
        {
            "path": str(shared_data.MINILM),
            "max_train": 96,
            "max_val": 32,
            "max_test": 32,
            "epochs": 1,
            "batch_size": 16,
            "max_length": 32,
        }
    )
    out = run_text_experiment(
        parse_text_config(block),
        shared_data.DATASETS / "movie_review_polarity",
        tmp_path,
        seed=0,
    )
    assert set(out["attacks"]) == {"word_substitution", "homoglyph", "invisible", "combined"}
    meaning = out["attacks"]["word_substitution"]["standard"]["meaning"]
    assert set(meaning) == {"substituted_words", "lexicon_synonym_share", "mean_sentence_cosine"}
    sc = out["transformer"]["sentence_constraint"]
    assert sc["min_cosine"] == 0.8 and 0 <= sc["rejected"] <= sc["checked"]
    assert out["attacks"]["invisible"]["hardened+sanitizer"]["success_rate"] in (0.0, None)
    assert (tmp_path / "models" / "text-hardened" / "bastion-text.json").is_file()
