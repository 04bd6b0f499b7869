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

from bastion.report.poisoning_section import poisoning_markdown
from bastion.report.privacy_section import privacy_markdown

__all__ = ["render_model_card"]


def _pct(value: object) -> str:
    return f"{float(value):.1%}" if isinstance(value, int | float) else "n/a"


def _md(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _threat_line(threat: Mapping[str, Any]) -> str:
    if threat.get("channel") == "text":
        return (
            f"{threat.get('edits', 'edits')}: up to {_pct(threat.get('word_share'))} of the words "
            f"substituted, {_pct(threat.get('char_share'))} of the words with character edits"
        )
    norm = threat.get("norm", "?")
    eps = threat.get("eps", "?")
    bounds = threat.get("bounds", "?")
    return f"{norm} perturbations of size at most {eps}, inputs in {bounds}"


_KNOWLEDGE_WORDS = {
    "white-box": "white-box (the model's gradients)",
    "score-based": "score-based black-box (output scores only)",
    "label-only": "label-only black-box (decisions only)",
    "transfer": "transfer (examples crafted on a surrogate model)",
}


def evaluated_knowledge(scorecard: Mapping[str, Any]) -> list[str]:
    """The kinds of attacker knowledge the scorecard's evaluation attacks exercised."""
    from bastion.attacks.registry import attack_knowledge

    found: list[str] = []
    for a in (scorecard.get("evaluation") or {}).get("attacks") or []:
        if not isinstance(a, Mapping):
            continue
        if isinstance(a.get("knowledge"), str):  # a channel's attack states its own
            kinds = [a["knowledge"]]
        else:
            settings = {k: v for k, v in a.items() if k not in ("label", "name")}
            kinds = attack_knowledge(str(a.get("name")), settings)
        found += [k for k in kinds if k not in found]
    return [k for k in _KNOWLEDGE_WORDS if k in found]


def _knowledge_line(scorecard: Mapping[str, Any]) -> str:
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


def _model_section(name: str, r: Mapping[str, Any], eps_key: str) -> list[str]:
    lines = [f"### {name}", ""]
    lines.append(
        f"- Objective: `{r.get('objective', 'unknown')}`; architecture: "
        f"`{r.get('architecture', 'unknown')}`"
    )
    if r.get("test_clean_accuracy") is not None:
        lines.append(
            f"- Clean accuracy on the whole test split ({r.get('n_test')} examples): "
            f"{_pct(r.get('test_clean_accuracy'))}"
        )
    lines.append(
        f"- On the {r.get('n_eval', '?')} evaluated examples: clean {_pct(r.get('clean_accuracy'))}"
        f", worst case over all attacks {_pct(r.get('worst_case_accuracy'))}"
    )
    esc = r.get("escalation") or {}
    if esc.get("superseded"):  # the sanity checks fired and the adaptive attacks did better
        lines.append(
            f"- That worst case is the escalated one; the first pass of the attacks below said "
            f"{_pct(r.get('first_pass_worst_case_accuracy'))}, superseded: {esc.get('reason')}"
        )
    elif esc.get("status") in ("incomplete", "off") and esc.get("fired"):
        lines.append(
            f"- Unverified: sanity checks fired ({', '.join(esc['fired'])}) and the escalation "
            f"{'did not finish' if esc['status'] == 'incomplete' else 'was turned off'}"
        )
    if r.get("worst_case_basis") == "white-box only":
        lines.append("- White-box only: no black-box attack took part in that figure")
    attacks = r.get("attacks") or {}
    if attacks:
        lines += ["", "| attack | robust accuracy |", "| --- | ---: |"]
        for label, by_eps in attacks.items():
            lines.append(f"| {_md(label)} | {_pct((by_eps or {}).get(eps_key))} |")
        lines.append("")
    cal = r.get("calibration") or {}
    if cal.get("clean"):
        adv = cal.get("adversarial") or {}
        text = f"- Calibration: ECE {cal['clean'].get('ece', 0):.3f} clean"
        if adv:
            text += (
                f", {adv.get('ece', 0):.3f} under {cal.get('attack')} (mean confidence "
                f"{_pct(adv.get('mean_confidence'))} at accuracy {_pct(adv.get('accuracy'))})"
            )
        lines.append(text)
    cor = r.get("corruptions") or {}
    if cor:
        mce = cor.get("mce")
        lines.append(
            f"- Corruptions: mean accuracy {_pct(cor.get('mean_accuracy'))}"
            + (f", mCE {mce:.3f} against {cor.get('reference')}" if isinstance(mce, float) else "")
        )
    sh = r.get("shifts") or {}
    if sh:
        lines.append(
            f"- Distribution shift: mean accuracy {_pct(sh.get('mean_accuracy'))}, worst "
            f"{_pct(sh.get('worst_accuracy'))} ({sh.get('worst_shift')})"
        )
    lat = (r.get("latency") or {}).get("batch_sizes") or {}
    if lat:
        parts = [
            f"batch {b}: p50 {v.get('p50_ms')} ms, p99 {v.get('p99_ms')} ms" for b, v in lat.items()
        ]
        lines.append("- Latency (forward pass): " + "; ".join(parts))
    lines.append("")
    return lines


def _tabular_section(tab: object) -> list[str]:
    """Per tabular model: clean and worst-case accuracy and each constrained attack."""
    if not isinstance(tab, Mapping) or not tab.get("models"):
        return []
    n = (tab.get("data") or {}).get("attacked", "?")
    lines = [
        "### Tabular channel",
        "",
        f"Constrained attacks on {n} test rows; every adversarial row satisfies the schema.",
        "",
        "| model | objective | clean | worst case | attacks (robust accuracy) |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for name, m in tab["models"].items():
        attacks = m.get("attacks") or {}
        per = ", ".join(f"{a} {_pct(v.get('robust_accuracy'))}" for a, v in attacks.items())
        lines.append(
            f"| {_md(name)} | {_md(m.get('objective', '?'))} | {_pct(m.get('clean_accuracy'))} "
            f"| {_pct(m.get('robust_accuracy'))} | {_md(per)} |"
        )
    return [*lines, ""]


def _text_section(text: object) -> list[str]:
    """Per text attack: its success rate against each model (lower is better)."""
    if not isinstance(text, Mapping) or not text.get("attacks"):
        return []
    targets: list[str] = []
    for per in text["attacks"].values():
        targets += [t for t in per if t not in targets]
    summary = text.get("summary") or {}
    lines = [
        "### Text channel",
        "",
        f"Attack success rate on {text.get('n_attacked', '?')} correctly classified test texts "
        f"(lower is better); clean accuracy of the standard model "
        f"{_pct(summary.get('clean_accuracy_standard'))}, of the hardened and guarded model "
        f"{_pct(summary.get('clean_accuracy_hardened_guarded'))}.",
        "",
        "| attack | " + " | ".join(_md(t) for t in targets) + " |",
        "| --- | " + " | ".join("---:" for _ in targets) + " |",
    ]
    for name, per in text["attacks"].items():
        cells = [_pct((per.get(t) or {}).get("success_rate")) for t in targets]
        lines.append(f"| {_md(name)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def render_model_card(scorecard: Mapping[str, Any]) -> str:
    """The Markdown model card of a scorecard (see the module docstring)."""
    run = scorecard.get("run") or {}
    data = scorecard.get("data") or {}
    threat = scorecard.get("threat") or {}
    card = scorecard.get("card") or {}
    models = scorecard.get("models") or {}
    eps = threat.get("eps")
    eps_key = format(float(eps), "g") if isinstance(eps, int | float) else ""
    lines = [f"# Model card: {run.get('name', 'run')}", ""]
    lines += [
        "## Intended use",
        "",
        str(card.get("intended_use") or "Not stated (add `card.intended_use` to the config)."),
        "",
    ]
    if card.get("out_of_scope"):
        lines += ["Out of scope: " + str(card["out_of_scope"]), ""]
    if card.get("owners"):
        lines += ["Owners: " + ", ".join(str(o) for o in card["owners"]), ""]
    lines += [
        "## Data",
        "",
        f"- Data set: `{data.get('name', '?')}`, fingerprint `{data.get('fingerprint', '?')}`",
        f"- Classes: {', '.join(str(c) for c in data.get('classes', []))}",
        "",
        "## Threat model",
        "",
        f"- An attacker who controls the whole input: {_threat_line(threat)}.",
        _knowledge_line(scorecard),
        "",
        "## Results",
        "",
    ]
    for name, r in models.items():
        lines += _model_section(str(name), r or {}, eps_key)
    lines += _tabular_section(scorecard.get("tabular"))
    lines += _text_section(scorecard.get("text"))
    lines += poisoning_markdown(scorecard)
    lines += privacy_markdown(scorecard)
    lines += ["## Limits", ""]
    n_eval = (scorecard.get("evaluation") or {}).get("examples")
    labels = [a.get("label") for a in (scorecard.get("evaluation") or {}).get("attacks", [])]
    lines.append(
        f"- Robust accuracy is an upper bound: it holds only against the attacks run "
        f"({', '.join(str(x) for x in labels) or 'none'}) on {n_eval} test examples; a stronger "
        "or adaptive attack may do better."
    )
    if threat.get("channel") == "text":
        lines.append(
            "- Nothing is claimed for larger edit budgets, nor for other edit types than those "
            "evaluated."
        )
    else:
        lines.append(
            f"- Nothing is claimed beyond eps {eps} in the {threat.get('norm', '?')} norm, nor "
            "for other perturbation types than those evaluated."
        )
    for w in scorecard.get("warnings") or []:
        lines.append(f"- Warning ({w.get('code')}, {w.get('model')}): {w.get('message')}")
    lines += [
        "",
        "## Provenance",
        "",
        f"- Created {run.get('created', '?')} by `{run.get('command', '?')}`, seed "
        f"{run.get('seed', '?')}, config hash `{run.get('config_hash', '?')}`",
        "- Versions: "
        + ", ".join(f"{k} {v}" for k, v in (scorecard.get("versions") or {}).items()),
        "",
    ]
    return "\n".join(lines)
