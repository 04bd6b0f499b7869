"""Privacy and model-theft audits: membership inference (loss threshold, LiRA), model
extraction (Knockoff Nets, Jacobian augmentation, label-only), model inversion, and their
reports. See ``docs/privacy.md``."""

from bastion.privacy.membership import (
    LiraResult,
    ShadowRecipe,
    ShadowSet,
    lira_leave_one_out,
    lira_scores,
    logit_confidence,
    run_lira,
    threshold_scores,
    train_shadows,
)
from bastion.privacy.metrics import membership_report, roc_curve, tpr_at_fpr

__all__ = [
    "LiraResult",
    "ShadowRecipe",
    "ShadowSet",
    "lira_leave_one_out",
    "lira_scores",
    "logit_confidence",
    "membership_report",
    "roc_curve",
    "run_lira",
    "threshold_scores",
    "tpr_at_fpr",
    "train_shadows",
]
