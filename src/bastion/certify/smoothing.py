"""Randomized smoothing (Cohen, Rosenfeld and Kolter 2019, "Certified adversarial robustness via
randomized smoothing").

Given a base classifier ``f`` (any model from inputs to logits), the smoothed classifier is

    g(x) = argmax_c  P(f(x + e) = c),   e ~ N(0, sigma^2 I).

If the top class ``cA`` has probability at least ``pA > 1/2`` then ``g`` predicts ``cA`` at every
point within l2 distance ``sigma * Phi^-1(pA)`` of ``x`` (Theorem 1 of the paper). The
probabilities are estimated by Monte Carlo, so every answer holds with probability at least
``1 - alpha`` over the noise drawn here, and the classifier may abstain (class ``-1``).

:class:`SmoothedClassifier` mirrors the paper's two algorithms: :meth:`~SmoothedClassifier.predict`
(PREDICT) and :meth:`~SmoothedClassifier.certify` (CERTIFY). :func:`certify_dataset` certifies a
batch of labelled examples and summarises certified accuracy over a grid of radii.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bastion.errors import ConfigError, DataError

ABSTAIN = -1
"""The class :meth:`SmoothedClassifier.predict` and :meth:`~SmoothedClassifier.certify` return
when they abstain."""

DEFAULT_RADII: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)

CertifyProgressFn = Callable[[str, int, int], None]
"""``(what, done, total)``, the same shape as the evaluator's progress callback."""


def _check_int(field: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"certify.{field}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ConfigError(f"certify.alpha: expected a number in (0, 1), got {alpha!r}")
    return float(alpha)


def _check_sigma(sigma: float) -> float:
    if (
        isinstance(sigma, bool)
        or not isinstance(sigma, int | float)
        or not math.isfinite(sigma)
        or sigma <= 0
    ):
        raise ConfigError(f"certify.sigma: expected a positive finite number, got {sigma!r}")
    return float(sigma)


def _as_counts(
    successes: Tensor | Sequence[int] | int, trials: Tensor | Sequence[int] | int
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.int64]]]:
    k = np.asarray(
        successes.detach().cpu().numpy() if isinstance(successes, Tensor) else successes,
        dtype=np.int64,
    )
    n = np.asarray(
        trials.detach().cpu().numpy() if isinstance(trials, Tensor) else trials, dtype=np.int64
    )
    k, n = np.broadcast_arrays(k, n)
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ConfigError("certify: expected counts with 0 <= successes <= trials and trials >= 1")
    return k, n


def _scipy_stats() -> Any:
    """``scipy.stats``, imported on first use (scipy comes with scikit-learn)."""
    import scipy.stats  # type: ignore[import-untyped]

    return scipy.stats


def clopper_pearson_lower(
    successes: Tensor | Sequence[int] | int, trials: Tensor | Sequence[int] | int, alpha: float
) -> Tensor:
    """One-sided Clopper-Pearson lower confidence bound on a binomial proportion.

    Returns ``p_lower`` (float64, the broadcast shape of the inputs) such that
    ``P(p >= p_lower) >= 1 - alpha`` when ``successes ~ Binomial(trials, p)``: the ``alpha``
    quantile of ``Beta(k, n - k + 1)``, and 0 when ``k == 0``. This is the bound of the paper's
    ``LowerConfBound`` (``proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]``).
    """
    a = _check_alpha(alpha)
    k, n = _as_counts(successes, trials)
    safe_k = np.maximum(k, 1)
    lower = np.where(k > 0, _scipy_stats().beta.ppf(a, safe_k, n - safe_k + 1), 0.0)
    return torch.as_tensor(np.asarray(lower, dtype=np.float64))


