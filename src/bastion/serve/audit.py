"""The audit log: one row per audited input, committed before the service answers.

Backends: SQLite in WAL mode (``sqlite:///path.db`` or a plain path) and PostgreSQL
(``postgresql://...``, needs the optional ``psycopg`` package).

Durability: :meth:`AuditLog.write` returns only after the transaction holding the records has
committed. With SQLite in WAL mode, ``synchronous=NORMAL`` writes the commit to the WAL file
(the kernel's page cache) before returning, so a SIGKILL of the service loses nothing it
answered; ``synchronous=FULL`` also fsyncs at every commit and survives a power loss or kernel
crash as well, at the price of one fsync per group of writes.

Group commit: concurrent writers queue their records; whichever thread takes the commit lock
writes every queued record in one transaction and wakes the others, so N concurrent requests
cost one commit, and each still returns only after its own records are committed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from bastion.errors import ConfigError


class AuditError(Exception):
    """The audit log could not commit (the service answers 503 rather than answer unaudited)."""


@dataclass(frozen=True)
class AuditRecord:
    """One audited input. The API key itself is never stored, only its id and owner name."""

    request_id: str
    index: int
    time: float
    key_id: str
    key_name: str
    input_sha256: str
    verdict: str
    label: int | None
    confidence: float | None
    reasons: tuple[str, ...]
    scores: dict[str, float] = field(default_factory=dict)
    model: str = ""

    def row(self) -> tuple[Any, ...]:
        return (
            self.request_id,
            self.index,
            self.time,
            self.key_id,
            self.key_name,
            self.input_sha256,
            self.verdict,
            self.label,
            self.confidence,
            json.dumps(list(self.reasons)),
            json.dumps(self.scores),
            self.model,
        )

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> AuditRecord:
        return cls(
            request_id=r[0],
            index=int(r[1]),
            time=float(r[2]),
            key_id=r[3],
            key_name=r[4],
            input_sha256=r[5],
            verdict=r[6],
            label=None if r[7] is None else int(r[7]),
            confidence=None if r[8] is None else float(r[8]),
            reasons=tuple(json.loads(r[9])),
            scores=dict(json.loads(r[10])),
            model=r[11],
        )


_COLUMNS = (
    "request_id, idx, time, key_id, key_name, input_sha256, verdict, label, confidence, "
    "reasons, scores, model"
)
_CREATE = """
CREATE TABLE IF NOT EXISTS audit (
    id {pk},
    request_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    time DOUBLE PRECISION NOT NULL,
    key_id TEXT NOT NULL,
    key_name TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    verdict TEXT NOT NULL,
    label INTEGER,
    confidence DOUBLE PRECISION,
    reasons TEXT NOT NULL,
    scores TEXT NOT NULL,
    model TEXT NOT NULL
)
"""


class _Backend(Protocol):
    def insert(self, rows: list[tuple[Any, ...]]) -> None: ...
    def select(self, where: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]: ...
    def close(self) -> None: ...


class _SQLite:
    def __init__(self, path: Path, *, synchronous: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30.0)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute(_CREATE.format(pk="INTEGER PRIMARY KEY AUTOINCREMENT"))
        self.conn.execute("CREATE INDEX IF NOT EXISTS audit_request ON audit (request_id)")
        self.conn.commit()

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        with self.conn:  # one transaction, committed on exit
            self.conn.executemany(
                f"INSERT INTO audit ({_COLUMNS}) VALUES ({', '.join('?' * 12)})", rows
            )

    def select(self, where: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return list(
            self.conn.execute(
                f"SELECT {_COLUMNS} FROM audit {where.replace('%s', '?')} ORDER BY id", args
            )
        )

    def close(self) -> None:
        self.conn.close()


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user, _, rest = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{rest}"))
    except ValueError:  # unparsable: show the scheme only
        return f"{url.partition('://')[0]}://***"


def scrub(text: str, url: str) -> str:
    """``text`` without the password of ``url`` (as written in the URL, or percent-decoded),
    for error messages that echo the connection string (libpq does)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return text.replace(url, redact_url(url))
    if password:
        raw = parts.netloc.rpartition("@")[0].partition(":")[2]
        for secret in sorted({raw, password, unquote(password)}, key=len, reverse=True):
            if secret:
                text = text.replace(secret, "***")
    return text


