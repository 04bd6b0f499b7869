"""The report's and model card's poisoning section: the training-time channel of a run.

Reads the scorecard's ``poisoning`` channel (written by ``bastion run`` when its config has a
``poisoning:`` section, :mod:`bastion.poisoning.flow` and :mod:`bastion.poisoning.verify`):

* the quarantine: counts, ``poison_fraction_quarantined``, detection metrics against a drill,
  the first quarantined examples (index, label, reasons, scores);
* a histogram of each latent scan's poison scores, kept and quarantined examples stacked, as
  inline SVG (no script, no external resource: the report's CSP allows neither);
* per trained model: the drill's attack success, Neural Cleanse's verdict (Wang et al. 2019)
  with the recovered trigger as an image, and the STRIP layer's false-positive and detection
  rates (Gao et al. 2019).

:func:`render_poisoning_section` returns ``""`` when the channel is absent; every value is
HTML-escaped and every number is checked, so a malformed channel renders as ``-`` cells
rather than raising. :func:`poisoning_markdown` gives the model card's lines.
"""

from __future__ import annotations

import base64
import binascii
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import bastion.report._format as fmt
from bastion.report._view import ScorecardView

__all__ = ["poisoning_markdown", "render_poisoning_section"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


_num = fmt.finite


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: object) -> str:
    return fmt.percent(_num(value))


def _ints(value: object) -> list[int]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return []
    return [int(v) if _num(v) is not None else 0 for v in value]


def _histogram_svg(name: str, hist: Mapping[str, Any]) -> str:
    """Stacked bars (kept grey, quarantined red) of one scan's score histogram."""
    kept, quarantined = _ints(hist.get("kept")), _ints(hist.get("quarantined"))
    edges = [v for v in (hist.get("edges") or []) if _num(v) is not None]
    n = min(len(kept), len(quarantined))
    if n == 0:
        return ""
    width, height, bar = 400, 120, 400 / n
    top = max(1, max(k + q for k, q in zip(kept, quarantined, strict=False)))
    rects = []
    for i in range(n):
        # a log scale: the few poisons stay visible beside thousands of clean examples
        total_h = height * math.log1p(kept[i] + quarantined[i]) / math.log1p(top)
        q_h = total_h * quarantined[i] / max(1, kept[i] + quarantined[i])
        x = i * bar
        rects.append(
            f'<rect x="{x:.1f}" y="{height - total_h:.1f}" width="{bar - 1:.1f}" '
            f'height="{total_h - q_h:.1f}" fill="#9aa5b1"><title>kept: {kept[i]}</title></rect>'
            f'<rect x="{x:.1f}" y="{height - q_h:.1f}" width="{bar - 1:.1f}" '
            f'height="{q_h:.1f}" fill="#c0392b"><title>quarantined: {quarantined[i]}</title></rect>'
        )
    span = f"{edges[0]:.3g} .. {edges[-1]:.3g}" if len(edges) >= 2 else ""
    return (
        f"<figure><figcaption>{_e(name)}: poison score (higher = more suspect) {_e(span)}; "
        "grey kept, red quarantined, counts on a log scale</figcaption>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{_e(name)} score histogram">{"".join(rects)}</svg></figure>'
    )


def _trigger_img(nc: Mapping[str, Any], model: str) -> str:
    data = nc.get("trigger_png_base64")
    if not isinstance(data, str):
        return ""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return ""
    if not raw.startswith(_PNG_MAGIC):
        return ""
    encoded = base64.b64encode(raw).decode("ascii")
    alt = f"recovered trigger of {model} (left: pattern under the mask; right: the mask)"
    return f'<img src="data:image/png;base64,{encoded}" alt="{_e(alt)}">'


def _detection_rows(detection: object) -> str:
    if not isinstance(detection, Mapping):
        return ""
    return "".join(
        f"<tr><td>{_e(name)}</td><td>{_pct(m.get('precision'))}</td><td>{_pct(m.get('recall'))}"
        f"</td><td>{_pct(m.get('clean_flagged_rate'))}</td></tr>"
        for name, m in detection.items()
        if isinstance(m, Mapping)
    )