def binomial_test_p_value(
    successes: Tensor | Sequence[int] | int, trials: Tensor | Sequence[int] | int
) -> Tensor:
    """Two-sided p-value of the exact binomial test of ``p = 1/2``, float64.

    The Binomial(n, 1/2) distribution is symmetric, so the p-value is
    ``min(1, 2 * P(X <= min(k, n - k)))``; it equals ``scipy.stats.binomtest(k, n).pvalue``.
    """
    k, n = _as_counts(successes, trials)
    tail = _scipy_stats().binom.cdf(np.minimum(k, n - k), n, 0.5)
    return torch.as_tensor(np.minimum(1.0, 2.0 * np.asarray(tail, dtype=np.float64)))


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class SmoothedClassifier:
    """The Gaussian-smoothed version of a base classifier (Cohen et al. 2019).

    Args:
        model: the base classifier, inputs ``(B, *shape)`` in their natural range to logits
            ``(B, num_classes)``. It is run in eval mode (its mode is restored afterwards) under
            ``torch.inference_mode``.
        num_classes: number of classes (the width of the logits).
        sigma: standard deviation of the isotropic Gaussian noise, in input units; the
            certified radii are l2 distances in the same units.
        batch_size: how many noisy inputs go through the model at once. When ``n`` is smaller
            than ``batch_size`` the noisy copies of several inputs share a batch.
        precision: ``"fp32"`` or ``"bf16"``: run the base classifier under bfloat16 autocast
            (about 1.7x faster for LeNet on CPUs with AVX-512 BF16). The guarantee holds for
            whichever base classifier is smoothed, so a bf16 certificate is exact for the bf16
            classifier; predict and certify with the same precision.

    The constructor only stores and checks its arguments.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        sigma: float,
        *,
        batch_size: int = 1000,
        precision: str = "fp32",
    ) -> None:
        self.model = model
        self.num_classes = _check_int("num_classes", num_classes, 2)
        self.sigma = _check_sigma(sigma)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"certify.precision: expected fp32 or bf16, got {precision!r}")
        self.precision = precision

    def __repr__(self) -> str:
        return (
            f"SmoothedClassifier(model={type(self.model).__name__}, "
            f"num_classes={self.num_classes}, sigma={self.sigma}, batch_size={self.batch_size})"
        )

    def sample_counts(
        self, x: Tensor, n: int, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """How often the base classifier predicts each class on ``n`` noisy copies of each input.

        Args:
            x: ``(N, *shape)`` inputs, on the model's device.
            n: noisy copies per input (``>= 1``).
            generator: source of the noise, on ``x``'s device (torch's default generator if
                ``None``). The same generator state and settings give the same counts.

        Returns:
            ``(N, num_classes)`` int64 counts; every row sums to ``n``.
        """
        n = _check_int("n", n, 1)
        if x.dim() < 1:
            raise DataError("certify: x: expected a batch of inputs (N, ...), got a scalar")
        num = x.shape[0]
        c = self.num_classes
        counts = torch.zeros(num * c, dtype=torch.int64, device=x.device)
        total = num * n
        autocast = torch.autocast(
            x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        )
        with _eval_mode(self.model), torch.inference_mode(), autocast:
            for start in range(0, total, self.batch_size):
                stop = min(total, start + self.batch_size)
                owner = torch.arange(start, stop, device=x.device) // n
                batch = torch.randn(
                    (stop - start, *x.shape[1:]),
                    generator=generator,
                    device=x.device,
                    dtype=x.dtype,
                )
                batch.mul_(self.sigma).add_(x.index_select(0, owner))
                logits = self.model(batch)
                if logits.dim() != 2 or logits.shape[1] != c:
                    raise ConfigError(
                        f"certify.num_classes: the model returns logits of shape "
                        f"{tuple(logits.shape)}, expected (batch, {c})"
                    )
                counts += torch.bincount(owner * c + logits.argmax(dim=1), minlength=num * c)
        return counts.view(num, c)

    def predict(
        self, x: Tensor, n: int, alpha: float, generator: torch.Generator | None = None
    ) -> Tensor:
        """PREDICT: the smoothed classifier's class for each input, or ``-1`` (abstain).

        Draws ``n`` noisy copies per input, takes the two most frequent classes (counts
        ``nA >= nB``) and returns the top one only if the two-sided binomial test of
        ``nA`` out of ``nA + nB`` against ``p = 1/2`` has p-value ``<= alpha``. Then, with
        probability at least ``1 - alpha``, a class returned is ``g(x)`` (Cohen et al.,
        Proposition 1); ties always abstain.

        Returns:
            ``(N,)`` int64 classes, ``-1`` where the classifier abstains.
        """
        a = _check_alpha(alpha)
        counts = self.sample_counts(x, n, generator=generator)
        top = counts.argmax(dim=1)
        n_a = counts.gather(1, top[:, None]).squeeze(1)
        n_b = counts.scatter(1, top[:, None], -1).amax(dim=1)
        p_value = binomial_test_p_value(n_a, n_a + n_b).to(x.device)
        return torch.where(p_value <= a, top, torch.full_like(top, ABSTAIN))

    def certify(
        self,
        x: Tensor,
        n0: int,
        n: int,
        alpha: float,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """CERTIFY: a class and an l2 radius within which the smoothed classifier keeps it.

        Selects the top class ``cA`` on ``n0`` noisy copies, then lower-bounds its probability
        on ``n`` fresh copies with a one-sided Clopper-Pearson bound ``pA`` at level ``alpha``.
        If ``pA >= 1/2`` it returns ``cA`` with radius ``sigma * Phi^-1(pA)``; otherwise it
        abstains. With probability at least ``1 - alpha`` over the noise, ``g(x + d) = cA``
        for every ``||d||_2 < radius`` (Cohen et al., Theorem 1 and Proposition 2).

        Returns:
            ``(classes, radii)``: ``(N,)`` int64 classes (``-1`` to abstain) and ``(N,)``
            float64 radii (``0.0`` where it abstains).
        """
        n0 = _check_int("n0", n0, 1)
        n = _check_int("n", n, 1)
        a = _check_alpha(alpha)
        top = self.sample_counts(x, n0, generator=generator).argmax(dim=1)
        counts = self.sample_counts(x, n, generator=generator)
        n_a = counts.gather(1, top[:, None]).squeeze(1)
        p_lower = clopper_pearson_lower(n_a, n, a).to(x.device)
        ok = p_lower >= 0.5
        radii = torch.where(
            ok, self.sigma * torch.special.ndtri(p_lower), torch.zeros_like(p_lower)
        )
        return torch.where(ok, top, torch.full_like(top, ABSTAIN)), radii


def certified_accuracy(
    radii: Tensor | Sequence[float], correct: Tensor | Sequence[bool], radius_grid: Sequence[float]
) -> list[float]:
    """Fraction of examples certified correct at each radius of ``radius_grid``.

    An example counts at radius ``r`` when it is ``correct`` (the smoothed classifier returned
    its label, so it did not abstain) and its certified radius is ``>= r``. At ``r = 0`` this
    is the smoothed classifier's accuracy.
    """
    r = torch.as_tensor(radii, dtype=torch.float64).reshape(-1)
    ok = torch.as_tensor(correct, dtype=torch.bool).reshape(-1).to(r.device)
    if r.numel() != ok.numel():
        raise DataError(
            f"certify: radii and correct differ in length ({r.numel()} vs {ok.numel()})"
        )
    if r.numel() == 0:
        raise DataError("certify: no examples to summarise")
    for g in radius_grid:
        if not math.isfinite(g) or g < 0:
            raise ConfigError(f"certify.radius_grid: expected radii >= 0, got {g!r}")
    return [float((ok & (r >= g)).double().mean()) for g in radius_grid]


def radius_key(radius: float) -> str:
    """The key of a radius in a result's ``certified_accuracy`` mapping, e.g. ``0.5 -> "0.5"``
    (the format of the scorecard's eps keys)."""
    return format(float(radius), "g")


def certify_dataset(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    generator: torch.Generator | None = None,
    progress: CertifyProgressFn | None = None,
    *,
    num_classes: int | None = None,
    batch_size: int = 1000,
    precision: str = "fp32",
    radius_grid: Sequence[float] = DEFAULT_RADII,
) -> dict[str, Any]:
    """Certify every example of ``(x, y)`` with :meth:`SmoothedClassifier.certify`.

    Args:
        model, sigma, batch_size: as for :class:`SmoothedClassifier`.
        x, y: ``(N, *shape)`` inputs and ``(N,)`` labels, on the model's device.
        n0, n, alpha: as for :meth:`SmoothedClassifier.certify`.
        generator: source of the noise (on ``x``'s device).
        progress: called as ``("certify", done, N)`` after each group of examples.
        num_classes: the width of the logits; read from one forward pass if ``None``.
        radius_grid: the radii at which certified accuracy is reported.

    Returns:
        A JSON-able dict: the settings (``sigma``, ``n0``, ``n``, ``alpha``, ``batch_size``),
        ``n_examples``; per example ``predictions`` (``-1`` = abstain), ``labels``, ``radii``
        and ``correct``; ``radius_grid`` and ``certified_accuracy`` (``{radius_key: fraction}``);
        ``abstain_rate``; ``average_certified_radius`` (mean over all examples of the radius
        of the correct ones, 0 for the others); ``seconds`` and ``images_per_second``.
    """
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"certify: x and y differ in length ({x.shape[0]} inputs, {y.shape[0]} labels)"
        )
    total = int(x.shape[0])
    if total == 0:
        raise DataError("certify: no examples to certify")
    grid = [float(r) for r in radius_grid]
    certified_accuracy([0.0], [True], grid)  # validates the grid before any work
    if num_classes is None:
        with _eval_mode(model), torch.inference_mode():
            num_classes = int(model(x[:1]).shape[-1])
    smoothed = SmoothedClassifier(
        model, num_classes, sigma, batch_size=batch_size, precision=precision
    )
    n0 = _check_int("n0", n0, 1)
    n = _check_int("n", n, 1)
    a = _check_alpha(alpha)
    start_time = time.perf_counter()
    pred, rad = _certify_in_groups(smoothed, x, n0, n, a, generator, progress)
    seconds = time.perf_counter() - start_time
    return _certification_result(smoothed, n0, n, a, grid, pred, rad, y, seconds)


