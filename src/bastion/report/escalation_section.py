"""The report's escalation section: what each model's evaluation did when its own sanity
checks fired, and which figure the report quotes as a result.

For every model whose scorecard entry has an ``escalation`` record
(:func:`bastion.evaluation.evaluate_model`), the HTML section states

* which gradient-masking checks fired (Carlini et al. 2019, "On evaluating adversarial
  robustness"; Athalye, Carlini & Wagner 2018),
* the remedies :func:`bastion.evaluation.escalate` ran (BPDA, margin/DLR losses, EOT, more
  black-box and transfer attacks), each with its attacks, its cumulative robust accuracy, the
  examples it broke and its time,
* the first-pass worst case beside the escalated one; a first-pass figure that escalation beat is
  struck through and marked *superseded* with the reason,
* the time the escalation took (wall clock and the process's CPU time),

and for a model on which no check fired, that there was no escalation. Scorecards written before
escalation existed have no record: the section is then left out.

:func:`escalation_markdown` gives the same facts as one Markdown line per model.

Every value taken from the scorecard is escaped with :func:`html.escape` (HTML) or the Markdown
renderer's own escaper; markup is built only from literals.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import bastion.report._format as fmt
from bastion.evaluation.scorecard_model import EscalationRecord, Figure
from bastion.report._view import ModelView, ScorecardView

__all__ = ["escalation_markdown", "render_escalation_section"]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _figures(model: ModelView) -> tuple[float | None, float | None]:
    """``(first pass, headline)`` worst case of one model."""
    first = model.first_pass_worst_case_accuracy
    if first is None and model.escalation is not None:
        first = model.escalation.first_pass_worst_case_accuracy
    return first, model.worst_case_accuracy


def _verdict(model: ModelView) -> str:
    """One plain-text sentence: what happened to this model's evaluation."""
    esc = model.escalation or EscalationRecord()
    status, fired = esc.status or "", esc.fired
    first, worst = _figures(model)
    if status == "not-needed" or (status == "off" and not fired):
        why = "sanity checks off" if status == "off" else "no sanity check fired"
        return f"no escalation: {why}; the first-pass figure {fmt.percent(worst)} stands"
    if status == "off":
        return (
            f"escalation off although {', '.join(fired)} fired: the first-pass figure "
            f"{fmt.percent(first)} is unverified"
        )
    text = f"{', '.join(fired)} fired; escalated worst case {fmt.percent(worst)}"
    if first is not None and worst is not None and worst < first:
        text += f", superseding the first pass's {fmt.percent(first)}"
    else:
        text += f"; the first pass's {fmt.percent(first)} held"
    if status == "incomplete":
        text += (
            f"; the escalation could not finish (unanswered: "
            f"{', '.join(esc.unanswered)}), the figure is unverified and the gate "
            "fails the run"
        )
    return text


def _time_text(esc: EscalationRecord) -> str:
    if esc.seconds is None:
        return fmt.MISSING
    cpu = esc.cpu_seconds
    return fmt.seconds(esc.seconds) + (f" ({fmt.seconds(cpu)} CPU)" if cpu is not None else "")


def _first_cell(model: ModelView) -> str:
    esc = model.escalation or EscalationRecord()
    first, worst = _figures(model)
    if first is None:
        return f'<td class="num missing">{_e(fmt.MISSING)}</td>'
    if worst is not None and worst < first:
        reason = esc.reason or "escalation found a lower figure"
        return (
            f'<td class="num"><s>{_e(fmt.percent(first))}</s>'
            f'<span class="badge">superseded</span><div class="note">{_e(reason)}</div></td>'
        )
    return f'<td class="num">{_e(fmt.percent(first))}</td>'


def _summary_row(model: ModelView) -> str:
    esc = model.escalation or EscalationRecord()
    fired_cell = (
        "".join(f'<span class="badge">{_e(c)}</span>' for c in esc.fired)
        if esc.fired
        else '<span class="ok">none</span>'
    )
    _, worst = _figures(model)
    spread = esc.spread
    worst_text = fmt.percent(worst) + (f" \u00b1 {spread:.1%}" if spread is not None else "")
    return (
        f'<tr><th scope="row">{_e(model.name)}</th><td>{_e(esc.status or fmt.MISSING)}</td>'
        f"<td>{fired_cell}</td>{_first_cell(model)}"
        f'<td class="num">{_e(worst_text)}</td>'
        f'<td class="num">{_e(_time_text(esc))}</td>'
        f"<td>{_e(_verdict(model))}</td></tr>"
    )


