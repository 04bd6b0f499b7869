"""A Markdown model card drawn from a scorecard (Mitchell et al. 2019, "Model cards for model
reporting"): intended use, threat model, results, limits and provenance.

The figures come from the scorecard only, so the card never says more than the evaluation
measured. The intended use and out-of-scope uses come from the config's optional ``card``
section; without it the card says that they were not stated. Limits are derived from the
evaluation itself: the number of examples, the attacks run, every warning, the largest eps tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bastion.evaluation.scorecard_model import (
    CardInfo,
    ModelResult,
    Scorecard,
    TabularSection,
    TextAttackFigures,
    TextSection,
    ThreatInfo,
    load_scorecard,
)
from bastion.report.poisoning_section import poisoning_markdown
from bastion.report.privacy_section import privacy_markdown

__all__ = ["render_model_card"]


def _pct(value: object) -> str:
    return f"{float(value):.1%}" if isinstance(value, int | float) else "n/a"


def _md(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _or(value: object, default: object = "?") -> object:
    return default if value is None else value


def _threat_line(threat: ThreatInfo) -> str:
    if threat.channel == "text":
        return (
            f"{threat.edits or 'edits'}: up to {_pct(threat.word_share)} of the words "
            f"substituted, {_pct(threat.char_share)} of the words with character edits"
        )
    bounds = "?" if threat.bounds is None else list(threat.bounds)
    return f"{_or(threat.norm)} perturbations of size at most {_or(threat.eps)}, inputs in {bounds}"


_KNOWLEDGE_WORDS = {
    "white-box": "white-box (the model's gradients)",
    "score-based": "score-based black-box (output scores only)",
    "label-only": "label-only black-box (decisions only)",
    "transfer": "transfer (examples crafted on a surrogate model)",
}


def evaluated_knowledge(scorecard: Scorecard | Mapping[str, Any]) -> list[str]:
    """The kinds of attacker knowledge the scorecard's evaluation attacks exercised."""
    from bastion.attacks.registry import attack_knowledge

    found: list[str] = []
    for a in load_scorecard(scorecard).evaluation.attacks:
        if a.knowledge is not None:  # a channel's attack states its own
            kinds = [a.knowledge]
        else:
            settings = {k: v for k, v in a.to_json().items() if k not in ("label", "name")}
            kinds = attack_knowledge(str(a.name), settings)
        found += [k for k in kinds if k not in found]
    return [k for k in _KNOWLEDGE_WORDS if k in found]


def _knowledge_line(scorecard: Scorecard) -> str:
    kinds = evaluated_knowledge(scorecard)
    if not kinds:
        return "- Knowledge assumed by the evaluation: no attack was run."
    line = (
        "- Knowledge assumed by the evaluation: "
        + ", ".join(_KNOWLEDGE_WORDS[k] for k in kinds)
        + " attacks, as listed below; the worst case over them is the figure to quote."
    )
    if "score-based" not in kinds and "label-only" not in kinds:
        line += (
            " No black-box attack was run, so gradient masking would go unnoticed: the figures "
            "are white-box only."
        )
    return line


def _model_section(name: str, r: ModelResult, eps_key: str) -> list[str]:
    lines = [f"### {name}", ""]
    lines.append(
        f"- Objective: `{_or(r.objective, 'unknown')}`; architecture: "
        f"`{_or(r.architecture, 'unknown')}`"
    )
    if r.test_clean_accuracy is not None:
        lines.append(
            f"- Clean accuracy on the whole test split ({r.n_test} examples): "
            f"{_pct(r.test_clean_accuracy)}"
        )
    lines.append(
        f"- On the {_or(r.n_eval)} evaluated examples: clean {_pct(r.clean_accuracy)}"
        f", worst case over all attacks {_pct(r.worst_case_accuracy)}"
    )
    lines += _escalation_lines(r)
    if r.worst_case_basis == "white-box only":
        lines.append("- White-box only: no black-box attack took part in that figure")
    if r.attacks:
        lines += ["", "| attack | robust accuracy |", "| --- | ---: |"]
        for label, by_eps in r.attacks.items():
            lines.append(f"| {_md(label)} | {_pct(by_eps.get(eps_key))} |")
        lines.append("")
    return lines + _extra_figures(r) + [""]


def _escalation_lines(r: ModelResult) -> list[str]:
    esc = r.escalation
    if esc is None:
        return []
    if esc.superseded:  # the sanity checks fired and the adaptive attacks did better
        return [
            f"- That worst case is the escalated one; the first pass of the attacks below said "
            f"{_pct(r.first_pass_worst_case_accuracy)}, superseded: {esc.reason}"
        ]
    if esc.status in ("incomplete", "off") and esc.fired:
        return [
            f"- Unverified: sanity checks fired ({', '.join(esc.fired)}) and the escalation "
            f"{'did not finish' if esc.status == 'incomplete' else 'was turned off'}"
        ]
    return []


