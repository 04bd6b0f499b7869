"""Opening a registry database: where it is, connecting, migrating, and never showing a password.

A registry is named by a SQLAlchemy URL (``sqlite:///path/registry.db``,
``postgresql://user:password@host/db``) or by a plain file path (a SQLite file). Without one,
:func:`resolve_registry_url` uses ``$BASTION_REGISTRY_URL``, else ``.bastion/registry.db`` in the
folder that holds the runs folder (the current folder for the default ``--out runs``).

:func:`open_engine` connects and brings the schema to the newest revision with Alembic, inside
one transaction that holds the database's write lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL
advisory lock), so two processes opening a new registry at once do not race. A database whose
schema is newer than this bastion knows is refused (:class:`RegistryError`), untouched.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from bastion.errors import BastionError

__all__ = [
    "DEFAULT_DB",
    "ENV_URL",
    "PG_LOCK_KEY",
    "RegistryError",
    "display_url",
    "head_revision",
    "locked",
    "open_engine",
    "resolve_registry_url",
    "schema_revision",
    "scrub",
]

ENV_URL = "BASTION_REGISTRY_URL"
"""Environment variable naming the registry (a URL or a path); ``off`` turns recording off."""

DEFAULT_DB = Path(".bastion") / "registry.db"
"""The default registry, relative to the folder that holds the runs folder."""

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
PG_LOCK_KEY = 0x62617374
"""The PostgreSQL advisory lock key ("bast") held while migrating or promoting."""


class RegistryError(BastionError, ValueError):
    """The registry cannot be used as asked (bad URL, newer schema, unknown run or stage)."""


def resolve_registry_url(
    registry: str | os.PathLike[str] | None = None, *, out_dir: str | os.PathLike[str] = "runs"
) -> str | None:
    """The registry to use: ``registry`` if given, else ``$BASTION_REGISTRY_URL``, else
    ``.bastion/registry.db`` beside ``out_dir``. ``None`` when the environment variable is
    ``off`` (recording turned off)."""
    if registry is not None and str(registry).strip():
        return _as_url(str(registry))
    env = os.environ.get(ENV_URL, "").strip()
    if env.lower() == "off":
        return None
    if env:
        return _as_url(env)
    parent = Path(out_dir).absolute().parent
    return _as_url(str(parent / DEFAULT_DB))


def _as_url(value: str) -> str:
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().absolute()}"


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise RegistryError(f"registry: not a database URL or path: {_mask_raw(url)}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise RegistryError(
            f"registry: expected a sqlite:/// or postgresql:// URL (or a file path), got "
            f"{display_url(url)}"
        )
    return parsed


def _mask_raw(url: str) -> str:
    """Mask ``user:password@`` in a string that is not a parseable URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def display_url(url: str) -> str:
    """``url`` safe to print: its password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return _mask_raw(url)


def scrub(message: str, url: str) -> str:
    """``message`` without the password of ``url`` (drivers may echo a URL in an error)."""
    try:
        password = make_url(url).password
    except ArgumentError:
        return message
    if password:
        from urllib.parse import quote

        for secret in sorted({str(password), quote(str(password), safe="")}, key=len, reverse=True):
            message = message.replace(secret, "***")
    return message


def _one_line(e: BaseException, url: str) -> str:
    text_ = str(getattr(e, "orig", None) or e).strip().splitlines()
    return scrub(text_[0] if text_ else type(e).__name__, url)


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest schema revision this bastion knows."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its revisions
        raise RuntimeError("the registry migrations are missing")
    return head


def schema_revision(conn: Connection) -> str | None:
    """The schema revision recorded in a database (``None`` for an empty one)."""
    heads = MigrationContext.configure(conn).get_current_heads()
    return heads[0] if heads else None


@contextmanager
def locked(conn: Connection) -> Iterator[Connection]:
    """A transaction on ``conn`` that holds the database's write lock until it ends (SQLite:
    ``BEGIN IMMEDIATE`` is what every transaction begins with; PostgreSQL: an advisory lock)."""
    with conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
        yield conn


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # a committed record survives a crash
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _make_engine(url: str) -> Engine:
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            raise RegistryError("registry: a SQLite registry needs a file (sqlite:///PATH)")
        path = Path(database)
        if path.exists() and not path.is_file():
            raise RegistryError(f"registry: {path} exists and is not a file")
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True)
    except ImportError:
        raise RegistryError(
            f"registry {display_url(url)}: PostgreSQL needs psycopg 3: pip install "
            "'bastion[postgres]'"
        ) from None


def open_engine(url: str | os.PathLike[str], *, migrate: bool = True) -> Engine:
    """Connect to the registry at ``url`` (a URL or a SQLite file path) and bring its schema
    to the newest revision.

    Raises:
        RegistryError: a bad URL, a database that cannot be reached or is not a registry, or one
            whose schema is newer than this bastion knows (then nothing is changed). Messages
            never hold the URL's password.
    """
    url = _as_url(str(url))
    engine = _make_engine(url)
    shown = display_url(url)
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            _check_and_migrate(engine, shown, migrate=migrate)
            return engine
        except RegistryError:
            engine.dispose()
            raise
        except (SQLAlchemyError, OSError) as e:
            # SQLite answers "database is locked" at once, without waiting out its busy timeout,
            # when two connections switch a new file to WAL or upgrade their locks at the same
            # moment (it refuses rather than deadlock); the next try finds the lock free
            if "database is locked" in str(e) and attempt + 1 < _OPEN_ATTEMPTS:
                engine.dispose()
                time.sleep(0.05 * (attempt + 1))
                continue
            engine.dispose()
            raise RegistryError(f"registry {shown}: cannot open: {_one_line(e, url)}") from None
    raise AssertionError("unreachable")  # the loop returns or raises


#: How often :func:`open_engine` tries again after SQLite's immediate "database is locked".
_OPEN_ATTEMPTS = 20


def _check_and_migrate(engine: Engine, shown: str, *, migrate: bool) -> None:
    """Under the database's write lock: refuse a newer or foreign schema, else migrate to head
    (when ``migrate``)."""
    head = head_revision()
    with engine.connect() as conn, locked(conn):
        current = schema_revision(conn)
        known = {
            r.revision for r in ScriptDirectory.from_config(_alembic_config()).walk_revisions()
        }
        if current is not None and current not in known:
            raise RegistryError(
                f"registry {shown}: schema revision {current!r} is newer than this bastion "
                f"knows (up to {head!r}); upgrade bastion to use it (nothing was changed)"
            )
        if current is None and inspect(conn).has_table("runs"):
            raise RegistryError(
                f"registry {shown}: has a 'runs' table but no schema revision; not a bastion "
                "registry (nothing was changed)"
            )
        if migrate and current != head:
            cfg = _alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
