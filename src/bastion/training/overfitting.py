"""Detecting catastrophic overfitting of single-step adversarial training.

Catastrophic overfitting (Wong, Rice and Kolter 2020; Andriushchenko & Flammarion 2020): within
an epoch or two, accuracy against multi-step PGD collapses towards zero while accuracy against
FGSM climbs, because the model has learned a locally highly curved loss that defeats the single
linear step it trains against. The Trainer compares each epoch's validation figures with those of
the last good epoch and, on a collapse, rolls back to that epoch's weights.
"""

from __future__ import annotations


def catastrophic_overfitting(
    *,
    good_robust: float,
    good_fgsm: float,
    robust: float,
    fgsm: float,
    drop: float = 0.2,
) -> bool:
    """True when PGD validation accuracy fell by at least ``drop`` (absolute) below the last
    good epoch's while FGSM validation accuracy did not fall (it rose or held within 0.01):
    the signature of catastrophic overfitting, as opposed to ordinary noise or a harder eps."""
    return robust <= good_robust - drop and fgsm >= good_fgsm - 0.01
