"""The report's and model card's privacy section: differential-privacy guarantees and the
privacy audits of a run.

* **DP-SGD guarantees**: a model trained with DP-SGD through Opacus (Abadi et al. 2016;
  :mod:`bastion.privacy.dp`) records the accountant's ``epsilon`` and ``delta`` in every epoch
  of its training history; the last epoch's pair is the model's ``(epsilon, delta)``.
* **Audits**: the documents of ``bastion audit privacy`` (membership inference: LiRA, Carlini
  et al. 2022, and the loss threshold, Yeom et al. 2018; model inversion, Fredrikson et al.
  2015) and ``bastion audit extraction`` (Knockoff Nets, Orekondy et al. 2019; Jacobian
  augmentation, Papernot et al. 2017).

:func:`attach_privacy_audits` (called by ``bastion report`` with the scorecard's folder, where
``bastion audit privacy`` writes ``privacy.json``; an ``extraction.json`` there is read too)
puts both into the scorecard's ``privacy`` channel: ``{"dp": {model: {"epsilon", "delta"}},
"audits": [document, ...]}``. :func:`render_privacy_section` gives the HTML section from that
channel ("" when it is absent or empty; every value is HTML-escaped), :func:`privacy_markdown`
the model card's lines.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bastion.errors import ConfigError
from bastion.evaluation.scorecard_model import (
    ExtractionRecord,
    MiaFigures,
    MiaRecord,
    PrivacyAuditRecord,
    PrivacySection,
    Scorecard,
    load_scorecard,
)
from bastion.report._view import ScorecardView

__all__ = [
    "AUDIT_FILES",
    "attach_privacy_audits",
    "dp_guarantees",
    "privacy_markdown",
    "render_privacy_section",
]

AUDIT_FILES = ("privacy.json", "extraction.json")
_KINDS = ("privacy-audit", "extraction-audit")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _pct(value: object) -> str:
    v = _num(value)
    return "-" if v is None else f"{v:.2%}"


def attach_privacy_audits(scorecard: Scorecard | Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """A copy of ``scorecard``'s JSON document with the audit documents found in ``folder``
    (:data:`AUDIT_FILES`) under ``privacy``; a file there that is not JSON or not an audit
    document is a :class:`ConfigError` naming it."""
    if isinstance(scorecard, Scorecard):
        scorecard = scorecard.to_json()
    audits: list[dict[str, Any]] = []
    for name in AUDIT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: not a readable JSON audit document ({e})") from None
        if not isinstance(doc, dict) or doc.get("kind") not in _KINDS:
            raise ConfigError(f"{path}: expected a document with kind {' or '.join(_KINDS)}")
        nested = doc.get("audits")  # a run's privacy section: one document per model
        if isinstance(nested, list):
            audits.extend(d for d in nested if isinstance(d, dict))
        else:
            audits.append(doc)
    out = dict(scorecard)
    dp = {m: {"epsilon": e, "delta": d} for m, (e, d) in dp_guarantees(scorecard).items()}
    if audits or dp:
        out["privacy"] = {"dp": dp, "audits": audits}
    return out


def dp_guarantees(scorecard: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """``{model: (epsilon, delta)}`` of the models trained with DP-SGD (the last epoch of
    ``models.<name>.training.history`` carrying both)."""
    out: dict[str, tuple[float, float]] = {}
    models = scorecard.get("models")
    if not isinstance(models, Mapping):
        return out
    for name, entry in models.items():
        training = entry.get("training") if isinstance(entry, Mapping) else None
        history = training.get("history") if isinstance(training, Mapping) else None
        if not isinstance(history, Sequence) or isinstance(history, str):
            continue
        for record in reversed(history):
            if not isinstance(record, Mapping):
                continue
            eps, delta = _num(record.get("epsilon")), _num(record.get("delta"))
            if eps is not None and delta is not None:
                out[str(name)] = (eps, delta)
                break
    return out


def _audits(channel: PrivacySection, kind: str) -> list[PrivacyAuditRecord]:
    return [d for d in channel.audits if d.kind == kind]


def _dp(channel: PrivacySection) -> dict[str, tuple[float, float]]:
    return {
        m: (float(g.epsilon), float(g.delta))
        for m, g in channel.dp.items()
        if g.epsilon is not None and g.delta is not None
    }


def _mia_rows(doc: PrivacyAuditRecord) -> list[tuple[str, str, MiaFigures]]:
    if doc.mia is None:
        return []
    model = Path(doc.model or "?").name
    return [(model, a, r) for a, r in doc.mia.attacks.items()]


def _or(value: object, default: str = "-") -> object:
    return default if value is None else value


def _dp_html(dp: dict[str, tuple[float, float]]) -> str:
    rows = "".join(
        f"<tr><td>{_e(m)}</td><td>{eps:.3g}</td><td>{delta:.3g}</td></tr>"
        for m, (eps, delta) in dp.items()
    )
    return (
        "<h3>Differential privacy (DP-SGD, Opacus RDP accountant)</h3><table><thead><tr>"
        "<th>model</th><th>epsilon</th><th>delta</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _mia_html(doc: PrivacyAuditRecord) -> str:
    rows = "".join(
        f"<tr><td>{_e(m)}</td><td>{_e(a)}</td><td>{_pct(r.tpr_at_0_1pct_fpr)}</td>"
        f"<td>{_pct(r.tpr_at_1pct_fpr)}</td><td>{_e(_or(r.auc))}</td></tr>"
        for m, a, r in _mia_rows(doc)
    )
    out = (
        "<h3>Membership inference</h3><table><thead><tr><th>model</th><th>attack</th>"
        "<th>TPR @ 0.1% FPR</th><th>TPR @ 1% FPR</th><th>AUC</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    inv = doc.inversion
    if inv is not None:
        out += (
            f"<p>Model inversion: {_pct(inv.identified)} of classes identified from "
            f"their reconstructions; cosine to the class mean {_e(inv.cosine_own)}.</p>"
        )
    return out


def _extraction_html(ex_docs: list[PrivacyAuditRecord]) -> str:
    rows = "".join(
        f"<tr><td>{_e(_or(d.target, '?'))}</td><td>{_e(_or(ex.best_method))}</td>"
        f"<td>{_e(_or(ex.queries))}</td><td>{_pct(ex.fidelity_at_budget)}</td>"
        f"<td>{_pct(ex.accuracy_at_budget)}</td>"
        f"<td>{_pct(ex.transfer_success_rate)}</td></tr>"
        for d in ex_docs
        for ex in (d.extraction or ExtractionRecord(),)
    )
    return (
        "<h3>Model extraction</h3><table><thead><tr><th>target</th><th>best attack</th>"
        "<th>queries</th><th>fidelity</th><th>copy accuracy</th>"
        "<th>transfer from the copy</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def render_privacy_section(view: ScorecardView) -> str:
    """The HTML ``<section id="privacy">`` of the scorecard's typed ``privacy`` section (empty
    string when there is nothing to show)."""
    channel = view.scorecard.privacy or PrivacySection()
    dp = _dp(channel)
    mia_docs = _audits(channel, "privacy-audit")
    ex_docs = _audits(channel, "extraction-audit")
    if not (dp or mia_docs or ex_docs):
        return ""
    parts = ['<section id="privacy"><h2>Privacy and model theft</h2>']
    if dp:
        parts.append(_dp_html(dp))
    parts += [_mia_html(doc) for doc in mia_docs]
    if ex_docs:
        parts.append(_extraction_html(ex_docs))
    parts.append("</section>")
    return "".join(parts)


def privacy_markdown(scorecard: Scorecard | Mapping[str, Any]) -> list[str]:
    """The model card's ``## Privacy`` lines from the scorecard's typed ``privacy`` section
    (none when there is nothing to show)."""
    channel = load_scorecard(scorecard).privacy or PrivacySection()
    dp = _dp(channel)
    mia_docs = _audits(channel, "privacy-audit")
    ex_docs = _audits(channel, "extraction-audit")
    if not (dp or mia_docs or ex_docs):
        return []
    lines = ["## Privacy", ""]
    for m, (eps, delta) in dp.items():
        lines.append(f"- `{m}`: ({eps:.3g}, {delta:.3g})-differentially private (DP-SGD, Opacus)")
    for doc in mia_docs:
        mia = doc.mia or MiaRecord.model_validate({})
        lines.append(
            f"- Membership inference on `{Path(doc.model or '?').name}`: TPR "
            f"{_pct(mia.tpr_at_0_1pct_fpr)} at 0.1% FPR, {_pct(mia.tpr_at_1pct_fpr)} at 1% FPR "
            "(strongest attack)"
        )
    for doc in ex_docs:
        ex = doc.extraction or ExtractionRecord()
        lines.append(
            f"- Extraction of `{_or(doc.target, '?')}`: a copy agreeing on "
            f"{_pct(ex.fidelity_at_budget)} of held-out inputs after "
            f"{_or(ex.queries, '?')} queries ({_or(ex.best_method, '?')})"
        )
    return [*lines, ""]
