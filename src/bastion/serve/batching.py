"""Micro-batching: concurrent requests share one forward pass of the guard.

Request threads :meth:`MicroBatcher.submit` their inputs and wait on a future; one worker
thread takes whatever is queued (up to ``max_rows`` inputs, waiting ``wait_s`` for more after
the first), calls ``guard.decide`` once on the concatenation and hands each request its slice
of the decisions. Under load the queue fills while the previous batch runs, so batches grow
with the load and the per-input cost falls.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from bastion.guard.decision import Decision, GuardLike
from bastion.serve.errors import RequestError


@dataclass
class _Job:
    x: np.ndarray
    future: Future[list[Decision]]


class MicroBatcher:
    """One worker thread serving ``guard.decide`` to many request threads."""

    def __init__(
        self,
        guard: GuardLike,
        *,
        max_rows: int = 128,
        wait_s: float = 0.0,
        max_pending: int = 4096,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.guard = guard
        self.max_rows = max_rows
        self.wait_s = wait_s
        self.max_pending = max_pending
        self._on_batch = on_batch
        self._cv = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._pending = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="bastion-batcher", daemon=True)
        self._thread.start()

    def submit(self, x: np.ndarray) -> Future[list[Decision]]:
        """Queue ``x`` ``(N, *input_shape)`` float32; the future yields N decisions.

        Raises :class:`RequestError` 503 when ``max_pending`` inputs are already waiting.
        """
        fut: Future[list[Decision]] = Future()
        n = int(x.shape[0])
        with self._cv:
            if self._closed:
                raise RequestError(503, "service", "shutting down")
            if self._pending + n > self.max_pending:
                raise RequestError(
                    503,
                    "service",
                    f"overloaded: {self._pending} inputs already waiting for the model",
                    headers={"Retry-After": "1"},
                )
            self._pending += n
            self._jobs.append(_Job(x, fut))
            self._cv.notify()
        return fut

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=5.0)

    def _take(self) -> list[_Job] | None:
        with self._cv:
            while not self._jobs and not self._closed:
                self._cv.wait()
            if self._closed and not self._jobs:
                return None
            batch = [self._jobs.popleft()]
            rows = int(batch[0].x.shape[0])
            deadline = time.monotonic() + self.wait_s
            while rows < self.max_rows:
                if not self._jobs:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._cv.wait(timeout=left) or not self._jobs:
                        break
                    continue
                nxt = self._jobs[0]
                if rows + int(nxt.x.shape[0]) > self.max_rows:
                    break
                batch.append(self._jobs.popleft())
                rows += int(nxt.x.shape[0])
            self._pending -= rows
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                x = torch.from_numpy(np.concatenate([j.x for j in live]))
                decisions: Sequence[Decision] = self.guard.decide(x)
                if len(decisions) != x.shape[0]:
                    raise RuntimeError(
                        f"guard returned {len(decisions)} decisions for {x.shape[0]} inputs"
                    )
            except Exception as e:  # the guard's fault: every waiting request learns it
                for j in live:
                    j.future.set_exception(e)
                continue
            if self._on_batch is not None:
                self._on_batch(int(x.shape[0]))
            start = 0
            for j in live:
                n = int(j.x.shape[0])
                j.future.set_result(list(decisions[start : start + n]))
                start += n
