"""Output hardening per key tier: policy parsing and shapes, the attacker's reading, key tiers
in the store (with a store from before tiers), the service's answers per tier, the budget
charged per tier, and `bastion keys create --tier`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml
from serve_fixtures import AsgiClient, digits_test_images

from bastion.cli import main
from bastion.errors import ConfigError
from bastion.serve import AuditLog, KeyStore, ModelGuard, ServeSettings
from bastion.serve.app import create_app
from bastion.serve.output_policy import OutputPolicy


def test_policies_parse_name_and_refuse_bad_text() -> None:
    for text, kind in (
        ("full", "full"),
        ("labels", "labels"),
        ("round-2", "rounded"),
        ("top-3", "top_k"),
        ("top-3:2", "top_k"),
    ):
        policy = OutputPolicy.parse(text)
        assert policy.kind == kind and policy.name == text
    for bad in ("top-0", "round-", "round-12", "softmax", "top-3:", ""):
        with pytest.raises(ConfigError, match=r"serve\.default_output: (expected|top-K needs)"):
            OutputPolicy.parse(bad)
    with pytest.raises(ConfigError, match="more classes than"):
        OutputPolicy.parse("top-11").check_classes(10, field="f")


def test_apply_gives_each_policy_its_fields() -> None:
    probs = (0.05, 0.6123, 0.25, 0.0877)
    assert OutputPolicy.parse("labels").apply(0.6123, probs) == {
        "confidence": None,
        "probabilities": None,
        "top_k": None,
    }
    rounded = OutputPolicy.parse("round-1").apply(0.6123, probs)
    assert rounded["probabilities"] == [0.1, 0.6, 0.2, 0.1] and rounded["confidence"] == 0.6
    top = OutputPolicy.parse("top-2:2").apply(0.6123, probs)
    assert top["probabilities"] is None
    assert top["top_k"] == [{"label": 1, "probability": 0.61}, {"label": 2, "probability": 0.25}]
    assert OutputPolicy.parse("full").apply(0.6123, probs)["probabilities"] == list(probs)


def test_soft_labels_are_distributions_that_keep_the_label() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((200, 10)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for text in ("full", "round-1", "round-0", "top-1", "top-3:1", "labels"):
        s = OutputPolicy.parse(text).soft_labels(p)
        assert s.shape == p.shape
        np.testing.assert_allclose(s.sum(1), 1.0, atol=1e-9)
        assert (s >= 0).all()
        assert (s.argmax(1) == p.argmax(1)).all(), text  # the answer's label stays on top
    one_hot = OutputPolicy.parse("labels").soft_labels(p)
    assert set(np.unique(one_hot)) == {0.0, 1.0}
    # top-3 keeps the top three probabilities in proportion and spreads the rest evenly
    s = OutputPolicy.parse("top-3").soft_labels(p[:1])[0]
    order = np.argsort(-p[0])
    np.testing.assert_allclose(s[order[:3]], p[0, order[:3]])
    np.testing.assert_allclose(s[order[3:]], (1 - p[0, order[:3]].sum()) / 7)


def test_key_tiers_are_stored_and_old_stores_are_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, salt BLOB "
        "NOT NULL, hash BLOB NOT NULL, rate REAL, burst INTEGER, created REAL NOT NULL, "
        "revoked INTEGER NOT NULL DEFAULT 0)"
    )
    conn.execute("INSERT INTO api_keys VALUES ('abc', 'old', x'00', x'00', NULL, NULL, 0.0, 0)")
    conn.commit()
    conn.close()
    store = KeyStore(db)
    try:
        assert [r.tier for r in store.list()] == ["default"]
        record, key = store.create("new", tier="free")
        assert record.tier == "free"
        verified = store.verify(key)
        assert verified is not None and verified.tier == "free"
        with pytest.raises(ConfigError, match="tier must be"):
            store.create("bad", tier="Free Tier")
    finally:
        store.close()


def test_settings_name_the_tier_at_fault(model_guard: ModelGuard, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"serve\.output_policies\.free"):
        ServeSettings(output_policies={"free": "top-0"})
    with pytest.raises(ConfigError, match=r"serve\.output_policies: tier names"):
        ServeSettings(output_policies={"Free!": "labels"})
    with pytest.raises(ConfigError, match=r"serve\.default_output"):
        ServeSettings(default_output="none")
    settings = ServeSettings(output_policies={"free": "top-11"})
    audit, keys = AuditLog(tmp_path / "a.db"), KeyStore(tmp_path / "k.db")
    try:
        with pytest.raises(ConfigError, match=r"serve\.output_policies\.free: top-11"):
            create_app(model_guard, settings=settings, audit=audit, keys=keys)
    finally:
        audit.close()
        keys.close()


@pytest.fixture
def tiers(model_guard: ModelGuard, tmp_path: Path) -> tuple[AsgiClient, dict[str, str]]:
    full_bits = OutputPolicy("full").bits(10)
    settings = ServeSettings(
        rate=None,
        extraction_check=False,
        output_policies={"free": "labels", "basic": "top-3:2", "pro": "round-2"},
        # no coverage reference: every answer is charged in full; 20 full answers pass it
        extraction_budget_bits=19.5 * full_bits,
        extraction_budget_charge="capacity",
    )
    audit, keys = AuditLog(tmp_path / "a.db"), KeyStore(tmp_path / "k.db")
    plain = {tier: keys.create(tier, tier=tier)[1] for tier in ("free", "basic", "pro")}
    plain["default"] = keys.create("default")[1]
    client = AsgiClient(create_app(model_guard, settings=settings, audit=audit, keys=keys))
    yield client, plain
    client.close()
    audit.close()
    keys.close()


def test_each_tier_gets_its_policy_and_the_same_labels(
    tiers: tuple[AsgiClient, dict[str, str]],
) -> None:
    client, plain = tiers
    x = digits_test_images()[0][:5]
    replies = {
        tier: client.post("/v1/predict", json={"inputs": x.tolist()}, headers={"X-API-Key": k})
        for tier, k in plain.items()
    }
    bodies = {tier: r.json() for tier, r in replies.items()}
    assert all(r.status_code == 200 for r in replies.values())
    assert {t: b["output"] for t, b in bodies.items()} == {
        "free": "labels",
        "basic": "top-3:2",
        "pro": "round-2",
        "default": "full",
    }
    labels = {t: [p["label"] for p in b["predictions"]] for t, b in bodies.items()}
    assert len({tuple(v) for v in labels.values()}) == 1  # hardening never changes the answer
    for full, free, basic, pro in zip(
        *(bodies[t]["predictions"] for t in ("default", "free", "basic", "pro")), strict=True
    ):
        assert abs(sum(full["probabilities"]) - 1.0) < 1e-4 and full["top_k"] is None
        assert free["probabilities"] is None and free["confidence"] is None
        assert free["top_k"] is None
        top = basic["top_k"]
        assert basic["probabilities"] is None and len(top) == 3
        assert top[0]["label"] == basic["label"]
        assert [t["probability"] for t in top] == sorted(
            (t["probability"] for t in top), reverse=True
        )
        assert all(t["probability"] == round(t["probability"], 2) for t in top)
        assert pro["probabilities"] == [round(v, 2) for v in full["probabilities"]]


def test_the_budget_charges_each_tier_its_bits(
    tiers: tuple[AsgiClient, dict[str, str]],
) -> None:
    client, plain = tiers
    x = digits_test_images()[0][:20]
    flagged = {}
    for tier in ("default", "free"):
        r = client.post(
            "/v1/predict", json={"inputs": x.tolist()}, headers={"X-API-Key": plain[tier]}
        )
        flagged[tier] = {p["verdict"] for p in r.json()["predictions"]}
    assert flagged == {"default": {"flag"}, "free": {"accept"}}  # 20 x 3.3 bits is little


def test_keys_create_with_a_tier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "keys.db"
    assert main(["keys", "create", "carol", "--db", str(db), "--tier", "free"]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--db", str(db)]) == 0
    assert "tier=free" in capsys.readouterr().out
    assert main(["keys", "create", "dan", "--db", str(db), "--tier", "No Tier"]) == 2
    assert "tier must be" in capsys.readouterr().err


def test_the_output_block_of_the_serve_docs_runs(model_guard: ModelGuard, tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "serve.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in doc.split("```yaml\n")[1:]]
    (block,) = [b for b in blocks if "output_policies" in b]
    settings = ServeSettings.from_mapping(yaml.safe_load(block)["serve"])
    audit, keys = AuditLog(tmp_path / "a.db"), KeyStore(tmp_path / "k.db")
    tiers = [*settings.output_policies, "unlisted"]
    plain = {tier: keys.create(tier, tier=tier)[1] for tier in tiers}
    client = AsgiClient(create_app(model_guard, settings=settings, audit=audit, keys=keys))
    try:
        x = digits_test_images()[0][:2]
        outputs = {
            tier: client.post(
                "/v1/predict", json={"inputs": x.tolist()}, headers={"X-API-Key": key}
            ).json()["output"]
            for tier, key in plain.items()
        }
    finally:
        client.close()
        keys.close()
        audit.close()
    assert outputs == {**settings.output_policies, "unlisted": settings.default_output}


def test_the_default_label_charge_treats_every_tier_alike(
    model_guard: ModelGuard, tmp_path: Path
) -> None:
    label_bits = OutputPolicy("labels").bits(10)
    settings = ServeSettings(
        rate=None,
        extraction_check=False,
        output_policies={"free": "labels"},
        extraction_budget_bits=19.5 * label_bits,
    )
    assert settings.extraction_budget_charge == "label"
    audit, keys = AuditLog(tmp_path / "a.db"), KeyStore(tmp_path / "k.db")
    plain = {"free": keys.create("f", tier="free")[1], "default": keys.create("d")[1]}
    client = AsgiClient(create_app(model_guard, settings=settings, audit=audit, keys=keys))
    try:
        x = digits_test_images()[0][:20]
        verdicts = {
            tier: {
                p["verdict"]
                for p in client.post(
                    "/v1/predict", json={"inputs": x.tolist()}, headers={"X-API-Key": key}
                ).json()["predictions"]
            }
            for tier, key in plain.items()
        }
    finally:
        client.close()
        keys.close()
        audit.close()
    assert verdicts == {"free": {"flag"}, "default": {"flag"}}
    with pytest.raises(ConfigError, match=r"serve\.extraction_budget_charge"):
        ServeSettings(extraction_budget_charge="entropy")  # type: ignore[arg-type]
