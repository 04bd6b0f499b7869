"""A short Markdown summary of a scorecard, for pull requests, job summaries and terminals.

Values taken from the scorecard are escaped (:func:`_md`) so that a model name cannot break
the table or inject markup or links into the rendered Markdown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bastion.report._format as fmt
from bastion.evaluation.scorecard_model import Scorecard
from bastion.report._view import ScorecardView, parse_scorecard
from bastion.report.escalation_section import escalation_markdown

__all__ = ["render_markdown"]

_SPECIAL = set("\\`*_[]<>|&#!~")


def _md(value: object) -> str:
    """Escape text for inline Markdown (table cells included): one line, punctuation escaped."""
    text = " ".join(str(value).split())
    return "".join(f"\\{ch}" if ch in _SPECIAL else ch for ch in text)


def render_view_markdown(view: ScorecardView) -> str:
    """Render an already parsed scorecard as Markdown."""
    lines = [f"# Robustness report: {_md(view.run_name)}", ""]
    facts = []
    if view.created:
        facts.append(f"Created {_md(view.created)}.")
    threat = view.threat
    if threat.norm is not None or threat.eps is not None:
        norm = _md(threat.norm) if threat.norm is not None else "unknown norm"
        facts.append(f"Threat model: {norm}, \u03b5 = {_md(fmt.number(threat.eps))}")
        if threat.bounds is not None:
            lo, hi = threat.bounds
            facts[-1] += f", inputs in \\[{_md(fmt.number(lo))}, {_md(fmt.number(hi))}\\]"
        facts[-1] += "."
    n_eval = view.data.n_eval
    if n_eval is not None:
        facts.append(f"Evaluated on {_md(fmt.count(n_eval))} examples.")
    if facts:
        lines += [" ".join(facts), ""]

    if view.models:
        attacks = view.attack_names
        eps_key = threat.eps_key
        suffix = f" @ \u03b5={_md(eps_key)}" if eps_key is not None else ""
        header = ["Model", "Objective", "Clean", f"Worst case{suffix}"]
        header += [f"{_md(a)}{suffix}" for a in attacks]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|")
        for model in view.models:
            row = [
                _md(model.name),
                _md(model.objective) if model.objective is not None else fmt.MISSING,
                fmt.percent(model.clean_accuracy),
                fmt.percent(model.worst_case_accuracy),
            ]
            row += [fmt.percent(model.attack_accuracy(a, eps_key)) for a in attacks]
            lines.append("| " + " | ".join(row) + " |")
    else:
        lines.append("No models evaluated.")
    lines += escalation_markdown(view, _md)
    lines += ["", "## Warnings", ""]
    if not view.warnings:
        lines.append("No warnings.")
    for warning in view.warnings:
        code = f"**{_md(warning.code)}**" if warning.code else ""
        where = f"(model {_md(warning.model)})" if warning.model else ""
        prefix = " ".join(part for part in (code, where) if part)
        message = _md(warning.message)
        lines.append(f"- {prefix}: {message}" if prefix else f"- {message}")
    return "\n".join(lines) + "\n"


def render_markdown(scorecard: Scorecard | Mapping[str, Any]) -> str:
    """A short Markdown summary of ``scorecard``.

    A heading with the run name, one line on the threat model, a table with one row per model
    (objective, clean, worst-case and per-attack accuracy at the threat eps) and the warnings
    (or "No warnings.").

    Raises:
        ScorecardError: a part of the scorecard that is present is malformed.
    """
    return render_view_markdown(parse_scorecard(scorecard))
