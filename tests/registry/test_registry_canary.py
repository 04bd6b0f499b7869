"""The canary's automatic rollback rule, per-variant metrics and the drift monitor of a served
stage: rules parsed with errors naming the field, a candidate with a planted regression (a
guard that abstains on most inputs) demoted within its window while real HTTP traffic flows
through uvicorn with no failed request, the demotion in the registry and the audit log, and
the drift monitor following the primary's run."""

from __future__ import annotations

import json
import math
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from registry_fixtures import Project
from test_registry_docs import canary_rules

from bastion.data import load_dataset
from bastion.guard.config import GuardConfig
from bastion.guard.decision import Decision
from bastion.guard.fit import fit_guard
from bastion.guard.io import save_guard
from bastion.registry.canary import CanaryRule, RuleWatch, parse_rules
from bastion.registry.db import RegistryError
from bastion.registry.record import run_record
from bastion.registry.stages import StageConfig, current_runs, demote, load_stages, promote
from bastion.registry.store import Registry

pytest.importorskip("fastapi", reason="the service extra (fastapi) is not installed")
httpx = pytest.importorskip("httpx", reason="the service extra (httpx) is not installed")
pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")

from bastion.monitor import MonitorState, ReferenceStats  # noqa: E402
from bastion.registry.serving import StageGuard, build_stage_app  # noqa: E402
from bastion.serve import AuditLog, KeyStore, ModelGuard, ServeSettings  # noqa: E402
from bastion.serve.runner import MONITOR_STATE  # noqa: E402
from uvicorn_thread import running  # noqa: E402

STAGES = {n: StageConfig(n) for n in ("production", "canary", "shadow")}
ABSTAINS = CanaryRule("abstention_rate", 0.3, window=40, min_samples=20)
"""The first rule of the canary block of docs/registry.md (checked below)."""


