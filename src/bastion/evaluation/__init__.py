"""Evaluation: accuracy under attack, the worst case across attacks, the sanity checks that
catch a fooled evaluation and the escalation that acts on them, and the scorecard."""

from bastion.evaluation.escalation import Escalation, EscalationStep, escalate
from bastion.evaluation.evaluator import NamedAttack, eps_key, evaluate_model, robust_mask
from bastion.evaluation.probe import BPDAPlan, find_bpda, probe_layers
from bastion.evaluation.sanity import REMEDIES, SanityCheck, SanityThresholds, run_sanity_checks
from bastion.evaluation.scorecard import (
    SCHEMA_VERSION,
    Scorecard,
    config_hash,
    package_versions,
    read_scorecard,
    sanitize,
    write_json,
)
from bastion.evaluation.scorecard_model import ScorecardError, load_scorecard

__all__ = [
    "REMEDIES",
    "SCHEMA_VERSION",
    "BPDAPlan",
    "Escalation",
    "EscalationStep",
    "NamedAttack",
    "SanityCheck",
    "SanityThresholds",
    "Scorecard",
    "ScorecardError",
    "config_hash",
    "eps_key",
    "escalate",
    "evaluate_model",
    "find_bpda",
    "load_scorecard",
    "package_versions",
    "probe_layers",
    "read_scorecard",
    "robust_mask",
    "run_sanity_checks",
    "sanitize",
    "write_json",
]
