"""Fixtures of the registry tests: tiny digits runs written by ``bastion run`` (once per session,
recorded in their project's default registry), fresh registries (SQLite, and PostgreSQL on the
throwaway server of ``BASTION_TEST_POSTGRES_URL``; those tests skip, saying why, without it)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from registry_fixtures import VERSIONS, Project, run_version

from bastion.registry.db import ENV_URL
from bastion.registry.stages import ENV_STAGES

POSTGRES_ENV = "BASTION_TEST_POSTGRES_URL"


@pytest.fixture(autouse=True)
def _no_ambient_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests name their registry themselves; a developer's settings must not leak in."""
    monkeypatch.delenv(ENV_URL, raising=False)
    monkeypatch.delenv(ENV_STAGES, raising=False)


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Three tiny runs (v1, weak, better) recorded by ``bastion run`` in the default registry."""
    root = tmp_path_factory.mktemp("project")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(ENV_URL, raising=False)
        runs = {v: run_version(root, v) for v in VERSIONS}
    return Project(root, runs)


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
    import psycopg

    name = f"bastion_registry_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(postgres_server)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh registry for each backend: a SQLite file, and a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("postgres_url"))