# ---------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"metric": "abstain_rate", "max": 0.3}, r"demote_when\[0\]\.metric: expected one of"),
        ({"metric": "abstention_rate"}, r"demote_when\[0\]\.max: required"),
        ({"metric": "abstention_rate", "max": 1.5}, r"\.max: expected a share in \[0, 1\)"),
        ({"metric": "flag_rate", "max": True}, r"\.max: expected a share"),
        ({"metric": "p99_latency_s", "max": 0}, r"\.max: expected seconds > 0"),
        ({"metric": "p99_latency_s", "max": math.nan}, r"\.max: expected seconds > 0"),
        ({"metric": "reject_rate", "max": 0.1, "window": 0}, r"\.window: expected an integer"),
        (
            {"metric": "reject_rate", "max": 0.1, "window": 10, "min_samples": 11},
            r"\.min_samples: expected an integer in \[1, 10\]",
        ),
        ({"metric": "error_rate", "max": 0.1, "window_s": -1}, r"\.window_s: expected seconds"),
        ({"metric": "error_rate", "max": 0.1, "over": 3}, r"unknown key\(s\) over"),
    ],
)
def test_bad_rules_name_the_field(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_rules([rule], "stages.canary.demote_when")


def test_the_stages_file_carries_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "stages.yaml"
    path.write_text(
        "stages:\n  production: {}\n  canary:\n    demote_when:\n"
        "      - {metric: abstention_rate, max: 0.3, window: 40, min_samples: 20}\n"
        "      - {metric: p99_latency_s, max: 0.5, window: 200, min_samples: 50, window_s: 60}\n"
    )
    stages = load_stages(path)
    assert stages["production"].demote_when == ()
    assert stages["canary"].demote_when == (
        ABSTAINS,
        CanaryRule("p99_latency_s", 0.5, window=200, min_samples=50, window_s=60.0),
    )
    path.write_text("stages:\n  canary: {demote_when: {metric: flag_rate}}\n")
    with pytest.raises(RegistryError, match=r"stages\.canary\.demote_when: expected a list"):
        load_stages(path)


def _d(verdict: str, label: int | None) -> Decision:
    return Decision(verdict, label)  # type: ignore[arg-type]


def test_a_rule_fires_only_with_enough_samples_above_its_bound() -> None:
    watch = RuleWatch([ABSTAINS, CanaryRule("flag_rate", 0.5, window=10, min_samples=10)])
    ok = [_d("accept", 1)] * 5
    abstain = [_d("abstain", None)] * 5
    # 19 inputs, 47% abstentions: fewer than min_samples, nothing fires
    assert watch.add(0.0, ok, n=5, reference_labels=[1] * 5, latency_s=0.01) is None
    for t in (1.0, 2.0):
        assert watch.add(t, abstain, n=5, reference_labels=[None] * 5, latency_s=0.01) is None
    assert watch.add(3.0, ok[:4], n=4, reference_labels=[1] * 4, latency_s=0.01) is None
    # the 20th input: 10/20 abstained > 0.3
    breach = watch.add(4.0, ok[:1], n=1, reference_labels=[1], latency_s=0.01)
    assert breach is not None and breach.index == 0 and breach.samples == 20
    assert breach.value == pytest.approx(0.5)
    assert "abstention_rate 0.5 > max 0.3 over the last 20 inputs" in breach.reason("r1", "c")
    # disagreement with production's labels, over the last 4 inputs: 0.5 is not above 0.5
    agree = RuleWatch([CanaryRule("disagreement_rate", 0.5, window=4, min_samples=4)])
    answers = [_d("accept", c) for c in (1, 2, 1, 2)]
    assert agree.add(0.0, answers, n=4, reference_labels=[1] * 4, latency_s=0.01) is None
    hit = agree.add(1.0, [_d("flag", 2)], n=1, reference_labels=[1], latency_s=0.01)
    assert hit is not None and hit.value == pytest.approx(0.75)
    slow = RuleWatch([CanaryRule("p99_latency_s", 0.2, window=100, min_samples=3, window_s=5)])
    assert slow.add(0.0, ok[:2], n=2, reference_labels=[1, 1], latency_s=1.0) is None
    # the slow inputs left the 5 s window: three fast ones do not fire
    assert slow.add(10.0, ok[:3], n=3, reference_labels=[1] * 3, latency_s=0.05) is None
    hit = slow.add(11.0, None, n=1, reference_labels=[1], latency_s=0.9)  # a batch that raised
    assert hit is not None and hit.value == pytest.approx(0.9) and hit.samples == 4


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def planted(project: Project, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1's model behind a guard that abstains below 99.9% confidence: a planted regression
    (most inputs get no answer)."""
    run = tmp_path_factory.mktemp("planted") / "abstains"
    shutil.copytree(project.runs["v1"], run)
    data = load_dataset("digits", seed=0)
    config = GuardConfig.from_dict(
        {
            "squeezing": {"enabled": False},
            "ood": {"enabled": False},
            "adversarial": {"enabled": False},
            "prediction": {"models": ["baseline"]},
            "postcheck": {"min_confidence": 0.999},
        }
    )
    save_guard(fit_guard(run, config, data.val.x, data.val.y, seed=0), run / "guard")
    return run


@pytest.fixture
def reg(project: Project, planted: Path, tmp_path: Path) -> Iterator[Registry]:
    """``production`` holds v1, ``canary`` the planted run."""
    r = Registry(tmp_path / "registry.db")
    ids = {v: r.record(run_record(d)) for v, d in project.runs.items()}
    ids["planted"] = r.record(run_record(planted))
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"metric": "data.n_eval", "min": 1}]}))
    for version, stage in (("v1", "production"), ("planted", "canary")):
        assert promote(r, ids[version], stage, stages=STAGES, policy=policy).promoted
    r.ids = ids  # type: ignore[attr-defined]
    r.policy = policy  # type: ignore[attr-defined]
    yield r
    r.close()


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_dataset("digits", seed=0).test.x[:200]


def test_the_planted_candidate_abstains_where_production_answers(
    reg: Registry, planted: Path, project: Project, digits: torch.Tensor
) -> None:
    from bastion.serve.runner import load_service_guard

    guard, _ = load_service_guard(planted)
    abstained = sum(d.verdict == "abstain" for d in guard.decide(digits))
    assert abstained / len(digits) > 0.6
    base = ModelGuard.from_file(project.runs["v1"] / "models" / "baseline").decide(digits)
    assert all(d.answered for d in base)


# ---------------------------------------------------------------------------- in process


def test_a_firing_rule_demotes_the_canary(
    reg: Registry, tmp_path: Path, digits: torch.Tensor, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion.cli import main

    ids = reg.ids  # type: ignore[attr-defined]
    db = reg.engine.url.database
    audit = AuditLog(tmp_path / "audit.db")
    said: list[str] = []
    guard = StageGuard(
        reg,
        "production",
        canary="canary",
        canary_fraction=0.2,
        rules=[ABSTAINS],
        audit=audit,
        on_event=said.append,
    )
    try:
        batches = 0
        while guard.canary_routing():
            out = guard.decide(digits[(batches * 8) % 192 :][:8])
            assert len(out) == 8
            batches += 1
            assert batches < 100, "the rule never fired"
        # it fired as soon as the window held min_samples canary inputs
        assert ABSTAINS.min_samples <= guard.stats.canary < ABSTAINS.min_samples + 8
        assert guard.stats.demotions == [ids["planted"]]
        served = guard.stats.canary
        guard.decide(digits[:64])
        assert guard.stats.canary == served  # no canary input after the demotion
        guard.close()  # waits for the demotion to be recorded
        events = [e for e in reg.stage_events("canary")]
        assert [e.action for e in events] == ["promote", "demote"]
        assert events[-1].previous_run_id == ids["planted"] and events[-1].run_id is None
        assert events[-1].reason is not None and "abstention_rate" in events[-1].reason
        assert events[-1].gate is not None and events[-1].gate[0]["threshold"] == 0.3
        assert "canary" not in current_runs(reg)
        assert main(["runs", "history", "--stage", "canary", "--registry", str(db)]) == 0
        (row,) = [ln for ln in capsys.readouterr().out.splitlines() if " demote " in ln]
        assert row.split()[3:6] == ["demote", "-", ids["planted"]] and "abstention_rate" in row
        (line,) = [r for r in audit.all() if r.verdict == "demote"]
        assert line.model == "canary" and line.reasons == (events[-1].reason,)
        assert line.scores["max"] == 0.3 and line.scores["value"] > 0.3
        assert said == [events[-1].reason]
        # the poll sees the empty stage and turns the canary off; a second demotion of the
        # same run (another replica) records nothing
        assert guard.refresh() is True and guard.current("canary") is None
        assert demote(reg, "canary", ids["planted"], reason="again") is None
    finally:
        guard.close()
        audit.close()


class Exploding:
    """A guard whose every decision raises (a candidate with a broken dependency)."""

    def __init__(self, like: Any) -> None:
        self.input_shape, self.classes = like.input_shape, like.classes

    def decide(self, x: torch.Tensor) -> list[Decision]:
        raise RuntimeError("candidate broken")


def test_a_canary_that_raises_is_answered_by_production_and_demoted(
    reg: Registry, digits: torch.Tensor, project: Project
) -> None:
    from dataclasses import replace

    rule = CanaryRule("error_rate", 0.0, window=10, min_samples=5)
    guard = StageGuard(reg, "production", canary="canary", canary_fraction=0.5, rules=[rule])
    try:
        canary = guard.current("canary")
        assert canary is not None
        guard._runs["canary"] = replace(canary, guard=Exploding(canary.guard))
        want = [
            d.label
            for d in ModelGuard.from_file(project.runs["v1"] / "models" / "baseline").decide(
                digits[:32]
            )
        ]
        assert [d.label for d in guard.decide(digits[:32])] == want
        assert guard.stats.canary_errors > 0 and not guard.canary_routing()
        # production answered every input, and is counted so; the canary's inputs are errors
        assert guard.stats.canary == 0 and guard.stats.primary == 32
        assert guard.metrics.inputs.value(variant="primary") == 32
        assert guard.metrics.errors.value(variant="canary") == guard.stats.canary_errors
        assert "candidate broken" in (guard.last_error or "")
    finally:
        guard.close()


# ---------------------------------------------------------------------------- over HTTP


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    prefix = f"{name}{{{want}}} " if labels else f"{name} "
    (line,) = [ln for ln in text.splitlines() if ln.startswith(prefix)]
    return float(line.removeprefix(prefix))


def test_canary_acceptance_over_http(reg: Registry, tmp_path: Path, digits: torch.Tensor) -> None:
    """The issue's acceptance test: a candidate with a planted regression serves 20% of real
    HTTP traffic; the rule demotes it within its window; every request succeeds throughout;
    the registry and the audit log say why; /metrics shows the variants."""
    ids = reg.ids  # type: ignore[attr-defined]
    rules = canary_rules(tmp_path)  # the block of docs/registry.md
    assert rules[0] == ABSTAINS
    settings = ServeSettings(rate=None, micro_batch_wait_ms=2.0)
    state = tmp_path / "state"
    said: list[str] = []
    app, guard = build_stage_app(
        reg,
        "production",
        settings=settings,
        state_dir=state,
        canary="canary",
        canary_fraction=0.2,
        shadow=None,
        rules=rules,
        on_event=said.append,
    )
    keys = KeyStore(state / "keys.db")
    _, key = keys.create("alice")
    keys.close()
    statuses: list[int] = []
    verdicts: list[tuple[float, list[str]]] = []
    lock = threading.Lock()
    demoted_at: list[float] = []

    def client(worker: int) -> None:
        """Requests of 4 inputs until 15 were sent after the demotion (at most 150)."""
        after = 0
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30) as c:
            for i in range(150):
                start = (worker * 150 + i) * 4 % 196
                sent = time.monotonic()
                r = c.post("/v1/predict", json={"inputs": digits[start : start + 4].tolist()})
                with lock:
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        verdicts.append((sent, [p["verdict"] for p in r.json()["predictions"]]))
                    if not guard.canary_routing() and not demoted_at:
                        demoted_at.append(time.monotonic())
                    after += bool(demoted_at) and sent > demoted_at[0]
                if after >= 15:
                    return

    guard.start(poll_s=0.2)
    try:
        with running(app, settings) as address:
            url = f"http://{address}"
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(client, range(4)))
            metrics = httpx.get(f"{url}/metrics").text
            deadline = time.monotonic() + 20
            while guard.current("canary") is not None and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        guard.close()
        app.state.service.audit.close()
    # every request answered, before, during and after the switch
    assert len(statuses) < 600 and set(statuses) == {200}
    assert demoted_at, "the rule never fired"
    # within its window: it fired once min_samples canary inputs had been judged (plus at
    # most the concurrent batch in flight)
    assert ABSTAINS.min_samples <= guard.stats.canary <= ABSTAINS.window
    # the candidate answered before the switch (abstentions), production alone after it
    before = [v for t, vs in verdicts if t < demoted_at[0] for v in vs]
    after = [v for t, vs in verdicts if t > demoted_at[0] for v in vs]
    assert "abstain" in before and after and "abstain" not in after
    # the registry: the canary stage was emptied, with the rule's figures
    events = reg.stage_events("canary")
    assert [e.action for e in events] == ["promote", "demote"]
    assert events[-1].previous_run_id == ids["planted"] and "canary" not in current_runs(reg)
    assert events[-1].reason is not None and events[-1].reason.startswith(
        "canary rule 0 fired: abstention_rate"
    )
    # the audit log (beside the registry state) has the line with the reason
    audit = AuditLog(state / "audit.db")
    try:
        demotions = [r for r in audit.all() if r.verdict == "demote"]
    finally:
        audit.close()
    assert [r.reasons for r in demotions] == [(events[-1].reason,)]
    assert said[0] == events[-1].reason
    assert any("holds no run now; canary off" in s for s in said)
    # per-variant metrics
    canary_inputs = _metric(metrics, "bastion_variant_inputs_total", variant="canary")
    primary_inputs = _metric(metrics, "bastion_variant_inputs_total", variant="primary")
    assert canary_inputs == guard.stats.canary
    assert primary_inputs + canary_inputs == 4 * len(statuses)
    abstained = _metric(
        metrics, "bastion_variant_decisions_total", variant="canary", verdict="abstain"
    )
    assert abstained == before.count("abstain") > 0.3 * canary_inputs
    agreement = _metric(metrics, "bastion_variant_agreement_ratio", variant="canary")
    assert 0 <= agreement < 0.7
    assert _metric(metrics, "bastion_variant_decide_seconds_count", variant="canary") > 0
    assert _metric(metrics, "bastion_canary_routing") == 0
    assert _metric(metrics, "bastion_canary_demotions_total") == 1
    assert (
        _metric(
            metrics,
            "bastion_variant_decide_seconds_recent",
            quantile="0.99",
            variant="primary",
        )
        > 0
    )


# ---------------------------------------------------------------------------- drift


def test_the_stage_service_feeds_the_drift_monitor_of_the_primary_run(
    reg: Registry, project: Project, tmp_path: Path, digits: torch.Tensor
) -> None:
    """A primary run with a drift reference gets the monitor of ``bastion serve``; after a
    promotion, it follows the new run (its own reference and state file)."""
    ids = reg.ids  # type: ignore[attr-defined]
    runs = {}
    for version in ("v1", "better"):
        run = tmp_path / f"{version}-with-reference"
        shutil.copytree(project.runs[version], run)
        model = ModelGuard.from_file(run / "models" / "baseline")
        with torch.no_grad():
            probs = torch.softmax(model.model(digits), dim=1)
        (run / "guard").mkdir()
        ReferenceStats.from_data(digits, probs, seed=0).save(run / "guard" / "drift-reference.json")
        runs[version] = (run, reg.record(run_record(run)))
    policy = reg.policy  # type: ignore[attr-defined]
    assert promote(reg, runs["v1"][1], "production", stages=STAGES, policy=policy).promoted
    app, guard = build_stage_app(
        reg, "production", settings=ServeSettings(require_auth=False), state_dir=tmp_path / "s"
    )
    assert guard.drift is not None
    guard.drift.window = 40
    shifted = (1.0 - digits[:40]).numpy().astype(np.float32)
    try:
        with running(app, ServeSettings(require_auth=False)) as address:
            url = f"http://{address}"
            r = httpx.post(f"{url}/v1/predict", json={"inputs": shifted.tolist()}, timeout=30)
            assert r.status_code == 200, r.text
            state_file = runs["v1"][0] / MONITOR_STATE
            _wait_for(state_file)
            state = MonitorState.load(state_file)
            assert state.windows == 1 and state.alerts["input"] == 1
            text = httpx.get(f"{url}/metrics").text
            assert _metric(text, "bastion_drift_windows") == 1
            # a promotion: the monitor follows the new primary, from a fresh state
            assert promote(reg, runs["better"][1], "production", stages=STAGES, policy=policy)
            assert guard.refresh() is True
            assert guard.drift.run_dir == runs["better"][0] and guard.drift.state.windows == 0
            r = httpx.post(f"{url}/v1/predict", json={"inputs": shifted.tolist()}, timeout=30)
            assert r.status_code == 200
            _wait_for(runs["better"][0] / MONITOR_STATE)
            assert MonitorState.load(runs["better"][0] / MONITOR_STATE).windows == 1
            assert MonitorState.load(state_file).windows == 1  # the old run's state is kept
    finally:
        guard.close()
    assert ids  # the fixture's runs are untouched
    assert json.loads((runs["v1"][0] / MONITOR_STATE).read_text())["format"]


def test_a_primary_without_reference_serves_without_monitor(reg: Registry, tmp_path: Path) -> None:
    app, guard = build_stage_app(reg, "production", settings=ServeSettings(), state_dir=tmp_path)
    try:
        assert guard.drift is None and app.state.service.drift is None
    finally:
        guard.close()
        app.state.service.batcher.close()


def _wait_for(path: Path, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < end:
        time.sleep(0.05)


@pytest.mark.slow  # a subprocess importing torch and the service: about 35 s here
def test_serve_stage_command_demotes_under_the_stages_file(
    reg: Registry, tmp_path: Path, digits: torch.Tensor
) -> None:
    """`bastion serve-stage --stages FILE --canary canary` reads the canary's rules from the
    stages file (the docs' block) and demotes the planted candidate; every request succeeds."""
    import subprocess
    import sys

    canary_rules(tmp_path)  # writes canary-stages.yaml, the block of docs/registry.md
    db = reg.engine.url.database
    assert db is not None
    reg.close()
    with socket.socket() as sock:  # a free port for the subprocess
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable, "-m", "bastion.cli", "serve-stage", "--registry", db, "--canary",
        "canary", "--canary-fraction", "0.2", "--stages", str(tmp_path / "canary-stages.yaml"),
        "--state-dir", str(tmp_path / "state"), "--port", str(port), "--poll", "0.3",
        "--set", "require_auth=false", "--set", "rate=null",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    statuses = []
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "serve-stage did not start"
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=30) as c:
            for i in range(100):
                body = {"inputs": digits[i * 2 % 190 :][:8].tolist()}
                statuses.append(c.post("/v1/predict", json=body).status_code)
                if "canary_routing 0" in c.get("/metrics").text:
                    break
    finally:
        proc.send_signal(2)  # SIGINT: uvicorn shuts down, the demotion's recorder is joined
        _, err = proc.communicate(timeout=60)
    assert set(statuses) == {200}
    assert "demote the canary when abstention_rate > 0.3 over the last 40 canary inputs" in err
    assert "canary rule 0 fired: abstention_rate" in err
    with Registry(db) as again:
        assert [e.action for e in again.stage_events("canary")] == ["promote", "demote"]


def test_serve_stage_refuses_a_canary_the_stages_file_does_not_configure(
    reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion.cli import main

    canary_rules(tmp_path)
    stages = str(tmp_path / "canary-stages.yaml")
    db = str(reg.engine.url.database)
    args = ["serve-stage", "--registry", db, "--canary", "canry", "--stages", stages]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--canary: stage 'canry' is not configured in" in err
    assert "(configured: canary, production)" in err
    (tmp_path / "bad.yaml").write_text(
        "stages:\n  canary:\n    demote_when: [{metric: flag_rate, max: 2}]\n"
    )
    args = [
        "serve-stage",
        "--registry",
        db,
        "--canary",
        "canary",
        "--stages",
        str(tmp_path / "bad.yaml"),
    ]
    assert main(args) == 2
    assert "stages.canary.demote_when[0].max: expected a share in [0, 1), got 2.0" in (
        capsys.readouterr().err
    )


def test_demote_on_each_backend(registry_url: str, project: Project, tmp_path: Path) -> None:
    """SQLite and PostgreSQL: a demotion empties the stage once, recorded with its reason;
    a stage that no longer holds the run records nothing."""
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"metric": "data.n_eval", "min": 1}]}))
    with Registry(registry_url) as r:
        ids = {v: r.record(run_record(d)) for v, d in project.runs.items()}
        for v in ("v1", "better"):
            assert promote(r, ids[v], "canary", stages=STAGES, policy=policy).promoted
        assert demote(r, "canary", ids["v1"], reason="not the run it holds") is None
        event = demote(r, "canary", ids["better"], reason="abstains", details=[{"value": 0.9}])
        assert event is not None and event.action == "demote" and event.gate == [{"value": 0.9}]
        assert "canary" not in current_runs(r)
        assert demote(r, "canary", ids["better"], reason="again") is None
        assert [e.action for e in r.stage_events("canary")] == ["promote", "promote", "demote"]
