"""A team's own text in CSV and JSONL files (``text.dataset: csv | jsonl``): the reader's rules,
fingerprints, the example config run as shipped, and bad files failing in one line naming the
``text.file`` field with exit status 2 and no run left behind."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

import shared_data
from bastion.cli import main
from bastion.config import load_config
from bastion.errors import BastionError, DataError
from bastion.evaluation.scorecard import read_scorecard
from bastion.pipeline import run_pipeline
from bastion.text import parse_text_config
from bastion.text.files import load_text_file, read_text_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ROWS = [
    ("free entry, win a prize now", "spam"),
    ('he said "see you at 5"', "ham"),
    ("call me when you are\nback home", "ham"),
    ("urgent! claim your reward", "spam"),
    ("lunch tomorrow?", "ham"),
    ("txt STOP to end your prize draw", "spam"),
] * 3


def _csv(
    path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("body", "kind")
) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", *header])
        for i, (text, label) in enumerate(rows):
            writer.writerow([i, text, label])
    return path


def _jsonl(path: Path, rows: list[tuple[str, object]]) -> Path:
    lines = [json.dumps({"body": t, "kind": k, "id": i}) for i, (t, k) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_quoting_declared_labels_and_order(tmp_path: Path) -> None:
    p = _csv(tmp_path / "m.csv", ROWS)
    texts, y, classes = read_text_file(
        p, format="csv", text_column="body", label_column="kind", labels=["spam", "ham"]
    )
    assert classes == ("spam", "ham")  # declared order gives the indices
    assert texts[:3] == [r[0] for r in ROWS[:3]]  # commas, quotes, a line break survive
    assert y[:3] == [0, 1, 1]
    _, y2, found = read_text_file(p, format="csv", text_column="body", label_column="kind")
    assert found == ("ham", "spam") and y2[:3] == [1, 0, 0]  # undeclared: sorted


def test_csv_and_jsonl_share_a_fingerprint_that_tracks_content(tmp_path: Path) -> None:
    kw = {"text_column": "body", "label_column": "kind", "labels": ["ham", "spam"]}
    a = load_text_file(_csv(tmp_path / "a.csv", ROWS), format="csv", seed=0, **kw)
    b = load_text_file(_jsonl(tmp_path / "b.jsonl", list(ROWS)), format="jsonl", seed=3, **kw)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    assert a.summary()["name"] == "a.csv" and a.classes == ("ham", "spam")
    assert len(a.train) + len(a.val) + len(a.test) == len(ROWS)
    assert sorted(a.test.labels) == sorted(b.test.labels)  # stratified in both
    flipped = [
        (t, "ham" if k == "spam" else "spam") if i == 0 else (t, k) for i, (t, k) in enumerate(ROWS)
    ]
    c = load_text_file(_csv(tmp_path / "c.csv", flipped), format="csv", **kw)
    assert c.fingerprint != a.fingerprint
    renamed = load_text_file(
        tmp_path / "a.csv",
        format="csv",
        text_column="body",
        label_column="kind",
        labels=["spam", "ham"],
    )
    assert renamed.fingerprint != a.fingerprint  # the class order is part of the data


def test_jsonl_integer_labels_match_declared_names(tmp_path: Path) -> None:
    rows: list[tuple[str, object]] = [(t, 1 if k == "spam" else 0) for t, k in ROWS]
    texts, y, classes = read_text_file(
        _jsonl(tmp_path / "m.jsonl", rows),
        format="jsonl",
        text_column="body",
        label_column="kind",
        labels=["0", "1"],
    )
    assert classes == ("0", "1") and y == [int(k) for _, k in rows] and texts[0] == ROWS[0][0]


@pytest.mark.parametrize(
    ("content", "fmt", "kw", "needle"),
    [
        (b"", "csv", {}, "text.file.path: .* is empty"),
        (b"id,body,kind\n", "csv", {}, "text.file.path: .* has no rows"),
        (b"id,text,kind\n1,hi,ham\n", "csv", {}, "text.file.text_column: column 'body' not in"),
        (b"id,body,label\n1,hi,ham\n", "csv", {}, "text.file.label_column: column 'kind'"),
        (b"id,body,kind\n1,hi,ham\n2,yo,maybe\n", "csv", {}, "text.file.labels: line 3 .*'maybe'"),
        (b"id,body,kind\n1,caf\xe9,ham\n", "csv", {}, "line 2: byte 0xe9 at column 6 .*UTF-8"),
        (b"id,body,kind\n1, ,ham\n2,a,spam\n", "csv", {}, "text_column: line 2 .*empty text"),
        (b"id,body,kind\n1,a,ham\n2,b\n", "csv", {}, "line 3: 2 fields, expected 3"),
        (b"id,body,kind\n1,a,ham\n2,b,ham\n", "csv", {"labels": None}, "one label 'ham' only"),
        (b"id,body,kind\n1,a,ham\n", "csv", {"labels": ["ham", "spam"]}, "no row has .*spam"),
        (b'{"body": "a", "kind": "ham"}\nnope\n', "jsonl", {}, "line 2: not JSON"),
        (b'{"body": "a"}\n', "jsonl", {}, "text.file.label_column: key 'kind' missing on line 1"),
        (b'{"body": 3, "kind": "ham"}\n', "jsonl", {}, "text_column: line 1 .*expected a string"),
        (b'{"body": "a", "kind": [1]}\n', "jsonl", {}, "label_column: line 1 .*string or an int"),
        (b"[1, 2]\n", "jsonl", {}, "line 1: expected a JSON object"),
    ],
)
def test_bad_files_name_the_field(
    tmp_path: Path, content: bytes, fmt: str, kw: dict[str, object], needle: str
) -> None:
    p = tmp_path / f"bad.{fmt}"
    p.write_bytes(content)
    args: dict[str, object] = {"labels": ["ham", "spam"], **kw}
    with pytest.raises(DataError, match=needle) as info:
        read_text_file(p, format=fmt, text_column="body", label_column="kind", **args)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_missing_file_and_bad_labels(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"text\.file\.path: file not found"):
        read_text_file(tmp_path / "none.csv", format="csv")
    p = _csv(tmp_path / "m.csv", ROWS)
    with pytest.raises(DataError, match=r"text\.file\.labels: expected at least two distinct"):
        read_text_file(p, format="csv", labels=["ham", "ham"])


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"dataset": "csv"}, "file: expected a file section"),
        ({"dataset": "sms_spam", "file": {"path": "x.csv"}}, "only for dataset csv or jsonl"),
        ({"dataset": "csv", "file": {"path": "x.csv", "labels": ["a"]}}, "text.file.labels"),
        ({"dataset": "csv", "file": {"path": "x.csv", "delimiter": ";;"}}, "text.file.delimiter"),
        ({"dataset": "csv", "file": {"path": "x", "labels": ["a", "a"]}}, "distinct names"),
        ({"dataset": "jsonl", "file": {"path": "x", "colum": "t"}}, "text.file.colum"),
    ],
)
def test_config_errors_name_the_field(section: dict[str, object], needle: str) -> None:
    with pytest.raises(BastionError, match=needle):
        parse_text_config(section)


def test_example_runs_as_shipped(tmp_path: Path) -> None:
    cfg, _ = load_config(EXAMPLES / "text-own-csv.yaml")
    assert cfg.text is not None and cfg.text.file is not None
    run_dir = run_pipeline(
        EXAMPLES / "text-own-csv.yaml", out_dir=tmp_path / "runs", show_progress=False
    )
    sc = read_scorecard(run_dir / "scorecard.json")
    f = cfg.text.file
    expected = load_text_file(
        EXAMPLES / "data" / f.path.removeprefix("data/"),
        format="csv",
        text_column=f.text_column,
        label_column=f.label_column,
        labels=f.labels,
    )
    assert sc["data"]["fingerprint"] == expected.fingerprint == sc["text"]["dataset"]["fingerprint"]
    assert sc["data"]["name"] == "messages.csv" and sc["data"]["classes"] == ["ham", "spam"]
    assert sc["data"]["n_eval"] == 36  # every test spam message (attack_classes: [spam])
    txt = sc["text"]
    assert txt["models"]["standard"]["clean_accuracy"] > 0.85
    inv = txt["attacks"]["invisible"]
    assert inv["hardened+sanitizer"]["success_rate"] < inv["standard"]["success_rate"]


def test_bad_file_in_a_run_exits_2_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = yaml.safe_load((EXAMPLES / "text-own-csv.yaml").read_text())
    (tmp_path / "data").mkdir()
    rows = [(t, k) for t, k in ROWS] + [("hello", "phishing")]
    _csv(tmp_path / "data" / "messages.csv", rows, header=("message", "category"))
    cfg = tmp_path / "own.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "runs"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1  # one line; 18 rows, three of them over two lines, then line 23
    assert "text.file.labels: line 23 " in errors[0] and "'phishing'" in errors[0]
    assert not out.exists() or not list(out.iterdir())


@pytest.mark.skipif(
    not (shared_data.DATASETS / "sms_spam" / "SMSSpamCollection").exists(),
    reason="SMS Spam files not found",
)
def test_example_data_is_what_the_script_makes() -> None:
    script = EXAMPLES / "data" / "make_messages.py"
    spec = importlib.util.spec_from_file_location("make_messages", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    made = module.make_csv(shared_data.DATASETS / "sms_spam" / "SMSSpamCollection", 1200)
    assert made == (EXAMPLES / "data" / "messages.csv").read_text(encoding="utf-8")
