"""The objectives beyond PGD-AT: N-FGSM, GradAlign, MART, Gaussian noise, distillation, AugMix
and mixed threats; and the refusal of contradictory settings."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.threat import ThreatModel
from bastion.training import (
    AugMixSettings,
    AWPSettings,
    MixedComponent,
    ObjectiveSettings,
    Trainer,
    TrainSettings,
    augmix,
    jensen_shannon,
    objective_loss,
    prepare_loss,
)
from bastion.training.objectives import _draw_component, _mart_loss, _n_fgsm


def _mlp(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _images(n: int = 48, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


LINF = ThreatModel("linf", 0.1)


def test_n_fgsm_perturbation_exceeds_eps_by_design_but_stays_in_range() -> None:
    model, (x, y) = _mlp(), _images()
    s = ObjectiveSettings("n-fgsm", noise=2.0)
    xa = _n_fgsm(model, x, y, LINF, s, torch.Generator().manual_seed(0))
    dist = (xa - x).abs().flatten(1).amax(1)
    assert float(dist.max()) <= 3 * LINF.eps + 1e-6  # noise 2 eps + step 1 eps
    assert float(dist.max()) > LINF.eps  # not projected back to the eps-ball
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    # without noise it is a plain FGSM step of 1 x eps from the clean point
    x0 = _n_fgsm(model, x, y, LINF, ObjectiveSettings("n-fgsm", noise=0.0), None)
    with torch.enable_grad():
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    assert torch.allclose(x0, (x + LINF.eps * g.sign()).clamp(0, 1))


def test_grad_align_adds_a_nonnegative_differentiable_term() -> None:
    model, (x, y) = _mlp(), _images()
    plain, _ = objective_loss(
        ObjectiveSettings("fast-fgsm"),
        model,
        x,
        y,
        LINF,
        generator=torch.Generator().manual_seed(0),
    )
    aligned, _ = objective_loss(
        ObjectiveSettings("fast-fgsm", grad_align=5.0),
        model,
        x,
        y,
        LINF,
        generator=torch.Generator().manual_seed(0),
    )
    # the same adversarial batch (same seed), plus 5 x (1 - cos)
    assert float(aligned.detach()) > float(plain.detach())
    aligned.backward()  # type: ignore[no-untyped-call]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_mart_loss_matches_its_definition() -> None:
    g = torch.Generator().manual_seed(0)
    lc, la = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)
    y = torch.randint(0, 5, (16,), generator=g)
    pa, pc = la.softmax(1), lc.softmax(1)
    expected = []
    for i in range(16):
        wrong = max((float(pa[i, k]), k) for k in range(5) if k != int(y[i]))[0]
        bce = -torch.log(pa[i, y[i]]) - torch.log(torch.tensor(1.0 - wrong))
        kl = sum(float(pc[i, k] * (torch.log(pc[i, k]) - torch.log(pa[i, k]))) for k in range(5))
        expected.append((float(bce), kl * (1.0 - float(pc[i, y[i]]))))
    beta = 3.0
    want = sum(b for b, _ in expected) / 16 + beta * sum(k for _, k in expected) / 16
    assert float(_mart_loss(lc, la, y, beta)) == pytest.approx(want, rel=1e-5)


@torch.no_grad()  # forward values only; attacks enable gradients themselves
def test_gaussian_objective_trains_on_noisy_inputs() -> None:
    model, (x, y) = _mlp(), _images()
    s = ObjectiveSettings("gaussian", sigma=0.5)
    fn = prepare_loss(s, model, x, y, LINF, generator=torch.Generator().manual_seed(0))
    noise = 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    loss, logits = fn(model)
    assert torch.allclose(logits, model(x + noise))
    assert float(loss.detach()) == pytest.approx(
        float(F.cross_entropy(model(x + noise), y).detach()), rel=1e-6
    )


@torch.no_grad()  # forward values only; attacks enable gradients themselves
def test_distillation_student_matches_teacher_soft_labels() -> None:
    teacher, student, (x, y) = _mlp(1), _mlp(2), _images()
    t = 10.0
    s = ObjectiveSettings("distill", temperature=t)
    own, _ = objective_loss(s, teacher, x, y, LINF)  # without a teacher: the teacher's loss
    assert float(own) == pytest.approx(float(t * F.cross_entropy(teacher(x) / t, y)), rel=1e-6)
    loss, _ = objective_loss(s, student, x, y, LINF, teacher=teacher)
    soft = (teacher(x) / t).softmax(1)
    want = t * float(-(soft * (student(x) / t).log_softmax(1)).sum(1).mean())
    assert float(loss) == pytest.approx(want, rel=1e-5)
    self_loss, _ = objective_loss(s, teacher, x, y, LINF, teacher=teacher)  # cross-entropy
    entropy = t * float(-(soft * soft.log()).sum(1).mean())  # is minimal at the teacher itself
    assert float(self_loss) == pytest.approx(entropy, rel=1e-5)


def test_distill_trains_a_teacher_then_a_student(digits: Dataset, make_model: Any) -> None:
    s = TrainSettings(
        epochs=5,
        batch_size=64,
        lr=0.05,
        objective=ObjectiveSettings("distill", temperature=5.0, teacher_epochs=5),
        val_examples=100,
    )
    tr = digits.train
    res = Trainer(s, LINF, seed=0).fit(make_model(0), tr.x, tr.y, digits.val.x, digits.val.y)
    assert res.history[-1]["val_clean_accuracy"] > 0.8  # learned from the teacher's soft labels


def test_augmix_view_is_seeded_in_range_and_mixes() -> None:
    x, _ = _images(32)
    s = AugMixSettings(width=2, depth=2, names=("gaussian_noise", "contrast"))
    a = augmix(x, s, bounds=(0.0, 1.0), generator=torch.Generator().manual_seed(0))
    b = augmix(x, s, bounds=(0.0, 1.0), generator=torch.Generator().manual_seed(0))
    c = augmix(x, s, bounds=(0.0, 1.0), generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert not torch.allclose(a, x)


def test_jensen_shannon_is_zero_for_equal_views_and_positive_otherwise() -> None:
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    assert float(jensen_shannon(z, z, z)) == pytest.approx(0.0, abs=1e-6)
    assert float(jensen_shannon(z, -z, z)) > 0.01
    assert float(jensen_shannon(z, -z, z)) <= torch.log(torch.tensor(3.0)) + 1e-6


@torch.no_grad()  # forward values only; attacks enable gradients themselves
def test_augmix_loss_is_clean_ce_plus_weighted_jsd() -> None:
    model, (x, y) = _mlp(), _images(16)
    s = ObjectiveSettings("augmix", augmix=AugMixSettings(jsd_weight=0.0, names=("contrast",)))
    loss, logits = objective_loss(s, model, x, y, LINF, generator=torch.Generator().manual_seed(0))
    assert float(loss) == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-6)
    assert torch.allclose(logits, model(x))


def test_mixed_draws_each_type_with_its_weight() -> None:
    comps = (
        MixedComponent("linf", weight=3.0),
        MixedComponent("l2", weight=1.0, eps=0.5),
        MixedComponent("corruption", weight=0.0),
    )
    s = ObjectiveSettings("mixed", mixed=comps)
    g = torch.Generator().manual_seed(0)
    counts = Counter(_draw_component(s, g).kind for _ in range(4000))
    assert counts["corruption"] == 0
    assert counts["linf"] / 4000 == pytest.approx(0.75, abs=0.03)


@torch.no_grad()  # forward values only; attacks enable gradients themselves
def test_mixed_l2_batch_respects_its_own_budget() -> None:
    model, (x, y) = _mlp(), _images()
    s = ObjectiveSettings("mixed", steps=3, mixed=(MixedComponent("l2", eps=0.5),))
    # eps_fraction 0.5: half-way through an eps ramp, the l2 budget is halved too
    fn = prepare_loss(
        s, model, x, y, LINF, generator=torch.Generator().manual_seed(0), eps_fraction=0.5
    )
    loss, logits = fn(model)
    xa = None
    for cell in fn.__closure__ or ():  # the crafted batch the closure scores
        v = cell.cell_contents
        if isinstance(v, Tensor) and v.shape == x.shape and not torch.equal(v, x):
            xa = v
    assert xa is not None
    norms = (xa - x).flatten(1).norm(dim=1)
    assert float(norms.max()) <= 0.25 + 1e-5 and float(norms.max()) > 0.2
    assert float(loss) > 0 and logits.shape == (x.shape[0], 10)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ObjectiveSettings("pgd-at", steps=5, step_size=1.2), "objective.step_size"),
        (lambda: ObjectiveSettings("fast-fgsm", step_size=2.5), "objective.step_size"),
        (lambda: ObjectiveSettings("distill", temperature=-1.0), "objective.temperature"),
        (lambda: ObjectiveSettings("gaussian", sigma=0.0), "objective.sigma"),
        (lambda: ObjectiveSettings("n-fgsm", noise=-1.0), "objective.noise"),
        (lambda: ObjectiveSettings("pgd-at", grad_align=0.2), "objective.grad_align"),
        (lambda: ObjectiveSettings("mixed"), "objective.mixed"),
        (
            lambda: ObjectiveSettings("mixed", mixed=(MixedComponent("linf", weight=0.0),)),
            "objective.mixed",
        ),
        (
            lambda: ObjectiveSettings("mixed", mixed=(MixedComponent("l3"),)),
            "objective.mixed[0].kind",
        ),
        (
            lambda: ObjectiveSettings("mixed", mixed=(MixedComponent("linf", weight=-1.0),)),
            "objective.mixed[0].weight",
        ),
        (lambda: AugMixSettings(width=0), "objective.augmix.width"),
        (lambda: AugMixSettings(names=("fog-ish",)), "objective.augmix.names"),
        (lambda: AWPSettings(gamma=0.0), "training.awp.gamma"),
        (lambda: AWPSettings(gamma=-0.01), "training.awp.gamma"),
        (lambda: TrainSettings(epochs=3, eps_ramp_epochs=5), "training.eps_ramp_epochs"),
        (
            lambda: TrainSettings(epochs=3, awp=AWPSettings(warmup_epochs=3)),
            "training.awp.warmup_epochs",
        ),
        (
            lambda: TrainSettings(objective=ObjectiveSettings("fast-fgsm"), step_phases=((1, 2),)),
            "training.step_phases",
        ),
        (
            lambda: TrainSettings(
                epochs=4, objective=ObjectiveSettings("pgd-at"), step_phases=((1, 2), (5, 3))
            ),
            "training.step_phases[1]",
        ),
        (
            lambda: TrainSettings(
                objective=ObjectiveSettings("pgd-at", step_size=0.9), step_phases=((1, 1), (2, 0))
            ),
            "training.step_phases[1]",
        ),
        (
            lambda: TrainSettings(
                objective=ObjectiveSettings("pgd-at", steps=1, step_size=1.5),
                step_phases=((1, 1), (2, 3)),
            ),
            "objective.step_size",
        ),
        (lambda: TrainSettings(patience=-1), "training.patience"),
        (lambda: TrainSettings(overfit_drop=0.0), "training.overfit_drop"),
        (lambda: TrainSettings(checkpoint_every=-2), "training.checkpoint_every"),
        (lambda: Trainer(TrainSettings(train_eps=0.2), LINF), "training.train_eps"),
        (
            lambda: Trainer(
                TrainSettings(objective=ObjectiveSettings("mixed", mixed=(MixedComponent("l2"),))),
                LINF,
            ),
            "objective.mixed[0].eps",
        ),
        (
            lambda: Trainer(
                TrainSettings(
                    objective=ObjectiveSettings("mixed", mixed=(MixedComponent("linf", eps=0.3),))
                ),
                LINF,
            ),
            "objective.mixed[0].eps",
        ),
    ],
)
def test_contradictory_settings_are_refused_naming_the_field(build: object, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()  # type: ignore[operator]
    assert str(info.value).startswith(f"{field}:")
