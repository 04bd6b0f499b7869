"""Output hardening: how much of the model's answer each API key tier receives.

An extraction attacker learns from every number an answer carries; Knockoff Nets (Orekondy et
al., CVPR 2019) and Tramer et al. ("Stealing machine learning models via prediction APIs",
USENIX Security 2016) both evaluate the classic counter-measures, which this module provides:

* ``full``: the probability vector as the model gives it;
* ``round-D``: every probability rounded to ``D`` decimals (Tramer et al., section 6);
* ``top-K`` (or ``top-K:D``): the ``K`` most probable classes and their probabilities
  (rounded to ``D`` decimals when given), nothing about the rest;
* ``labels``: the predicted class only, no probability or confidence.

The predicted label is always returned. A policy also states the most bits one answer can
carry (:meth:`OutputPolicy.bits`), which the information-budget monitor charges per query,
and :meth:`OutputPolicy.soft_labels` gives the attacker's best reading of a hardened answer as
a probability vector (what Knockoff Nets trains on), used to measure each policy with the
attack itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bastion.errors import ConfigError
from bastion.serve.budget import answer_bits

PolicyKind = Literal["full", "rounded", "top_k", "labels"]
_TIER = re.compile(r"^[a-z0-9_-]{1,40}$")
_SPEC = re.compile(r"^(?:(full|labels)|round-(\d)|top-(\d{1,3})(?::(\d))?)$")


@dataclass(frozen=True)
class OutputPolicy:
    """One output policy (see the module docstring); build it with :meth:`parse`."""

    kind: PolicyKind
    k: int = 1
    decimals: int | None = None

    @classmethod
    def parse(cls, text: str, *, field: str = "serve.default_output") -> OutputPolicy:
        """``full``, ``labels``, ``round-D`` (D in 0..9), ``top-K`` or ``top-K:D``; anything
        else is a :class:`ConfigError` naming ``field``."""
        m = _SPEC.match(text.strip()) if isinstance(text, str) else None
        if m is None:
            raise ConfigError(
                f"{field}: expected full, labels, round-D (D decimals, 0..9), top-K or top-K:D, "
                f"got {text!r}"
            )
        word, rounded, k, decimals = m.groups()
        if word is not None:
            return cls(word)  # type: ignore[arg-type]
        if rounded is not None:
            return cls("rounded", decimals=int(rounded))
        if int(k) < 1:
            raise ConfigError(f"{field}: top-K needs K >= 1, got {text!r}")
        return cls("top_k", k=int(k), decimals=int(decimals) if decimals is not None else None)

    @property
    def name(self) -> str:
        """The policy as :meth:`parse` reads it (``top-3:2``, ``round-2``, ...)."""
        if self.kind == "rounded":
            return f"round-{self.decimals}"
        if self.kind == "top_k":
            return f"top-{self.k}" + (f":{self.decimals}" if self.decimals is not None else "")
        return self.kind

    def check_classes(self, num_classes: int, *, field: str) -> None:
        """Refuse a ``top-K`` with ``K`` above the model's ``num_classes``."""
        if self.kind == "top_k" and self.k > num_classes:
            raise ConfigError(
                f"{field}: top-{self.k} asks for more classes than the model's {num_classes}"
            )

    def bits(self, num_classes: int) -> float:
        """The most information one answer carries (:func:`~bastion.serve.budget.answer_bits`)."""
        if self.kind == "labels":
            return answer_bits(num_classes, kind="label")
        if self.kind == "top_k":
            return answer_bits(
                num_classes, kind="top_k", k=min(self.k, num_classes), decimals=self.decimals
            )
        return answer_bits(num_classes, kind="probabilities", decimals=self.decimals)

    def _round(self, v: float) -> float:
        return round(v, self.decimals) if self.decimals is not None else v

    def apply(
        self, confidence: float | None, probabilities: tuple[float, ...] | None
    ) -> dict[str, Any]:
        """The ``confidence``, ``probabilities`` and ``top_k`` fields of one answered
        prediction under this policy (``top_k``: ``[{"label", "probability"}, ...]`` most
        probable first, only for ``top-K``)."""
        if self.kind == "labels" or probabilities is None:
            return {"confidence": None, "probabilities": None, "top_k": None}
        if self.kind == "full":
            return {"confidence": confidence, "probabilities": list(probabilities), "top_k": None}
        if self.kind == "rounded":
            rounded = [self._round(p) for p in probabilities]
            conf = self._round(confidence) if confidence is not None else None
            return {"confidence": conf, "probabilities": rounded, "top_k": None}
        probs = np.asarray(probabilities, dtype=np.float64)
        order = np.argsort(-probs, kind="stable")[: self.k]
        top = [{"label": int(i), "probability": self._round(float(probs[i]))} for i in order]
        return {"confidence": top[0]["probability"], "probabilities": None, "top_k": top}

    def soft_labels(self, probs: np.ndarray) -> np.ndarray:
        """The attacker's reading ``(N, C)`` of the hardened answers to model outputs
        ``probs`` ``(N, C)``: rounded vectors renormalised; top-K with the unreported mass
        spread evenly over the other classes; labels as one-hot rows. The answer always
        carries the label, so a reading whose rounding tied or hid the top class is nudged to
        put the label first. Rows sum to 1."""
        p = np.asarray(probs, dtype=np.float64)
        n, c = p.shape
        label = p.argmax(1)
        one_hot = np.eye(c)[label]
        if self.kind == "full":
            return p
        if self.kind == "labels":
            return np.asarray(one_hot)
        if self.kind == "rounded":
            out = np.round(p, self.decimals or 0)
        else:
            k = min(self.k, c)
            order = np.argsort(-p, axis=1, kind="stable")[:, :k]
            top = np.take_along_axis(p, order, 1)
            if self.decimals is not None:
                top = np.round(top, self.decimals)
            rest = np.clip(1.0 - top.sum(1, keepdims=True), 0.0, None)
            out = np.repeat(rest / max(c - k, 1), c, axis=1) if c > k else np.zeros((n, c))
            np.put_along_axis(out, order, top, 1)
        rows = np.arange(n)
        others = out.copy()
        others[rows, label] = -np.inf
        runner_up = others.max(1)
        tied = out[rows, label] <= runner_up
        out[rows[tied], label[tied]] = runner_up[tied] + 1e-6
        total = out.sum(1, keepdims=True)
        return np.asarray(out / total)


FULL = OutputPolicy("full")


def parse_policies(mapping: dict[str, str]) -> dict[str, OutputPolicy]:
    """``serve.output_policies`` (tier name -> policy text) parsed; errors name the tier."""
    if not isinstance(mapping, dict):
        raise ConfigError(
            f"serve.output_policies: expected a mapping of key tier to policy, got {mapping!r}"
        )
    out: dict[str, OutputPolicy] = {}
    for tier, text in mapping.items():
        if not isinstance(tier, str) or not _TIER.match(tier):
            raise ConfigError(
                f"serve.output_policies: tier names are 1..40 of a-z 0-9 _ -, got {tier!r}"
            )
        out[tier] = OutputPolicy.parse(text, field=f"serve.output_policies.{tier}")
    return out


def check_tier(tier: str) -> str:
    """``tier`` if it is a valid tier name (1..40 of ``a-z 0-9 _ -``), else a ConfigError."""
    if not isinstance(tier, str) or not _TIER.match(tier):
        raise ConfigError(f"keys: tier must be 1..40 of a-z 0-9 _ -, got {tier!r}")
    return tier
