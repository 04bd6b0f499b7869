from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from text_fixtures import synthetic_corpus, tiny_word_cnn_classifier

from bastion.errors import ConfigError
from bastion.text import (
    DeepWordBug,
    SmoothedTextClassifier,
    SubstitutionTable,
    SynonymLexicon,
    TextClassifier,
    TextTrainSettings,
    TokenNoise,
    WordSubstitution,
    build_text_model,
    clean_accuracy,
    load_text_dataset,
    load_text_model,
    parse_text_config,
    run_text_experiment,
    text_seed,
    train_text_model,
)
from bastion.text.vocab import PAD_ID, UNK_ID

TEXTS = [
    "the movie was good and the actors were great",
    "a dull and boring story with terrible actors",
    "wonderful",
    "",
    "the plot was awful , really awful , but the film was charming",
]


_classifier = tiny_word_cnn_classifier


@pytest.fixture(scope="module")
def base() -> TextClassifier:
    torch.set_num_threads(1)
    return _classifier()


def _smoothed(base: TextClassifier, **kw: object) -> SmoothedTextClassifier:
    settings: dict[str, object] = {
        "samples": 8,
        "mask_rate": 0.3,
        "substitute_rate": 0.3,
        "candidates": SynonymLexicon(),
    }
    settings.update(kw)
    return SmoothedTextClassifier(base, **settings)  # type: ignore[arg-type]


def test_shapes_probabilities_and_determinism(base: TextClassifier) -> None:
    clf = _smoothed(base)
    probs = clf(TEXTS)
    assert probs.shape == (len(TEXTS), 2) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(len(TEXTS)))
    assert (probs >= 0).all()
    # same answer again, in another order, one by one, and from a fresh instance
    torch.testing.assert_close(clf(TEXTS), probs, rtol=0, atol=0)
    torch.testing.assert_close(clf(TEXTS[::-1]), probs.flip(0), rtol=0, atol=0)
    for i, text in enumerate(TEXTS):
        torch.testing.assert_close(clf([text])[0], probs[i], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(_smoothed(base)(TEXTS), probs, rtol=0, atol=0)
    assert clf([]).shape == (0, 2)
    assert torch.equal(clf.predict(TEXTS), probs.argmax(dim=1))
    # the noise really acts: smoothing differs from the plain model, and another seed differs
    assert not torch.allclose(probs, base(TEXTS))
    assert not torch.equal(_smoothed(base, seed=1)(TEXTS), probs)


def test_vote_shares_are_multiples_of_one_over_samples(base: TextClassifier) -> None:
    clf = _smoothed(base, aggregate="vote", samples=5)
    probs = clf(TEXTS)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(len(TEXTS)))
    torch.testing.assert_close(probs * 5, (probs * 5).round())


@pytest.mark.parametrize("aggregate", ["mean", "vote"])
def test_no_noise_is_exactly_the_wrapped_classifier(base: TextClassifier, aggregate: str) -> None:
    clf = _smoothed(base, mask_rate=0.0, substitute_rate=0.0, samples=3, aggregate=aggregate)
    assert torch.equal(clf(TEXTS), base(TEXTS))
    words = TEXTS[0].split()
    assert torch.equal(clf.word_saliency(words, 1), base.word_saliency(words, 1))


def test_noisy_copies_mask_and_substitute_only_words(base: TextClassifier) -> None:
    vocab = base.vocab
    table = SubstitutionTable(vocab, SynonymLexicon(), k=4)
    ids = vocab.encode(TEXTS * 20)
    seeds = [text_seed(ids[i], 0) for i in range(ids.shape[0])]
    masked = TokenNoise(mask_rate=0.5).copies(ids, 6, seeds)
    assert masked.shape == (ids.shape[0] * 6, ids.shape[1])
    expanded = ids.repeat_interleave(6, dim=0)
    changed = masked != expanded
    assert (masked[changed] == UNK_ID).all()
    assert (expanded[changed] > UNK_ID).all()
    assert (masked[expanded == PAD_ID] == PAD_ID).all()
    share = float(changed.sum()) / float((expanded > UNK_ID).sum())
    assert 0.4 < share < 0.6
    swapped = TokenNoise(mask_rate=0.0, substitute_rate=0.9, table=table).copies(ids, 6, seeds)
    moved = swapped != expanded
    assert moved.any()
    for old, new in zip(expanded[moved].tolist(), swapped[moved].tolist(), strict=True):
        assert new in table.table[old].tolist()
    # a word without candidates never moves
    assert not moved[expanded == vocab.id_of("the")].any()


