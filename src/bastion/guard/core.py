"""The runtime guard: validation -> detectors -> prediction -> post-check, one batched call.

:class:`Guard` holds a fitted :class:`~bastion.guard.scorer.GuardScorer`, the validator, the
clean calibration scores of every firing layer and the thresholds derived from them. All of it
is built at load time; :meth:`Guard.decide` is one validation pass, one stacked forward pass
(plus one per extra ensemble member or the smoothing samples) and a loop that builds the
:class:`~bastion.guard.decision.Decision` objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bastion.certify.smoothing import SmoothedClassifier, binomial_test_p_value
from bastion.errors import ConfigError
from bastion.guard.calibration import joint_thresholds
from bastion.guard.config import GuardConfig
from bastion.guard.decision import VERDICTS, Decision, Verdict
from bastion.guard.scorer import CONFIDENCE, GuardScorer
from bastion.guard.validation import InputValidator

_RANK: dict[str, int] = {"accept": 0, "flag": 1, "abstain": 2, "reject": 3}


class Guard:
    """A fitted guard (see :func:`bastion.guard.fit.fit_guard` and
    :func:`bastion.guard.io.load_guard`).

    Args:
        config: the ``guard:`` settings it was fitted with.
        scorer: the fitted scorer (models, squeezers, OOD statistics, detector, temperature).
        validator: the input checks.
        classes: class names, in logit order.
        cal_scores: ``(M, K)`` clean held-out scores of the jointly calibrated layers, in the
            order of ``firing``; thresholds at any false-positive rate derive from them.
        firing: the names of those layers.
        fpr: the target false-positive rate the thresholds are set for.
        models: the predicting models (first = primary), as given to the scorer.
        seed: the seed of the smoothing noise (re-drawn identically on every call).
    """

    def __init__(
        self,
        *,
        config: GuardConfig,
        scorer: GuardScorer,
        validator: InputValidator,
        classes: tuple[str, ...],
        cal_scores: Tensor,
        firing: tuple[str, ...],
        fpr: float,
        models: Sequence[nn.Module],
        seed: int = 0,
    ) -> None:
        self.config = config
        self.models = list(models)
        self.scorer = scorer.eval()
        self.validator = validator
        self.input_shape = validator.input_shape
        self.classes = tuple(classes)
        self.cal_scores = cal_scores.detach().float()
        self.firing = tuple(firing)
        self.seed = int(seed)
        self.fpr = float(fpr)
        self.thresholds: dict[str, float] = {}
        self.actions: dict[str, str] = {
            "squeezing": config.squeezing.action,
            "ood": config.ood.action,
            "adversarial": config.adversarial.action,
            "disagreement": config.prediction.disagreement_action,
            CONFIDENCE: config.postcheck.action,
        }
        self._set_thresholds(fpr)
        self._smoother: SmoothedClassifier | None = None
        if config.prediction.kind == "smoothing":
            base = torch.nn.Sequential(scorer.features, scorer.head)
            self._smoother = SmoothedClassifier(
                base, len(self.classes), config.prediction.sigma, batch_size=4096
            )

    # -- thresholds -------------------------------------------------------------------------
    def _set_thresholds(self, fpr: float) -> None:
        if not 0 < fpr < 1:
            raise ConfigError(f"guard.fpr: expected a number in (0, 1), got {fpr!r}")
        th = joint_thresholds(self.cal_scores, fpr) if self.firing else []
        self.thresholds = dict(zip(self.firing, th, strict=True))
        floor = self.config.postcheck.min_confidence
        if self.config.postcheck.enabled and floor is not None:
            self.thresholds[CONFIDENCE] = 1.0 - floor
        self.fpr = float(fpr)
        names = list(self.thresholds)
        self._names = names
        self._thr = torch.tensor([self.thresholds[k] for k in names], dtype=torch.float32)

    def with_fpr(self, fpr: float) -> Guard:
        """A copy sharing every fitted part, with thresholds for another false-positive rate."""
        other = Guard.__new__(Guard)
        other.__dict__.update(self.__dict__)
        other._set_thresholds(fpr)
        return other

    # -- deciding ---------------------------------------------------------------------------
    def _smoothed(self, smoother: SmoothedClassifier, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(probs (N, C), abstain (N,))`` of the smoothed classifier (Cohen et al. 2019):
        the class shares over ``samples`` noisy copies, abstaining unless the top class wins
        the binomial test at level ``alpha``. The noise is re-seeded on every call."""
        p = self.config.prediction
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        counts = smoother.sample_counts(x, p.samples, generator=gen)
        top = counts.argmax(dim=1)
        n_a = counts.gather(1, top[:, None]).squeeze(1)
        n_b = counts.scatter(1, top[:, None], -1).amax(dim=1)
        p_value = binomial_test_p_value(n_a, n_a + n_b).to(x.device)
        return counts.float() / p.samples, p_value > p.alpha

    def fired_matrix(self, scores: dict[str, Tensor]) -> Tensor:
        """``(N, L)`` bool: which thresholded layers fire, in ``self._names`` order."""
        if not self._names:
            n = next(iter(scores.values())).shape[0]
            return torch.zeros(n, 0, dtype=torch.bool)
        mat = torch.stack([scores[k] for k in self._names], dim=1)
        return mat > self._thr

    def decide(self, x: Tensor, reference: Tensor | None = None) -> list[Decision]:
        """Decisions for a float32 batch ``(N, *input_shape)``, in order.

        Raises :class:`~bastion.errors.DataError` only for a batch of the wrong shape or dtype;
        a bad row (NaN, out of range, invalid schema) gets a ``reject`` (or ``flag``) decision
        naming the reason. ``reference``: rows to compare immutable tabular features with.
        """
        x = self.validator.check_batch(x)
        with torch.inference_mode():
            x_clean, reasons = self.validator.validate(x, reference)
            probs, _, scores = self.scorer(x_clean)
            abstain = None
            if self._smoother is not None:
                probs, abstain = self._smoothed(self._smoother, x_clean)
                scores[CONFIDENCE] = 1.0 - probs.amax(dim=1)
            fired = self.fired_matrix(scores)
            any_fired = fired.any(dim=1).tolist()
            conf, label = probs.max(dim=1)
            score_names = list(scores)
            score_rows = torch.nan_to_num(
                torch.stack([scores[k].float() for k in score_names], dim=1),
                nan=0.0,
                posinf=1e30,
                neginf=-1e30,
            ).tolist()
            prob_rows = probs.tolist()
            labels, confs = label.tolist(), conf.tolist()
            abst = abstain.tolist() if abstain is not None else None
            fired_rows = fired.tolist() if any(any_fired) else None
        reject_invalid = self.config.validation.action == "reject"
        out: list[Decision] = []
        for i in range(len(labels)):
            score_map = dict(zip(score_names, score_rows[i], strict=True))
            why: list[str] = []
            rank = 0
            if reasons[i] is not None:
                why.append(reasons[i])  # type: ignore[arg-type]
                if reject_invalid:
                    out.append(Decision("reject", reasons=tuple(why)))
                    continue
                rank = 1
            if fired_rows is not None and any_fired[i]:
                for name, hit in zip(self._names, fired_rows[i], strict=True):
                    if hit:
                        why.append(self._reason(name, score_map[name]))
                        rank = max(rank, _RANK[self.actions[name]])
            if abst is not None and abst[i]:
                why.append("smoothing: abstained (no class significantly most likely)")
                rank = max(rank, _RANK["abstain"])
            verdict: Verdict = VERDICTS[rank]
            if rank >= 2:
                out.append(Decision(verdict, reasons=tuple(why), scores=score_map))
            else:
                out.append(
                    Decision(
                        verdict,
                        label=labels[i],
                        confidence=confs[i],
                        probabilities=tuple(prob_rows[i]),
                        reasons=tuple(why),
                        scores=score_map,
                    )
                )
        return out

    def _reason(self, name: str, score: float) -> str:
        thr = self.thresholds[name]
        if name == CONFIDENCE:
            return f"confidence: {1.0 - score:.3g} < {1.0 - thr:.3g}"
        return f"{name}: score {score:.3g} > {thr:.3g}"

    def outcome(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(detected, correct, answered)``, each ``(N,)`` bool, for a labelled batch:
        ``detected`` when validation failed, any layer fired or the smoothed classifier
        abstained (the decision is not a plain ``accept``); ``answered`` when a label is given
        (``accept`` or ``flag``); ``correct`` when an answered label equals ``y``. The same
        rules as :meth:`decide`, vectorised, for evaluation and adaptive attacks."""
        x = self.validator.check_batch(x)
        with torch.inference_mode():
            x_clean, reasons = self.validator.validate(x)
            probs, _, scores = self.scorer(x_clean)
            detected = torch.tensor([r is not None for r in reasons], dtype=torch.bool)
            abstain = torch.zeros_like(detected)
            if self._smoother is not None:
                probs, abstain = self._smoothed(self._smoother, x_clean)
                scores[CONFIDENCE] = 1.0 - probs.amax(dim=1)
            detected |= abstain | self.fired_matrix(scores).any(dim=1)
            answered = (~detected | self._answers_when_fired(scores, reasons)) & ~abstain
            correct = answered & (probs.argmax(dim=1) == y)
        return detected, correct, answered

    def _answers_when_fired(self, scores: dict[str, Tensor], reasons: list[str | None]) -> Tensor:
        """``(N,)`` bool: rows still answered (only ``flag`` layers fired)."""
        fired = self.fired_matrix(scores)
        blocking = torch.tensor([self.actions[k] != "flag" for k in self._names], dtype=torch.bool)
        ok = ~(fired & blocking).any(dim=1) if self._names else torch.ones(fired.shape[0]).bool()
        if self.config.validation.action == "reject":
            ok &= torch.tensor([r is None for r in reasons], dtype=torch.bool)
        return ok

    def describe(self) -> dict[str, object]:
        """JSON-ready summary: layers, thresholds, temperature, target FPR."""
        return {
            "fpr": self.fpr,
            "thresholds": dict(self.thresholds),
            "actions": {k: self.actions[k] for k in self.thresholds},
            "temperature": self.scorer.temperature,
            "prediction": self.config.prediction.kind,
            "models": list(self.config.prediction.models),
        }


def decisions_to_dicts(decisions: Sequence[Decision]) -> list[dict[str, object]]:
    """JSON-ready dicts of a list of decisions."""
    return [d.to_dict() for d in decisions]
