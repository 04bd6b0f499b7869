"""API keys: random secrets shown once, stored only as salted scrypt hashes in SQLite.

A key reads ``bst_<key_id>_<secret>``: the public ``key_id`` finds the row, the secret is
checked against ``scrypt(secret, salt)`` in constant time. Verified keys are remembered in
memory by an HMAC of the key under a per-process secret, so the slow hash runs once per key
and process, not per request.

Revocation is immediate: every check of a remembered key first reads SQLite's
``PRAGMA data_version`` (a counter in shared memory that changes when another connection, e.g.
``bastion keys revoke`` in another process, commits to the store; microseconds, no table
read); when it changed, the revoked keys are dropped from memory before the check. A request
that passed its check before the revocation committed is still answered.

Lockout: wrong secrets are counted per *source* (the client address), not per key. After
``LOCKOUT_FAILURES`` wrong secrets from one source within ``LOCKOUT_S`` seconds, that source's
unverified keys are refused without hashing until the window passes. Keys already verified in
this process keep working from every source, and no one can lock another client's key by
sending wrong secrets with its key id from elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import ConfigError
from bastion.serve.output_policy import check_tier

PREFIX = "bst_"
# scrypt cost: n=2**14, r=8 (16 MiB, about 50 ms once per key and process)
_N, _R, _P = 2**14, 8, 1
LOCKOUT_FAILURES = 10
LOCKOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    rate REAL,
    burst INTEGER,
    created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    tier TEXT NOT NULL DEFAULT 'default'
)
"""


@dataclass(frozen=True)
class KeyRecord:
    """A stored key without its secret: id, owner name, its rate limit (``None``: the
    service default) and its tier (which output policy it gets, ``serve.output_policies``)."""

    key_id: str
    name: str
    rate: float | None
    burst: int | None
    created: float
    revoked: bool
    tier: str = "default"


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=64 * 1024 * 1024)


