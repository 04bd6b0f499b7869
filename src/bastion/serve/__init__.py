"""The guarded HTTP service (needs the ``service`` extra: fastapi, uvicorn, httpx).

``create_app`` builds the FastAPI app around any guard; ``serve`` runs a run directory's guard
under uvicorn; ``create_key`` issues API keys. Importing this package does not import
fastapi; :func:`create_app` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.serve.audit import AuditError, AuditLog, AuditRecord
from bastion.serve.errors import RequestError
from bastion.serve.extraction import ExtractionMonitor, ExtractionStatus
from bastion.serve.keys import KeyRecord, KeyStore, create_key
from bastion.serve.model_guard import ModelGuard, pick_model
from bastion.serve.ratelimit import RateLimiter
from bastion.serve.runner import build_app_for_run, load_service_guard, serve
from bastion.serve.settings import ServeSettings

if TYPE_CHECKING:
    from bastion.serve.app import create_app

__all__ = [
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "ExtractionMonitor",
    "ExtractionStatus",
    "KeyRecord",
    "KeyStore",
    "ModelGuard",
    "RateLimiter",
    "RequestError",
    "ServeSettings",
    "build_app_for_run",
    "create_app",
    "create_key",
    "load_service_guard",
    "pick_model",
    "serve",
]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from bastion.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'bastion.serve' has no attribute {name!r}")
