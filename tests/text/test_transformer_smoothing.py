"""Randomized smoothing on the transformer classifier (real MiniLM from ../shared/models):
word-piece noise that spares special tokens, deterministic pooled answers, saliency over the
noisy copies, an attack that queries the smoothed classifier, and (slow) the transformer
experiment with ``hardening.smoothing`` on a tiny fine-tuning, attacked adaptively."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

import shared_data
from bastion.errors import ConfigError
from bastion.text import (
    SmoothedTextClassifier,
    SmoothedTransformerClassifier,
    SynonymLexicon,
    WordSubstitution,
    parse_text_config,
    run_text_experiment,
    smooth_classifier,
)
from bastion.text.transformer import (
    PooledEncoderClassifier,
    TransformerTextClassifier,
    load_pretrained_encoder,
)

MINILM = shared_data.MINILM
pytestmark = pytest.mark.skipif(
    not (MINILM / "model.safetensors").exists(), reason="MiniLM not found beside the project"
)
TEXTS = [
    "a great and moving film , full of warm humour",
    "an awful , dull movie that drags on",
    "the plot is thin but the actors are good",
]


@pytest.fixture(scope="module")
def plain() -> TransformerTextClassifier:
    encoder, tok = load_pretrained_encoder(MINILM)
    model = PooledEncoderClassifier(
        copy.deepcopy(encoder),
        classes=("negative", "positive"),
        max_length=32,
        pad_id=tok.pad_token_id,
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():  # a head that reads the pooled embedding strongly: answers vary
        model.head.weight.mul_(40.0)
    return TransformerTextClassifier(model, tok)


def test_noise_masks_word_pieces_and_spares_special_tokens(
    plain: TransformerTextClassifier,
) -> None:
    tok = plain.tokenizer
    smoothed = SmoothedTransformerClassifier(plain, samples=64, mask_rate=0.5, seed=3)
    row = torch.tensor([plain.token_ids([TEXTS[0]])[0]])
    copies = smoothed.noisy_rows(row)
    assert copies.shape == (64, row.shape[1])
    assert (copies[:, 0] == tok.cls_token_id).all() and (copies[:, -1] == tok.sep_token_id).all()
    inner, original = copies[:, 1:-1], row[:, 1:-1].expand(64, -1)
    changed = inner != original
    assert (inner[changed] == tok.mask_token_id).all()  # RanMASK: masked pieces become [MASK]
    assert 0.4 < changed.float().mean().item() < 0.6
    assert torch.equal(copies, smoothed.noisy_rows(row))  # the text's own seed
    other = SmoothedTransformerClassifier(plain, samples=64, mask_rate=0.5, seed=4)
    assert not torch.equal(copies, other.noisy_rows(row))


def test_pooled_answers_are_deterministic_and_sum_to_one(plain: TransformerTextClassifier) -> None:
    mean = SmoothedTransformerClassifier(plain, samples=12, mask_rate=0.3)
    probs = mean(TEXTS)
    assert probs.shape == (3, 2) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(dim=1), torch.ones(3), atol=1e-5)
    # the same text answers the same alone and inside another batch
    assert torch.allclose(mean([TEXTS[1]])[0], probs[1], atol=1e-5)
    assert not torch.allclose(probs, plain(TEXTS), atol=1e-4)  # the noise changes the answer
    vote = SmoothedTransformerClassifier(plain, samples=12, mask_rate=0.3, aggregate="vote")
    shares = vote(TEXTS) * 12
    assert torch.allclose(shares, shares.round(), atol=1e-4)
    off = SmoothedTransformerClassifier(plain, samples=12, mask_rate=0.0)
    assert torch.equal(off(TEXTS), plain(TEXTS))
    assert mean([]).shape == (0, 2)


def test_saliency_averages_over_the_noisy_copies(plain: TransformerTextClassifier) -> None:
    words = TEXTS[0].split()
    smoothed = SmoothedTransformerClassifier(plain, samples=8, mask_rate=0.3)
    scores = smoothed.word_saliency(words, 1)
    assert scores.shape == (len(words),) and torch.isfinite(scores).all()
    assert not torch.allclose(scores, plain.word_saliency(words, 1))
    assert torch.equal(scores, smoothed.word_saliency(words, 1))


def test_the_attack_queries_the_smoothed_classifier(plain: TransformerTextClassifier) -> None:
    smoothed = SmoothedTransformerClassifier(plain, samples=4, mask_rate=0.2)
    rows: list[int] = []
    hook = plain.model.register_forward_hook(lambda m, i, o: rows.append(int(o.shape[0])))
    try:
        labels = smoothed(TEXTS).argmax(dim=1).tolist()  # every text starts correct
        rows.clear()
        attack = WordSubstitution(candidates=SynonymLexicon(), ranking="delete", max_share=0.5)
        result = attack(smoothed, TEXTS, labels, generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    # each query is answered by `samples` noisy copies through the model
    assert sum(rows) == 4 * int(sum(result.queries))
    judged = smoothed(result.adversarial).argmax(dim=1)
    for i in range(len(TEXTS)):
        assert bool(result.success[i]) == (int(judged[i]) != labels[i])


def test_smooth_classifier_picks_the_wrapper_and_bad_settings_name_the_field(
    plain: TransformerTextClassifier,
) -> None:
    assert isinstance(smooth_classifier(plain, mask_rate=0.1), SmoothedTransformerClassifier)
    with pytest.raises(ConfigError, match=r"expected a TextClassifier.*SmoothedTransformer"):
        SmoothedTextClassifier(plain)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"smoothing\.mask_rate"):
        SmoothedTransformerClassifier(plain, mask_rate=1.0)
    with pytest.raises(ConfigError, match=r"smoothing\.substitute_rate.*table"):
        SmoothedTransformerClassifier(plain, substitute_rate=0.2)
    with pytest.raises(ConfigError, match=r"smoothing\.aggregate"):
        SmoothedTransformerClassifier(plain, aggregate="median")  # type: ignore[arg-type]


def test_substitution_draws_from_the_word_piece_table(plain: TransformerTextClassifier) -> None:
    tok = plain.tokenizer
    good, fine = tok.convert_tokens_to_ids(["great", "fine"])
    table = torch.full((tok.vocab_size, 2), -1, dtype=torch.int64)
    table[good, 0] = fine
    smoothed = SmoothedTransformerClassifier(
        plain, samples=32, mask_rate=0.0, substitute_rate=0.5, table=table
    )
    row = torch.tensor([plain.token_ids(["a great film"])[0]])
    copies = smoothed.noisy_rows(row)
    position = row[0].tolist().index(good)
    assert set(copies[:, position].tolist()) == {good, fine}
    others = [p for p in range(row.shape[1]) if p != position]
    assert torch.equal(copies[:, others], row[:, others].expand(32, -1))


def _config(smoothing: dict[str, Any]) -> Any:
    return parse_text_config(
        {
            "dataset": "movie_review",
            "n_attack": 4,
            "attacks": ["word_substitution"],
            "attack": {"ranking": "gradient", "neighbours": 8},
            "hardening": {"smoothing": smoothing},
            "transformer": {
                "path": str(MINILM),
                "max_train": 64,
                "max_val": 16,
                "max_test": 24,
                "epochs": 1,
                "batch_size": 16,
                "max_length": 24,
            },
        }
    )


def test_transformer_smoothing_config_refuses_noisy_training() -> None:
    with pytest.raises(ConfigError, match=r"train_noise.*not available for a transformer"):
        _config({"enabled": True})
    with pytest.raises(ConfigError, match="train_epochs"):
        _config({"enabled": True, "train_noise": False, "train_epochs": 2})


@pytest.mark.slow
@pytest.mark.skipif(
    not (shared_data.DATASETS / "movie_review_polarity").is_dir(),
    reason="Movie Review not found",
)
def test_the_experiment_smooths_the_hardened_transformer_adaptively(tmp_path: Path) -> None:
    sm = {"enabled": True, "train_noise": False, "samples": 6, "mask_rate": 0.2}
    cfg = _config({**sm, "aggregate": "vote"})
    out = run_text_experiment(cfg, shared_data.DATASETS / "movie_review_polarity", tmp_path, seed=0)
    assert out["smoothing"]["samples"] == 6 and out["smoothing"]["aggregate"] == "vote"
    hardened = out["models"]["hardened"]
    assert 0.0 <= hardened["clean_accuracy"] <= 1.0
    assert 0.0 <= hardened["clean_accuracy_unsmoothed"] <= 1.0
    per = out["attacks"]["word_substitution"]
    for target in ("hardened", "hardened+sanitizer"):
        assert per[target]["adaptive"].startswith("direct search")
        direct, total = per[target]["direct_success_rate"], per[target]["success_rate"]
        assert direct is None or total >= direct
    assert "adaptive" not in per["standard"]
    # the standard targets are the plain transformer: a direct attack only
    assert per["standard"]["n"] == 4