def test_text_seed_is_stable_and_ignores_padding() -> None:
    assert text_seed([5, 6, 7], 0) == text_seed(torch.tensor([5, 6, 7, 0, 0]), 0)
    assert text_seed([5, 6, 7], 0) != text_seed([5, 6, 8], 0)
    assert text_seed([5, 6, 7], 0) != text_seed([5, 6, 7], 1)
    assert 0 <= text_seed([5, 6, 7], 0) < 2**63
    # a fixed value: the hash must not depend on the process (no salted ``hash``)
    assert text_seed([], 0) == text_seed(torch.zeros(4, dtype=torch.int64), 0)


def test_sanitizer_runs_before_the_noise() -> None:
    guarded = _classifier(sanitizer=True)
    clf = _smoothed(guarded)
    hidden = "the movie was go\u200bod and the actors were gr\u0435at"  # ZWSP, Cyrillic e
    assert torch.equal(clf([hidden]), clf([TEXTS[0]]))


def test_word_saliency_averages_over_noisy_copies(base: TextClassifier) -> None:
    clf = _smoothed(base)
    words = TEXTS[0].split()
    sal = clf.word_saliency(words, 1)
    assert sal.shape == (len(words),) and torch.isfinite(sal).all()
    assert torch.equal(sal, clf.word_saliency(words, 1))
    assert not torch.allclose(sal, base.word_saliency(words, 1))
    assert torch.equal(clf.word_saliency([], 1), torch.zeros(0))


