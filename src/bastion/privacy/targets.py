"""A bastion service (``bastion serve``) as a black-box target for extraction audits.

The service answers ``POST /v1/predict`` with ``{"inputs": [...]}`` by
``{"predictions": [{"verdict", "label", "probabilities", ...}, ...]}``, behind an
``X-API-Key`` header. A reply ``{"scores": [[...]]}`` (probabilities) or ``{"labels": [...]}``,
the plain protocol of :class:`~bastion.attacks.targets.HTTPTarget`, is read too, so any JSON
endpoint speaking either can be audited (give its full URL). :class:`ServedModelTarget` speaks
both: each prediction's probabilities become log-probabilities (as for every
:class:`~bastion.attacks.targets.BlackBoxTarget`), a prediction with only a label becomes a
one-hot row, and one the guard withheld (abstain or reject: no label) becomes a row of NaN,
which :func:`bastion.privacy.extraction.query_victim` counts as unanswered. The API key is
sent in the header only; it never appears in the target's name, errors or reports.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import torch
from torch import Tensor

from bastion.attacks.targets import HTTPTarget
from bastion.errors import AttackInputError

__all__ = ["ServedModelTarget"]

PREDICT_PATH = "/v1/predict"


class ServedModelTarget(HTTPTarget):
    """A model served by ``bastion serve``.

    Args:
        url: the service's base address (``http://host:port``, ``/v1/predict`` is appended) or
            the full URL of an endpoint.
        num_classes: ``C >= 2``.
        api_key: sent as ``X-API-Key`` (kept out of names and messages).
        timeout, batch_size: as :class:`~bastion.attacks.targets.HTTPTarget` (keep
            ``batch_size`` within the key's burst, or the service answers 413).
    """

    def __init__(
        self,
        url: str,
        *,
        num_classes: int,
        api_key: str | None = None,
        timeout: float = 30.0,
        batch_size: int = 64,
    ):
        if isinstance(url, str) and urllib.parse.urlsplit(url).path in ("", "/"):
            url = url.rstrip("/") + PREDICT_PATH  # a service's base address
        headers = {"X-API-Key": api_key} if api_key else None
        super().__init__(
            url,
            num_classes=num_classes,
            kind="probabilities",
            batch_size=batch_size,
            timeout=timeout,
            headers=headers,
        )
        self.target_name = f"ServedModelTarget({self.url})"
        self.withheld = 0

    def _post(self, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode("utf-8"),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                **self.headers,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            detail = ""
            with contextlib.suppress(ValueError, AttributeError, OSError):
                detail = str(json.loads(e.read()).get("detail", ""))[:200]
            more = f": {detail}" if detail else ""
            raise AttackInputError(f"{self.target_name}: HTTP {e.code} {e.reason}{more}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise AttackInputError(f"{self.target_name}: request failed: {reason}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise AttackInputError(f"{self.target_name}: the reply is not JSON") from None

    def _scores(self, batch: Tensor) -> Tensor:
        reply = self._post({"inputs": batch.tolist()})
        if isinstance(reply, dict) and "predictions" not in reply:
            if "scores" in reply:  # the plain protocol of HTTPTarget
                scores = self._check_shape(self._to_tensor(reply["scores"], "scores"), len(batch))
                return self._validate_probabilities(scores)
            if "labels" in reply:
                return self._one_hot(reply["labels"]).to(torch.float64).clamp_min(1e-300).log()
        preds = reply.get("predictions") if isinstance(reply, dict) else None
        if not isinstance(preds, list) or len(preds) != batch.shape[0]:
            raise AttackInputError(
                f"{self.target_name}: expected {{'predictions': [...]}} with {batch.shape[0]} "
                "entries (a bastion service), or {'scores': ...} / {'labels': ...}"
            )
        rows = torch.full((batch.shape[0], self.num_classes), float("nan"), dtype=torch.float64)
        hardened = reply.get("output", "full") != "full"
        for i, p in enumerate(preds):
            probs = p.get("probabilities") if isinstance(p, dict) else None
            label = p.get("label") if isinstance(p, dict) else None
            top = p.get("top_k") if isinstance(p, dict) else None
            if hardened and label is not None and (probs is not None or top):
                rows[i] = self._hardened_row(label, probs, top)
            elif probs is not None:
                row = self._to_tensor([probs], "probabilities")
                rows[i] = self._validate_probabilities(self._check_shape(row, 1))[0]
            elif label is not None:
                rows[i] = self._one_hot([label])[0].to(torch.float64).clamp_min(1e-300).log()
            else:
                self.withheld += 1
        return rows

    def _hardened_row(self, label: Any, probs: Any, top: Any) -> Tensor:
        """Log-probabilities read from a hardened answer (a key tier with a ``round-D`` or
        ``top-K`` output policy): rounded probabilities renormalised; the top ``K`` as given and
        the rest of the mass spread evenly; the answer's label kept on top (the reading of
        :meth:`bastion.serve.output_policy.OutputPolicy.soft_labels`)."""
        c = self.num_classes
        try:
            given: dict[int, float] = {}
            if probs is not None:
                row = self._check_shape(self._to_tensor([probs], "probabilities"), 1)[0]
            else:
                given = {int(t["label"]): float(t["probability"]) for t in top}
                if any(not 0 <= k < c for k in given):
                    raise ValueError("a label outside the classes")
                rest = max(0.0, 1.0 - sum(given.values())) / max(c - len(given), 1)
                row = torch.full((c,), rest, dtype=torch.float64)
                for k, v in given.items():
                    row[k] = v
            lab = int(label)
            if not 0 <= lab < c:
                raise ValueError("a label outside the classes")
            others = torch.cat([row[:lab], row[lab + 1 :]])
        except (KeyError, TypeError, ValueError, IndexError):
            raise AttackInputError(
                f"{self.target_name}: malformed hardened answer (top_k or probabilities)"
            ) from None
        row = row.to(torch.float64).clamp_min(0.0)
        if others.numel() and float(row[lab]) <= float(others.max()):
            row[lab] = float(others.max()) + 1e-6
        return (row / row.sum()).clamp_min(1e-300).log()
