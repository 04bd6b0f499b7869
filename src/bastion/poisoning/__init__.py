"""Training-time threats: data poisoning and backdoors, and the defences against them.

* :mod:`.attacks`: BadNets, blended triggers, label flipping, clean-label poisoning, each
  reproducible from a seed and recording which indices it poisoned.
* :mod:`.scans`: activation clustering, spectral signatures and SPECTRE on latent features;
  :mod:`.hygiene`: duplicates and confident-learning label issues; :mod:`.quarantine`: the
  JSON record of every flagged example.
* :mod:`.neural_cleanse`: trigger reverse-engineering and the MAD anomaly index.
* :mod:`.strip`: the STRIP runtime detector.
* :mod:`.flow`: poison -> scan -> quarantine -> retrain -> verify, as one call.
"""

from __future__ import annotations

from bastion.poisoning.attacks import (
    PoisonedSet,
    Trigger,
    attack_success_rate,
    badnets,
    blend_trigger,
    blended,
    clean_label,
    label_flip,
    patch_trigger,
    trigger_poison,
)
from bastion.poisoning.config import (
    PoisoningConfig,
)
from bastion.poisoning.features import (
    penultimate_features,
)
from bastion.poisoning.neural_cleanse import (
    CleanseResult,
    CleanseSettings,
    neural_cleanse,
)
from bastion.poisoning.quarantine import (
    Quarantine,
    build_quarantine,
    write_quarantine,
)
from bastion.poisoning.scans import (
    ScanResult,
    activation_clustering,
    detection_metrics,
    spectral_signatures,
    spectre,
)
from bastion.poisoning.strip import (
    StripDetector,
)

__all__ = [
    "CleanseResult",
    "CleanseSettings",
    "PoisonedSet",
    "PoisoningConfig",
    "Quarantine",
    "ScanResult",
    "StripDetector",
    "Trigger",
    "activation_clustering",
    "attack_success_rate",
    "badnets",
    "blend_trigger",
    "blended",
    "build_quarantine",
    "clean_label",
    "detection_metrics",
    "label_flip",
    "neural_cleanse",
    "patch_trigger",
    "penultimate_features",
    "spectral_signatures",
    "spectre",
    "trigger_poison",
    "write_quarantine",
]