class KeyStore:
    """The SQLite table of API keys at ``path`` (created on first use). Thread-safe.

    A verified key is trusted from memory while the store is unchanged (see the module
    docstring: a revocation from any process takes effect at the next request); as a second
    line, its row is also re-read after ``recheck_s`` seconds.
    """

    def __init__(self, path: str | os.PathLike[str], *, recheck_s: float = 60.0) -> None:
        self.path = Path(path)
        self.recheck_s = recheck_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(_SCHEMA)
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(api_keys)")}
        if "tier" not in columns:  # a store created before key tiers existed
            self._conn.execute(
                "ALTER TABLE api_keys ADD COLUMN tier TEXT NOT NULL DEFAULT 'default'"
            )
        self._conn.commit()
        self._data_version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        self._pepper = secrets.token_bytes(32)
        self._verified: dict[bytes, tuple[KeyRecord, float]] = {}
        self._verify_lock = threading.Lock()
        # wrong secrets per source address: after LOCKOUT_FAILURES within LOCKOUT_S the source
        # is refused without hashing until the window passes (no brute force, no scrypt burn)
        self._failures: dict[str, tuple[int, float]] = {}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def create(
        self,
        name: str,
        *,
        rate: float | None = None,
        burst: int | None = None,
        tier: str = "default",
    ) -> tuple[KeyRecord, str]:
        """Create a key for ``name`` in ``tier``; returns its record and the plain key (shown
        only now)."""
        check_tier(tier)
        if not name or not name.strip() or len(name) > 200:
            raise ConfigError("keys: name must be 1..200 visible characters")
        if rate is not None and not rate > 0:
            raise ConfigError(f"keys: rate must be a positive number, got {rate!r}")
        if burst is not None and burst < 1:
            raise ConfigError(f"keys: burst must be a positive integer, got {burst!r}")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        digest = _hash(secret, salt)
        created = time.time()
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO api_keys (key_id, name, salt, hash, rate, burst, created, tier) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (key_id, name, salt, digest, rate, burst, created, tier),
                )
                self._conn.commit()
            except sqlite3.IntegrityError as e:
                raise ConfigError(f"keys: a key named {name!r} already exists") from e
        record = KeyRecord(key_id, name, rate, burst, created, False, tier)
        return record, f"{PREFIX}{key_id}_{secret}"

    def list(self) -> list[KeyRecord]:
        """Every key (secrets are never stored, so never shown)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT key_id, name, rate, burst, created, revoked, tier FROM api_keys "
                "ORDER BY created"
            ).fetchall()
        return [KeyRecord(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows]

    def revoke(self, name: str) -> bool:
        """Revoke the key of ``name``; ``False`` when there is none."""
        with self._lock:
            cur = self._conn.execute("UPDATE api_keys SET revoked = 1 WHERE name = ?", (name,))
            self._conn.commit()
            self._verified.clear()
        return cur.rowcount > 0

    def _sync(self) -> None:
        """Drop revoked keys from memory if another connection changed the store since the
        last call (one ``PRAGMA data_version`` read when nothing changed)."""
        with self._lock:
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            if version == self._data_version:
                return
            revoked = {
                r[0] for r in self._conn.execute("SELECT key_id FROM api_keys WHERE revoked = 1")
            }
            self._data_version = version
            for tag, (record, _) in list(self._verified.items()):
                if record.key_id in revoked:
                    self._verified.pop(tag, None)

    def cached(self, key: str) -> KeyRecord | None:
        """The record of ``key`` if it was verified in this process, is not revoked and was
        checked within ``recheck_s`` (no slow hash; one cheap version read)."""
        self._sync()
        tag = hmac.new(self._pepper, key.encode(), hashlib.sha256).digest()
        hit = self._verified.get(tag)
        if hit is None or time.monotonic() - hit[1] > self.recheck_s:
            return None
        return hit[0]

    def verify(self, key: str | None, *, source: str = "") -> KeyRecord | None:
        """The record of a valid, unrevoked ``key``; ``None`` for anything else.

        ``source`` (the client address) is charged with wrong secrets; a source over the
        lockout limit gets ``None`` for keys not yet verified, without hashing.
        """
        if not key or not key.startswith(PREFIX) or len(key) > 200:
            return None
        self._sync()
        tag = hmac.new(self._pepper, key.encode(), hashlib.sha256).digest()
        hit = self._verified.get(tag)
        if hit is not None:
            record, checked = hit
            if time.monotonic() - checked <= self.recheck_s:
                return record
            # re-read the row, so a key revoked by another process stops working
            with self._lock:
                row = self._conn.execute(
                    "SELECT revoked FROM api_keys WHERE key_id = ?", (record.key_id,)
                ).fetchone()
            if row is None or row[0]:
                self._verified.pop(tag, None)
                return None
            self._verified[tag] = (record, time.monotonic())
            return record
        key_id, sep, secret = key[len(PREFIX) :].partition("_")
        if not sep or not key_id or not secret:
            return None
        # one slow hash at a time: concurrent first uses of a key wait for the first to finish
        # and then find it cached, instead of each spending 16 MiB and 50 ms on scrypt
        with self._verify_lock:
            hit = self._verified.get(tag)
            if hit is not None:
                return hit[0]
            return self._verify_slow(tag, key_id, secret, source)

    def locked_out(self, source: str) -> bool:
        """Whether ``source`` is refused for now after repeated wrong secrets."""
        count, since = self._failures.get(source, (0, 0.0))
        if time.monotonic() - since > LOCKOUT_S:
            return False
        return count >= LOCKOUT_FAILURES

    def _fail(self, source: str) -> None:
        now = time.monotonic()
        count, since = self._failures.get(source, (0, now))
        if now - since > LOCKOUT_S:
            count, since = 0, now
        self._failures[source] = (count + 1, since)
        if len(self._failures) > 10_000:  # bounded: drop the oldest windows
            for k in sorted(self._failures, key=lambda k: self._failures[k][1])[:5_000]:
                del self._failures[k]

    def _verify_slow(self, tag: bytes, key_id: str, secret: str, source: str) -> KeyRecord | None:
        if self.locked_out(source):
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT salt, hash, name, rate, burst, created, revoked, tier FROM api_keys "
                "WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        if row is None or row[6]:
            return None
        if not hmac.compare_digest(_hash(secret, row[0]), row[1]):
            self._fail(source)
            return None
        record = KeyRecord(key_id, row[2], row[3], row[4], row[5], False, row[7])
        with self._lock:
            self._verified[tag] = (record, time.monotonic())
        return record


def create_key(
    db: str | os.PathLike[str],
    name: str,
    *,
    rate: float | None = None,
    burst: int | None = None,
    tier: str = "default",
) -> str:
    """Create a key for ``name`` in the store at ``db`` and return the plain key (for
    ``bastion keys create NAME``: print it once; only its salted hash is stored)."""
    store = KeyStore(db)
    try:
        return store.create(name, rate=rate, burst=burst, tier=tier)[1]
    finally:
        store.close()
