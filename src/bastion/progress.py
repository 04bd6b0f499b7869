"""Progress display for long work: a rich progress bar with live loss and accuracies.

Library code takes plain callbacks; this module turns them into a terminal display. With
``enabled=False`` (tests, ``--quiet``) nothing is drawn.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressReporter:
    """Callbacks for :class:`~bastion.training.Trainer` and the evaluator, drawn with rich."""

    def __init__(self, console: Console | None = None, *, enabled: bool = True):
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self._progress: Progress | None = None

    @contextmanager
    def session(self) -> Iterator[ProgressReporter]:
        if not self.enabled:
            yield self
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        with self._progress:
            yield self
        self._progress = None

    def log(self, message: str) -> None:
        if self.enabled:
            self.console.print(message)

    def training(self, model_name: str) -> Any:
        """A callback for one model's training."""
        if self._progress is None:
            return None
        progress = self._progress
        task = progress.add_task(f"train {model_name}", total=None, info="")

        def update(d: dict[str, Any]) -> None:
            total = d["epochs"] * d.get("batches", 1) if "batches" in d else None
            if d.get("end_of_epoch"):
                rob = d.get("val_robust_accuracy")
                rob_s = f" val robust {rob:.1%}" if isinstance(rob, float) and rob == rob else ""
                progress.console.print(
                    f"  {model_name} epoch {d['epoch']}/{d['epochs']}: loss {d['train_loss']:.4f}, "
                    f"train acc {d['train_accuracy']:.1%}, val clean "
                    f"{d['val_clean_accuracy']:.1%}{rob_s}"
                )
                return
            done = (d["epoch"] - 1) * d["batches"] + d["batch"]
            progress.update(
                task,
                total=total,
                completed=done,
                info=f"epoch {d['epoch']}/{d['epochs']} loss {d['loss']:.3f} acc "
                f"{d['accuracy']:.1%}",
            )

        return update

    def evaluation(self, model_name: str) -> Any:
        """A callback ``(what, done, total)`` for one model's evaluation."""
        if self._progress is None:
            return None
        progress = self._progress
        task = progress.add_task(f"evaluate {model_name}", total=None, info="")

        def update(what: str, done: int, total: int) -> None:
            progress.update(task, total=total, completed=done, info=what)

        return update
