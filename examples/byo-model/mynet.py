"""A team's own model, defined outside bastion: a small CNN for 8x8 grey digits.

bastion never imports this file itself; `model.yaml` names it (`factory: "mynet:build"`).
"""

from __future__ import annotations

from torch import Tensor, nn


class DigitNet(nn.Module):
    """Two convolutions and a linear head; inputs ``(N, 1, 8, 8)`` in [0, 1], logits ``(N, 10)``."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * width * 4 * 4, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features((x - 0.3) / 0.35).flatten(1))


def build(width: int = 16) -> nn.Module:
    return DigitNet(width)
