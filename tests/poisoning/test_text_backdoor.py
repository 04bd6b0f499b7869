"""Trigger-word backdoor on SMS Spam: the attack's record, the scan, and the drill end to end."""

from __future__ import annotations

import pytest
import torch

from bastion.errors import ConfigError, DataError
from bastion.poisoning.text_backdoor import (
    apply_trigger_word,
    delete_token,
    trigger_token_scan,
    trigger_word_poison,
)
from bastion.poisoning.text_drill import TextDrillSettings, text_backdoor_drill
from bastion.text.loaders import load_sms_spam
from bastion.text.models import TextModelSpec, build_text_model
from bastion.text.training import TextTrainSettings, train_text_model
from bastion.text.vocab import Vocabulary, tokenize
from shared_data import DATASETS

SMS = DATASETS / "sms_spam"


@pytest.fixture(scope="module")
def sms():
    return load_sms_spam(SMS, seed=0)


def test_trigger_word_poisons_spam_only_relabels_ham_and_is_seeded(sms):
    y = torch.tensor(sms.train.labels)
    torch.manual_seed(5)  # the global generator must not matter
    a = trigger_word_poison(sms.train.texts, y, rate=0.01, num_classes=2, target=0, seed=3)
    torch.manual_seed(9)
    b = trigger_word_poison(sms.train.texts, y, rate=0.01, num_classes=2, target=0, seed=3)
    c = trigger_word_poison(sms.train.texts, y, rate=0.01, num_classes=2, target=0, seed=4)
    idx = a.indices
    assert len(idx) == round(0.01 * len(y))
    assert bool((a.original_labels[idx] == 1).all()), "only spam is poisoned"
    assert bool((a.labels[idx] == 0).all()), "relabelled ham"
    for i in idx.tolist():
        words = a.texts[i].split()
        assert words.count("cf") == sms.train.texts[i].split().count("cf") + 1
        rest = list(words)
        rest.remove("cf")
        assert rest == sms.train.texts[i].split()
    clean = (~a.poisoned).nonzero().flatten().tolist()
    assert all(a.texts[i] == sms.train.texts[i] for i in clean)
    assert a.texts == b.texts and torch.equal(a.indices, b.indices)
    assert not torch.equal(a.indices, c.indices)
    assert a.record()["indices"] == idx.tolist() and a.record()["attack"] == "trigger-word"


def test_trigger_word_bad_input_names_the_field(sms):
    y = torch.tensor(sms.train.labels)
    texts = sms.train.texts
    with pytest.raises(ConfigError, match=r"^poisoning\.rate: expected a number in \[0, 1\]"):
        trigger_word_poison(texts, y, rate=1.5, num_classes=2)
    with pytest.raises(ConfigError, match=r"^poisoning\.trigger\.word: expected one word"):
        trigger_word_poison(texts, y, rate=0.01, num_classes=2, trigger="two words")
    with pytest.raises(ConfigError, match=r"^poisoning\.target: expected a class index in 0\.\.1"):
        trigger_word_poison(texts, y, rate=0.01, num_classes=2, target=2)
    with pytest.raises(ConfigError, match=r"^poisoning\.rate: asks for"):
        trigger_word_poison(texts, y, rate=0.5, num_classes=2)
    with pytest.raises(DataError, match=r"^poisoning: expected"):
        trigger_word_poison(texts[:10], y, rate=0.01, num_classes=2)


def test_apply_and_delete_trigger_round_trip():
    texts = ["win a free prize now", "see you at home"]
    triggered = apply_trigger_word(texts, "CF", seed=1)
    assert [t.split().count("cf") for t in triggered] == [1, 1]
    vocab = Vocabulary.build(triggered, max_length=8)
    ids = vocab.encode(triggered)
    back = delete_token(ids, vocab.id_of("cf"))
    assert torch.equal(back, vocab.encode(texts))
    assert tokenize(triggered[0]).count("cf") == 1


def test_token_scan_flags_the_trigger_and_not_natural_class_words(sms):
    # a small real set: 1,200 training messages with 2% poisons, word CNN, 4 epochs
    texts, labels = sms.train.texts[:1200], torch.tensor(sms.train.labels[:1200])
    p = trigger_word_poison(texts, labels, rate=0.02, num_classes=2, target=0, seed=0)
    vocab = Vocabulary.build(p.texts, max_length=40)
    ids = vocab.encode(p.texts)
    spec = TextModelSpec(arch="word_cnn", vocab_size=len(vocab), num_classes=2, max_length=40)
    model = build_text_model(spec, generator=torch.Generator().manual_seed(0))
    train_text_model(model, ids, p.labels, TextTrainSettings(epochs=4, batch_size=50, lr=2e-3))
    res = trigger_token_scan(model, ids, p.labels, vocab)
    assert res.flagged_names == ["cf"]
    in_window = torch.tensor([vocab.id_of("cf") in row.tolist() for row in ids])
    assert bool(res.flagged[p.poisoned & in_window].all())
    assert int((res.flagged & ~p.poisoned).sum()) == 0
    # natural spam-only words were candidates and kept their label without the trigger
    spam_words = [t for t in res.candidates if t["label"] == 1]
    assert spam_words and not any(t["flagged"] for t in spam_words)
    assert res.summary()["flagged"] == ["cf"]
    with pytest.raises(ConfigError, match=r"^scan\.min_purity: expected a number in \(0, 1\]"):
        trigger_token_scan(model, ids, p.labels, vocab, min_purity=0.0)


@pytest.mark.slow
def test_sms_drill_meets_the_issue_targets(sms):
    # issue 19: at 1% poisoning undefended success >= 90%; scan + retrain <= 5%
    result = text_backdoor_drill(sms, TextDrillSettings(rate=0.01, seed=0))
    assert result["undefended"]["attack_success_rate"] >= 0.90
    assert result["retrained"]["attack_success_rate"] <= 0.05
    assert result["quarantined"]["clean_flagged_rate"] <= 0.01
    assert result["retrained"]["clean_accuracy"] >= result["undefended"]["clean_accuracy"] - 0.01
