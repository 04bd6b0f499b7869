"""bastion: harden machine-learning models against malicious input.

The public API is small on purpose; the stages live in subpackages (``bastion.attacks``,
``bastion.training``, ``bastion.evaluation``, ``bastion.data``, ``bastion.report``).
"""

from bastion.errors import BastionError, ConfigError, DataError, ModelFileError
from bastion.models import save_model
from bastion.models.io import load_any_model as load_model
from bastion.threat import ThreatModel

__version__ = "0.1.0"

__all__ = [
    "BastionError",
    "ConfigError",
    "DataError",
    "ModelFileError",
    "ThreatModel",
    "__version__",
    "load_model",
    "save_model",
]
