"""The conformance suite every registered attack must pass, one per threat channel.

In the spirit of scikit-learn's ``check_estimator``: one set of checks run over every attack,
so a new attack cannot silently break the contract. Each check raises
:class:`AttackConformanceError` naming the attack and what was violated.

* :func:`check_attack`: an image (Lp) attack, or any :class:`~bastion.attacks.base.Attack`;
* :func:`check_tabular_attack`: a tabular attack: :func:`check_attack`, every output admissible
  under the schema's constraints, and for a black-box attack every row sent to the model
  counted;
* :func:`check_text_attack`: a text attack under a :class:`~bastion.text.threat.TextThreat`:
  one result per text, labels preserved, every edit within the threat, success confirmed by a
  fresh query, repeatable from a seed, every text sent to the classifier counted;
* :func:`check_minimum_norm`: the one run of a minimum-norm attack.

This module imports no channel (the text and tabular checks take their threat and results by
their methods and fields), so the attack package can import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast, runtime_checkable

import torch
from torch import Tensor, nn

from bastion.attacks.base import Attack, AttackResult, predict
from bastion.threat import ThreatModel


class AttackConformanceError(AssertionError):
    """An attack broke the attack contract."""


def _fail(attack: object, msg: str) -> None:
    raise AttackConformanceError(f"{attack!r}: {msg}")


def _seeded(x: Tensor, seed: int) -> torch.Generator:
    return torch.Generator(device=x.device).manual_seed(seed)


def check_attack(
    make_attack: Callable[[], Attack],
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    seed: int = 0,
    targeted: bool = True,
    expect_stronger: bool = True,
) -> list[str]:
    """Run the conformance checks; return the names of the checks that passed.

    ``model`` should be a trained classifier that is not robust at ``threat`` (so that an honest
    attack finds adversarial examples). Checks: output shape and dtype; inputs not modified;
    every output within bounds and within eps; ``success`` agrees with the model; repeatable
    with the same generator seed; stronger than no attack; no parameter gradients left behind
    and the model's train/eval mode unchanged; targeted mode reaches targets when asked; an
    empty batch is handled.
    """
    attack = make_attack()
    x_copy, y_copy = x.clone(), y.clone()
    mode = model.training
    res = attack(model, x, y, threat, generator=_seeded(x, seed))
    passed = [_shapes(attack, res, x)]
    if not (torch.equal(x, x_copy) and torch.equal(y, y_copy)):
        _fail(attack, "modified its inputs in place")
    passed.append("inputs-untouched")
    passed.append(_feasible(attack, res, x, threat))
    if not torch.equal(res.success, predict(model, res.x_adv) != y):
        _fail(attack, "success disagrees with the model's predictions on x_adv")
    passed.append("success-consistent")
    again = make_attack()(model, x, y, threat, generator=_seeded(x, seed))
    if not torch.allclose(again.x_adv, res.x_adv, atol=1e-6) or not torch.equal(
        again.success, res.success
    ):
        _fail(attack, "not repeatable with the same generator seed")
    passed.append("repeatable")
    if expect_stronger:
        clean_acc = float((predict(model, x) == y).float().mean())
        adv_acc = float((~res.success).float().mean())
        if not adv_acc < clean_acc:
            _fail(
                attack,
                f"no stronger than no attack: accuracy {adv_acc:.3f} vs clean {clean_acc:.3f}",
            )
        passed.append("stronger-than-clean")
    if any(p.grad is not None for p in model.parameters()):
        _fail(attack, "left gradients on the model's parameters")
    if model.training != mode:
        _fail(attack, "changed the model's train/eval mode")
    passed.append("model-untouched")
    if targeted:
        passed.append(_targeted(make_attack, model, x, y, threat, seed, expect_stronger))
    if make_attack()(model, x[:0], y[:0], threat).x_adv.shape[0] != 0:
        _fail(attack, "an empty batch must give an empty result")
    passed.append("empty-batch")
    return passed


def _shapes(attack: Attack, res: AttackResult, x: Tensor) -> str:
    if res.x_adv.shape != x.shape or res.x_adv.dtype != x.dtype:
        _fail(
            attack,
            f"x_adv has shape {tuple(res.x_adv.shape)} {res.x_adv.dtype}, expected "
            f"{tuple(x.shape)} {x.dtype}",
        )
    if res.success.shape != (x.shape[0],) or res.success.dtype != torch.bool:
        _fail(attack, "success must be a bool tensor of shape (N,)")
    if res.queries.shape != (x.shape[0],) or bool((res.queries < 1).any()):
        _fail(attack, "queries must be (N,) and count at least the final check")
    return "shapes"


def _feasible(attack: Attack, res: AttackResult, x: Tensor, threat: ThreatModel) -> str:
    lo, hi = threat.bounds
    if float(res.x_adv.min()) < lo - 1e-6 or float(res.x_adv.max()) > hi + 1e-6:
        _fail(attack, "returned points outside the input bounds")
    dist = threat.distance(res.x_adv, x)
    if bool((dist > threat.eps * (1 + 1e-5) + 1e-6).any()):
        _fail(
            attack,
            f"returned points outside the eps-ball: max distance {float(dist.max()):.6g} > eps "
            f"{threat.eps}",
        )
    return "feasible"


def _targeted(
    make_attack: Callable[[], Attack],
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    seed: int,
    expect_stronger: bool,
) -> str:
    attack = make_attack()
    with torch.no_grad():
        num_classes = int(model(x[:1]).shape[1])
    targets = (y + 1) % num_classes
    tres = attack(model, x, y, threat, targets=targets, generator=_seeded(x, seed))
    if not torch.equal(tres.success, predict(model, tres.x_adv) == targets):
        _fail(attack, "targeted success must mean the model predicts the target")
    if expect_stronger and not bool(tres.success.any()):
        _fail(attack, "targeted mode reached no target at all")
    return "targeted"


class _Counting(nn.Module):
    """``model`` that counts the rows it is asked about."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += int(x.shape[0])
        out: Tensor = self.model(x)
        return out


