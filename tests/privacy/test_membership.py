from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from bastion.data import Dataset
from bastion.errors import ConfigError, ModelFileError
from bastion.privacy.membership import (
    ShadowRecipe,
    build_seeded,
    lira_leave_one_out,
    lira_scores,
    logit_confidence,
    run_lira,
    shadow_half,
    threshold_scores,
    train_shadows,
)
from bastion.privacy.metrics import membership_report
from bastion.training.trainer import Trainer


def _population(ds: Dataset, n: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat([ds.train.x, ds.test.x])[:n]
    y = torch.cat([ds.train.y, ds.test.y])[:n]
    return x, y


def test_logit_confidence_is_the_log_odds_of_the_true_class(digits: Dataset) -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = digits.test.x[:50], digits.test.y[:50]
    p = torch.softmax(net(x).double(), 1).gather(1, y.view(-1, 1)).squeeze(1)
    phi = logit_confidence(net, x, y)
    torch.testing.assert_close(phi, torch.log(p / (1 - p)), rtol=1e-9, atol=1e-9)
    loss = torch.nn.functional.cross_entropy(net(x).double(), y, reduction="none")
    torch.testing.assert_close(threshold_scores(net, x, y), -loss, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(threshold_scores(net, x, y, kind="confidence"), p)


def test_logit_confidence_keeps_signal_where_probabilities_round_to_one() -> None:
    net = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[60.0, 0.0], [0.0, 0.0]]))
    phi = logit_confidence(net, torch.tensor([[1.0, 0.0], [0.5, 0.0]]), torch.tensor([0, 0]))
    assert phi.tolist() == pytest.approx([60.0, 30.0])  # p_y == 1.0 in float32 for both


def test_lira_separates_gaussians_and_not_identical_ones() -> None:
    g = torch.Generator().manual_seed(0)
    m, n = 32, 2000
    in_mask = torch.rand(m, n, generator=g) < 0.5
    base = torch.randn(n, generator=g, dtype=torch.float64) * 3  # per-example difficulty
    shadows = base + torch.randn(m, n, generator=g, dtype=torch.float64) * 0.5 + in_mask * 1.5
    member = torch.rand(n, generator=g) < 0.5
    target = base + torch.randn(n, generator=g, dtype=torch.float64) * 0.5 + member * 1.5
    online = membership_report(lira_scores(target, shadows, in_mask).numpy(), member.numpy())
    offline = membership_report(
        lira_scores(target, shadows, in_mask, online=False).numpy(), member.numpy()
    )
    global_threshold = membership_report(target.numpy(), member.numpy())
    assert online["auc"] > 0.9 and offline["auc"] > 0.9
    # the per-example calibration is the point: a global threshold on phi is far weaker
    assert global_threshold["auc"] < 0.75
    assert online["tpr_at_1pct_fpr"] > 5 * max(global_threshold["tpr_at_1pct_fpr"], 0.01)
    same = base + torch.randn(m, n, generator=g, dtype=torch.float64) * 0.5
    target_same = base + torch.randn(n, generator=g, dtype=torch.float64) * 0.5
    chance = membership_report(lira_scores(target_same, same, in_mask).numpy(), member.numpy())
    assert abs(chance["auc"] - 0.5) < 0.05


def test_lira_per_example_variance_and_missing_groups() -> None:
    conf = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]], dtype=torch.float64)
    in_mask = torch.tensor([[True, False], [True, False], [False, False]])
    s = lira_scores(
        torch.tensor([1.0, 1.0], dtype=torch.float64), conf, in_mask, fixed_variance=False
    )
    assert torch.isfinite(s).all()  # example 1 has no IN shadow: it borrows the mean IN figure
    with pytest.raises(ConfigError, match="lira: expected"):
        lira_scores(torch.zeros(3, dtype=torch.float64), conf, in_mask)


