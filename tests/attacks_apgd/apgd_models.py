"""The trained-model record shared by the APGD and cascade tests (a uniquely named module,
so it never clashes with another directory's conftest)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from bastion.models import BastionModel
from bastion.threat import ThreatModel


@dataclass
class Trained:
    model: BastionModel
    x: Tensor
    y: Tensor
    threat: ThreatModel