@runtime_checkable
class _Admissible(Protocol):
    def admissible(self, x_adv: Tensor, x: Tensor) -> Tensor: ...


def check_queries(
    make_attack: Callable[[], Attack],
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    seed: int = 0,
) -> list[str]:
    """A black-box attack's ``queries`` count every row it sent to the model: their sum is
    the rows the model saw, less the base class's one-row probe (``queries-counted``)."""
    attack = make_attack()
    counting = _Counting(model)
    res = attack(counting, x, y, threat, generator=_seeded(x, seed))
    if counting.rows != int(res.queries.sum()) + 1:
        _fail(
            attack,
            f"queries add up to {int(res.queries.sum())}, but the model was asked about "
            f"{counting.rows - 1} rows (besides the one-row probe)",
        )
    return ["queries-counted"]


def check_tabular_attack(
    make_attack: Callable[[], Attack],
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    seed: int = 0,
    **options: bool,
) -> list[str]:
    """The checks of :func:`check_attack` (``options``: its ``targeted`` and
    ``expect_stronger``), then every output admissible under ``threat`` (a
    :class:`~bastion.tabular.threat.TabularThreat`: every constraint holds, within the
    cost-weighted ball; ``admissible``) and, for an attack that is not white-box, its query
    count (:func:`check_queries`)."""
    passed = check_attack(make_attack, model, x, y, threat, seed=seed, **options)
    attack = make_attack()
    if not isinstance(threat, _Admissible):
        _fail(attack, f"expected a tabular threat (with admissible()), got {threat!r}")
    res = attack(model, x, y, threat, generator=_seeded(x, seed))
    if not bool(cast(_Admissible, threat).admissible(res.x_adv, x).all()):
        _fail(attack, "returned rows that break the schema's constraints")
    passed.append("admissible")
    if attack.knowledge != "white-box":
        passed += check_queries(make_attack, model, x, y, threat, seed=seed)
    return passed


def check_minimum_norm(
    make_attack: Callable[[], Attack],
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    eps_grid: Sequence[float],
    *,
    seed: int = 0,
) -> list[str]:
    """The checks of a minimum-norm attack's one run (:meth:`Attack.search`); return the names
    of the checks that passed.

    ``threat.eps`` is where the search may stop; ``eps_grid`` the budgets it must answer.
    Checks: output shapes and bounds, inputs untouched (``search-feasible``); every finite
    norm belongs to a point that fools the model and equals its distance from the input, and
    every infinite one to a point that does not (``norms-honest``); at every eps of the grid,
    each example with a norm within eps counts as broken, so accuracy is at most the fraction
    with a larger norm (``answers-grid``).
    """
    passed: list[str] = []
    attack = make_attack()
    if attack.kind != "minimum-norm":
        _fail(attack, f"is {attack.kind}, not minimum-norm")
    x_copy, y_copy = x.clone(), y.clone()
    found = attack.search(
        model, x, y, threat, generator=torch.Generator(device=x.device).manual_seed(seed)
    )
    n = x.shape[0]
    if found.x_adv.shape != x.shape or found.norms.shape != (n,) or found.queries.shape != (n,):
        _fail(attack, "search returned x_adv, norms or queries of the wrong shape")
    lo, hi = threat.bounds
    if float(found.x_adv.min()) < lo - 1e-6 or float(found.x_adv.max()) > hi + 1e-6:
        _fail(attack, "search returned points outside the input bounds")
    if not (torch.equal(x, x_copy) and torch.equal(y, y_copy)):
        _fail(attack, "search modified its inputs in place")
    passed.append("search-feasible")

    fooled = predict(model, found.x_adv) != y
    finite = torch.isfinite(found.norms)
    if not torch.equal(fooled, finite):
        _fail(attack, "a finite norm must mean a point that fools the model, and only then")
    dist = threat.distance(found.x_adv, x)
    if not torch.allclose(dist[finite], found.norms[finite].to(dist.dtype), atol=1e-5):
        _fail(attack, "norms disagree with the distance of the returned points")
    passed.append("norms-honest")

    for eps in eps_grid:
        robust = found.robust_at(model, threat.with_eps(eps))
        within = found.norms <= eps
        if bool((robust & within).any()):
            _fail(attack, f"at eps {eps}: an example with a norm within eps counted as robust")
    passed.append("answers-grid")
    return passed


