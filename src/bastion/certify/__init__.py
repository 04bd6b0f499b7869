"""Certified robustness: randomized smoothing (Cohen, Rosenfeld and Kolter 2019)."""

from bastion.certify.smoothing import (
    ABSTAIN,
    DEFAULT_RADII,
    SmoothedClassifier,
    binomial_test_p_value,
    certified_accuracy,
    certify_dataset,
    clopper_pearson_lower,
    radius_key,
    summarize_certification,
)

__all__ = [
    "ABSTAIN",
    "DEFAULT_RADII",
    "SmoothedClassifier",
    "binomial_test_p_value",
    "certified_accuracy",
    "certify_dataset",
    "clopper_pearson_lower",
    "radius_key",
    "summarize_certification",
]
