"""Progress display for long work: a rich progress bar with live loss and accuracies on a
terminal, plain lines elsewhere.

Library code takes plain callbacks; this module turns them into a display. On a terminal it
draws rich progress bars. When the output is not a terminal (a log file, a CI job) it writes
plain lines that never wrap: one per epoch, and for an evaluation one per finished attack and
eps and at least one every ``interval`` seconds, so a long evaluation shows that it is alive.
With ``enabled=False`` (tests, ``--quiet``) nothing is drawn.
"""

from __future__ import annotations

import time
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

    def __init__(
        self,
        console: Console | None = None,
        *,
        enabled: bool = True,
        plain: bool | None = None,
        interval: float = 30.0,
    ):
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.plain = (not self.console.is_terminal) if plain is None else plain
        self.interval = interval
        self._progress: Progress | None = None
        self._active = False

    def _line(self, message: str) -> None:
        self.console.print(message, soft_wrap=True, highlight=False, markup=False)

    @contextmanager
    def session(self) -> Iterator[ProgressReporter]:
        if not self.enabled:
            yield self
            return
        if self.plain:
            self._active = True
            try:
                yield self
            finally:
                self._active = False
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
            self._line(message)

    @staticmethod
    def _epoch_line(model_name: str, d: dict[str, Any]) -> str:
        rob = d.get("val_robust_accuracy")
        rob_s = f" val robust {rob:.1%}" if isinstance(rob, float) and rob == rob else ""
        return (
            f"  {model_name} epoch {d['epoch']}/{d['epochs']}: loss {d['train_loss']:.4f}, "
            f"train acc {d['train_accuracy']:.1%}, val clean {d['val_clean_accuracy']:.1%}{rob_s}"
        )

    def training(self, model_name: str) -> Any:
        """A callback for one model's training."""
        if self.plain and self._active:

            def plain(d: dict[str, Any]) -> None:
                if d.get("end_of_epoch"):
                    self._line(self._epoch_line(model_name, d))

            return plain
        if self._progress is None:
            return None
        progress = self._progress
        task = progress.add_task(f"train {model_name}", total=None, info="")

        def update(d: dict[str, Any]) -> None:
            total = d["epochs"] * d.get("batches", 1) if "batches" in d else None
            if d.get("end_of_epoch"):
                progress.console.print(self._epoch_line(model_name, d), soft_wrap=True)
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
        if self.plain and self._active:
            start = time.monotonic()
            last_time, last_what = start, ""

            def plain(what: str, done: int, total: int) -> None:
                nonlocal last_time, last_what
                now = time.monotonic()
                if what != last_what or now - last_time >= self.interval or done == total:
                    last_time, last_what = now, what
                    self._line(
                        f"  evaluate {model_name}: {what} ({done}/{total}, {now - start:.0f} s)"
                    )

            return plain
        if self._progress is None:
            return None
        progress = self._progress
        task = progress.add_task(f"evaluate {model_name}", total=None, info="")

        def update(what: str, done: int, total: int) -> None:
            progress.update(task, total=total, completed=done, info=what)

        return update