def _models_html(models: Mapping[str, Any]) -> list[str]:
    """The trained models' table (attack success, Neural Cleanse, STRIP) and the
    recovered triggers."""
    parts: list[str] = []
    rows_m, images = [], []
    for name, m in models.items():
        if not isinstance(m, Mapping):
            continue
        nc = m.get("neural_cleanse") if isinstance(m.get("neural_cleanse"), Mapping) else {}
        st = m.get("strip") if isinstance(m.get("strip"), Mapping) else {}
        assert isinstance(nc, Mapping) and isinstance(st, Mapping)
        verdict = "-"
        if nc:
            verdict = f"flagged, target {_e(nc.get('target'))}" if nc.get("flagged") else "clean"
            verdict += f" (index {_num(nc.get('anomaly_index')) or 0:.2f})"
        rows_m.append(
            f"<tr><td>{_e(name)}</td><td>{_pct(m.get('attack_success_rate'))}</td>"
            f"<td>{verdict}</td><td>{_pct(st.get('false_positive_rate'))}</td>"
            f"<td>{_pct(st.get('detection_rate'))}</td></tr>"
        )
        img = _trigger_img(nc, str(name))
        if img:
            images.append(f"<figure>{img}<figcaption>{_e(name)}</figcaption></figure>")
    parts.append(
        "<h3>Trained models</h3><table><thead><tr><th>model</th><th>attack success</th>"
        "<th>Neural Cleanse</th><th>STRIP false positives (clean)</th>"
        "<th>STRIP detection (triggered)</th></tr></thead>"
        f"<tbody>{''.join(rows_m)}</tbody></table>"
    )
    if images:
        parts.append("<h3>Recovered triggers (Neural Cleanse, smallest class)</h3>")
        parts.extend(images)
    return parts


def _victim_row(ch: Mapping[str, Any]) -> str:
    """The drill's victim (trained on the whole poisoned set) when the channel measured it."""
    if _num(ch.get("scan_model_attack_success_rate")) is None:
        return ""
    return (
        "<tr><th>attack success on the victim (trained on the poisoned set)</th>"
        f"<td>{_pct(ch.get('scan_model_attack_success_rate'))}</td></tr>"
    )


