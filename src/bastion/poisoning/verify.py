"""Verification of trained models for ``bastion run``'s poisoning section, and the figures the
report and the gate read.

* :func:`verify_model`: one trained image classifier checked as the ``verify:`` block asks:
  attack success of the drill's trigger (when there is a drill), Neural Cleanse (Wang et al.
  2019: per-class reversed triggers, MAD anomaly index, the smallest trigger written as PNG
  and embedded in the scorecard as base64 for the self-contained report) and a STRIP layer
  (Gao et al. 2019) evaluated like the other guard layers: its threshold set on clean
  validation inputs at ``strip_fpr``, then its false-positive rate on clean test inputs and,
  with a drill, its detection rate on triggered ones.
* :func:`score_histograms`: per latent scan, a histogram of the poison scores of the kept and
  of the quarantined examples (the report's histogram).
* :func:`quarantine_table`: the first quarantined examples with their reasons and scores.
* :func:`gate_figures`: ``poison_fraction_quarantined`` (quarantined / scanned) and
  ``backdoor_attack_success`` (the worst trained model's attack success), the two numbers
  gate rules bound (``{metric: poisoning.backdoor_attack_success, max: 0.02}``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from bastion.poisoning.attacks import Trigger, attack_success_rate
from bastion.poisoning.config import VerifyConfig
from bastion.poisoning.neural_cleanse import CleanseSettings, neural_cleanse, save_trigger_png
from bastion.poisoning.quarantine import Quarantine
from bastion.poisoning.strip import StripDetector

#: Quarantined examples listed in the scorecard (all of them are in ``quarantine.json``).
TABLE_ROWS = 20


def verify_model(
    model: nn.Module,
    name: str,
    *,
    verify: VerifyConfig,
    val: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
    trigger: Trigger | None,
    settings: Mapping[str, Any] | None,
    out_dir: str | Path,
    seed: int = 0,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """The verification entry of one model (inputs ``(N, C, H, W)`` in ``[0, 1]``).

    Keys: ``attack_success_rate`` (with a trigger), ``neural_cleanse`` (summary, the PNG's
    file name in ``out_dir`` and ``trigger_png_base64``) when ``verify.neural_cleanse``,
    ``strip`` (threshold, false-positive rate on at most ``verify.examples`` clean test
    inputs, detection rate on as many triggered ones of the other classes when there is a
    trigger) when ``verify.strip``. Deterministic given ``seed``.
    """
    vx, _vy = val
    tx, ty = test
    entry: dict[str, Any] = {}
    mode = str((settings or {}).get("mode", "all-to-one"))
    target = int((settings or {}).get("target", 0))
    if trigger is not None:
        entry["attack_success_rate"] = round(
            attack_success_rate(
                model, tx, ty, trigger, mode=mode,  # type: ignore[arg-type]
                target=target, num_classes=num_classes,
            ),
            4,
        )  # fmt: skip
    if verify.neural_cleanse:
        log(f"neural cleanse: {name}")
        nc = neural_cleanse(
            model,
            vx[: verify.cleanse_examples],
            num_classes=num_classes,
            settings=CleanseSettings(steps=verify.cleanse_steps),
            seed=seed,
        )
        png = save_trigger_png(
            nc.triggers[int(nc.norms.argmin())], Path(out_dir) / f"trigger-{name}.png"
        )
        entry["neural_cleanse"] = {
            **nc.summary(),
            "trigger_png": png.name,
            "trigger_png_base64": base64.b64encode(png.read_bytes()).decode("ascii"),
        }
    if verify.strip:
        log(f"strip: {name}")
        half = len(vx) // 2
        strip = StripDetector(model, vx[:half], seed=seed).fit(vx[half:], fpr=verify.strip_fpr)
        clean = tx[: verify.examples]
        if trigger is not None:
            others = ty != target if mode == "all-to-one" else torch.ones_like(ty, dtype=torch.bool)
            entry["strip"] = strip.evaluate(clean, trigger.apply(tx[others][: verify.examples]))
        else:
            flagged = strip.detect(clean)
            entry["strip"] = {
                "threshold": round(float(strip.threshold or 0.0), 6),
                "target_fpr": verify.strip_fpr,
                "false_positive_rate": round(float(flagged.double().mean()), 4),
                "n_clean": len(clean),
            }
    return entry


class Scored(Protocol):
    """A scan's outcome as the histograms read it (:class:`ScanResult`, :class:`ScanOutcome`
    of :mod:`.drill`): bool ``flagged`` and float ``scores``, both ``(N,)``."""

    @property
    def flagged(self) -> Tensor: ...

    @property
    def scores(self) -> Tensor: ...


def score_histograms(scans: Mapping[str, Scored], *, bins: int = 20) -> dict[str, Any]:
    """Per scan, ``{"edges": [bins + 1], "kept": [bins], "quarantined": [bins]}``: counts of
    the scan's scores (higher = more suspect) over equal-width bins spanning all scores."""
    out: dict[str, Any] = {}
    for name, res in scans.items():
        scores = res.scores.detach().double().cpu().numpy()
        flagged = res.flagged.detach().cpu().numpy().astype(bool)
        if scores.size == 0:
            continue
        lo, hi = float(scores.min()), float(scores.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        kept, _ = np.histogram(scores[~flagged], bins=edges)
        quarantined, _ = np.histogram(scores[flagged], bins=edges)
        out[name] = {
            "edges": [round(float(e), 6) for e in edges],
            "kept": [int(c) for c in kept],
            "quarantined": [int(c) for c in quarantined],
        }
    return out


def quarantine_table(quarantine: Quarantine, *, rows: int = TABLE_ROWS) -> list[dict[str, Any]]:
    """The first ``rows`` quarantine entries (index, label, reasons, scores), by index."""
    return [e.to_dict() for e in quarantine.entries[:rows]]


def gate_figures(section: Mapping[str, Any]) -> dict[str, float]:
    """``poison_fraction_quarantined`` and, when models were measured against a trigger,
    ``backdoor_attack_success`` (the largest of their attack success rates)."""
    out = {
        "poison_fraction_quarantined": round(
            float(section.get("n_quarantined", 0)) / max(1, int(section.get("n_scanned", 0))), 6
        )
    }
    rates = [
        float(m["attack_success_rate"])
        for m in (section.get("models") or {}).values()
        if isinstance(m, Mapping) and "attack_success_rate" in m
    ]
    if rates:
        out["backdoor_attack_success"] = max(rates)
    return out
