"""Evaluation: accuracy under attack, the worst case across attacks, and the scorecard."""

from bastion.evaluation.evaluator import NamedAttack, eps_key, evaluate_model, robust_mask
from bastion.evaluation.scorecard import (
    SCHEMA_VERSION,
    config_hash,
    package_versions,
    read_scorecard,
    sanitize,
    write_json,
)

__all__ = [
    "SCHEMA_VERSION",
    "NamedAttack",
    "config_hash",
    "eps_key",
    "evaluate_model",
    "package_versions",
    "read_scorecard",
    "robust_mask",
    "sanitize",
    "write_json",
]
