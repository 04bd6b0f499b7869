"""Opening a registry: migrations, schema versions, URLs and passwords."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from bastion.cli import main
from bastion.registry.db import (
    DEFAULT_DB,
    ENV_URL,
    RegistryError,
    display_url,
    head_revision,
    open_engine,
    resolve_registry_url,
    schema_revision,
    scrub,
)
from bastion.registry.models import Base


def test_migrating_an_empty_database_gives_the_models_schema(registry_url: str) -> None:
    engine = open_engine(registry_url)
    try:
        with engine.connect() as conn:
            assert schema_revision(conn) == head_revision()
            assert {"runs", "artifacts", "stage_events"} <= set(inspect(conn).get_table_names())
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diffs == []
    finally:
        engine.dispose()


def test_opening_twice_is_a_no_op(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    open_engine(db).dispose()
    before = db.stat().st_size
    open_engine(db).dispose()
    with sqlite3.connect(db) as c:
        assert c.execute("select version_num from alembic_version").fetchall() == [("0001",)]
    assert db.stat().st_size == before


def test_a_newer_schema_is_refused_and_left_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "r.db"
    open_engine(db).dispose()
    with sqlite3.connect(db) as c:
        c.execute("update alembic_version set version_num = '9999'")
        c.execute("create table future (x integer)")
    before = db.read_bytes()
    with pytest.raises(RegistryError, match="newer than this bastion knows"):
        open_engine(db)
    assert main(["runs", "list", "--registry", str(db)]) == 2
    err = capsys.readouterr().err
    assert "schema revision '9999' is newer" in err and len(err.strip().splitlines()) == 1
    with sqlite3.connect(db) as c:
        assert c.execute("select version_num from alembic_version").fetchall() == [("9999",)]
    assert db.read_bytes() == before


def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as c:
        c.execute("create table runs (x integer)")
    with pytest.raises(RegistryError, match="not a bastion registry"):
        open_engine(db)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database file at all" * 100)
    with pytest.raises(RegistryError, match="cannot open"):
        open_engine(junk)


def test_bad_urls_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="expected a sqlite"):
        open_engine("mysql://u:hunter2@host/db")
    with pytest.raises(RegistryError, match="needs a file"):
        open_engine("sqlite://")
    with pytest.raises(RegistryError, match="not a file"):
        open_engine(tmp_path)
    with pytest.raises(RegistryError, match=r"u:\*\*\*@h/d: PostgreSQL needs psycopg 3") as info:
        open_engine("postgresql+asyncpg://u:pw-123@h/d")  # a driver that is not installed
    assert "pw-123" not in str(info.value)


def test_passwords_are_masked_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://alice:s3cr%40t-pw@127.0.0.1:1/nodb"
    assert "s3cr" not in display_url(url) and "alice:***@127.0.0.1" in display_url(url)
    assert scrub("failed for s3cr@t-pw and s3cr%40t-pw", url) == "failed for *** and ***"
    # a server that is not there: the error names the URL, without the password
    assert main(["runs", "list", "--registry", url]) == 2
    captured = capsys.readouterr()
    assert "s3cr" not in captured.err + captured.out
    assert "alice:***@127.0.0.1:1/nodb" in captured.err


def test_postgres_errors_do_not_leak_the_password(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from urllib.parse import urlsplit

    password = urlsplit(postgres_url).password
    assert password
    wrong = postgres_url.replace(f":{password}@", ":wrong-pw-123@")
    assert main(["runs", "list", "--registry", wrong]) == 2
    captured = capsys.readouterr()
    assert "wrong-pw-123" not in captured.err + captured.out
    assert main(["runs", "list", "--registry", postgres_url]) == 0
    captured = capsys.readouterr()
    assert password not in captured.err + captured.out and "***" in captured.err


def test_default_location_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "proj" / "runs"
    assert resolve_registry_url(out_dir=out) == f"sqlite:///{tmp_path / 'proj' / DEFAULT_DB}"
    monkeypatch.setenv(ENV_URL, str(tmp_path / "elsewhere.db"))
    assert resolve_registry_url(out_dir=out) == f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert resolve_registry_url("postgresql://u@h/d", out_dir=out) == "postgresql://u@h/d"
    monkeypatch.setenv(ENV_URL, "off")
    assert resolve_registry_url(out_dir=out) is None


def test_concurrent_first_opens_migrate_once(registry_url: str) -> None:
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            open_engine(registry_url).dispose()
        except BaseException as e:  # collected and re-raised below
            errors.append(e)

    threads = [threading.Thread(target=open_it, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "concurrent migrations deadlocked"
    assert errors == []
    engine = open_engine(registry_url)
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from alembic_version")).scalar() == 1
        assert schema_revision(conn) == head_revision()
    engine.dispose()


def test_reading_commands_do_not_create_a_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "typo.db"
    assert main(["runs", "list", "--registry", str(missing)]) == 2
    assert main(["rollback", "--registry", str(missing)]) == 2
    assert "not found" in capsys.readouterr().err and not missing.exists()
    monkeypatch.chdir(tmp_path)  # the default: .bastion/registry.db beside ./runs
    assert main(["runs", "list"]) == 2
    assert not (tmp_path / ".bastion").exists()
    monkeypatch.setenv(ENV_URL, "off")
    assert main(["runs", "list"]) == 2
    assert "turned off" in capsys.readouterr().err


def test_the_alembic_command_line_path_of_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Developers run alembic itself (no connection handed over): env.py then migrates the
    database named by BASTION_REGISTRY_URL, to the same schema."""
    from alembic import command
    from alembic.config import Config

    import bastion.registry.db as db_module

    db = tmp_path / "dev.db"
    monkeypatch.setenv(ENV_URL, f"sqlite:///{db}")
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db_module.__file__).parent / "migrations"))
    command.upgrade(cfg, "head")
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        assert schema_revision(conn) == head_revision()
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()
