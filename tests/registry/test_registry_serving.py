"""Serving a stage: the service switches to the run a promotion or rollback puts in the stage,
refuses a run with another interface, routes a canary share and judges a shadow on the side."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from registry_fixtures import Project

from bastion.data import load_dataset
from bastion.registry.db import RegistryError
from bastion.registry.record import run_record
from bastion.registry.stages import StageConfig, promote, rollback
from bastion.registry.store import Registry

pytest.importorskip("fastapi", reason="the service extra (fastapi) is not installed")
httpx = pytest.importorskip("httpx", reason="the service extra (httpx) is not installed")

from bastion.registry.serving import StageGuard, build_stage_app  # noqa: E402
from bastion.serve import ServeSettings  # noqa: E402
from bastion.serve.model_guard import ModelGuard  # noqa: E402

STAGES = {n: StageConfig(n) for n in ("production", "canary", "shadow")}


@pytest.fixture
def reg(project: Project, tmp_path: Path) -> Iterator[Registry]:
    """A registry with the project's runs; ``production`` holds v1."""
    r = Registry(tmp_path / "registry.db")
    r.ids = {v: r.record(run_record(d)) for v, d in project.runs.items()}  # type: ignore[attr-defined]
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"metric": "data.n_eval", "min": 1}]}))
    r.policy = policy  # type: ignore[attr-defined]
    assert promote(r, r.ids["v1"], "production", stages=STAGES, policy=policy).promoted  # type: ignore[attr-defined]
    yield r
    r.close()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return load_dataset("digits", seed=0).test.x[:64]


def _labels(run_dir: Path, x: torch.Tensor) -> list[int | None]:
    return [d.label for d in ModelGuard.from_file(run_dir / "models" / "baseline").decide(x)]


def _promote(reg: Registry, version: str, stage: str = "production") -> None:
    ids, policy = reg.ids, reg.policy  # type: ignore[attr-defined]
    assert promote(reg, ids[version], stage, stages=STAGES, policy=policy).promoted


def test_promotion_and_rollback_switch_the_served_run(
    reg: Registry, project: Project, batch: torch.Tensor
) -> None:
    ids = reg.ids  # type: ignore[attr-defined]
    said: list[str] = []
    guard = StageGuard(reg, "production", on_event=said.append)
    want = {v: _labels(d, batch) for v, d in project.runs.items()}
    assert want["v1"] != want["weak"]  # the versions answer differently
    assert [d.label for d in guard.decide(batch)] == want["v1"]
    assert guard.refresh() is False
    _promote(reg, "weak")
    assert guard.refresh() is True
    assert [d.label for d in guard.decide(batch)] == want["weak"]
    rollback(reg, "production", stages=STAGES)
    assert guard.refresh() is True
    assert [d.label for d in guard.decide(batch)] == want["v1"]
    assert guard.stats.served_runs == [ids["v1"], ids["weak"], ids["v1"]]
    assert guard.stats.reloads == 2 and guard.stats.primary == 3 * len(batch)
    assert said == [
        f"stage 'production' now served from run {ids['weak']} ({project.runs['weak'].resolve()})",
        f"stage 'production' now served from run {ids['v1']} ({project.runs['v1'].resolve()})",
    ]


def test_a_run_with_another_interface_is_refused(
    reg: Registry, project: Project, tmp_path: Path, batch: torch.Tensor
) -> None:
    other = tmp_path / "other-classes"
    shutil.copytree(project.runs["better"], other)
    sidecar = other / "models" / "baseline.json"
    doc = json.loads(sidecar.read_text())
    doc["metadata"]["classes"] = [f"digit-{c}" for c in doc["metadata"]["classes"]]
    sidecar.write_text(json.dumps(doc))
    run_id = reg.record(run_record(other))
    guard = StageGuard(reg, "production")
    policy = reg.policy  # type: ignore[attr-defined]
    assert promote(reg, run_id, "production", stages=STAGES, policy=policy).promoted
    assert guard.refresh() is False
    assert guard.last_error is not None and "refusing to switch" in guard.last_error
    assert guard.current() is not None and guard.current().run_id == reg.ids["v1"]  # type: ignore[union-attr, attr-defined]
    assert [d.label for d in guard.decide(batch)] == _labels(project.runs["v1"], batch)


def test_canary_and_shadow(
    reg: Registry, project: Project, tmp_path: Path, batch: torch.Tensor
) -> None:
    _promote(reg, "better", "canary")
    _promote(reg, "weak", "shadow")
    log = tmp_path / "shadow.jsonl"
    everything = StageGuard(reg, "production", canary="canary", canary_fraction=1.0)
    assert [d.label for d in everything.decide(batch)] == _labels(project.runs["better"], batch)
    half = StageGuard(
        reg, "production", canary="canary", canary_fraction=0.5, shadow="shadow", shadow_log=log
    )
    answers = [d.label for d in half.decide(batch)]
    v1, better = _labels(project.runs["v1"], batch), _labels(project.runs["better"], batch)
    assert all(a in (p, c) for a, p, c in zip(answers, v1, better, strict=True))
    assert half.stats.canary > 0 and half.stats.primary > 0
    assert half.stats.canary + half.stats.primary == len(batch)
    weak = _labels(project.runs["weak"], batch)
    disagree = sum(a != w for a, w in zip(answers, weak, strict=True))
    assert half.stats.shadow_compared == len(batch) and half.stats.shadow_disagreed == disagree > 0
    (line,) = log.read_text().splitlines()
    assert json.loads(line)["disagreed"] == disagree
    with pytest.raises(RegistryError, match="canary_fraction"):
        StageGuard(reg, "production", canary_fraction=0.5)


def test_the_http_service_follows_the_stage(
    reg: Registry, project: Project, tmp_path: Path, batch: torch.Tensor
) -> None:
    app, guard = build_stage_app(reg, "production", settings=ServeSettings(), state_dir=tmp_path)
    from bastion.serve import KeyStore

    keys = KeyStore(tmp_path / "keys.db")
    _, key = keys.create("alice")
    keys.close()
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    def predict() -> dict[str, Any]:
        body = {"inputs": batch[:16].tolist()}
        r = loop.run_until_complete(
            client.post("/v1/predict", json=body, headers={"X-API-Key": key})
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    try:
        first = predict()
        assert first["model"] == "production"
        assert [p["label"] for p in first["predictions"]] == _labels(project.runs["v1"], batch[:16])
        _promote(reg, "weak")
        guard.start(poll_s=0.05)
        for _ in range(200):
            if guard.stats.reloads:
                break
            loop.run_until_complete(asyncio.sleep(0.05))
        assert guard.stats.reloads == 1
        assert [p["label"] for p in predict()["predictions"]] == _labels(
            project.runs["weak"], batch[:16]
        )
    finally:
        guard.close()
        loop.run_until_complete(client.aclose())
        loop.close()
        app.state.service.batcher.close()
