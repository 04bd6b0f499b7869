"""`bastion keys` and `bastion serve` argument handling (the service itself is tested through
its ASGI app and a real uvicorn process in tests/serve)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.cli import main
from bastion.serve import KeyStore


def test_keys_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "keys.db"
    assert main(["keys", "create", "alice", "--db", str(db), "--rate", "5"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("bst_")
    store = KeyStore(db)
    try:
        rec = store.verify(key)
        assert rec is not None and rec.name == "alice" and rec.rate == 5
        assert store.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    finally:
        store.close()
    assert main(["keys", "list", "--db", str(db)]) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "active" in listing and key.split("_")[-1] not in listing
    assert main(["keys", "create", "alice", "--db", str(db)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["keys", "revoke", "alice", "--db", str(db)]) == 0
    assert main(["keys", "list", "--db", str(db)]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "revoke", "nobody", "--db", str(db)]) == 2
    assert "no key named" in capsys.readouterr().err


def test_keys_need_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "alice"]) == 2
    assert "--run RUN_DIR or --db" in capsys.readouterr().err
    assert main(["keys", "list", "--run", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_serve_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--set", "no-equals-sign"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--set", "not_a_setting=1"]) == 2
    assert "not_a_setting" in capsys.readouterr().err


def test_repeated_wrong_secrets_lock_their_source_out_not_the_key(tmp_path: Path) -> None:
    from bastion.serve.keys import LOCKOUT_FAILURES

    store = KeyStore(tmp_path / "keys.db")
    try:
        _, key = store.create("bob")
        key_id, _, secret = key.removeprefix("bst_").partition("_")  # the secret may hold "_"
        wrong = f"bst_{key_id}_{'x' * len(secret)}"
        for _ in range(LOCKOUT_FAILURES):
            assert store.verify(wrong, source="203.0.113.7") is None
        assert store.locked_out("203.0.113.7") and not store.locked_out(key_id)
        # the guessing source waits out the lockout, even with the right secret...
        assert store.verify(key, source="203.0.113.7") is None
        # ...but the key's owner elsewhere is not locked out of its own key
        assert store.verify(key, source="198.51.100.2") is not None
    finally:
        store.close()
