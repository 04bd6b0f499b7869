"""The Python blocks of docs/attacks.md and docs/design.md run as shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bastion.attacks import ATTACKS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), flags=re.S)


@pytest.mark.parametrize("doc", ["attacks.md", "design.md"])
def test_python_blocks_run(doc: str, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = _blocks(doc)
    assert blocks, f"{doc} shows no Python block"
    before = set(ATTACKS)
    for block in blocks:
        exec(compile(block, f"docs/{doc}", "exec"), {"__name__": f"docs_{doc}"})
    assert set(ATTACKS) == before  # each example unregisters what it registered
    printed = capsys.readouterr().out.split()
    assert printed and all(0.0 <= float(w) <= 1.0 for w in printed)


def test_the_attacks_example_registers_a_working_attack() -> None:
    block = _blocks("attacks.md")[0].replace('unregister("random-sign")\n', "")
    scope: dict[str, object] = {"__name__": "docs_example"}
    try:
        exec(compile(block, "docs/attacks.md", "exec"), scope)
        cls = ATTACKS["random-sign"]
        assert (cls.knowledge, cls.kind) == ("score-based", "fixed-budget")
        result = scope["result"]
        assert result.queries.min() >= 2  # type: ignore[attr-defined]
    finally:
        ATTACKS.pop("random-sign", None)