def _certify_in_groups(
    smoothed: SmoothedClassifier,
    x: Tensor,
    n0: int,
    n: int,
    alpha: float,
    generator: torch.Generator | None,
    progress: CertifyProgressFn | None,
) -> tuple[Tensor, Tensor]:
    """``(classes, radii)``, both ``(N,)`` on the CPU: :meth:`SmoothedClassifier.certify` on
    groups of examples whose ``n`` noise samples fill one batch, reporting each group to
    ``progress``."""
    total = int(x.shape[0])
    group = max(1, smoothed.batch_size // n)
    classes: list[Tensor] = []
    radii: list[Tensor] = []
    for start in range(0, total, group):
        stop = min(total, start + group)
        c, r = smoothed.certify(x[start:stop], n0, n, alpha, generator)
        classes.append(c)
        radii.append(r)
        if progress is not None:
            progress("certify", stop, total)
    return torch.cat(classes).cpu(), torch.cat(radii).cpu()


def _certification_result(
    smoothed: SmoothedClassifier,
    n0: int,
    n: int,
    alpha: float,
    grid: list[float],
    pred: Tensor,
    rad: Tensor,
    y: Tensor,
    seconds: float,
) -> dict[str, Any]:
    """The JSON-able result of :func:`certify_dataset` from the predictions ``pred`` and radii
    ``rad`` (``(N,)``, ``-1`` = abstain) of the examples labelled ``y``."""
    labels = y.detach().cpu().to(torch.int64)
    correct = pred == labels
    acc = certified_accuracy(rad, correct, grid)
    total = int(pred.shape[0])
    return {
        "sigma": smoothed.sigma,
        "n0": n0,
        "n": n,
        "alpha": alpha,
        "batch_size": smoothed.batch_size,
        "precision": smoothed.precision,
        "n_examples": total,
        "radius_grid": grid,
        "certified_accuracy": {radius_key(g): v for g, v in zip(grid, acc, strict=True)},
        "abstain_rate": float((pred == ABSTAIN).double().mean()),
        "average_certified_radius": float(torch.where(correct, rad, 0.0).mean()),
        "seconds": round(seconds, 3),
        "images_per_second": total / max(seconds, 1e-9),
        "predictions": pred.tolist(),
        "labels": labels.tolist(),
        "radii": rad.tolist(),
        "correct": correct.tolist(),
    }


PER_EXAMPLE_KEYS = ("predictions", "labels", "radii", "correct")


def summarize_certification(result: dict[str, Any]) -> dict[str, Any]:
    """A :func:`certify_dataset` result without its per-example lists (for a scorecard)."""
    return {k: v for k, v in result.items() if k not in PER_EXAMPLE_KEYS}
