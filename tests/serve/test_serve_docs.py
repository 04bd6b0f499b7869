"""Every config block of ``docs/serve.md`` is valid: the YAML blocks (``guard:`` and ``serve:``
sections) and the ``--set KEY=VALUE`` settings of its command lines; the ``serve:`` block is
also run (an app built with it answers a request)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from serve_fixtures import AsgiClient, digits_test_images

from bastion.guard.config import GuardConfig
from bastion.serve import AuditLog, KeyStore, ModelGuard, ServeSettings
from bastion.serve.app import create_app

DOC = Path(__file__).resolve().parents[2] / "docs" / "serve.md"


def _blocks(lang: str) -> list[str]:
    """The fenced blocks of the doc whose info string is ``lang`` ("" for plain fences)."""
    blocks: list[str] = []
    current: list[str] | None = None
    info = ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if current is None:
                current, info = [], line[3:].strip()
            else:
                if info == lang:
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    assert current is None, "an unclosed code fence"
    return blocks


def _yaml_sections() -> list[tuple[str, Any]]:
    sections = []
    for block in _blocks("yaml"):
        doc = yaml.safe_load(block)
        assert isinstance(doc, dict), block
        sections += list(doc.items())
    return sections


SECTIONS = _yaml_sections()


def test_the_doc_has_guard_and_serve_blocks() -> None:
    assert {name for name, _ in SECTIONS} >= {"guard", "serve"}


@pytest.mark.parametrize(("name", "body"), SECTIONS, ids=[n for n, _ in SECTIONS])
def test_every_yaml_block_validates(name: str, body: Any) -> None:
    if name == "guard":
        GuardConfig.from_dict(body)
    elif name == "serve":
        ServeSettings.from_mapping(body)
    else:
        pytest.fail(f"docs/serve.md has a YAML section {name!r} no test validates")


def test_every_set_option_of_the_command_lines_is_a_valid_setting() -> None:
    pairs = [
        m.group(1).partition("=")
        for block in _blocks("")
        for m in re.finditer(r"--set\s+(\S+)", block)
    ]
    assert pairs, "no --set options found"
    values: dict[str, Any] = {}
    for key, _, raw in pairs:
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    ServeSettings.from_mapping(values)


def test_the_serve_block_runs(tmp_path: Path, model_guard: ModelGuard) -> None:
    body = dict(next(b for n, b in SECTIONS if n == "serve"))
    settings = ServeSettings.from_mapping(body)
    audit = AuditLog(tmp_path / "audit.db")  # the block's PostgreSQL host is an example
    keys = KeyStore(tmp_path / "keys.db")
    _, key = keys.create("doc")
    client = AsgiClient(create_app(model_guard, settings=settings, audit=audit, keys=keys))
    try:
        x, _ = digits_test_images()
        r = client.post("/v1/predict", json={"input": x[0].tolist()}, headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        too_big = client.post(
            "/v1/predict",
            json={"inputs": [x[0].tolist()] * (settings.burst + 1)},
            headers={"X-API-Key": key},
        )
        assert too_big.status_code == 413  # over the block's max_batch or burst
    finally:
        client.close()
        keys.close()
        audit.close()