def _extra_figures(r: ModelResult) -> list[str]:
    """Calibration, corruptions, distribution shift and latency lines of one model."""
    lines = []
    cal = r.calibration
    if cal is not None and cal.clean:
        text = f"- Calibration: ECE {_or(cal.clean.ece, 0):.3f} clean"
        adv = cal.adversarial
        if adv:
            text += (
                f", {_or(adv.ece, 0):.3f} under {cal.attack} (mean confidence "
                f"{_pct(adv.mean_confidence)} at accuracy {_pct(adv.accuracy)})"
            )
        lines.append(text)
    cor = r.corruptions
    if cor:
        mce = cor.mce
        lines.append(
            f"- Corruptions: mean accuracy {_pct(cor.mean_accuracy)}"
            + (f", mCE {mce:.3f} against {cor.reference}" if isinstance(mce, float) else "")
        )
    sh = r.shifts
    if sh:
        lines.append(
            f"- Distribution shift: mean accuracy {_pct(sh.mean_accuracy)}, worst "
            f"{_pct(sh.worst_accuracy)} ({sh.worst_shift})"
        )
    if r.latency is not None and r.latency.batch_sizes:
        parts = [
            f"batch {b}: p50 {v.p50_ms} ms, p99 {v.p99_ms} ms"
            for b, v in r.latency.batch_sizes.items()
        ]
        lines.append("- Latency (forward pass): " + "; ".join(parts))
    return lines


def _tabular_section(tab: TabularSection | None) -> list[str]:
    """Per tabular model: clean and worst-case accuracy and each constrained attack."""
    if tab is None or not tab.models:
        return []
    n = tab.data.get("attacked", "?")
    lines = [
        "### Tabular channel",
        "",
        f"Constrained attacks on {n} test rows; every adversarial row satisfies the schema.",
        "",
        "| model | objective | clean | worst case | attacks (robust accuracy) |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for name, m in tab.models.items():
        per = ", ".join(f"{a} {_pct(v.robust_accuracy)}" for a, v in m.attacks.items())
        lines.append(
            f"| {_md(name)} | {_md(_or(m.objective))} | {_pct(m.clean_accuracy)} "
            f"| {_pct(m.robust_accuracy)} | {_md(per)} |"
        )
    return [*lines, ""]


def _text_section(text: TextSection | None) -> list[str]:
    """Per text attack: its success rate against each model (lower is better)."""
    if text is None or not text.attacks:
        return []
    targets: list[str] = []
    for per in text.attacks.values():
        targets += [t for t in per.extra() if t not in targets]
    summary = text.summary
    lines = [
        "### Text channel",
        "",
        f"Attack success rate on {_or(text.n_attacked)} correctly classified test texts "
        f"(lower is better); clean accuracy of the standard model "
        f"{_pct(summary.get('clean_accuracy_standard'))}, of the hardened and guarded model "
        f"{_pct(summary.get('clean_accuracy_hardened_guarded'))}.",
        "",
        "| attack | " + " | ".join(_md(t) for t in targets) + " |",
        "| --- | " + " | ".join("---:" for _ in targets) + " |",
    ]
    for name, per in text.attacks.items():
        cells = [_pct((per.target(t) or TextAttackFigures()).success_rate) for t in targets]
        lines.append(f"| {_md(name)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def render_model_card(scorecard: Scorecard | Mapping[str, Any]) -> str:
    """The Markdown model card of a scorecard (typed, or its JSON document; see the module
    docstring).

    Raises:
        ScorecardError: the scorecard is malformed (the field is named).
    """
    sc = load_scorecard(scorecard)
    run, data, threat = sc.run, sc.data, sc.threat
    card = sc.card or CardInfo()
    eps_key = threat.eps_key or ""
    lines = [f"# Model card: {_or(run.name, 'run')}", ""]
    lines += [
        "## Intended use",
        "",
        card.intended_use or "Not stated (add `card.intended_use` to the config).",
        "",
    ]
    if card.out_of_scope:
        lines += ["Out of scope: " + card.out_of_scope, ""]
    if card.owners:
        lines += ["Owners: " + ", ".join(card.owners), ""]
    lines += [
        "## Data",
        "",
        f"- Data set: `{_or(data.name)}`, fingerprint `{_or(data.fingerprint)}`",
        f"- Classes: {', '.join(str(c) for c in data.classes or [])}",
        "",
        "## Threat model",
        "",
        f"- An attacker who controls the whole input: {_threat_line(threat)}.",
        _knowledge_line(sc),
        "",
        "## Results",
        "",
    ]
    for name, r in sc.models.items():
        lines += _model_section(name, r, eps_key)
    lines += _tabular_section(sc.tabular)
    lines += _text_section(sc.text)
    lines += poisoning_markdown(sc.to_json())  # the poisoning section is open-ended
    lines += privacy_markdown(sc)
    return "\n".join(lines + _limits(sc) + _provenance(sc))


def _limits(sc: Scorecard) -> list[str]:
    lines = ["## Limits", ""]
    labels = [a.label for a in sc.evaluation.attacks]
    lines.append(
        f"- Robust accuracy is an upper bound: it holds only against the attacks run "
        f"({', '.join(str(x) for x in labels) or 'none'}) on {sc.evaluation.examples} test "
        "examples; a stronger or adaptive attack may do better."
    )
    if sc.threat.channel == "text":
        lines.append(
            "- Nothing is claimed for larger edit budgets, nor for other edit types than those "
            "evaluated."
        )
    else:
        lines.append(
            f"- Nothing is claimed beyond eps {sc.threat.eps} in the {_or(sc.threat.norm)} norm, "
            "nor for other perturbation types than those evaluated."
        )
    for w in sc.warnings:
        if isinstance(w, str):
            lines.append(f"- Warning: {w}")
        else:
            lines.append(f"- Warning ({w.code}, {w.model}): {w.message}")
    return lines


def _provenance(sc: Scorecard) -> list[str]:
    run = sc.run
    return [
        "",
        "## Provenance",
        "",
        f"- Created {_or(run.created)} by `{_or(run.command)}`, seed "
        f"{_or(run.seed)}, config hash `{_or(run.config_hash)}`",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in sc.versions.items()),
        "",
    ]
