"""The YAML blocks of docs/poisoning.md, for the tests that run them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

DOC = Path(__file__).resolve().parents[2] / "docs" / "poisoning.md"


def yaml_blocks() -> dict[str, Any]:
    """The YAML blocks of the page by their top-level key (``poisoning``, ``rules``)."""
    out: dict[str, Any] = {}
    for text in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S):
        doc = yaml.safe_load(text)
        (key,) = doc
        assert key not in out, f"two {key} blocks: give each a test"
        out[key] = doc
    return out
