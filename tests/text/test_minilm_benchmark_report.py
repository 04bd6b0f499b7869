"""``benchmarks/text.py --model minilm --part combine --results-name text-minilm-full`` writes
the committed whole-split report again from its committed part file (the machine line aside),
and ``--smoothing`` puts word-piece smoothing into the hardening section it runs."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
RESULTS = BENCH / "results"


def _module() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("text_minilm", BENCH / "text_minilm.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_combine_rewrites_the_committed_whole_split_report(tmp_path: Path) -> None:
    shutil.copy(RESULTS / "text-minilm-full-movie_review.json", tmp_path)
    args = argparse.Namespace(part="combine", results_name="text-minilm-full", threads=1)
    _module().run(args, tmp_path)
    written = (tmp_path / "text-minilm-full.md").read_text().splitlines()
    committed = (RESULTS / "text-minilm-full.md").read_text().splitlines()
    assert len(written) == len(committed)
    for a, b in zip(written, committed, strict=True):
        if not a.startswith("Machine: "):  # the platform string is the machine's
            assert a == b
    doc = json.loads((tmp_path / "text-minilm-full.json").read_text())
    assert doc["targets"] == json.loads((RESULTS / "text-minilm-full.json").read_text())["targets"]
    assert doc["targets"]["mr_clean_accuracy_standard"] >= 0.8
    assert doc["runs"]["movie_review"]["transformer"]["n_train"] == 7464  # the whole split


def test_smoothing_option_enables_word_piece_smoothing_without_noisy_training() -> None:
    module = _module()
    off = argparse.Namespace(smoothing=0, mask_rate=0.15)
    assert module._hardening(off) == {}
    on = module._hardening(argparse.Namespace(smoothing=6, mask_rate=0.15))
    sm = on["hardening"]["smoothing"]
    assert sm == {"enabled": True, "samples": 6, "mask_rate": 0.15, "train_noise": False}