def _step_rows(model: ModelView) -> list[str]:
    rows = []
    for s in (model.escalation or EscalationRecord()).steps:
        reason = s.reason or ""
        rows.append(
            f"<tr><td>{_e(model.name)}</td><td><code>{_e(s.remedy)}</code></td>"
            f"<td>{_e(', '.join(s.answers))}</td>"
            f"<td>{_e(s.status or fmt.MISSING)}{' (' + _e(reason) + ')' if reason else ''}</td>"
            f"<td>{_e(', '.join(s.attacks) or fmt.MISSING)}</td>"
            f'<td class="num">{_e(fmt.percent(_float(s.accuracy)))}</td>'
            f'<td class="num">{_e(fmt.MISSING if s.broke is None else s.broke)}</td>'
            f'<td class="num">{_e(fmt.seconds(_float(s.seconds)))}</td></tr>'
        )
    return rows


def _float(value: Figure) -> float | None:
    return None if value is None else float(value)


def render_escalation_section(view: ScorecardView) -> str:
    """The ``<section id="escalation">`` of the HTML report, or ``""`` when no model of
    ``view`` has an escalation record (an older scorecard)."""
    models = [m for m in view.models if m.escalation is not None]
    if not models:
        return ""
    head = "".join(
        f"<th>{_e(n)}</th>"
        for n in ["model", "status", "checks fired", "first pass", "worst case", "time", "verdict"]
    )
    parts = [
        '<section id="escalation"><h2>Escalation</h2>',
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>',
        "".join(_summary_row(m) for m in models),
        "</tbody></table></div>",
    ]
    steps = [row for m in models for row in _step_rows(m)]
    if steps:
        step_head = "".join(
            f"<th>{_e(n)}</th>"
            for n in [
                "model",
                "remedy",
                "answers",
                "status",
                "attacks",
                "accuracy after",
                "broke",
                "time",
            ]
        )
        parts += [
            "<h3>Remedies run</h3>",
            f'<div class="scroll"><table><thead><tr>{step_head}</tr></thead><tbody>',
            "".join(steps),
            "</tbody></table></div>",
        ]
    parts.append(
        '<p class="note">When a gradient-masking check fires, the evaluation runs the adaptive '
        "attack that answers it on the examples its first pass left robust: BPDA through "
        "non-differentiable layers (Athalye, Carlini &amp; Wagner 2018), margin/DLR losses and "
        "rescaled logits (Croce &amp; Hein 2020), EOT over the model's randomness (Athalye et "
        "al. 2018), more restarts, Square and a transfer attack. The worst case quoted in this "
        "report, the model card and the gate is the minimum over the first pass and every "
        "remedy; accuracy after a remedy is cumulative (EOT: the expectation over draws, "
        "\u00b1 its spread).</p></section>"
    )
    return "".join(parts)


def escalation_markdown(view: ScorecardView, escape: Callable[[object], str]) -> list[str]:
    """Markdown lines (a heading and one bullet per model with an escalation record) for the
    summary of :mod:`bastion.report.markdown`; ``escape`` is its inline escaper. Empty when no
    model has a record."""
    models = [m for m in view.models if m.escalation is not None]
    if not models:
        return []
    lines = ["", "## Escalation", ""]
    for m in models:
        esc = m.escalation or EscalationRecord()
        line = f"- {escape(m.name)}: {escape(_verdict(m))}"
        ran = [
            f"{s.remedy} {s.status}"
            + (f" {fmt.percent(float(s.accuracy))}" if s.accuracy is not None else "")
            for s in esc.steps
        ]
        if ran:
            line += f" ({escape('; '.join(ran))}; {escape(_time_text(esc))})"
        lines.append(line)
    return lines
