"""What the keyword-style data scans share: the flip test and the result record.

:func:`~bastion.poisoning.text_backdoor.trigger_token_scan` (tokens of a text set) and
:func:`~bastion.poisoning.tabular_backdoor.feature_value_scan` (cells of a table) both follow
Backdoor Keyword Identification (Chen and Dai 2021): take a candidate that is almost only seen
with one label, remove it from the examples of that label, and see whether the model trained on
the data changes its mind (:func:`flip_test`). Both return a :class:`CandidateScanResult`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True, eq=False)
class CandidateScanResult:
    """What a keyword-style scan found.

    Attributes:
        method: the scan's name (``trigger-token``, ``feature-value``).
        key: the field of a candidate that names it (``token``, ``cell``).
        scores: float64 ``(N,)``: per example, the largest drop in the probability of its label
            when one candidate is removed (0 for examples with no candidate).
        flagged: bool ``(N,)``: the examples of a flagged candidate's label that hold it.
        candidates: per candidate, its name, label, counts per label, purity, flip share,
            mean drop and verdict, most suspect first.
        settings: the scan's settings.
    """

    method: str
    key: str
    scores: Tensor
    flagged: Tensor
    candidates: list[dict[str, Any]]
    settings: dict[str, Any]

    @property
    def flagged_names(self) -> list[str]:
        """The names of the candidates judged to be triggers."""
        return [str(c[self.key]) for c in self.candidates if c["flagged"]]

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable: method, settings, flagged count and names, top 20 candidates."""
        return {
            "method": self.method,
            "settings": dict(self.settings),
            "n_flagged": int(self.flagged.sum()),
            "flagged": self.flagged_names,
            "candidates": self.candidates[:20],
        }


def flip_test(
    model: nn.Module, original: Tensor, removed: Tensor, label: int
) -> tuple[Tensor, Tensor]:
    """``(drop, flips)`` for inputs ``original`` and the same inputs with a candidate
    ``removed`` (same shape, batch first), all of class ``label``: the float64 ``(n,)`` drop in
    the model's probability of ``label`` and the bool ``(n,)`` predictions that leave it. The
    caller sets eval mode and disables gradients."""
    before = torch.softmax(model(original).double(), dim=1)[:, label]
    logits = model(removed).double()
    after = torch.softmax(logits, dim=1)[:, label]
    return before - after, logits.argmax(dim=1) != label
