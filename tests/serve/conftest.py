"""Fixtures of the service tests: a trained tiny run directory (once per session), an app
with a fresh key store and audit log per test, one torch thread, and a fresh database per
test on the throwaway PostgreSQL server named by ``BASTION_TEST_POSTGRES_URL`` (started by
``.ci/postgres.sh start``; the PostgreSQL tests skip, saying so, when it is unset)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from serve_fixtures import AsgiClient, postgres_database, train_digits_run

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

    def make(
        guard: GuardLike | None = None, *, audit_url: str | None = None, **changes: Any
    ) -> Served:
        settings = ServeSettings(**changes)
        audit = AuditLog(audit_url or tmp_path / f"audit{len(opened)}.db")
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


POSTGRES_ENV = "BASTION_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the test PostgreSQL server (its superuser, with a password)."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(
            f"{POSTGRES_ENV} is not set: no PostgreSQL server to test against (start one with "
            '`eval "$(.ci/postgres.sh start)"`, as .ci/run does)'
        )
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh database on the test server (dropped afterwards); its URL holds the password."""
    with postgres_database(postgres_server, f"bastion_test_{secrets.token_hex(6)}") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An audit log URL for each backend: a SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return str(request.getfixturevalue("postgres_url"))