# -- the text channel ----------------------------------------------------------------------
class _TextThreat(Protocol):
    def allows(self, original: str, adversarial: str) -> bool: ...


class _CountingTexts:
    """A text classifier that counts the texts it is asked about."""

    def __init__(self, classifier: Callable[[list[str]], Tensor]):
        self.classifier = classifier
        self.texts = 0

    def __call__(self, texts: list[str]) -> Tensor:
        self.texts += len(texts)
        return self.classifier(texts)


def check_text_attack(
    make_attack: Callable[[], Any],
    classifier: Callable[[list[str]], Tensor],
    texts: Sequence[str],
    labels: Sequence[int],
    threat: _TextThreat,
    *,
    seed: int = 0,
    expect_stronger: bool = True,
    exact_queries: bool = True,
) -> list[str]:
    """Run the text conformance checks; return the names of the checks that passed.

    ``make_attack`` builds a text attack (:class:`~bastion.text.attack_base.TextAttackBase`),
    ``classifier`` maps texts to probabilities ``(N, C)``, ``threat`` is a
    :class:`~bastion.text.threat.TextThreat`. Checks: one entry per text in every field, the
    texts and labels of the result those given (``shapes``, ``labels-preserved``); inputs not
    modified; every adversarial text within the threat, and texts the classifier got wrong
    left alone (``within-threat``); ``success`` and ``correct_before`` agree with fresh
    queries; repeatable with the same seed; stronger than no attack; every text sent to the
    classifier counted in ``queries`` (``exact_queries=False`` for a composite attack, whose
    later attacks re-check their texts without counting it again: then no more counted than
    sent); an empty batch is handled.
    """
    attack = make_attack()
    given_texts, given_labels = list(texts), list(labels)
    counting = _CountingTexts(classifier)
    res: Any = attack(
        counting,
        given_texts,
        given_labels,
        generator=torch.Generator().manual_seed(seed),
        threat=threat,
    )
    passed = [_text_shapes(attack, res, texts, labels)]
    if given_texts != list(texts) or given_labels != list(labels):
        _fail(attack, "modified its inputs in place")
    passed.append("inputs-untouched")
    passed.append(_text_within(attack, res, threat))
    passed.append(_text_success(attack, res, classifier))
    again = make_attack()(
        classifier,
        list(texts),
        list(labels),
        generator=torch.Generator().manual_seed(seed),
        threat=threat,
    )
    if again != res:
        _fail(attack, "not repeatable with the same generator seed")
    passed.append("repeatable")
    if expect_stronger and not any(res.success):
        _fail(attack, "no stronger than no attack: no text was fooled")
    passed.append("stronger-than-clean" if expect_stronger else "ran")
    counted = sum(res.queries)
    if (counting.texts != counted) if exact_queries else (counted > counting.texts):
        _fail(attack, f"queries add up to {counted}, but {counting.texts} texts were sent")
    passed.append("queries-counted")
    if len(make_attack()(classifier, [], [], threat=threat).original) != 0:
        _fail(attack, "an empty batch must give an empty result")
    passed.append("empty-batch")
    return passed


def _text_shapes(attack: object, res: Any, texts: Sequence[str], labels: Sequence[int]) -> str:
    n = len(texts)
    fields = ("original", "adversarial", "labels", "correct_before", "success", "queries")
    if any(len(getattr(res, f)) != n for f in (*fields, "changed_share")):
        _fail(attack, f"every field of the result must hold one entry per text ({n})")
    if not all(isinstance(a, str) for a in res.adversarial):
        _fail(attack, "adversarial texts must be str")
    if any(q < 1 for q in res.queries):
        _fail(attack, "queries must count at least the first check of each text")
    if res.original != tuple(texts) or res.labels != tuple(int(y) for y in labels):
        _fail(attack, "the result's texts and labels must be those given (labels preserved)")
    return "shapes"


def _text_within(attack: object, res: Any, threat: _TextThreat) -> str:
    for orig, adv, right in zip(res.original, res.adversarial, res.correct_before, strict=True):
        if not threat.allows(orig, adv):
            _fail(attack, f"returned a text outside the threat: {adv!r} from {orig!r}")
        if not right and adv != orig:
            _fail(attack, "edited a text the classifier already got wrong")
    return "within-threat"


def _text_success(attack: object, res: Any, classifier: Callable[[list[str]], Tensor]) -> str:
    before = classifier(list(res.original)).argmax(dim=1).tolist()
    after = classifier(list(res.adversarial)).argmax(dim=1).tolist()
    for i, y in enumerate(res.labels):
        if res.correct_before[i] != (before[i] == y):
            _fail(attack, "correct_before disagrees with the classifier on the original")
        fooled = res.correct_before[i] and after[i] != y and res.adversarial[i] != res.original[i]
        if res.success[i] != fooled:
            _fail(attack, "success disagrees with the classifier on the adversarial text")
    return "success-consistent"
