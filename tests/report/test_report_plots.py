"""Report figures: real PNG output, determinism, data-dependence and no pyplot/global state."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from bastion.report import ScorecardError, plot_accuracy_vs_eps, plot_training_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _pixels(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE)
    return np.asarray(imread(io.BytesIO(png)))


def _colour_fraction(pixels: np.ndarray, rgb: tuple[int, int, int]) -> float:
    """Fraction of pixels within a small distance of ``rgb`` (0-255)."""
    target = np.array(rgb, dtype=float) / 255.0
    distance = np.abs(pixels[..., :3] - target).max(axis=-1)
    return float((distance < 0.06).mean())


def test_accuracy_vs_eps_is_a_real_png(shared_scorecard: dict[str, Any]) -> None:
    pixels = _pixels(plot_accuracy_vs_eps(shared_scorecard))
    height, width = pixels.shape[:2]
    assert (width, height) == (1045, 506)  # 9.5 x 4.6 inches at 110 dpi
    # both model colours (first two palette entries) are drawn
    assert _colour_fraction(pixels, (0x00, 0x72, 0xB2)) > 0.002
    assert _colour_fraction(pixels, (0xD5, 0x5E, 0x00)) > 0.002


def test_training_curves_is_a_real_png(shared_scorecard: dict[str, Any]) -> None:
    pixels = _pixels(plot_training_curves(shared_scorecard))
    height, width = pixels.shape[:2]
    assert (width, height) == (1210, 462)
    assert _colour_fraction(pixels, (0x00, 0x72, 0xB2)) > 0.002
    assert _colour_fraction(pixels, (0xD5, 0x5E, 0x00)) > 0.002


def test_plots_are_deterministic_and_follow_the_data(scorecard: dict[str, Any]) -> None:
    first = plot_accuracy_vs_eps(scorecard)
    assert plot_accuracy_vs_eps(scorecard) == first
    scorecard["models"]["hardened"]["accuracy_vs_eps"]["worst_case"] = [0.5] * 7
    assert plot_accuracy_vs_eps(scorecard) != first

    curves = plot_training_curves(scorecard)
    assert plot_training_curves(scorecard) == curves
    scorecard["models"]["baseline"]["training"]["history"].pop()
    assert plot_training_curves(scorecard) != curves


def test_model_colour_disappears_when_its_data_is_removed(scorecard: dict[str, Any]) -> None:
    del scorecard["models"]["hardened"]["accuracy_vs_eps"]
    pixels = _pixels(plot_accuracy_vs_eps(scorecard))
    assert _colour_fraction(pixels, (0x00, 0x72, 0xB2)) > 0.002
    assert _colour_fraction(pixels, (0xD5, 0x5E, 0x00)) < 0.0005


def test_nothing_to_plot_raises(scorecard: dict[str, Any]) -> None:
    for model in scorecard["models"].values():
        del model["accuracy_vs_eps"]
        del model["training"]
    with pytest.raises(ScorecardError, match="accuracy_vs_eps"):
        plot_accuracy_vs_eps(scorecard)
    with pytest.raises(ScorecardError, match="training history"):
        plot_training_curves(scorecard)


def test_awkward_names_and_gaps_render(scorecard: dict[str, Any]) -> None:
    models = scorecard["models"]
    models["$x^2$ costs $5"] = models.pop("baseline")
    models["_hidden"] = models.pop("hardened")
    models["_hidden"]["accuracy_vs_eps"]["per_attack"]["fgsm"][3] = None
    models["_hidden"]["training"]["history"][2]["val_robust_accuracy"] = None
    scorecard["threat"]["norm"] = "l$2"
    assert plot_accuracy_vs_eps(scorecard).startswith(PNG_SIGNATURE)
    assert plot_training_curves(scorecard).startswith(PNG_SIGNATURE)


def test_plotting_leaves_pyplot_and_rcparams_alone() -> None:
    code = textwrap.dedent(
        """
        import sys
        import matplotlib
        # (reading rcParams["backend"] would itself import pyplot, so it is left out)
        snapshot = lambda: {k: str(matplotlib.rcParams[k]) for k in matplotlib.rcParams
                            if k != "backend"}
        before = snapshot()
        from bastion.report import render_html
        scorecard = {
            "threat": {"eps": 0.1},
            "models": {"m": {
                "accuracy_vs_eps": {"eps": [0, 0.1], "worst_case": [0.9, 0.5]},
                "training": {"history": [{"epoch": 1, "train_loss": 1.0}]},
            }},
        }
        assert render_html(scorecard).count("data:image/png;base64,") == 2
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
        assert snapshot() == before, "rcParams changed"
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
