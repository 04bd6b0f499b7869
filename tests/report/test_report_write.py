"""write_report: atomic replacement, no temporary files left behind, nothing written on error."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from bastion.report import ScorecardError, render_html, write_report


def test_writes_the_rendered_page(shared_scorecard: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.html"  # parent does not exist yet
    written = write_report(shared_scorecard, str(target))
    assert written == target
    assert target.read_text(encoding="utf-8") == render_html(shared_scorecard)
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_overwrites_an_existing_report(scorecard: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old", encoding="utf-8")
    scorecard["warnings"] = []
    write_report(scorecard, target)
    assert "No warnings." in target.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_malformed_scorecard_writes_nothing(scorecard: dict[str, Any], tmp_path: Path) -> None:
    scorecard["models"] = "not a mapping"
    with pytest.raises(ScorecardError):
        write_report(scorecard, tmp_path / "report.html")
    assert list(tmp_path.iterdir()) == []


def test_failed_replace_keeps_old_file_and_removes_temp(
    scorecard: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.html"
    target.write_text("old", encoding="utf-8")

    def failing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        assert Path(src).parent == tmp_path  # the temporary file sits next to the target
        assert Path(src).read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
        raise OSError("disk full")

    monkeypatch.setattr("bastion.report.os.replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(scorecard, target)
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
