from __future__ import annotations

import torch
from text_fixtures import synthetic_corpus

from bastion.text import (
    A2TAugmenter,
    SubstitutionTable,
    SynonymLexicon,
    TextClassifier,
    TextModelSpec,
    TextTrainSettings,
    TypoNeighbours,
    UnionCandidates,
    Vocabulary,
    accuracy_of,
    build_text_model,
    train_text_model,
)
from bastion.text.vocab import UNK_ID


def _setup(arch: str = "word_cnn"):  # type: ignore[no-untyped-def]
    texts, labels = synthetic_corpus(240, seed=0)
    vocab = Vocabulary.build([*texts, "fine terrific dreadful"], max_length=12)
    spec = TextModelSpec(
        arch=arch,  # type: ignore[arg-type]
        vocab_size=len(vocab),
        num_classes=2,
        max_length=12,
        embed_dim=16,
        num_filters=8,
        hidden_size=8,
        hash_buckets=101,
        dropout=0.1,
    )
    model = build_text_model(spec, generator=torch.Generator().manual_seed(0))
    return vocab, model, vocab.encode(texts), torch.tensor(labels)


def test_training_learns_the_synthetic_task_and_is_reproducible() -> None:
    settings = TextTrainSettings(epochs=4, batch_size=16, lr=5e-3, seed=1)
    _, model, ids, y = _setup()
    history = train_text_model(model, ids[:200], y[:200], settings, val=(ids[200:], y[200:]))
    assert accuracy_of(model, ids[200:], y[200:]) >= 0.95
    assert 1 <= history["best_epoch"] <= 4 and len(history["history"]) == 4
    _, again, _, _ = _setup()
    train_text_model(again, ids[:200], y[:200], settings, val=(ids[200:], y[200:]))
    torch.testing.assert_close(again(ids), model(ids))


def test_a2t_perturbation_respects_table_budget_and_stop_words() -> None:
    vocab, model, ids, y = _setup()
    table = SubstitutionTable(vocab, SynonymLexicon(), unknown=True)
    assert 0 < table.coverage < 1
    assert (table.table[vocab.id_of("the")] == -1).all()
    aug = A2TAugmenter(table, max_share=0.25)
    adv = aug.perturb(model, ids, y)
    changed = adv != ids
    n_tokens = (ids != 0).sum(dim=1)
    assert changed.any()
    assert (changed.sum(dim=1) <= (n_tokens * 0.25).floor().clamp_min(1)).all()
    rows, cols = changed.nonzero(as_tuple=True)
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        allowed = table.table[ids[r, c]].tolist()
        assert int(adv[r, c]) in allowed
    assert UNK_ID in table.table[vocab.id_of("good")].tolist()


def test_typo_neighbours_come_first_in_a_substitution_table() -> None:
    vocab = Vocabulary.build(["good gold god film films fine"], max_length=8)
    table = SubstitutionTable(vocab, UnionCandidates(TypoNeighbours(vocab), lambda w: ["fine"]))
    row = [vocab.tokens[i] for i in table.table[vocab.id_of("good")].tolist() if i >= 0]
    assert row == ["gold", "god", "fine"]
    films = [vocab.tokens[i] for i in table.table[vocab.id_of("film")].tolist() if i >= 0]
    assert films == ["films", "fine"]


def test_a2t_training_runs_and_classifier_gives_saliency() -> None:
    vocab, model, ids, y = _setup("ngram_bag")
    aug = A2TAugmenter(SubstitutionTable(vocab, SynonymLexicon()), batch_share=0.5)
    settings = TextTrainSettings(epochs=2, batch_size=32, lr=1e-2)
    history = train_text_model(model, ids, y, settings, augmenter=aug)
    assert history["augmentation"]["method"] == "a2t"
    clf = TextClassifier(model, vocab)
    probs = clf(["a good film", "a bad film"])
    assert probs.shape == (2, 2)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))
    saliency = clf.word_saliency(["a", "good", "film"], 1)
    assert saliency.shape == (3,) and int(saliency.argmax()) == 1