def test_attacks_run_against_the_smoothed_classifier(base: TextClassifier) -> None:
    clf = _smoothed(base, samples=4)
    texts, labels = TEXTS[:2], [1, 0]
    for attack in (
        WordSubstitution(ranking="gradient"),
        WordSubstitution(ranking="delete"),
        DeepWordBug(),
    ):
        result = attack(clf, texts, labels)
        assert len(result) == 2
        again = attack(clf, texts, labels)
        assert result.adversarial == again.adversarial  # deterministic target


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"samples": 0}, "samples"),
        ({"samples": 2.5}, "samples"),
        ({"mask_rate": 1.0}, "mask_rate"),
        ({"mask_rate": -0.1}, "mask_rate"),
        ({"mask_rate": float("nan")}, "mask_rate"),
        ({"substitute_rate": 1.5}, "substitute_rate"),
        ({"substitute_rate": 0.2, "candidates": None}, "substitute_rate"),
        ({"aggregate": "median"}, "aggregate"),
        ({"seed": -1}, "seed"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_settings_name_the_field(
    base: TextClassifier, kw: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError, match=rf"smoothing\.{field}"):
        _smoothed(base, **kw)


@pytest.mark.parametrize(
    ("smoothing", "field"),
    [
        ({"samples": 0}, "samples"),
        ({"mask_rate": 1.0}, "mask_rate"),
        ({"substitute_rate": -0.5}, "substitute_rate"),
        ({"aggregate": "max"}, "aggregate"),
        ({"samples": "8"}, "samples"),
        ({"unknown_key": 1}, "unknown_key"),
        ({"train_epochs": 0}, "train_epochs"),
        ({"enabled": True, "mask_rate": 0.0, "substitute_rate": 0.0}, "mask_rate"),
    ],
)
def test_config_rejects_bad_smoothing(smoothing: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"hardening\.smoothing.*{field}"):
        parse_text_config({"dataset": "sms_spam", "hardening": {"smoothing": smoothing}})


def test_config_default_is_off() -> None:
    cfg = parse_text_config({"dataset": "sms_spam"})
    assert cfg.hardening.smoothing.enabled is False
    assert cfg.hardening.smoothing.train_noise is True


def test_training_with_noise_is_reproducible_and_recorded(base: TextClassifier) -> None:
    texts, labels = synthetic_corpus(80, seed=3)
    vocab = base.vocab
    ids, y = vocab.encode(texts), torch.tensor(labels)
    noise = TokenNoise(mask_rate=0.2)
    settings = TextTrainSettings(epochs=1, batch_size=16, lr=5e-3, seed=0)
    outs = []
    for _ in range(2):
        model = build_text_model(base.model.spec, generator=torch.Generator().manual_seed(0))
        history = train_text_model(model, ids, y, settings, noise=noise)
        assert history["noise"] == {"mask_rate": 0.2, "substitute_rate": 0.0}
        outs.append(model(ids))
    torch.testing.assert_close(outs[0], outs[1])
    plain = build_text_model(base.model.spec, generator=torch.Generator().manual_seed(0))
    assert train_text_model(plain, ids, y, settings)["noise"] is None
    assert not torch.allclose(plain(ids), outs[0])


def test_experiment_with_smoothing(tmp_path: Path) -> None:
    texts, labels = synthetic_corpus(160, seed=2)
    lines = [f"{'spam' if y else 'ham'}\t{t}" for t, y in zip(texts, labels, strict=True)]
    (tmp_path / "SMSSpamCollection").write_text("\n".join(lines) + "\n", encoding="utf-8")
    smoothing = {
        "enabled": True,
        "samples": 4,
        "mask_rate": 0.2,
        "substitute_rate": 0.2,
        "aggregate": "mean",
        "train_epochs": 2,
    }
    cfg = parse_text_config(
        {
            "dataset": "sms_spam",
            "vocab": {"max_length": 16},
            "model": {"embed_dim": 16, "num_filters": 8, "dropout": 0.1},
            "training": {"epochs": 3, "batch_size": 16, "lr": 0.01},
            "attack": {"candidates": "lexicon"},
            "attacks": ["word_substitution", "invisible", "combined"],
            "n_attack": 6,
            "hardening": {"smoothing": smoothing},
        }
    )
    out = run_text_experiment(cfg, tmp_path, tmp_path / "run", seed=0)
    json.dumps(out)
    assert out["smoothing"]["enabled"] is True and out["smoothing"]["samples"] == 4
    assert out["smoothing"]["table_coverage"] > 0
    hardened = out["models"]["hardened"]
    assert hardened["training"]["noise"] == {"mask_rate": 0.2, "substitute_rate": 0.2}
    assert len(hardened["training"]["history"]) == 2
    assert len(out["models"]["standard"]["training"]["history"]) == 3
    assert 0.0 <= hardened["clean_accuracy"] <= 1.0
    assert 0.0 <= hardened["clean_accuracy_unsmoothed"] <= 1.0
    assert "clean_accuracy_unsmoothed" not in out["models"]["standard"]
    # the reported clean accuracy is the smoothed classifier's on the whole test split
    data = load_text_dataset("sms_spam", tmp_path, val_fraction=0.1, test_fraction=0.2, seed=0)
    model, vocab, _ = load_text_model(tmp_path / "run" / "models" / "text-hardened")
    table = SubstitutionTable(vocab, SynonymLexicon(), k=16)
    rebuilt = SmoothedTextClassifier(
        TextClassifier(model, vocab),
        samples=4,
        mask_rate=0.2,
        substitute_rate=0.2,
        candidates=table,
    )
    expected = clean_accuracy(rebuilt, data.test.texts, data.test.labels)
    assert hardened["clean_accuracy"] == expected
    for per_target in out["attacks"].values():
        assert per_target["hardened+sanitizer"]["n"] == 6
    assert out["attacks"]["invisible"]["hardened+sanitizer"]["n_success"] == 0
    off = parse_text_config({**cfg.model_dump(), "hardening": {}, "attacks": ["invisible"]})
    plain = run_text_experiment(off, tmp_path, tmp_path / "run2", seed=0)
    assert plain["smoothing"] is None
    assert "clean_accuracy_unsmoothed" not in plain["models"]["hardened"]
