from __future__ import annotations

import re
from pathlib import Path

import pytest
from text_fixtures import DATASETS

from bastion.errors import DataError
from bastion.text import (
    fingerprint_texts,
    load_movie_review,
    load_sms_spam,
    read_movie_review,
    read_sms_spam,
    split_texts,
)


def _sms(tmp_path: Path, body: bytes) -> Path:
    p = tmp_path / "SMSSpamCollection"
    p.write_bytes(body)
    return p


def test_sms_reads_labels_and_texts(tmp_path: Path) -> None:
    p = _sms(tmp_path, "ham\tHi there\r\nspam\tWIN £100 now\nham\tok\n".encode())
    texts, labels = read_sms_spam(tmp_path)
    assert texts == ["Hi there", "WIN £100 now", "ok"]
    assert labels == [0, 1, 0]
    assert read_sms_spam(p) == (texts, labels)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"ham\tok\nspamm\thello\n", "line 2: label"),
        (b"ham\tok\nham no tab\n", "line 2: expected 'label<TAB>text'"),
        (b"ham\tok\nham\t   \n", "line 2: empty text"),
        (b"ham\tok\nham\tok\nham\tbad \xff byte\n", "line 3: byte 0xff at column 9"),
    ],
)
def test_sms_errors_name_file_and_line(tmp_path: Path, body: bytes, message: str) -> None:
    _sms(tmp_path, body)
    with pytest.raises(DataError, match=re.escape(message)) as info:
        read_sms_spam(tmp_path)
    assert "SMSSpamCollection" in str(info.value)


def test_missing_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="SMSSpamCollection"):
        read_sms_spam(tmp_path)
    with pytest.raises(DataError, match=r"rt-polarity\.neg"):
        read_movie_review(tmp_path)


def _mr(tmp_path: Path, pos: bytes, neg: bytes) -> Path:
    (tmp_path / "rt-polarity.pos").write_bytes(pos)
    (tmp_path / "rt-polarity.neg").write_bytes(neg)
    return tmp_path


def test_mr_utf8_and_cp1252_fallback(tmp_path: Path) -> None:
    _mr(tmp_path, "a fine film \u2013 ok\n".encode(), b"a dull film \x96 caf\xe9\n")
    texts, labels, used = read_movie_review(tmp_path)
    assert texts == ["a dull film \u2013 café", "a fine film \u2013 ok"]
    assert labels == [0, 1]
    assert dict(used) == {"rt-polarity.neg": "cp1252", "rt-polarity.pos": "utf-8"}
    with pytest.raises(DataError, match=r"rt-polarity.neg: line 1: byte 0x96"):
        read_movie_review(tmp_path, encoding="utf-8")


def test_mr_rejects_undefined_cp1252_byte_and_empty_line(tmp_path: Path) -> None:
    _mr(tmp_path, b"good\n", b"bad\n\x81 weird\n")
    with pytest.raises(DataError, match="line 2: byte 0x81"):
        read_movie_review(tmp_path)
    _mr(tmp_path, b"good\n\nfine\n", b"bad\n")
    with pytest.raises(DataError, match=r"rt-polarity.pos: line 2: empty text"):
        read_movie_review(tmp_path)


def test_split_is_deterministic_stratified_and_disjoint() -> None:
    texts = [f"text {i}" for i in range(100)]
    labels = [int(i < 20) for i in range(100)]
    a = split_texts(
        "toy", texts, labels, ("no", "yes"), val_fraction=0.1, test_fraction=0.2, seed=3
    )
    b = split_texts(
        "toy", texts, labels, ("no", "yes"), val_fraction=0.1, test_fraction=0.2, seed=3
    )
    c = split_texts(
        "toy", texts, labels, ("no", "yes"), val_fraction=0.1, test_fraction=0.2, seed=4
    )
    assert a == b
    assert a.test.texts != c.test.texts
    assert (len(a.train), len(a.val), len(a.test)) == (70, 10, 20)
    assert sum(a.test.labels) == 4 and sum(a.val.labels) == 2
    everything = a.train.texts + a.val.texts + a.test.texts
    assert sorted(everything) == sorted(texts)
    assert a.fingerprint == c.fingerprint


def test_fingerprint_depends_on_content() -> None:
    base = fingerprint_texts("x", ["ab", "c"], [0, 1])
    assert base != fingerprint_texts("x", ["a", "bc"], [0, 1])
    assert base != fingerprint_texts("x", ["ab", "c"], [1, 1])
    assert base != fingerprint_texts("y", ["ab", "c"], [0, 1])
    assert len(base) == 64


def test_real_sms_spam_counts() -> None:
    path = DATASETS / "sms_spam"
    if not (path / "SMSSpamCollection").is_file():
        pytest.skip("SMS Spam Collection not available")
    _, labels = read_sms_spam(path)
    assert (labels.count(0), labels.count(1)) == (4827, 747)
    data = load_sms_spam(path, seed=0)
    assert len(data.train) + len(data.val) + len(data.test) == 5574


def test_real_movie_review_counts() -> None:
    path = DATASETS / "movie_review_polarity"
    if not (path / "rt-polarity.pos").is_file():
        pytest.skip("Movie Review polarity not available")
    data = load_movie_review(path, seed=0)
    total = data.train.labels + data.val.labels + data.test.labels
    assert (total.count(0), total.count(1)) == (5331, 5331)
    assert data.summary()["kind"] == "text"
