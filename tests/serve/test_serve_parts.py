"""The service's parts on their own: settings, rate limiter, metrics text, audit log, keys,
model guard, extraction monitor."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from bastion.errors import BastionError, ConfigError, ModelFileError
from bastion.serve import (
    AuditLog,
    AuditRecord,
    ExtractionMonitor,
    KeyStore,
    ModelGuard,
    RateLimiter,
    ServeSettings,
    create_key,
    pick_model,
)
from bastion.serve.metrics import Counter, Histogram


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"max_batch": 0}, "max_batch"),
        ({"burst": True}, "burst"),
        ({"extraction_threshold": 1.5}, "extraction_threshold"),
        ({"extraction_window": 6000}, "extraction_window"),
        ({"rate": -1.0}, "rate"),
        ({"audit_synchronous": "OFF"}, "audit_synchronous"),
        ({"request_timeout_s": 0}, "request_timeout_s"),
    ],
)
def test_settings_reject_bad_values_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError, match=f"serve.{field}"):
        ServeSettings(**changes)  # type: ignore[arg-type]


def test_settings_from_mapping_names_unknown_keys() -> None:
    assert ServeSettings.from_mapping({"audit_all": True}).audit_all is True
    with pytest.raises(ConfigError, match=r"unknown setting.*colour"):
        ServeSettings.from_mapping({"colour": "red"})


def test_token_bucket_refills_at_its_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert limiter.take("k", 3, rate=2.0, burst=3) == 0.0
    assert limiter.take("k", 1, rate=2.0, burst=3) == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.take("k", 1, rate=2.0, burst=3) == 0.0
    assert limiter.take("k", 4, rate=2.0, burst=3) == float("inf")
    now[0] += 10.0  # refill caps at burst
    assert limiter.take("k", 3, rate=2.0, burst=3) == 0.0
    assert limiter.take("other", 3, rate=2.0, burst=3) == 0.0


def test_metrics_render_prometheus_text() -> None:
    c = Counter("x_total", "Help.")
    c.inc(verdict='re"ject')
    c.inc(2, verdict="accept")
    h = Histogram("lat_seconds", "Latency.", (0.1, 1.0))
    for v in (0.05, 0.5, 5.0):
        h.observe(v)
    text = "\n".join(c.render() + h.render())
    assert (
        '# TYPE x_total counter\nx_total{verdict="accept"} 2\nx_total{verdict="re\\"ject"} 1'
        in text
    )
    assert 'lat_seconds_bucket{le="0.1"} 1' in text
    assert 'lat_seconds_bucket{le="1"} 2' in text
    assert 'lat_seconds_bucket{le="+Inf"} 3' in text
    assert "lat_seconds_count 3" in text and "lat_seconds_sum 5.55" in text


def _record(rid: str, i: int = 0) -> AuditRecord:
    return AuditRecord(
        request_id=rid,
        index=i,
        time=1.0,
        key_id="k",
        key_name="alice",
        input_sha256="0" * 64,
        verdict="reject",
        label=None,
        confidence=None,
        reasons=("validation: x",),
        scores={"s": 1.5},
        model="m",
    )


def test_audit_log_uses_wal_and_group_commits_concurrent_writers(tmp_path: Path) -> None:
    log = AuditLog(f"sqlite:///{tmp_path / 'a.db'}")
    barrier = threading.Barrier(16)

    def writer(n: int) -> None:
        barrier.wait()
        for j in range(10):
            log.write([_record(f"r{n}-{j}", 0), _record(f"r{n}-{j}", 1)])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.writes == 320 and log.commits <= 160
    assert log.by_request("r3-7") == [_record("r3-7", 0), _record("r3-7", 1)]
    log.close()
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 320
    conn.close()


def test_audit_log_urls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="audit_url"):
        AuditLog("mysql://db")
    try:
        import psycopg  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="psycopg"):
            AuditLog("postgresql://localhost/none")
    log = AuditLog(tmp_path / "plain.db", synchronous="FULL")
    log.write([_record("x")])
    assert len(log.all()) == 1
    log.close()


def test_key_store_create_verify_revoke(tmp_path: Path) -> None:
    key = create_key(tmp_path / "k.db", "alice", rate=5.0, burst=7)
    store = KeyStore(tmp_path / "k.db")
    rec = store.verify(key)
    assert rec is not None and (rec.name, rec.rate, rec.burst) == ("alice", 5.0, 7)
    assert store.verify(key[:-1]) is None and store.verify(None) is None
    with pytest.raises(ConfigError, match="already exists"):
        store.create("alice")
    with pytest.raises(ConfigError, match="name"):
        store.create("  ")
    assert store.revoke("alice") and not store.revoke("nobody")
    assert store.verify(key) is None
    store.close()


def test_model_guard_rejects_bad_rows_and_matches_the_model(run_dir: Path) -> None:
    guard = ModelGuard.from_run(run_dir)
    x = torch.rand(5, 1, 8, 8)
    x[1, 0, 0, 0] = float("nan")
    x[3, 0, 2, 2] = 1.5
    out = guard.decide(x)
    assert [d.verdict for d in out] == ["accept", "reject", "accept", "reject", "accept"]
    assert "not finite" in out[1].reasons[0] and "out of range" in out[3].reasons[0]
    with torch.inference_mode():
        expected = guard.model(x[[0, 2, 4]]).argmax(dim=1).tolist()
    assert [out[i].label for i in (0, 2, 4)] == expected
    wrong = guard.decide(torch.zeros(2, 64))
    assert [d.verdict for d in wrong] == ["reject", "reject"]
    assert "expected shape" in wrong[0].reasons[0]


def test_pick_model_errors_name_the_choices(run_dir: Path, tmp_path: Path) -> None:
    assert pick_model(run_dir).name == "tiny"
    with pytest.raises(ModelFileError, match=r"'nope' not found.*tiny"):
        pick_model(run_dir, "nope")
    with pytest.raises(ModelFileError, match="no models/ folder"):
        pick_model(tmp_path)
    assert issubclass(ModelFileError, BastionError)


def test_prada_is_bounded_skips_repeats_and_flags_a_walk() -> None:
    mon = ExtractionMonitor(min_samples=20, threshold=0.9, window=50, every=5)
    rng = np.random.default_rng(0)
    for _ in range(30):
        st = mon.observe("k", rng.random((4, 16), dtype=np.float32), [0, 1, 2, 3])
    assert st.samples == 50 and not st.flagged and st.w is not None and st.w > 0.9
    base = rng.random((1, 16), dtype=np.float32)
    for _ in range(10):  # exact repeats are skipped
        st = mon.observe("retry", np.repeat(base, 4, axis=0), [0] * 4)
    assert st.samples == 0 and not st.flagged
    for i in range(30):  # one query nudged along a line: every distance is the same step
        line = base + 0.01 * (4 * i + np.arange(1, 5, dtype=np.float32))[:, None]
        st = mon.observe("walker", line, [0] * 4)
    assert st.flagged and st.w is not None and st.w < 0.9 and mon.flagged_keys() == ["walker"]


def test_a_key_revoked_by_another_process_stops_working_after_recheck(tmp_path: Path) -> None:
    server = KeyStore(tmp_path / "k.db", recheck_s=0.0)
    admin = KeyStore(tmp_path / "k.db")
    _, key = admin.create("carol")
    assert server.verify(key) is not None
    assert server.verify(key) is not None  # from memory, row re-read
    assert admin.revoke("carol")
    assert server.verify(key) is None and server.cached(key) is None
    server.close()
    admin.close()
