"""The transformer text classifier on the real pretrained MiniLM (../shared/models): offline
loading and its bad-input errors, the classifier on raw strings (truncation, word saliency),
embedding-neighbour candidates, the sentence-similarity constraint, word-piece A2T, saving and
loading, and serving behind the text guard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import shared_data
from bastion.errors import ModelFileError
from bastion.guard.text_guard import TextGuard
from bastion.serve import load_service_guard
from bastion.text import SynonymLexicon, Vocabulary, WordSubstitution
from bastion.text.transformer import (
    PooledEncoderClassifier,
    SentenceConstraint,
    SentenceEncoder,
    TransformerTextClassifier,
    WordPieceNeighbours,
    load_pretrained_encoder,
    load_transformer_model,
    save_transformer_model,
)
from bastion.text.transformer_training import (
    TransformerTrainSettings,
    WordPieceA2T,
    length_batches,
    train_transformer,
)

MINILM = shared_data.MINILM
pytestmark = pytest.mark.skipif(
    not (MINILM / "model.safetensors").exists(), reason="MiniLM not found beside the project"
)


@pytest.fixture(scope="module")
def pretrained() -> tuple[Any, Any]:
    return load_pretrained_encoder(MINILM)


def _model(pretrained: tuple[Any, Any], max_length: int = 32) -> PooledEncoderClassifier:
    encoder, tok = pretrained
    import copy

    return PooledEncoderClassifier(
        copy.deepcopy(encoder),
        classes=("negative", "positive"),
        max_length=max_length,
        pad_id=tok.pad_token_id,
        generator=torch.Generator().manual_seed(0),
    )


def _copy_model_dir(tmp_path: Path, skip: tuple[str, ...] = ()) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    for f in MINILM.iterdir():
        if f.is_file() and f.name not in skip:
            (d / f.name).symlink_to(f)
    return d


def test_bad_model_directories_name_the_field_and_the_problem(tmp_path: Path) -> None:
    field = "text.transformer.path"
    with pytest.raises(ModelFileError, match=rf"^{field}: .*is not a directory"):
        load_pretrained_encoder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match=rf"^{field}: .*no config.json"):
        load_pretrained_encoder(tmp_path / "empty")
    no_tok = _copy_model_dir(tmp_path, skip=("tokenizer.json", "vocab.txt"))
    with pytest.raises(ModelFileError, match=rf"^{field}: .*has no tokenizer"):
        load_pretrained_encoder(no_tok)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(MINILM / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ModelFileError, match="never loads pickles"):
        load_pretrained_encoder(pickled)


def test_a_tokenizer_of_another_model_is_refused(tmp_path: Path) -> None:
    d = _copy_model_dir(tmp_path, skip=("tokenizer.json", "vocab.txt"))
    lines = (MINILM / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (d / "vocab.txt").write_text("\n".join(lines[:5000]) + "\n", encoding="utf-8")
    with pytest.raises(ModelFileError, match=r"has 5000 tokens but the model's input embeddings"):
        load_pretrained_encoder(d, field="model")


def test_an_encoder_without_a_head_is_not_a_classifier() -> None:
    with pytest.raises(ModelFileError, match=r"^model: .*holds no sequence classifier"):
        load_transformer_model(MINILM)


def test_classifier_truncates_and_ranks_words(pretrained: tuple[Any, Any]) -> None:
    model = _model(pretrained, max_length=16)
    clf = TransformerTextClassifier(model, pretrained[1], batch_size=2)
    texts = ["a great film", "word " * 40, "dull", "an awful , boring movie"]
    probs = clf(texts)
    assert probs.shape == (4, 2) and torch.allclose(probs.sum(dim=1), torch.ones(4))
    # batching by length does not change the answers
    assert torch.allclose(probs, torch.cat([clf([t]) for t in texts]), atol=1e-5)
    assert [len(r) for r in clf.token_ids(texts)][1] == 16
    assert clf.token_counts(texts)[1] == 42  # 40 words + [CLS] + [SEP]
    words = ["the", "movie", "is"] + ["long"] * 30
    sal = clf.word_saliency(words, 1)
    assert sal.shape == (33,)
    assert (sal[:3] != 0).all() and (sal[20:] == 0).all()  # past 16 tokens nothing is read


def test_embedding_neighbours_are_whole_words(pretrained: tuple[Any, Any]) -> None:
    encoder, tok = pretrained
    nb = WordPieceNeighbours(encoder.get_input_embeddings().weight, tok, k=10, min_cosine=0.4)
    great = nb("Great")
    assert {"excellent", "wonderful"} <= set(great)
    assert all(w.isalpha() and not w.startswith("#") for w in great)
    assert nb("unforgettably") == []  # split into word pieces: no candidates
    assert nb.cosine("great", "excellent") > nb.cosine("great", "film")


def test_sentence_constraint_keeps_paraphrases(pretrained: tuple[Any, Any]) -> None:
    encoder, tok = pretrained
    sentence = SentenceEncoder(encoder, tok)
    sims = sentence.similarity("a great movie", ["a great film", "the stock market fell"])
    assert sims[0] > 0.8 > sims[1]
    constraint = SentenceConstraint(sentence, min_cosine=0.8)
    assert constraint("a great movie", ["a great film", "the stock market fell"]) == [True, False]
    assert (constraint.checked, constraint.rejected) == (2, 1)
    # the constraint filters the word attack's candidates before any query
    seen: list[str] = []

    def target(texts: Any) -> torch.Tensor:
        seen.extend(texts)
        return torch.tensor([[0.1, 0.9] if "movie" in t else [0.9, 0.1] for t in texts])

    lexicon = SynonymLexicon([["movie", "film", "banana"]])
    attack = WordSubstitution(candidates=lexicon, ranking="none", constraint=constraint)
    res = attack(target, ["a great movie"], [1])
    assert res.success == (True,)
    assert "a great banana" not in seen and "a great film" in seen


def test_word_piece_a2t_swaps_whole_words_only(pretrained: tuple[Any, Any]) -> None:
    tok = pretrained[1]
    model = _model(pretrained)
    nb = WordPieceNeighbours(model.embedding.weight, tok, k=8, min_cosine=0.4)
    continuation = torch.tensor([t.startswith("##") for t in nb.tokens])
    texts = ["a truly great and unforgettably moving film", "the plot was dull and awful"]
    rows = TransformerTextClassifier(model, tok).token_ids(texts)
    ids = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(r) for r in rows], batch_first=True, padding_value=tok.pad_token_id
    )
    present = torch.tensor(sorted({i for r in rows for i in r}))
    aug = WordPieceA2T(nb, continuation, max_share=0.5, present=present)
    assert 0 < aug.table.coverage < 0.01  # only the tokens of the texts got rows
    adv = aug.perturb(model, ids, torch.tensor([1, 0]))
    changed = adv != ids
    assert changed.any()
    nxt = torch.zeros_like(changed)
    nxt[:, :-1] = continuation[ids[:, 1:]]
    assert not (changed & nxt).any()  # never the start of a split word
    for b, t in changed.nonzero().tolist():
        assert int(adv[b, t]) in aug.table.table[ids[b, t]].tolist()
        assert nb.tokens[int(adv[b, t])].isalpha()
    n_tokens = (ids != 0).sum(dim=1)
    assert (changed.sum(dim=1) <= (n_tokens * 0.5).floor()).all()


def test_length_batches_cover_every_example_once_with_less_padding() -> None:
    lengths = [(i * 37) % 60 + 1 for i in range(500)]
    gen = torch.Generator().manual_seed(0)
    buckets = length_batches(lengths, 16, gen, bucketing=True)
    plain = length_batches(lengths, 16, torch.Generator().manual_seed(0), bucketing=False)
    for batches in (buckets, plain):
        assert sorted(torch.cat(batches).tolist()) == list(range(500))

    def padding(batches: list[torch.Tensor]) -> int:
        return sum(max(lengths[i] for i in b.tolist()) * len(b) for b in batches)

    assert padding(buckets) < 0.7 * padding(plain)


def test_save_load_round_trip_and_guard(pretrained: tuple[Any, Any], tmp_path: Path) -> None:
    model = _model(pretrained, max_length=16)
    tok = pretrained[1]
    vocab = Vocabulary.build(["a great film", "an awful movie"], max_length=16)
    out = save_transformer_model(
        model,
        tok,
        tmp_path / "run" / "models" / "text-hardened",
        vocabulary=vocab,
        metadata={"role": "test"},
    )
    assert {"config.json", "model.safetensors", "head.safetensors", "bastion-text.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not list(out.glob("*.bin")) and not list(out.parent.glob(".*partial*"))
    loaded = load_transformer_model(out)
    assert loaded.vocabulary == vocab and loaded.metadata == {"role": "test"}
    texts = ["a great film", "an awful , dull movie"]
    before = TransformerTextClassifier(model, tok)(texts)
    after = TransformerTextClassifier(loaded.model, loaded.tokenizer)(texts)
    assert torch.allclose(before, after, atol=1e-5)
    side = json.loads((out / "bastion-text.json").read_text())
    assert side["classes"] == ["negative", "positive"] and side["max_length"] == 16

    guard, name = load_service_guard(tmp_path / "run")
    assert isinstance(guard, TextGuard) and name == "text-hardened"
    long, plain_text, invisible = guard.decide_texts(
        ["word " * 30, "a great film", "a gr\u200beat film"]
    )
    assert long.verdict == "flag" and "read the first 16 of 32 tokens" in long.reasons[0]
    assert long.scores["truncated_tokens"] == 16
    assert plain_text.verdict == "accept"
    assert invisible.verdict == "flag" and invisible.scores["invisible_chars"] == 1
    assert torch.allclose(
        torch.tensor(invisible.probabilities), torch.tensor(plain_text.probabilities), atol=1e-6
    )


@pytest.mark.slow
def test_fine_tuning_learns_movie_review_sentiment(pretrained: tuple[Any, Any]) -> None:
    from bastion.text import load_text_dataset

    data = load_text_dataset("movie_review", shared_data.DATASETS / "movie_review_polarity")
    model = _model(pretrained)
    clf = TransformerTextClassifier(model, pretrained[1])
    train, val = data.train.subset(320), data.val.subset(100)
    history = train_transformer(
        model,
        clf.token_ids(train.texts),
        train.labels,
        TransformerTrainSettings(epochs=2, batch_size=8, accumulation=2, lr=3e-4),
        val=(clf.token_ids(val.texts), val.labels),
    )
    assert history["history"][history["best_epoch"] - 1]["val_clean_accuracy"] >= 0.6  # chance 0.5
    assert history["precision"] in ("fp32", "bf16")