def test_shadow_halves_are_seeded_and_exact() -> None:
    a, sa = shadow_half(101, 0, 3)
    b, sb = shadow_half(101, 0, 3)
    c, _ = shadow_half(101, 0, 4)
    assert torch.equal(a, b) and sa == sb and int(a.sum()) == 50
    assert not torch.equal(a, c)


def test_fewer_than_two_shadows_is_a_one_line_error(
    recipe: ShadowRecipe, digits: Dataset, tmp_path: Path
) -> None:
    x, y = _population(digits, 40)
    with pytest.raises(ConfigError, match=r"^lira\.shadows: expected an integer >= 2, got 1$"):
        train_shadows(recipe, x, y, shadows=1, directory=tmp_path)
    with pytest.raises(ConfigError, match=r"lira\.workers"):
        train_shadows(recipe, x, y, shadows=2, directory=tmp_path, workers=0)


def test_interrupted_shadow_training_resumes_to_the_same_models(
    recipe: ShadowRecipe, digits: Dataset, tmp_path: Path
) -> None:
    x, y = _population(digits, 300)
    seen: list[dict[str, Any]] = []

    def stop_after_first(event: dict[str, Any]) -> None:
        seen.append(event)
        if event["done"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_shadows(recipe, x, y, shadows=3, directory=tmp_path / "a", progress=stop_after_first)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["shadow-000.safetensors"]
    events: list[dict[str, Any]] = []
    resumed = train_shadows(
        recipe, x, y, shadows=3, directory=tmp_path / "a", progress=events.append
    )
    assert (resumed.reused, resumed.trained) == (1, 2)
    assert [e["reused"] for e in events] == [True, False, False]
    assert [e["done"] for e in events] == [1, 2, 3]
    fresh = train_shadows(recipe, x, y, shadows=3, directory=tmp_path / "b")
    torch.testing.assert_close(resumed.confidences, fresh.confidences, rtol=0, atol=0)
    assert torch.equal(resumed.in_mask, fresh.in_mask)
    # a shadow file that does not belong is refused, not silently mixed in
    other = dataclasses.replace(recipe, settings=dataclasses.replace(recipe.settings, epochs=2))
    with pytest.raises(ModelFileError, match="another recipe"):
        train_shadows(other, x, y, shadows=3, directory=tmp_path / "a")
    with pytest.raises(ModelFileError, match="shadow seed"):
        train_shadows(recipe, x, y, shadows=3, directory=tmp_path / "a", seed=5)


@pytest.mark.slow  # spawning two workers that import torch costs ~20 s on a loaded machine
def test_parallel_shadows_equal_sequential_ones(
    recipe: ShadowRecipe, digits: Dataset, tmp_path: Path
) -> None:
    x, y = _population(digits, 200)
    small = dataclasses.replace(recipe, settings=dataclasses.replace(recipe.settings, epochs=3))
    par = train_shadows(small, x, y, shadows=2, directory=tmp_path / "p", workers=2)
    seq = train_shadows(small, x, y, shadows=2, directory=tmp_path / "s", workers=1)
    assert par.trained == 2
    torch.testing.assert_close(par.confidences, seq.confidences, rtol=0, atol=0)


def test_lira_finds_members_of_an_overfit_target(
    recipe: ShadowRecipe, digits: Dataset, tmp_path: Path
) -> None:
    x, y = _population(digits, 600)
    g = torch.Generator().manual_seed(11)
    member = torch.zeros(600, dtype=torch.bool)
    member[torch.randperm(600, generator=g)[:300]] = True
    overfit = dataclasses.replace(recipe, settings=dataclasses.replace(recipe.settings, epochs=40))
    target = build_seeded(overfit.spec, 123)
    Trainer(overfit.settings, overfit.threat, seed=123).fit(
        target, x[member], y[member], x[~member], y[~member]
    )
    res = run_lira(target, overfit, x, y, member, shadows=6, directory=tmp_path, seed=1).to_dict()
    assert set(res["attacks"]) == {"lira-online", "lira-offline", "threshold-loss"}
    for name, rep in res["attacks"].items():
        assert rep["members"] == 300 and rep["non_members"] == 300, name
    assert res["attacks"]["lira-online"]["auc"] > 0.6
    assert res["shadows_trained"] == 6
    again = run_lira(target, overfit, x, y, member, shadows=6, directory=tmp_path, seed=1)
    assert again.reused == 6 and again.trained == 0
    assert again.attacks["lira-online"]["auc"] == res["attacks"]["lira-online"]["auc"]


def test_leave_one_out_uses_every_model_as_a_target() -> None:
    g = torch.Generator().manual_seed(1)
    conf = torch.randn(5, 40, generator=g, dtype=torch.float64)
    mask = torch.rand(5, 40, generator=g) < 0.5
    scores, members = lira_leave_one_out(conf, mask)
    assert scores.shape == (200,) and torch.equal(members, mask.reshape(-1))


def test_shifted_views_translate_without_wrapping() -> None:
    from bastion.privacy.membership import shifted

    x = torch.arange(9, dtype=torch.float32).reshape(1, 1, 3, 3) + 1
    down = shifted(x, 1, 0)
    assert down[0, 0].tolist() == [[0, 0, 0], [1, 2, 3], [4, 5, 6]]
    left = shifted(x, 0, -1)
    assert left[0, 0].tolist() == [[2, 3, 0], [5, 6, 0], [8, 9, 0]]
    assert torch.equal(shifted(x, 0, 0), x)
    with pytest.raises(ConfigError, match=r"lira\.shifts"):
        shifted(torch.zeros(2, 5), 1, 0)


def test_more_views_make_lira_stronger() -> None:
    g = torch.Generator().manual_seed(5)
    m, n, k = 16, 3000, 4
    in_mask = torch.rand(m, n, generator=g) < 0.5
    member = torch.rand(n, generator=g) < 0.5
    base = torch.randn(n, 1, generator=g, dtype=torch.float64) * 2

    def draw(mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        noise = torch.randn(*shape, generator=g, dtype=torch.float64)
        return base + noise + 0.4 * mask.unsqueeze(-1).to(torch.float64)

    shadows = draw(in_mask, (m, n, k))
    target = draw(member, (n, k))
    one = lira_scores(target[:, 0], shadows[..., 0], in_mask)
    many = lira_scores(target, shadows, in_mask)
    auc_one = membership_report(one.numpy(), member.numpy())["auc"]
    auc_many = membership_report(many.numpy(), member.numpy())["auc"]
    assert auc_many > auc_one + 0.05
    offline = lira_scores(target, shadows, in_mask, online=False)
    assert membership_report(offline.numpy(), member.numpy())["auc"] > auc_one
    with pytest.raises(ConfigError, match=r"target \(N, K\)"):
        lira_scores(target[:, :2], shadows, in_mask)


def test_shadows_scored_on_shifted_views(
    recipe: ShadowRecipe, digits: Dataset, tmp_path: Path
) -> None:
    from bastion.privacy.membership import view_confidences

    x, y = _population(digits, 120)
    small = dataclasses.replace(recipe, settings=dataclasses.replace(recipe.settings, epochs=2))
    plain = train_shadows(small, x, y, shadows=2, directory=tmp_path)
    views = train_shadows(
        small, x, y, shadows=2, directory=tmp_path, shifts=[(0, 0), (1, 0), (0, -1)]
    )
    assert views.reused == 2 and views.confidences.shape == (2, 120, 3)
    torch.testing.assert_close(views.confidences[..., 0], plain.confidences, rtol=0, atol=0)
    net = build_seeded(small.spec, 0)
    v = view_confidences(net, x, y, [(0, 0), (1, 0)])
    torch.testing.assert_close(v[:, 0], logit_confidence(net, x, y), rtol=0, atol=0)
    assert not torch.equal(v[:, 0], v[:, 1])
