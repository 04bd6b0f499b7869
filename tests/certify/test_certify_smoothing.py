"""SmoothedClassifier: counting, PREDICT, CERTIFY against exact answers."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from certify_toys import ByPosition, LinearBinary, Quadrant
from scipy import stats

from bastion.certify import ABSTAIN, SmoothedClassifier
from bastion.errors import ConfigError


def _points(linear: LinearBinary, distances: list[float]) -> torch.Tensor:
    """Points at the given signed distances from the model's plane (alternating sides)."""
    gen = torch.Generator().manual_seed(1)
    w = linear.w
    unit = w / w.norm()
    out = []
    for i, d in enumerate(distances):
        z = torch.randn(w.shape[0], generator=gen, dtype=torch.float64)
        z = z - (z @ w + linear.b) / w.norm() * unit  # onto the plane
        out.append(z + (d if i % 2 == 0 else -d) * unit)
    return torch.stack(out)


@pytest.mark.parametrize("batch_size", [7, 10_000])
def test_counts_match_a_python_reference(batch_size: int) -> None:
    x = torch.tensor([[0.5, 0.5], [-0.2, 0.1], [0.0, -0.3]])
    n, sigma = 50, 0.4
    smoothed = SmoothedClassifier(Quadrant(), 4, sigma, batch_size=batch_size)
    counts = smoothed.sample_counts(x, n, generator=torch.Generator().manual_seed(3))
    # the same noise, drawn in the same chunks
    gen = torch.Generator().manual_seed(3)
    total = x.shape[0] * n
    noise = torch.cat(
        [
            torch.randn((min(batch_size, total - s), 2), generator=gen)
            for s in range(0, total, batch_size)
        ]
    )
    noisy = noise * sigma + x.repeat_interleave(n, dim=0)
    expected = torch.zeros(3, 4, dtype=torch.int64)
    for i in range(3):
        votes = Counter(Quadrant()(noisy[i * n : (i + 1) * n]).argmax(1).tolist())
        for cls, k in votes.items():
            expected[i, cls] = k
    assert counts.dtype == torch.int64 and counts.shape == (3, 4)
    assert torch.equal(counts, expected)
    assert counts.sum(1).tolist() == [n] * 3


def test_certified_radius_is_sound_and_tight(linear: LinearBinary) -> None:
    sigma = 0.5
    distances = [0.05, 0.2, 0.4, 0.6, 0.8, 1.0]
    x = _points(linear, distances)
    true_radius = linear.distance(x)
    assert true_radius.tolist() == pytest.approx(distances)
    smoothed = SmoothedClassifier(linear, 2, sigma, batch_size=10_000)
    classes, radii = smoothed.certify(x, 100, 20_000, 0.001, torch.Generator().manual_seed(0))
    assert radii.dtype == torch.float64
    label = linear.label(x)
    # right or abstaining (at 0.05 from the plane pA is 0.54: n0 = 100 may pick the wrong class,
    # which CERTIFY then cannot bound above 1/2)
    assert bool(((classes == label) | (classes == ABSTAIN)).all())
    assert torch.equal(classes[1:], label[1:])
    assert bool((radii <= true_radius).all()), (radii, true_radius)  # soundness
    # tightness: with n = 20000 the bound is within a few hundredths of sigma
    gap = (true_radius - radii)[1:]
    assert bool((gap < 0.1 * sigma).all()), (radii, true_radius)


def test_certificate_holds_with_probability_one_minus_alpha(linear: LinearBinary) -> None:
    """Over many independent runs, the certified radius exceeds the true one at most an alpha
    fraction of the time (Clopper-Pearson is conservative, so usually less)."""
    sigma, alpha, runs = 1.0, 0.05, 2000
    x = _points(linear, [1.0]).repeat(runs, 1)
    smoothed = SmoothedClassifier(linear, 2, sigma, batch_size=20_000)
    classes, radii = smoothed.certify(x, 10, 100, alpha, torch.Generator().manual_seed(5))
    wrong = (radii > linear.distance(x)) | ((classes != linear.label(x)) & (classes != ABSTAIN))
    rate = float(wrong.double().mean())
    assert rate <= alpha + 3 * (alpha * (1 - alpha) / runs) ** 0.5, rate
    assert float(radii.mean()) > 0.5  # and the certificates are not trivially small