def render_poisoning_section(view: ScorecardView) -> str:
    """The HTML ``<section id="poisoning">`` of the view's ``poisoning`` channel ("" when
    absent)."""
    ch = view.channels.get("poisoning")
    if not isinstance(ch, Mapping) or not ch:
        return ""
    parts = ['<section id="poisoning"><h2>Training data: poisoning and backdoors</h2>']
    attack = ch.get("attack")
    if isinstance(attack, Mapping):
        parts.append(
            f"<p>Red-team drill: <code>{_e(attack.get('attack', '?'))}</code>, "
            f"{_e(attack.get('n_poisoned', '?'))} of {_e(attack.get('n', '?'))} training "
            "examples poisoned.</p>"
        )
    parts.append(
        "<table><tbody>"
        f"<tr><th>scanned</th><td>{_e(ch.get('n_scanned', '-'))}</td></tr>"
        f"<tr><th>quarantined</th><td>{_e(ch.get('n_quarantined', '-'))} "
        f"({_pct(ch.get('poison_fraction_quarantined'))})</td></tr>"
        f"<tr><th>trained on</th><td>{_e(ch.get('n_trained_on', '-'))}"
        f"{'' if ch.get('quarantine_applied', True) else ' (quarantine not applied)'}</td></tr>"
        f"<tr><th>worst backdoor attack success</th>"
        f"<td>{_pct(ch.get('backdoor_attack_success'))}</td></tr>"
        f"{_victim_row(ch)}"
        "</tbody></table>"
    )
    rows = _detection_rows(ch.get("detection"))
    if rows:
        parts.append(
            "<h3>Detection against the drill</h3><table><thead><tr><th>scan</th>"
            "<th>precision</th><th>recall</th><th>clean data flagged</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    hists = ch.get("score_histograms")
    if isinstance(hists, Mapping) and hists:
        parts.append("<h3>Poison scores</h3>")
        parts.extend(_histogram_svg(str(n), h) for n, h in hists.items() if isinstance(h, Mapping))
    table = ch.get("quarantine_table")
    if isinstance(table, Sequence) and not isinstance(table, str) and table:
        body = "".join(
            f"<tr><td>{_e(e.get('index'))}</td><td>{_e(e.get('label'))}</td>"
            f"<td>{_e(', '.join(str(r) for r in e.get('reasons') or []))}</td>"
            f"<td>{_e(', '.join(f'{k}: {v:.3g}' for k, v in (e.get('scores') or {}).items() if _num(v) is not None))}</td></tr>"  # noqa: E501
            for e in table
            if isinstance(e, Mapping)
        )
        parts.append(
            f"<h3>Quarantine (first {len(table)} of {_e(ch.get('n_quarantined', '?'))}; all in "
            f"<code>{_e(ch.get('quarantine_file', 'quarantine.json'))}</code>)</h3>"
            "<table><thead><tr><th>index</th><th>label</th><th>reasons</th><th>scores</th>"
            f"</tr></thead><tbody>{body}</tbody></table>"
        )
    models = ch.get("models")
    if isinstance(models, Mapping) and models:
        parts.extend(_models_html(models))
    parts.append("</section>")
    return "".join(parts)


def poisoning_markdown(scorecard: Mapping[str, Any]) -> list[str]:
    """The model card's ``## Training data poisoning`` lines ([] without the channel)."""
    ch = scorecard.get("poisoning")
    if not isinstance(ch, Mapping) or not ch:
        return []
    lines = ["## Training data poisoning", ""]
    lines.append(
        f"- Scanned {ch.get('n_scanned', '?')} training examples before training; quarantined "
        f"{ch.get('n_quarantined', '?')} ({_pct(ch.get('poison_fraction_quarantined'))}), "
        f"listed with scores and reasons in `{ch.get('quarantine_file', 'quarantine.json')}`; "
        f"trained on {ch.get('n_trained_on', '?')}."
    )
    attack = ch.get("attack")
    if isinstance(attack, Mapping):
        lines.append(
            f"- Red-team drill: `{attack.get('attack', '?')}` poisoned "
            f"{attack.get('n_poisoned', '?')} examples; worst attack success of a trained "
            f"model: {_pct(ch.get('backdoor_attack_success'))}."
        )
    if _num(ch.get("scan_model_attack_success_rate")) is not None:
        lines.append(
            "- Attack success on the drill's victim (trained on the poisoned set, before the "
            f"quarantine): {_pct(ch.get('scan_model_attack_success_rate'))}."
        )
    models = ch.get("models")
    if isinstance(models, Mapping):
        for name, m in models.items():
            if not isinstance(m, Mapping):
                continue
            nc, st = m.get("neural_cleanse"), m.get("strip")
            bits = []
            if isinstance(nc, Mapping):
                bits.append(
                    "Neural Cleanse "
                    + (f"flags target class {nc.get('target')}" if nc.get("flagged") else "clean")
                    + f" (anomaly index {_num(nc.get('anomaly_index')) or 0:.2f})"
                )
            if isinstance(st, Mapping):
                bits.append(
                    f"STRIP {_pct(st.get('false_positive_rate'))} false positives"
                    + (
                        f", {_pct(st.get('detection_rate'))} of triggered inputs caught"
                        if "detection_rate" in st
                        else ""
                    )
                )
            if bits:
                lines.append(f"- `{name}`: " + "; ".join(bits) + ".")
    lines.append("")
    return lines
