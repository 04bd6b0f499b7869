"""Human-readable reports of a bastion scorecard: a self-contained HTML page, a Markdown
summary and the figures as PNG bytes.

The scorecard is the typed :class:`bastion.evaluation.scorecard_model.Scorecard` (or its JSON
document, schema version 1 or 2, validated into it): run, data, threat, evaluation, versions,
runtime, models (per model: clean and worst-case accuracy, accuracy per attack and eps, the
accuracy-against-eps curve, training history, corruptions, calibration, latency, sanity checks,
escalation), timings, warnings and the channel sections. Its JSON Schema is
``docs/scorecard.schema.json``.

Accuracies are fractions in [0, 1] and are shown as percentages with one decimal. Optional
parts (a model's ``training`` or its ``history``, ``accuracy_vs_eps``, ``warnings``, ...) may be
missing: the report skips them with a note. Parts that are present but malformed raise
:class:`ScorecardError`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bastion.evaluation.scorecard_model import Scorecard
from bastion.report._view import ScorecardError
from bastion.report.html import render_html
from bastion.report.markdown import render_markdown
from bastion.report.plots import plot_accuracy_vs_eps, plot_training_curves

__all__ = [
    "ScorecardError",
    "plot_accuracy_vs_eps",
    "plot_training_curves",
    "render_html",
    "render_markdown",
    "write_report",
]


def write_report(scorecard: Scorecard | Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Render ``scorecard`` as HTML and write it to ``path`` atomically; return the path.

    The page is rendered completely before anything touches the disk, then written to a
    temporary file in the destination directory, flushed to disk and moved into place with
    :func:`os.replace`. Readers therefore see either the previous file or the complete new one,
    and a failure leaves no partial or temporary file behind. Missing parent directories are
    created. The file is UTF-8 with mode 0644.

    Raises:
        ScorecardError: the scorecard is malformed (nothing is written).
        OSError: the file cannot be written.
    """
    target = Path(path)
    page = render_html(scorecard).encode("utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(page)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return target
