"""Fixtures of the service tests: a trained tiny run directory (once per session), an app
with a fresh key store and audit log per test, and one torch thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from serve_fixtures import AsgiClient, train_digits_run

from bastion.guard.decision import GuardLike
from bastion.serve import AuditLog, KeyStore, ModelGuard, ServeSettings
from bastion.serve.app import create_app


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_digits_run(tmp_path_factory.mktemp("serve-run"))


@pytest.fixture(scope="session")
def model_guard(run_dir: Path) -> ModelGuard:
    return ModelGuard.from_run(run_dir)


@dataclass
class Served:
    client: AsgiClient
    audit: AuditLog
    keys: KeyStore
    key: str
    settings: ServeSettings

    @property
    def auth(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


MakeServed = Callable[..., Served]


@pytest.fixture
def make_served(tmp_path: Path, model_guard: ModelGuard) -> Iterator[MakeServed]:
    """``make_served(guard=None, **settings)``: an app over a fresh audit log and key store
    holding one key (``alice``)."""
    opened: list[Served] = []

    def make(guard: GuardLike | None = None, **changes: Any) -> Served:
        settings = ServeSettings(**changes)
        audit = AuditLog(tmp_path / f"audit{len(opened)}.db")
        keys = KeyStore(tmp_path / f"keys{len(opened)}.db")
        _, key = keys.create("alice")
        app = create_app(
            guard if guard is not None else model_guard,
            settings=settings,
            audit=audit,
            keys=keys,
        )
        served = Served(AsgiClient(app), audit, keys, key, settings)
        opened.append(served)
        return served

    yield make
    for s in opened:
        s.client.close()
        s.keys.close()
        s.audit.close()
