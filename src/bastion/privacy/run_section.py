"""The ``privacy:`` section of a run config: ``bastion run`` audits each trained model.

After evaluation, :func:`run_privacy_section` runs :func:`bastion.privacy.audit.privacy_audit`
(membership inference: LiRA online and offline, Carlini et al. 2022, and the loss threshold,
Yeom et al. 2018; model inversion, Fredrikson et al. 2015) against every model of the run, in
the run's folder before it is renamed into place, and writes ``privacy.json`` there::

    {"schema_version": 1, "kind": "privacy-audit",
     "models": {NAME: {"mia": {...}, "inversion": {...}}},
     "audits": [one privacy_audit document per model]}

so ``bastion gate`` judges ``models.NAME.mia.tpr_at_0.1pct_fpr`` on that file, and
:func:`attach_run_privacy` puts the same per-model summary into the scorecard's ``privacy``
channel (``privacy.models.NAME.mia.tpr_at_0.1pct_fpr`` in a gate rule on the scorecard), with
the audits the report and model card render.

Example::

    privacy:
      shadows: 4          # LiRA shadow models (>= 2)
      attacks: [threshold, lira-online, lira-offline]
      inversion: true
      workers: 1          # processes training shadows at once
      population: 200     # at most N members and N non-members (quicker); default all
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bastion.errors import ConfigError
from bastion.privacy.run_config import ATTACK_NAMES, PrivacySection

__all__ = ["ATTACK_NAMES", "PrivacySection", "attach_run_privacy", "run_privacy_section"]


def _keep_attacks(mia: Mapping[str, Any], attacks: Sequence[str]) -> dict[str, Any]:
    """``mia`` with only the configured attacks, its best-of summary recomputed from them."""
    keys = [ATTACK_NAMES[a] for a in attacks]
    kept = {k: v for k, v in mia["attacks"].items() if k in keys}
    out = dict(mia)
    out["attacks"] = kept
    for metric in ("tpr_at_0.1pct_fpr", "tpr_at_1pct_fpr", "auc"):
        out[metric] = max(float(r[metric]) for r in kept.values())
    return out


def run_privacy_section(
    section: PrivacySection,
    run_dir: Path,
    models: Sequence[str],
    *,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Audit ``models`` of ``run_dir`` (its ``config.yaml`` and ``models/NAME.safetensors``
    must be written) and write ``run_dir/privacy.json``; returns that document.

    Paths inside ``run_dir`` are recorded relative to it (the run folder is renamed after).
    A model named in ``section.models`` that the run did not train is a :class:`ConfigError`.
    """
    from bastion.evaluation.scorecard import relative_paths, sanitize, write_json
    from bastion.privacy.audit import privacy_audit

    say = log or (lambda _m: None)
    names = list(models)
    if section.models is not None:
        missing = [m for m in section.models if m not in names]
        if missing:
            raise ConfigError(
                f"privacy.models: {', '.join(missing)} not among the run's models "
                f"({', '.join(names)})"
            )
        names = list(section.models)
    audits: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for name in names:
        say(f"privacy audit of {name}: {section.shadows} shadows")

        def done(e: dict[str, Any], name: str = name) -> None:
            how = "reused" if e["reused"] else f"trained in {e['seconds']:.1f} s"
            say(f"privacy {name}: shadow {e['shadow']} {how} ({e['done']}/{e['total']})")

        doc = privacy_audit(
            run_dir,
            model=name,
            shadows=section.shadows,
            workers=section.workers,
            seed=seed if section.seed is None else section.seed,
            population=section.population,
            inversion=section.inversion,
            data_dir=data_dir,
            progress=done,
            warn=lambda m: say(f"warning: {m}"),
        )
        doc["mia"] = _keep_attacks(doc["mia"], section.attacks)
        entry = {k: v for k, v in doc.items() if k in ("mia", "inversion")}
        doc["models"] = {name: entry}
        summary[name] = entry
        audits.append(doc)
    result = relative_paths(
        {"schema_version": 1, "kind": "privacy-audit", "models": summary, "audits": audits},
        run_dir,
    )
    write_json(sanitize(result), run_dir / "privacy.json")
    return dict(result)


def attach_run_privacy(scorecard: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """``scorecard`` with its ``privacy`` channel: the audits of ``run_dir/privacy.json`` (and
    DP-SGD guarantees; :func:`bastion.report.privacy_section.attach_privacy_audits`) and the
    per-model summary under ``privacy.models``."""
    import json

    from bastion.report.privacy_section import attach_privacy_audits

    out = attach_privacy_audits(scorecard, run_dir)
    doc = json.loads((run_dir / "privacy.json").read_text(encoding="utf-8"))
    out["privacy"] = {**out.get("privacy", {}), "models": doc["models"]}
    return out
