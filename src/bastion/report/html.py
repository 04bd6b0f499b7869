"""Self-contained HTML report for a scorecard.

The page is a single string: inline CSS, figures embedded as ``data:image/png;base64`` URIs, no
scripts, fonts, stylesheets or other external resources, and a Content-Security-Policy that
forbids loading any. It reads the same offline, from an e-mail attachment or an archive.

Every value taken from the scorecard passes through :func:`html.escape` before it reaches the
page (see :func:`_e`); markup in this module is only ever built from literals.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping
from typing import Any

import bastion.report._format as fmt
from bastion.evaluation.scorecard_model import (
    Calibration,
    CalibrationStats,
    GuardRates,
    LatencyRow,
    Scorecard,
    TextAttackFigures,
)
from bastion.report._view import ModelView, ScorecardView, WarningEntry, parse_scorecard
from bastion.report.escalation_section import render_escalation_section
from bastion.report.plots import (
    accuracy_vs_eps_png,
    models_with_calibration,
    models_with_curves,
    models_with_history,
    reliability_png,
    training_curves_png,
)
from bastion.report.poisoning_section import render_poisoning_section
from bastion.report.privacy_section import render_privacy_section

__all__ = ["render_html"]

_CSS = """
:root {
  --fg: #1f2933; --muted: #5f6b7a; --line: #e3e7ed; --bg: #f5f6f8; --card: #ffffff;
  --head: #f0f2f5; --good: #0a7a4b; --warn-bg: #fff8e8; --warn-line: #e0a100;
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    sans-serif;
}
main { max-width: 1140px; margin: 0 auto; padding: 32px 24px 40px; }
header h1 { font-size: 27px; font-weight: 650; margin: 0 0 4px; letter-spacing: -0.01em; }
header h1 .run { color: var(--muted); font-weight: 500; }
.meta { color: var(--muted); margin: 0; font-size: 14px; }
.tiles {
  display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px;
  margin-top: 20px;
}
.tile { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 12px 16px; }
.tile .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: 0.05em; }
.tile .value { font-size: 21px; font-weight: 600; margin-top: 2px; overflow-wrap: anywhere; }
.tile .sub { color: var(--muted); font-size: 13px; }
.tile.alert { border-color: var(--warn-line); background: var(--warn-bg); }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 18px 24px 20px; margin-top: 20px; }
h2 { font-size: 18px; font-weight: 650; margin: 0 0 12px; }
h3 { font-size: 12px; font-weight: 600; margin: 0 0 6px; color: var(--muted);
  text-transform: uppercase; letter-spacing: 0.05em; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { padding: 7px 10px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
thead th { background: var(--head); font-weight: 600; color: #3b4654;
  border-bottom: 2px solid #d5dae1; }
thead th .sub { display: block; font-weight: 400; font-size: 12px; color: var(--muted); }
tbody tr:last-child td, tbody tr:last-child th { border-bottom: none; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.best { font-weight: 700; color: var(--good); }
.missing { color: #9aa3ae; }
.scroll { overflow-x: auto; }
.note { color: var(--muted); font-size: 14px; margin: 10px 0 0; }
figure { margin: 14px 0 0; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px;
  overflow-wrap: anywhere; }
.kv-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr));
  gap: 18px 28px; }
.kv th { width: 42%; font-weight: 500; color: var(--muted); }
.kv td { overflow-wrap: anywhere; }
ul.warnings { list-style: none; padding: 0; margin: 0; }
ul.warnings li { border-left: 4px solid var(--warn-line); background: var(--warn-bg);
  border-radius: 4px; padding: 10px 14px; margin-bottom: 8px; }
.badge { display: inline-block; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas,
  monospace; font-size: 12px; background: #fbe3a6; color: #6b4a00; border-radius: 3px;
  padding: 1px 6px; margin-right: 6px; }
.model-tag { color: var(--muted); font-size: 13px; }
.ok { color: var(--good); margin: 0; }
footer { color: var(--muted); font-size: 13px; text-align: center; margin-top: 24px; }
@media print {
  body { background: #fff; }
  section, .tile { break-inside: avoid; }
}
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(value: object) -> str:
    """Escape any value for use in HTML text or a quoted attribute."""
    return html.escape(str(value), quote=True)


def _num_cell(text: str, *, best: bool = False) -> str:
    """A right-aligned numeric table cell (``text`` is plain text, escaped here)."""
    if text == fmt.MISSING:
        return f'<td class="num missing">{_e(text)}</td>'
    css = "num best" if best else "num"
    return f'<td class="{css}">{_e(text)}</td>'


def _text_cell(value: str | None) -> str:
    if value is None:
        return f'<td class="missing">{_e(fmt.MISSING)}</td>'
    return f"<td>{_e(value)}</td>"


def _kv_table(title: str, rows: Iterable[tuple[str, str, bool]]) -> str:
    """A two-column key/value table; ``rows`` are ``(label, value, monospace)`` as plain text."""
    body = []
    for label, value, mono in rows:
        shown = f"<code>{_e(value)}</code>" if mono and value != fmt.MISSING else _e(value)
        body.append(f'<tr><th scope="row">{_e(label)}</th><td>{shown}</td></tr>')
    if not body:
        body.append(f'<tr><td class="missing" colspan="2">{_e("not recorded")}</td></tr>')
    return (
        f'<div><h3>{_e(title)}</h3><table class="kv"><tbody>{"".join(body)}</tbody></table></div>'
    )


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _best_model(view: ScorecardView) -> ModelView | None:
    """The model with the highest worst-case accuracy, if any has one."""
    scored = [
        m
        for m in view.models
        if m.worst_case_accuracy is not None and math.isfinite(m.worst_case_accuracy)
    ]
    if not scored:
        return None
    return max(scored, key=lambda m: m.worst_case_accuracy or 0.0)


def _threat_text(view: ScorecardView) -> str:
    threat = view.threat
    if threat.eps is None:
        return fmt.norm_label(threat.norm)
    return f"{fmt.norm_label(threat.norm)}, \u03b5 = {fmt.number(threat.eps)}"


# -- sections -----------------------------------------------------------------------------------
def _header(view: ScorecardView) -> str:
    meta = []
    if view.created:
        meta.append(f"Created {_e(view.created)}")
    if "bastion" in view.versions:
        meta.append(f"bastion {_e(view.versions['bastion'])}")
    if "command" in view.run:
        meta.append(f"<code>{_e(view.run['command'])}</code>")
    meta_html = " \u00b7 ".join(meta) if meta else _e("Creation time not recorded")
    return (
        "<header>"
        f'<h1>Robustness report <span class="run">\u2014 {_e(view.run_name)}</span></h1>'
        f'<p class="meta">{meta_html}</p>'
        "</header>"
    )


def _tiles(view: ScorecardView) -> str:
    tiles = [("Threat model", _threat_text(view), "", False)]
    best = _best_model(view)
    if best is not None:
        tiles.append(
            (
                "Most robust model",
                fmt.percent(best.worst_case_accuracy),
                f"{best.name} (worst case)",
                False,
            )
        )
    n_eval = view.data.n_eval
    tiles.append(
        (
            "Models evaluated",
            str(len(view.models)),
            f"on {fmt.count(n_eval)} examples" if n_eval is not None else "",
            False,
        )
    )
    n_warn = len(view.warnings)
    tiles.append(("Warnings", str(n_warn), "see below" if n_warn else "none raised", n_warn > 0))
    out = []
    for label, value, sub, alert in tiles:
        css = "tile alert" if alert else "tile"
        sub_html = f'<div class="sub">{_e(sub)}</div>' if sub else ""
        out.append(
            f'<div class="{css}"><div class="label">{_e(label)}</div>'
            f'<div class="value">{_e(value)}</div>{sub_html}</div>'
        )
    return f'<div class="tiles">{"".join(out)}</div>'


def _summary(view: ScorecardView) -> str:
    if not view.models:
        return (
            '<section id="summary"><h2>Summary</h2>'
            '<p class="note">No models evaluated.</p></section>'
        )
    attacks = view.attack_names
    eps_key = view.threat.eps_key
    at_eps = f"@ \u03b5 = {eps_key}" if eps_key is not None else "at threat \u03b5"
    head = [
        '<th scope="col">Model</th>',
        '<th scope="col">Objective</th>',
        '<th scope="col" class="num">Clean</th>',
        f'<th scope="col" class="num">Worst case<span class="sub">{_e(at_eps)}</span></th>',
    ]
    head += [
        f'<th scope="col" class="num">{_e(a)}<span class="sub">{_e(at_eps)}</span></th>'
        for a in attacks
    ]
    head.append('<th scope="col" class="num">Training time</th>')
    best = _best_model(view) if len(view.models) > 1 else None
    rows = []
    for model in view.models:
        cells = [f'<th scope="row">{_e(model.name)}</th>', _text_cell(model.objective)]
        cells.append(_num_cell(fmt.percent(model.clean_accuracy)))
        cells.append(_num_cell(fmt.percent(model.worst_case_accuracy), best=model is best))
        cells += [_num_cell(fmt.percent(model.attack_accuracy(a, eps_key))) for a in attacks]
        train_seconds = None if model.training is None else model.training.seconds
        cells.append(_num_cell(fmt.seconds(train_seconds)))
        rows.append(f"<tr>{''.join(cells)}</tr>")
    n_eval = view.data.n_eval
    on = f" on {fmt.count(n_eval)} evaluation examples" if n_eval is not None else ""
    note = (
        f"Accuracies{on}. Worst case: accuracy when every attack is tried, as reported by the "
        "evaluation; the most robust model is highlighted."
        if best is not None
        else f"Accuracies{on}."
    )
    return (
        '<section id="summary"><h2>Summary</h2><div class="scroll"><table>'
        f"<thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(rows)}</tbody>"
        f'</table></div><p class="note">{_e(note)}</p></section>'
    )


def _threat(view: ScorecardView) -> str:
    threat = view.threat
    norm = threat.norm
    rows: list[tuple[str, str, bool]] = [
        ("Norm", f"{fmt.norm_label(norm)} ({norm})" if norm else fmt.MISSING, False),
        ("Budget \u03b5", fmt.number(threat.eps), False),
        (
            "Valid input range",
            f"[{fmt.number(threat.bounds[0])}, {fmt.number(threat.bounds[1])}]"
            if threat.bounds
            else fmt.MISSING,
            False,
        ),
    ]
    rows += [(fmt.key_label(k), v, False) for k, v in threat.extra.items()]
    explain = (
        f"The attacker may add any perturbation whose {fmt.norm_label(norm)} norm is at most "
        f"{fmt.number(threat.eps)}, as long as the input stays within the valid range."
        if norm and threat.eps is not None
        else "The threat model is incompletely recorded."
    )
    return (
        '<section id="threat"><h2>Threat model</h2>'
        f'<div class="kv-grid">{_kv_table("Attacker", rows)}</div>'
        f'<p class="note">{_e(explain)}</p></section>'
    )


def _robustness(view: ScorecardView) -> str:
    plotted = models_with_curves(view)
    missing = [m.name for m in view.models if m.curve is None]
    parts = ['<section id="accuracy-vs-eps"><h2>Accuracy against \u03b5</h2>']
    if not plotted:
        parts.append(
            '<p class="note">No accuracy-against-\u03b5 curve was recorded for any model; '
            "the plot is skipped.</p>"
        )
    else:
        png = accuracy_vs_eps_png(view)
        parts.append(
            f"<figure>{_img(png, 'Accuracy against perturbation budget eps, per model')}"
            "<figcaption>Solid lines: worst case across attacks, per model. Thinner lines in "
            "the same colour: each attack on its own. The vertical dashed line marks the "
            "threat model's \u03b5.</figcaption></figure>"
        )
        if missing:
            names = ", ".join(missing)
            parts.append(f'<p class="note">No accuracy-against-\u03b5 curve for: {_e(names)}.</p>')
    parts.append("</section>")
    return "".join(parts)


def _pct(value: object) -> str:
    return f"{float(value):.1%}" if isinstance(value, int | float) else "\u2013"


def _corruptions(view: ScorecardView) -> str:
    """Accuracy per corruption (mean over severities) and per severity, and mCE."""
    models = [m for m in view.models if m.corruptions]
    if not models:
        return ""
    names: list[str] = []
    severities: list[str] = []
    records = [(m.name, m.corruptions) for m in models if m.corruptions is not None]
    for _, c in records:
        names += [n for n in c.per_corruption if n not in names]
        severities += [s for s in c.per_severity if s not in severities]
    head = "".join(f"<th>{_e(n)}</th>" for n in ["model", "clean", "mean", "mCE", *names])
    rows = []
    for name, c in records:
        cells = [
            _text_cell(name),
            _num_cell(_pct(c.clean_accuracy)),
            _num_cell(_pct(c.mean_accuracy)),
            _num_cell(_num(c.mce)),
        ]
        cells += [_num_cell(_pct(c.per_corruption.get(n))) for n in names]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    sev_head = "".join(
        f"<th>{_e(x)}</th>" for x in ["model", *[f"severity {s}" for s in severities]]
    )
    sev_rows = []
    for name, c in records:
        cells = [_text_cell(name)] + [_num_cell(_pct(c.per_severity.get(s))) for s in severities]
        sev_rows.append(f"<tr>{''.join(cells)}</tr>")
    ref = records[0][1].reference
    note = (
        f"mCE: corruption errors summed over severities, divided by those of "
        f"{_e(ref)}, averaged over corruptions (Hendrycks &amp; Dietterich 2019)."
        if ref
        else ""
    )
    return (
        '<section id="corruptions"><h2>Corruptions</h2>'
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
        "</tbody></table></div>"
        f'<div class="scroll"><table><thead><tr>{sev_head}</tr></thead>'
        f"<tbody>{''.join(sev_rows)}</tbody></table></div>"
        f'<p class="note">Accuracy under each corruption, averaged over severities. {note}</p>'
        "</section>"
    )


def _num(value: object, spec: str = ".3f") -> str:
    return format(float(value), spec) if isinstance(value, int | float) else "\u2013"


def _calibration(view: ScorecardView) -> str:
    """ECE, NLL and confidence clean and under attack, and the reliability diagrams."""
    models = models_with_calibration(view)
    if not models:
        return ""
    head = "".join(
        f"<th>{_e(n)}</th>"
        for n in [
            "model",
            "ECE",
            "MCE",
            "NLL",
            "Brier",
            "confidence",
            "accuracy",
            "ECE (attack)",
            "confidence (attack)",
            "accuracy (attack)",
        ]
    )
    rows = []
    attack = None
    for m in models:
        cal = m.calibration or Calibration()
        c = cal.clean or CalibrationStats()
        a = cal.adversarial or CalibrationStats()
        attack = attack or cal.attack
        cells = [
            _text_cell(m.name),
            _num_cell(_num(c.ece)),
            _num_cell(_num(c.mce)),
            _num_cell(_num(c.nll)),
            _num_cell(_num(c.brier)),
            _num_cell(_pct(c.mean_confidence)),
            _num_cell(_pct(c.accuracy)),
            _num_cell(_num(a.ece)),
            _num_cell(_pct(a.mean_confidence)),
            _num_cell(_pct(a.accuracy)),
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    png = reliability_png(view)
    under = f" Under attack: {_e(attack)} at the threat model's eps." if attack else ""
    return (
        '<section id="calibration"><h2>Calibration</h2>'
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
        "</tbody></table></div>"
        f"{_img(png, 'Reliability diagrams: accuracy against confidence')}"
        '<p class="note">Expected calibration error over equal-width confidence bins '
        f"(Guo et al. 2017); lower is better.{under} A model that stays confident while "
        "an attack flips its answer cannot be guarded by a confidence threshold.</p>"
        "</section>"
    )


def _shifts(view: ScorecardView) -> str:
    """Accuracy on each distribution-shift split."""
    models = [m for m in view.models if m.shifts]
    if not models:
        return ""
    names: list[str] = []
    records = [(m.name, m.shifts) for m in models if m.shifts is not None]
    for _, sh in records:
        names += [n for n in sh.shifts if n not in names]
    head = "".join(f"<th>{_e(n)}</th>" for n in ["model", "clean", "mean", "worst", *names])
    rows = []
    for name, sh in records:
        cells = [
            _text_cell(name),
            _num_cell(_pct(sh.clean_accuracy)),
            _num_cell(_pct(sh.mean_accuracy)),
            _num_cell(_pct(sh.worst_accuracy)),
        ]
        cells += [_num_cell(_pct(sh.shifts.get(n))) for n in names]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        '<section id="shifts"><h2>Distribution shift</h2>'
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
        "</tbody></table></div>"
        '<p class="note">Accuracy on the test set under fixed, named shifts (rotation, '
        "translation and zoom for images; scale, offset and noise for features).</p></section>"
    )


def _latency(view: ScorecardView) -> str:
    """Forward-pass latency per batch size."""
    models = [m for m in view.models if m.latency]
    if not models:
        return ""
    sizes: list[str] = []
    records = [(m.name, m.latency) for m in models if m.latency is not None]
    for _, lat in records:
        sizes += [b for b in lat.batch_sizes if b not in sizes]
    head = "".join(
        f"<th>{_e(n)}</th>"
        for n in ["model", *[x for b in sizes for x in (f"batch {b} p50 ms", "p99 ms")]]
    )
    rows = []
    for name, lat in records:
        cells = [_text_cell(name)]
        for b in sizes:
            row = lat.batch_sizes.get(b) or LatencyRow()
            cells += [_num_cell(_num(row.p50_ms)), _num_cell(_num(row.p99_ms))]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    threads = records[0][1].threads
    return (
        '<section id="latency"><h2>Latency</h2>'
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
        "</tbody></table></div>"
        f'<p class="note">Forward pass only, {_e(threads)} torch threads, on the machine that '
        "ran the evaluation; compare models of the same run.</p></section>"
    )


def _tabular(view: ScorecardView) -> str:
    """Constrained tabular attacks: per model, clean and robust accuracy and each attack."""
    tab = view.scorecard.tabular
    if not tab:
        return ""
    names: list[str] = []
    for m in tab.models.values():
        names += [a for a in m.attacks if a not in names]
    head = "".join(
        f"<th>{_e(n)}</th>" for n in ["model", "objective", "clean", "robust (worst)", *names]
    )
    rows = []
    for name, m in tab.models.items():
        cells = [
            _text_cell(name),
            _text_cell(m.objective or ""),
            _num_cell(_pct(m.clean_accuracy)),
            _num_cell(_pct(m.robust_accuracy)),
        ]
        for a in names:
            fig = m.attacks.get(a)
            cells.append(
                _num_cell(
                    f"{_pct(fig.robust_accuracy)} ({_num(fig.mean_queries, '.0f')} q)"
                    if fig
                    else "\u2013"
                )
            )
        rows.append(f"<tr>{''.join(cells)}</tr>")
    threat = tab.threat
    relations = ", ".join(str(r) for r in threat.relations) or "none"
    return (
        '<section id="tabular"><h2>Tabular, under the schema&#x27;s constraints</h2>'
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
        "</tbody></table></div>"
        f'<p class="note">{_e(threat.norm)} eps {_e(threat.eps)} in unit space, '
        f"cost-weighted: {_e(threat.use_costs)}; immutable columns "
        f"{_e(threat.immutable_columns)}; relations: {_e(relations)}. Every adversarial "
        "row returned is checked feasible; robust accuracy per attack with mean queries.</p>"
        "</section>"
    )


def _guard(view: ScorecardView) -> str:
    """The runtime guard: share of attacks stopped at each clean false-positive rate, under
    standard attacks and an adaptive attack that knows the guard."""
    g = view.scorecard.guard
    if not g:
        return ""
    attack_names: list[str] = []
    for per in g.fpr.values():
        attack_names += [a for a in per.standard if a not in attack_names]
    head = "".join(
        f"<th>{_e(n)}</th>"
        for n in [
            "target FPR",
            "clean fired",
            "answered accuracy",
            *[f"{a} stopped" for a in attack_names],
            "adaptive stopped",
            "worst case stopped",
        ]
    )
    rows = []
    for fpr, per in g.fpr.items():
        cells = [
            _text_cell(f"{float(fpr):.0%}"),
            _num_cell(_pct(per.clean.fired)),
            _num_cell(_pct(per.clean.answered_accuracy)),
        ]
        cells += [
            _num_cell(_pct((per.standard.get(a) or GuardRates()).stopped)) for a in attack_names
        ]
        cells += [
            _num_cell(_pct((per.adaptive or GuardRates()).stopped)),
            _num_cell(_pct(per.worst_case_stopped)),
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        '<section id="guard"><h2>Runtime guard</h2>'
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
        "</tbody></table></div>"
        f'<p class="note">Guard around {_e(g.model)} on {_e(g.examples)} test '
        "examples. Stopped: detected by a layer, abstained, or answered correctly. The adaptive "
        "attack optimises against the model and the detectors together (Carlini &amp; Wagner "
        "2017); quote the worst case.</p></section>"
    )


def _text(view: ScorecardView) -> str:
    """Text attacks: success rate per attack against each target, before and after hardening."""
    txt = view.scorecard.text
    if not txt:
        return ""
    targets = ["standard", "standard+sanitizer", "hardened", "hardened+sanitizer"]
    head = "".join(
        f"<th>{_e(n)}</th>"
        for n in ["attack", *targets, "words changed (standard)", "queries per success"]
    )
    rows = []
    for name, per in txt.attacks.items():
        figures = {t: per.target(t) or TextAttackFigures() for t in targets}
        std = figures["standard"]
        cells = [_text_cell(name)]
        cells += [_num_cell(_pct(figures[t].success_rate)) for t in targets]
        cells += [
            _num_cell(_pct(std.mean_changed_share)),
            _num_cell(_num(std.mean_queries_per_success, ".0f")),
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    acc = ", ".join(
        f"{_e(n)} {_pct(m.clean_accuracy)} (sanitised {_pct(m.clean_accuracy_sanitized)})"
        for n, m in txt.models.items()
    )
    return (
        '<section id="text"><h2>Text attacks</h2>'
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
        "</tbody></table></div>"
        f'<p class="note">Attack success rate on correctly classified test texts of '
        f"{_e(txt.dataset.name)} ({_e(txt.n_attacked)} attacked); lower is better. Clean "
        f"accuracy: {acc}.</p></section>"
    )


def _best_record(model: ModelView) -> tuple[float, float] | None:
    """Validation (clean, robust) accuracy at the selected epoch, else at the last epoch."""
    history, training = model.history, model.training
    if history is None or training is None:
        return None
    index = len(history) - 1
    if training.best_epoch is not None:
        for i, epoch in enumerate(history.epoch):
            if epoch == training.best_epoch:
                index = i
                break
    return history.val_clean_accuracy[index], history.val_robust_accuracy[index]


def _nan_to_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


_RANK_NOTE = (
    " Dotted: a model trained under torchrun, each process's loss over its own share of every"
    " batch (the solid line is the mean over all examples)."
)


def _training(view: ScorecardView) -> str:
    parts = ['<section id="training"><h2>Training</h2>']
    if not view.models:
        parts.append('<p class="note">No models.</p></section>')
        return "".join(parts)
    head = (
        '<th scope="col">Model</th><th scope="col">Objective</th>'
        '<th scope="col" class="num">Epochs</th><th scope="col" class="num">Selected epoch</th>'
        '<th scope="col">Selected by</th>'
        '<th scope="col" class="num">Val. clean<span class="sub">selected epoch</span></th>'
        '<th scope="col" class="num">Val. robust<span class="sub">selected epoch</span></th>'
        '<th scope="col" class="num">Training time</th>'
    )
    rows = []
    notes = []
    for model in view.models:
        training = model.training
        cells = [f'<th scope="row">{_e(model.name)}</th>', _text_cell(model.objective)]
        if training is None:
            cells.append(f'<td class="missing" colspan="6">{_e("not trained in this run")}</td>')
            notes.append(f"{model.name}: evaluated without training, so it has no training curves.")
        else:
            record = _best_record(model)
            clean, robust = (
                (None, None)
                if record is None
                else (_nan_to_none(record[0]), _nan_to_none(record[1]))
            )
            cells += [
                _num_cell(fmt.number(training.epochs)),
                _num_cell(fmt.number(training.best_epoch)),
                _text_cell(training.selection),
                _num_cell(fmt.percent(clean)),
                _num_cell(fmt.percent(robust)),
                _num_cell(fmt.seconds(training.seconds)),
            ]
            if training.history is None:
                notes.append(
                    f"{model.name}: no per-epoch history was recorded, so its curves are skipped."
                )
        rows.append(f"<tr>{''.join(cells)}</tr>")
    parts.append(
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
    if models_with_history(view):
        png = training_curves_png(view)
        parts.append(
            f"<figure>{_img(png, 'Training loss and validation accuracy per epoch, per model')}"
            "<figcaption>Left: training loss. Right: validation accuracy, clean (solid) and "
            "under attack (dashed); a star marks the epoch kept."
            f"{_RANK_NOTE if any(m.history and m.history.rank_loss for m in view.models) else ''}"
            "</figcaption></figure>"
        )
    else:
        parts.append('<p class="note">No model has a training history; the curves are skipped.</p>')
    parts += [f'<p class="note">{_e(note)}</p>' for note in notes]
    parts.append("</section>")
    return "".join(parts)


def _warning_item(warning: WarningEntry) -> str:
    code = f'<span class="badge">{_e(warning.code)}</span>' if warning.code else ""
    model = f' <span class="model-tag">model: {_e(warning.model)}</span>' if warning.model else ""
    return f"<li>{code}{_e(warning.message)}{model}</li>"


def _check_values(details: object) -> str:
    """The scalar values a check measured, as ``name value`` pairs (curves are left out)."""
    if not isinstance(details, Mapping):
        return ""
    parts = []
    for k, v in details.items():
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            continue
        shown = f"{v:.4g}" if isinstance(v, float) else str(v)
        parts.append(f"{k} {shown}")
    return ", ".join(parts)


def _sanity(view: ScorecardView) -> str:
    """Every gradient-masking sanity check of every model, passed or not, with its values."""
    models = [m for m in view.models if m.sanity_checks]
    if not models:
        return ""
    rows = []
    for m in models:
        for c in m.sanity_checks:
            status = (
                '<span class="ok">passed</span>'
                if c.passed
                else f'<span class="badge">{_e(c.severity or "failed")}</span>'
            )
            rows.append(
                "<tr>"
                + _text_cell(m.name)
                + _text_cell(str(c.code))
                + f"<td>{status}</td>"
                + _text_cell(c.message or "")
                + _text_cell(_check_values(c.details))
                + "</tr>"
            )
    head = "".join(f"<th>{n}</th>" for n in ["model", "check", "result", "finding", "values"])
    return (
        '<section id="sanity"><h2>Sanity checks</h2>'
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
        "</tbody></table></div>"
        '<p class="note">Checks for signs of gradient masking and a broken evaluation '
        "(Carlini et al. 2019; Croce &amp; Hein 2020), each with the values it measured. A failed "
        "check is repeated under Warnings.</p></section>"
    )


def _warnings(view: ScorecardView) -> str:
    if not view.warnings:
        body = '<p class="ok">No warnings.</p>'
    else:
        body = f'<ul class="warnings">{"".join(_warning_item(w) for w in view.warnings)}</ul>'
    return f'<section id="warnings"><h2>Warnings</h2>{body}</section>'


def _classes(value: object) -> str:
    if isinstance(value, list | tuple):
        shown = ", ".join(str(c) for c in value[:12])
        more = ", \u2026" if len(value) > 12 else ""
        return f"{len(value)} ({shown}{more})"
    return fmt.MISSING if value is None else str(value)


def _provenance(view: ScorecardView) -> str:
    run = view.run
    known_run = ("name", "created", "seed", "config_hash", "command")
    run_rows: list[tuple[str, str, bool]] = [
        ("Run name", run.get("name", fmt.MISSING), False),
        ("Created", run.get("created", fmt.MISSING), False),
        ("Seed", run.get("seed", fmt.MISSING), False),
        ("Config hash", run.get("config_hash", fmt.MISSING), True),
        ("Command", run.get("command", fmt.MISSING), True),
    ]
    run_rows += [(fmt.key_label(k), v, False) for k, v in run.items() if k not in known_run]

    data = view.data
    known_data = (
        "name",
        "fingerprint",
        "n_train",
        "n_val",
        "n_test",
        "n_eval",
        "input_shape",
        "classes",
    )
    data_rows: list[tuple[str, str, bool]] = [
        ("Data set", str(data.name or fmt.MISSING), False),
        ("Fingerprint", str(data.fingerprint or fmt.MISSING), True),
        ("Training examples", fmt.count(data.n_train), False),
        ("Validation examples", fmt.count(data.n_val), False),
        ("Test examples", fmt.count(data.n_test), False),
        ("Evaluated examples", fmt.count(data.n_eval), False),
        ("Input shape", fmt.shape(data.input_shape), False),
        ("Classes", _classes(data.classes), False),
    ]
    data_rows += [  # further fields of the data section (kind, encodings, ...)
        (fmt.key_label(str(k)), str(v), False)
        for k, v in data.to_json().items()
        if k not in known_data and v is not None and not isinstance(v, Mapping | list)
    ]

    version_rows = [(k, v, False) for k, v in view.versions.items()]

    timing_rows = [(fmt.key_label(k), fmt.seconds(v), False) for k, v in view.timings.items()]
    for model in view.models:
        already = f"train_{model.name}_seconds" in view.timings
        if model.training is not None and model.training.seconds is not None and not already:
            timing_rows.append(
                (f"training {model.name}", fmt.seconds(model.training.seconds), False)
            )
        if model.evaluation_seconds is not None:
            timing_rows.append(
                (f"evaluation {model.name}", fmt.seconds(model.evaluation_seconds), False)
            )

    tables = "".join(
        [
            _kv_table("Run", run_rows),
            _kv_table("Data", data_rows),
            _kv_table("Package versions", version_rows),
            _kv_table("Timings", timing_rows),
        ]
    )
    return (
        f'<section id="provenance"><h2>Provenance</h2><div class="kv-grid">{tables}</div></section>'
    )


def render_view(view: ScorecardView) -> str:
    """Render an already parsed scorecard as a complete HTML document."""
    version = view.versions.get("bastion")
    footer = f"Generated by bastion {version}." if version else "Generated by bastion."
    body = "".join(
        [
            _header(view),
            _tiles(view),
            _summary(view),
            _threat(view),
            _robustness(view),
            _corruptions(view),
            _shifts(view),
            _calibration(view),
            _guard(view),
            _tabular(view),
            _text(view),
            render_poisoning_section(view),
            _latency(view),
            _training(view),
            _sanity(view),
            render_escalation_section(view),
            render_privacy_section(view),
            _warnings(view),
            _provenance(view),
            f"<footer>{_e(footer)}</footer>",
        ]
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Robustness report \u2014 {_e(view.run_name)}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def render_html(scorecard: Scorecard | Mapping[str, Any]) -> str:
    """Render ``scorecard`` (typed, or its JSON document) as a self-contained HTML page.

    Sections: title, key figures, summary table, threat model, accuracy against eps, training,
    warnings and provenance. Parts of the scorecard that are missing are skipped with a note.

    Raises:
        ScorecardError: a part of the scorecard that is present is malformed.
    """
    return render_view(parse_scorecard(scorecard))
