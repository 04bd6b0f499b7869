"""The drift monitor: buffer what the service sees, test each closed window against reference.

``observe(x, probs)`` only appends to a buffer under a lock (cheap, thread-safe); when the
buffer holds ``window`` inputs the window is closed and tested, outside the buffer lock:

* inputs: per-feature KS with a Bonferroni correction (``ks`` mode) or an RBF-kernel MMD
  permutation test on random projections (``mmd`` mode);
* confidence: KS of the max probabilities;
* class mix: chi-square of the predicted-class counts (PSI reported too).

A test whose p-value is below ``alpha`` raises an alert: a log warning, a per-kind counter in
the state and, when ``webhook_url`` is set, a JSON POST (failures are logged, never raised).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bastion.errors import DataError
from bastion.monitor.reference import ReferenceStats
from bastion.monitor.stats import class_mix_test, ks_pvalues, mmd_permutation_test, psi

log = logging.getLogger("bastion.monitor")

STATE_FORMAT = "bastion-monitor-state/1"


@dataclass
class MonitorState:
    """What the monitor has seen: counts, alerts by kind and the latest windows' results."""

    observed: int = 0
    windows: int = 0
    alerts: dict[str, int] = field(
        default_factory=lambda: {"input": 0, "confidence": 0, "class_mix": 0}
    )
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "state") -> MonitorState:
        if not isinstance(d, dict) or d.get("format") != STATE_FORMAT:
            raise DataError(f"{source}: not a monitor state (expected format {STATE_FORMAT!r})")
        try:
            return cls(
                observed=int(d["observed"]),
                windows=int(d["windows"]),
                alerts={str(k): int(v) for k, v in d["alerts"].items()},
                history=list(d["history"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(f"{source}: incomplete monitor state ({e})") from e

    def save(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MonitorState:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{p}: monitor state not found")
        try:
            return cls.from_dict(json.loads(p.read_text()), source=str(p))
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: invalid JSON ({e})") from e


def format_state(state: MonitorState) -> str:
    """A human-readable summary (for ``bastion monitor``)."""
    lines = [
        f"observed {state.observed} inputs in {state.windows} closed window(s)",
        "alerts: " + ", ".join(f"{k} {v}" for k, v in sorted(state.alerts.items())),
    ]
    for w in state.history[-5:]:
        flags = ", ".join(w.get("alerts", [])) or "none"
        lines.append(
            f"  window {w['window']}: input p={w['input_p']:.3g}, confidence p="
            f"{w['confidence_p']:.3g}, class-mix p={w['class_mix_p']:.3g} "
            f"(psi {w['class_mix_psi']:.3f}); alerts: {flags}"
        )
    return "\n".join(lines)


class DriftMonitor:
    """Windowed drift tests against a :class:`ReferenceStats`.

    Args:
        reference: the reference summaries.
        window: inputs per window (tested when full).
        alpha: p-value below which a test alerts.
        permutations: MMD permutation count.
        webhook_url: where to POST each alert as JSON, or None.
        webhook_timeout: seconds before a POST is abandoned (and logged).
        history: how many window results the state keeps.
        seed: the MMD permutations' randomness.
    """

    def __init__(
        self,
        reference: ReferenceStats,
        *,
        window: int = 500,
        alpha: float = 0.01,
        permutations: int = 200,
        webhook_url: str | None = None,
        webhook_timeout: float = 2.0,
        history: int = 50,
        seed: int = 0,
        state: MonitorState | None = None,
    ) -> None:
        if window < 10:
            raise DataError(f"monitor.window: expected an integer >= 10, got {window}")
        if not 0 < alpha < 1:
            raise DataError(f"monitor.alpha: expected a number in (0, 1), got {alpha}")
        self.reference = reference
        self.window, self.alpha, self.permutations = int(window), float(alpha), int(permutations)
        self.webhook_url, self.webhook_timeout = webhook_url, float(webhook_timeout)
        self.keep_history = int(history)
        self.state = state if state is not None else MonitorState()
        self._gen = torch.Generator().manual_seed(seed)
        self._buffer_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._xs: list[Tensor] = []
        self._ps: list[Tensor] = []
        self._count = 0

    def observe(self, x: Tensor, probs: Tensor) -> None:
        """Record a batch of inputs ``(N, *input_shape)`` and the probabilities answered for
        them ``(N, C)``; tests a window when one fills. Thread-safe."""
        view = self.reference.view(x.detach())
        p = probs.detach().float()
        with self._buffer_lock:
            self._xs.append(view)
            self._ps.append(p)
            self._count += x.shape[0]
            full = self._count >= self.window
            if full:
                xs, ps = torch.cat(self._xs), torch.cat(self._ps)
                self._xs, self._ps, self._count = [], [], 0
        with self._state_lock:
            self.state.observed += int(x.shape[0])
        if full:
            self.close_window(xs, ps)

    def close_window(self, views: Tensor, probs: Tensor) -> dict[str, Any]:
        """Test one window (feature views ``(N, D)``, probabilities ``(N, C)``) and alert."""
        ref = self.reference
        if ref.mode == "ks":
            pv = ks_pvalues(ref.features, views)
            input_p = float((pv.min() * pv.numel()).clamp(max=1.0))
            input_stat = float(pv.numel())
        else:
            with self._state_lock:
                input_stat, input_p = mmd_permutation_test(
                    ref.features,
                    views,
                    bandwidth=ref.bandwidth,
                    permutations=self.permutations,
                    generator=self._gen,
                )
        conf = probs.amax(dim=1)
        conf_p = float(ks_pvalues(ref.confidences[:, None], conf[:, None])[0])
        counts = torch.bincount(probs.argmax(dim=1), minlength=ref.class_share.numel())
        mix_p, mix_psi = class_mix_test(ref.class_share, counts)
        alerts = [
            kind
            for kind, p in (("input", input_p), ("confidence", conf_p), ("class_mix", mix_p))
            if p < self.alpha
        ]
        with self._state_lock:
            self.state.windows += 1
            result = {
                "window": self.state.windows,
                "time": time.time(),
                "size": int(views.shape[0]),
                "input_p": input_p,
                "input_stat": input_stat,
                "confidence_p": conf_p,
                "confidence_psi": psi(ref.confidences, conf),
                "class_mix_p": mix_p,
                "class_mix_psi": mix_psi,
                "alerts": alerts,
            }
            for kind in alerts:
                self.state.alerts[kind] = self.state.alerts.get(kind, 0) + 1
            self.state.history = [*self.state.history, result][-self.keep_history :]
        for kind in alerts:
            log.warning("drift alert: %s (window %d)", kind, result["window"])
        if alerts and self.webhook_url:
            self._post(result)
        return result

    def _post(self, payload: dict[str, Any]) -> None:
        url = self.webhook_url
        if url is None:
            return
        body = json.dumps({"event": "bastion.drift", **payload}).encode()
        req = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.webhook_timeout) as resp:
                resp.read()
        except (OSError, ValueError) as e:
            log.error("drift webhook %s failed: %s", url, e)
