"""Model zoo and model files (safetensors + JSON sidecar)."""

from bastion.models.io import load_model, read_sidecar, save_model
from bastion.models.zoo import ARCHITECTURES, BastionModel, ModelSpec, Normalize, build_model

__all__ = [
    "ARCHITECTURES",
    "BastionModel",
    "ModelSpec",
    "Normalize",
    "build_model",
    "load_model",
    "read_sidecar",
    "save_model",
]