class _Postgres:
    """One psycopg 3 connection, re-established after a loss with exponential backoff.

    A write on a lost connection fails (the caller answers 503); the next write reconnects
    at once, and while reconnecting fails, further attempts wait ``backoff`` seconds
    (doubling from ``min_backoff_s`` to ``max_backoff_s``), failing immediately in between.
    A commit that failed because the connection broke is retried once on a fresh connection
    (so a record may rarely appear twice, never be lost).
    """

    def __init__(
        self, url: str, *, min_backoff_s: float = 0.05, max_backoff_s: float = 2.0
    ) -> None:
        try:
            import psycopg  # type: ignore[import-not-found,unused-ignore]
        except ImportError as e:
            raise ConfigError(
                "audit_url: a postgresql:// audit log needs the psycopg package "
                "(pip install 'psycopg[binary]')"
            ) from e
        self._psycopg: Any = psycopg
        self._url = url
        self.min_backoff_s, self.max_backoff_s = min_backoff_s, max_backoff_s
        self._backoff = 0.0
        self._next_try = 0.0
        self.reconnects = 0
        self.conn: Any = None
        try:
            conn = self._connect()
        except psycopg.Error as e:
            raise ConfigError(
                f"audit_url: cannot connect to PostgreSQL at {redact_url(url)} "
                f"({scrub(str(e), url)})"
            ) from None
        with conn.transaction():
            conn.execute(_CREATE.format(pk="BIGSERIAL PRIMARY KEY"))
            conn.execute("CREATE INDEX IF NOT EXISTS audit_request ON audit (request_id)")

    def _connect(self) -> Any:
        # autocommit: every statement group runs in an explicit transaction() block (psycopg 3
        # closes a connection used as a context manager, so that is never done here)
        self.conn = self._psycopg.connect(self._url, autocommit=True, connect_timeout=5)
        return self.conn

    def _ensure(self) -> Any:
        """The open connection, reconnecting (subject to backoff) if it was lost."""
        if self.conn is not None and not self.conn.closed:
            return self.conn
        now = time.monotonic()
        if now < self._next_try:
            raise ConnectionError(
                f"PostgreSQL connection lost; next reconnect in {self._next_try - now:.2f} s"
            )
        try:
            self._connect()
        except self._psycopg.Error:
            self._backoff = min(self.max_backoff_s, max(self.min_backoff_s, 2 * self._backoff))
            self._next_try = time.monotonic() + self._backoff
            raise
        self._backoff = 0.0
        self.reconnects += 1
        return self.conn

    def _lost(self) -> bool:
        """After an error: whether the connection is gone (then it is dropped)."""
        if self.conn is None:
            return True
        if self.conn.closed or self.conn.broken:
            try:
                self.conn.close()
            finally:
                self.conn = None
            return True
        return False

    def _run(self, work: Any) -> Any:
        fresh = self.conn is None or self.conn.closed
        conn = self._ensure()
        try:
            return work(conn)
        except self._psycopg.Error:
            if not self._lost() or fresh:
                raise
        return work(self._ensure())  # the connection had died while idle: once more

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        sql = f"INSERT INTO audit ({_COLUMNS}) VALUES ({', '.join(['%s'] * 12)})"

        def work(conn: Any) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(sql, rows)

        self._run(work)

    def select(self, where: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        def work(conn: Any) -> list[tuple[Any, ...]]:
            with conn.cursor() as cur:
                cur.execute(f"SELECT {_COLUMNS} FROM audit {where} ORDER BY id", args)
                return list(cur.fetchall())

        return list(self._run(work))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


@dataclass
class _Pending:
    rows: list[tuple[Any, ...]]
    done: bool = False
    error: BaseException | None = None


class AuditLog:
    """Thread-safe audit log with group commit; see the module docstring for durability.

    ``url``: ``sqlite:///path.db``, ``sqlite:///:memory:`` (tests), a plain path, or
    ``postgresql://user@host/db``.
    """

    def __init__(self, url: str | os.PathLike[str], *, synchronous: str = "NORMAL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ConfigError(f"audit_synchronous: expected NORMAL or FULL, got {synchronous!r}")
        text = os.fspath(url)
        self.url = redact_url(text)  # safe to show: the password is masked
        self._raw_url = text
        self._backend: _Backend
        if text.startswith(("postgresql://", "postgres://")):
            self._backend = _Postgres(text)
        elif text.startswith("sqlite://"):
            path = text.removeprefix("sqlite://").removeprefix("/")
            if not path:
                raise ConfigError(f"audit_url: expected sqlite:///path.db, got {text!r}")
            self._backend = _SQLite(Path(path), synchronous=synchronous)
        elif "://" in text:
            raise ConfigError(
                "audit_url: expected sqlite:///path.db, postgresql://... or a path, got "
                f"{redact_url(text)!r}"
            )
        else:
            self._backend = _SQLite(Path(text), synchronous=synchronous)
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self.writes = 0  # records committed by this process
        self.commits = 0  # transactions committed by this process

    def write(self, records: Sequence[AuditRecord]) -> None:
        """Commit ``records``; returns only once they are committed (raises
        :class:`AuditError` if the commit failed)."""
        if not records:
            return
        mine = _Pending([r.row() for r in records])
        with self._queue_lock:
            self._queue.append(mine)
        with self._commit_lock:
            if not mine.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                rows = [row for p in batch for row in p.rows]
                error: BaseException | None = None
                try:
                    self._backend.insert(rows)
                    self.writes += len(rows)
                    self.commits += 1
                except Exception as e:
                    error = e
                for p in batch:
                    p.error = error
                    p.done = True
        if mine.error is not None:
            detail = scrub(str(mine.error), self._raw_url)
            raise AuditError(f"audit log {self.url}: commit failed ({detail})") from None

    def by_request(self, request_id: str) -> list[AuditRecord]:
        """The records of one request, in input order."""
        with self._commit_lock:
            rows = self._backend.select("WHERE request_id = %s", (request_id,))
        return [AuditRecord.from_row(r) for r in rows]

    def all(self) -> list[AuditRecord]:
        """Every record, oldest first."""
        with self._commit_lock:
            rows = self._backend.select("", ())
        return [AuditRecord.from_row(r) for r in rows]

    def close(self) -> None:
        with self._commit_lock:
            self._backend.close()