def test_predict_returns_the_class_far_from_the_boundary(linear: LinearBinary) -> None:
    x = _points(linear, [0.5, 0.8, 1.0, 1.5])
    smoothed = SmoothedClassifier(linear, 2, 0.25)
    pred = smoothed.predict(x, 1000, 0.001, torch.Generator().manual_seed(0))
    assert pred.dtype == torch.int64
    assert torch.equal(pred, linear.label(x))


def test_ties_abstain() -> None:
    model = ByPosition(ones=50, period=100)  # exactly half the votes for each class
    smoothed = SmoothedClassifier(model, 2, 0.5, batch_size=100)
    x = torch.zeros(1, 3)
    assert smoothed.sample_counts(x, 1000).tolist() == [[500, 500]]
    assert smoothed.predict(x, 1000, 0.05).tolist() == [ABSTAIN]
    classes, radii = smoothed.certify(x, 100, 1000, 0.05)
    assert classes.tolist() == [ABSTAIN] and radii.tolist() == [0.0]


@pytest.mark.parametrize(("ones", "expected"), [(60, ABSTAIN), (62, 1), (38, 0), (40, ABSTAIN)])
def test_predict_binomial_test_boundary(ones: int, expected: int) -> None:
    """60 of 100 votes is not significant at 0.05 (p = 0.057), 62 of 100 is (p = 0.021)."""
    p = stats.binomtest(max(ones, 100 - ones), 100, 0.5).pvalue
    assert bool(p <= 0.05) is (expected != ABSTAIN)
    smoothed = SmoothedClassifier(ByPosition(ones, 100), 2, 1.0, batch_size=100)
    assert smoothed.predict(torch.zeros(1, 2), 100, 0.05).tolist() == [expected]


def test_reproducible_with_a_seed(linear: LinearBinary) -> None:
    x = _points(linear, [0.1, 0.3, 0.5])
    smoothed = SmoothedClassifier(linear, 2, 0.5, batch_size=256)

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return smoothed.certify(x, 50, 2000, 0.01, torch.Generator().manual_seed(seed))

    (c1, r1), (c2, r2), (_, r3) = run(0), run(0), run(1)
    assert torch.equal(c1, c2) and torch.equal(r1, r2)
    assert not torch.equal(r1, r3)


def test_model_mode_is_restored(linear: LinearBinary) -> None:
    linear.train()
    SmoothedClassifier(linear, 2, 0.5).predict(torch.zeros(2, 20), 10, 0.1)
    assert linear.training
    linear.eval()
    SmoothedClassifier(linear, 2, 0.5).certify(torch.zeros(2, 20), 10, 10, 0.1)
    assert not linear.training


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": 0.0}, "certify.sigma"),
        ({"sigma": float("inf")}, "certify.sigma"),
        ({"num_classes": 1}, "certify.num_classes"),
        ({"batch_size": 0}, "certify.batch_size"),
    ],
)
def test_bad_settings(linear: LinearBinary, kwargs: dict[str, float], match: str) -> None:
    args = {"num_classes": 2, "sigma": 0.5, "batch_size": 10} | kwargs
    with pytest.raises(ConfigError, match=match):
        SmoothedClassifier(
            linear, int(args["num_classes"]), args["sigma"], batch_size=int(args["batch_size"])
        )


def test_bad_call_arguments(linear: LinearBinary) -> None:
    x = torch.zeros(1, 20)
    smoothed = SmoothedClassifier(linear, 2, 0.5)
    with pytest.raises(ConfigError, match=r"certify\.n:"):
        smoothed.predict(x, 0, 0.1)
    with pytest.raises(ConfigError, match=r"certify\.alpha"):
        smoothed.predict(x, 10, 1.0)
    with pytest.raises(ConfigError, match=r"certify\.n0"):
        smoothed.certify(x, 0, 10, 0.1)
    with pytest.raises(ConfigError, match=r"logits of shape \(10, 2\), expected \(batch, 3\)"):
        SmoothedClassifier(linear, 3, 0.5).sample_counts(x, 10)


def test_bf16_precision_counts_and_is_checked() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.rand(2, 4)
    smoothed = SmoothedClassifier(model, 3, 0.25, batch_size=64, precision="bf16")
    counts = smoothed.sample_counts(x, 100, generator=torch.Generator().manual_seed(0))
    assert counts.shape == (2, 3) and counts.sum(dim=1).tolist() == [100, 100]
    with pytest.raises(ConfigError, match="precision"):
        SmoothedClassifier(model, 3, 0.25, precision="fp16")
