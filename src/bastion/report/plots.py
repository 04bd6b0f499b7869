"""Report figures, rendered with matplotlib's Agg canvas straight to PNG bytes.

Figures are built from :class:`matplotlib.figure.Figure` with a :class:`FigureCanvasAgg`
attached, never through ``pyplot``: nothing registers with pyplot's global figure manager,
no GUI backend is touched and the global ``rcParams`` are only read. The output is
deterministic for a given scorecard and matplotlib version (the PNG carries no timestamp or
software tag).

Colours are assigned per model in scorecard order, so a model has the same colour in every
figure; line styles distinguish attacks (accuracy against eps) and validation metrics
(training curves).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter

from bastion.evaluation.scorecard_model import CalibrationStats, Scorecard
from bastion.report._view import ModelView, ScorecardError, ScorecardView, parse_scorecard

__all__ = ["PALETTE", "plot_accuracy_vs_eps", "plot_training_curves"]

#: Colour-blind-friendly palette (Okabe-Ito), cycled when there are more models.
PALETTE = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
)
_LineStyle = Literal["--", ":", "-."] | tuple[float, tuple[float, ...]]
_ATTACK_STYLES: tuple[_LineStyle, ...] = (
    "--",
    ":",
    "-.",
    (0, (6, 2, 1, 2, 1, 2)),
    (0, (1, 3)),
    (0, (8, 3)),
)
_DPI = 110
_GRID = "#d9dde3"
_TEXT = "#333a45"


def _colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _label(text: str) -> str:
    """Make arbitrary text safe for matplotlib: ``$`` would otherwise start mathtext."""
    return text.replace("$", r"\$")


def _finite(values: Sequence[float]) -> bool:
    return any(math.isfinite(v) for v in values)


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    figure.set_facecolor("white")
    return figure


def _style_axes(ax: Axes) -> None:
    ax.grid(True, color=_GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#8a93a0")
    ax.tick_params(colors=_TEXT, labelsize=9)
    ax.xaxis.label.set_color(_TEXT)
    ax.yaxis.label.set_color(_TEXT)
    ax.title.set_color(_TEXT)


def _to_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


_LegendLoc = Literal["outside right upper", "outside right lower", "outside lower center"]


def _figure_legend(
    figure: Figure,
    handles: list[Line2D],
    labels: list[str],
    title: str,
    loc: _LegendLoc,
    *,
    ncols: int = 1,
) -> None:
    legend = figure.legend(
        handles,
        labels,
        title=title,
        loc=loc,
        ncols=ncols,
        fontsize=9,
        title_fontsize=9,
        frameon=False,
        alignment="left",
    )
    legend.get_title().set_color(_TEXT)


# -- accuracy against eps -----------------------------------------------------------------------
def models_with_curves(view: ScorecardView) -> list[ModelView]:
    """The models that carry an accuracy-against-eps curve."""
    return [m for m in view.models if m.curve is not None]


def accuracy_vs_eps_png(view: ScorecardView) -> bytes:
    """Render the accuracy-against-eps figure for an already parsed scorecard."""
    if not models_with_curves(view):
        raise ScorecardError("no model has accuracy_vs_eps; nothing to plot")
    attack_styles = {
        name: _ATTACK_STYLES[i % len(_ATTACK_STYLES)] for i, name in enumerate(view.attack_names)
    }
    figure = _new_figure(9.5, 4.6)
    ax = figure.add_subplot()
    model_handles: list[Line2D] = []
    model_labels: list[str] = []
    used_attacks: dict[str, None] = {}
    for index, model in enumerate(view.models):
        curve = model.curve
        if curve is None:
            continue
        colour = _colour(index)
        if _finite(curve.worst_case):
            ax.plot(
                curve.eps,
                curve.worst_case,
                color=colour,
                linewidth=2.4,
                marker="o",
                markersize=4.5,
                zorder=3,
            )
        for attack, values in curve.per_attack.items():
            if not _finite(values):
                continue
            used_attacks.setdefault(attack, None)
            ax.plot(
                curve.eps,
                values,
                color=colour,
                linewidth=1.2,
                linestyle=attack_styles[attack],
                alpha=0.8,
                zorder=2,
            )
        model_handles.append(Line2D([], [], color=colour, linewidth=2.4))
        model_labels.append(_label(model.name))

    eps = view.threat.eps
    if eps is not None and math.isfinite(eps):
        ax.axvline(eps, color="#6b7280", linewidth=1.0, linestyle=(0, (2, 2)), zorder=1)
        ax.annotate(
            f"threat \u03b5 = {format(eps, 'g')}",
            xy=(eps, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(4, -4),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=9,
            color="#4b5563",
        )

    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    norm = view.threat.norm
    ax.set_xlabel(
        f"perturbation budget \u03b5 ({_label(norm)})" if norm else "perturbation budget \u03b5"
    )
    ax.set_ylabel("accuracy")
    _style_axes(ax)

    _figure_legend(figure, model_handles, model_labels, "model", "outside right upper")
    style_handles = [Line2D([], [], color=_TEXT, linewidth=2.4, marker="o", markersize=4.5)]
    style_labels = ["worst case"]
    for attack in used_attacks:
        style_handles.append(
            Line2D([], [], color=_TEXT, linewidth=1.2, linestyle=attack_styles[attack])
        )
        style_labels.append(_label(attack))
    _figure_legend(figure, style_handles, style_labels, "line", "outside right lower")
    return _to_png(figure)


def plot_accuracy_vs_eps(scorecard: Scorecard | Mapping[str, Any]) -> bytes:
    """Accuracy against the perturbation budget, as PNG bytes.

    One solid line per model for the worst case across attacks, and a thinner line in the same
    colour per attack (dashed, dotted, ... one style per attack). A dotted vertical line marks
    the threat model's eps.

    Raises:
        ScorecardError: the scorecard is malformed or no model has ``accuracy_vs_eps``.
    """
    return accuracy_vs_eps_png(parse_scorecard(scorecard))


# -- training curves ----------------------------------------------------------------------------
def models_with_history(view: ScorecardView) -> list[ModelView]:
    """The models that carry a per-epoch training history."""
    return [m for m in view.models if m.history is not None]


def _best_point(model: ModelView) -> tuple[float, float] | None:
    """``(epoch, accuracy)`` of the selected epoch on the validation curve used to pick it."""
    training, history = model.training, model.history
    if training is None or history is None or training.best_epoch is None:
        return None
    series = history.val_robust_accuracy
    if not _finite(series) or (training.selection and "clean" in training.selection):
        series = history.val_clean_accuracy
    for epoch, value in zip(history.epoch, series, strict=True):
        if epoch == training.best_epoch and math.isfinite(value):
            return epoch, value
    return None


def _plot_history(ax_loss: Axes, ax_acc: Axes, model: ModelView, colour: str) -> set[str]:
    """Draw one model's loss (left) and validation accuracy (right) curves; return the line
    styles used (``rank``, ``clean``, ``robust``, ``best``) for the style legend."""
    history = model.history
    assert history is not None
    used: set[str] = set()
    style: dict[str, Any] = {
        "color": colour,
        "marker": "o" if len(history) <= 30 else None,
        "markersize": 3,
    }
    if _finite(history.train_loss):
        ax_loss.plot(history.epoch, history.train_loss, linewidth=1.8, **style)
    for rank_loss in history.rank_loss:  # torchrun: each process's loss on its share
        if any(math.isfinite(v) for v in rank_loss):
            used.add("rank")
            ax_loss.plot(history.epoch, rank_loss, color=colour, linewidth=1.0, linestyle=":")
    if _finite(history.val_clean_accuracy):
        used.add("clean")
        ax_acc.plot(history.epoch, history.val_clean_accuracy, linewidth=1.8, **style)
    if _finite(history.val_robust_accuracy):
        used.add("robust")
        ax_acc.plot(
            history.epoch,
            history.val_robust_accuracy,
            linewidth=1.4,
            linestyle="--",
            markerfacecolor="white",
            **style,
        )
    best = _best_point(model)
    if best is not None:
        used.add("best")
        ax_acc.plot(
            [best[0]],
            [best[1]],
            linestyle="none",
            marker="*",
            markersize=13,
            color=colour,
            markeredgecolor="white",
            markeredgewidth=0.8,
            zorder=4,
        )
    return used


def _style_training_axes(ax_loss: Axes, ax_acc: Axes) -> None:
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _style_axes(ax)
    ax_loss.set_title("Training loss", fontsize=11, loc="left")
    ax_loss.set_ylabel("loss")
    ax_acc.set_title("Validation accuracy", fontsize=11, loc="left")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))


def _training_styles(used: set[str]) -> tuple[list[Line2D], list[str]]:
    """Legend lines and labels of the line styles ``used`` by :func:`_plot_history`."""
    styles = [
        ("rank", Line2D([], [], color=_TEXT, linewidth=1.0, linestyle=":"), "loss per process"),
        ("clean", Line2D([], [], color=_TEXT, linewidth=1.8), "clean"),
        ("robust", Line2D([], [], color=_TEXT, linewidth=1.4, linestyle="--"), "robust"),
        (
            "best",
            Line2D([], [], color=_TEXT, linestyle="none", marker="*", markersize=11),
            "selected epoch",
        ),
    ]
    return [h for k, h, _ in styles if k in used], [lbl for k, _, lbl in styles if k in used]


def training_curves_png(view: ScorecardView) -> bytes:
    """Render the two-panel training figure for an already parsed scorecard."""
    if not models_with_history(view):
        raise ScorecardError("no model has a training history; nothing to plot")
    figure = _new_figure(11.0, 4.2)
    ax_loss, ax_acc = figure.subplots(1, 2)
    model_handles: list[Line2D] = []
    model_labels: list[str] = []
    used: set[str] = set()
    for index, model in enumerate(view.models):
        if model.history is None:
            continue
        colour = _colour(index)
        used |= _plot_history(ax_loss, ax_acc, model, colour)
        model_handles.append(Line2D([], [], color=colour, linewidth=1.8))
        model_labels.append(_label(model.name))
    _style_training_axes(ax_loss, ax_acc)
    _figure_legend(figure, model_handles, model_labels, "model", "outside right upper")
    handles, labels = _training_styles(used)
    if handles:
        title = "lines" if "rank" in used else "validation"  # the dotted style is a training loss
        _figure_legend(figure, handles, labels, title, "outside right lower")
    return _to_png(figure)


def plot_training_curves(scorecard: Scorecard | Mapping[str, Any]) -> bytes:
    """Training curves as PNG bytes: two panels sharing the epoch axis.

    Left: training loss per model. Right: validation clean accuracy (solid) and robust accuracy
    (dashed) per model, with a star on the epoch that was selected. Models without a history are
    left out.

    Raises:
        ScorecardError: the scorecard is malformed or no model has a training history.
    """
    return training_curves_png(parse_scorecard(scorecard))


# -- reliability diagrams -----------------------------------------------------------------------
def models_with_calibration(view: ScorecardView) -> list[ModelView]:
    """The models whose scorecard entry carries calibration bins."""
    return [m for m in view.models if m.calibration is not None and m.calibration.clean]


def reliability_png(view: ScorecardView) -> bytes:
    """Reliability diagrams (accuracy against confidence per bin), clean and under attack, one
    panel per setting, one line per model; the diagonal is perfect calibration."""
    models = models_with_calibration(view)
    settings = [("clean", "clean")]
    if any(m.calibration and m.calibration.adversarial for m in models):
        attack = next((str(m.calibration.attack) for m in models if m.calibration), "attack")
        settings.append(("adversarial", f"under {attack}"))
    figure = _new_figure(4.2 * len(settings) + 1.6, 3.6)
    axes = figure.subplots(1, len(settings), squeeze=False)[0]
    handles: list[Line2D] = []
    labels: list[str] = []
    for ax, (key, title) in zip(axes, settings, strict=True):
        _style_axes(ax)
        ax.plot([0, 1], [0, 1], color="#8a93a0", linestyle="--", linewidth=1)
        for i, m in enumerate(models):
            metrics = getattr(m.calibration, key, None)
            if not isinstance(metrics, CalibrationStats) or not metrics.to_json():
                continue
            pts = [(b.confidence, b.accuracy) for b in metrics.bins if b.count]
            if not pts:
                continue
            (line,) = ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                markersize=3,
                color=_colour(i),
                linewidth=1.6,
            )
            if key == "clean":
                handles.append(line)
                labels.append(_label(f"{m.name} (ECE {metrics.ece:.3f})"))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(_label(title), fontsize=10)
    # below the panels, in columns: the legend's width then never exceeds the figure's, however
    # long the model names (beside the panels it was clipped at the right edge)
    _figure_legend(
        figure, handles, labels, "model", "outside lower center", ncols=max(1, min(3, len(labels)))
    )
    return _to_png(figure)
