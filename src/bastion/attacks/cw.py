"""The Carlini-Wagner L2 attack (Carlini & Wagner 2017, "Towards evaluating the robustness of
neural networks").

A minimum-norm attack: for each example it minimises

    ||x' - x||_2^2 + c * max(m(x'), -kappa)

over ``x' = lo + (hi - lo) * (tanh(w) + 1) / 2`` (the change of variables keeps ``x'`` inside the
box ``[lo, hi]`` without clipping), with Adam on ``w``. ``m`` is the margin of the true class
over the best other class (``z_y - max_{j != y} z_j``), or of the best other class over the
target (``max_{j != t} z_j - z_t``) for a targeted attack; ``kappa`` (``confidence``) asks for
that margin to be exceeded. A binary search over ``c`` per example looks for the smallest
constant that still succeeds: a success lowers the upper bound, a failure raises the lower
bound (multiplying ``c`` by 10 while no upper bound is known). Across all rounds, each example
keeps the successful point of smallest L2 norm.

Within bastion's bounded threat model: the attack ignores ``eps`` while it searches, and the
base class then projects its minimum-norm point onto the eps-ball, so an example counts as
broken exactly when the smallest adversarial perturbation found lies within the budget (up to
the rare point that stays adversarial after being shrunk onto the ball). For a non-L2 threat it
still minimises the L2 norm. Examples the model already gets wrong (or, targeted, already
assigns to the target) are returned unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from bastion.attacks.base import Attack, Opening
from bastion.attacks.fast_grad import input_gradients_only
from bastion.attacks.registry import register
from bastion.attacks.settings import AttackSettings
from bastion.threat import ThreatModel

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8
_NO_UPPER = 1e10  # the upper bound on c before any success


def _margins(logits: Tensor, label: Tensor, targeted: bool) -> Tensor:
    """``(N,)``: how far the attack still is from success; success is ``margin < -kappa``.

    Untargeted ``z_y - max_{j != y} z_j``; targeted ``max_{j != t} z_j - z_t``.
    """
    z_l = logits.gather(1, label[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(label, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - z_l if targeted else z_l - other


class CarliniWagnerSettings(AttackSettings):
    """Settings of :class:`CarliniWagnerL2`."""

    steps: int = Field(default=100, ge=1, description="Adam iterations per binary-search round")
    binary_search_steps: int = Field(default=9, ge=1, description="rounds of the search over c")
    lr: float = Field(default=0.01, gt=0, description="Adam's step size on the tanh variables")
    confidence: float = Field(
        default=0.0, ge=0, description="kappa: the margin the winning class needs"
    )
    initial_const: float = Field(default=1e-3, gt=0, description="the first constant c")
    abort_early: bool = Field(default=True, description="stop a round once the loss stops falling")


@register("cw-l2", knowledge="white-box", kind="minimum-norm", settings=CarliniWagnerSettings)
class CarliniWagnerL2(Attack):
    """Carlini-Wagner L2 with binary search over the constant ``c`` (Carlini & Wagner 2017).

    Args:
        steps: Adam iterations per binary-search round (the paper allows up to 10,000; 100
            to 1,000 is usual for evaluation).
        binary_search_steps: rounds of the search over ``c`` (9 in the paper).
        lr: Adam's step size on the tanh variables (0.01). Inputs with many values exactly at
            the bounds (digits, MNIST) sit where tanh is flat; there a larger step (0.05) or
            more steps are needed for the attack to move them at all.
        confidence: ``kappa``, the margin by which the adversarial class must win (0).
        initial_const: the first ``c`` (1e-3 in the paper).
        abort_early: stop an example's round when its loss has not fallen by 0.01% over the
            last tenth of the steps (the paper's early abort, here per example).

    ``queries`` counts one forward pass per Adam step per example (plus the clean pass).
    Returns ``(N, ...)`` points inside ``threat.bounds``: the smallest-norm success, or the
    clean input where none was found.
    """

    def __init__(
        self,
        *,
        steps: int = 100,
        binary_search_steps: int = 9,
        lr: float = 0.01,
        confidence: float = 0.0,
        initial_const: float = 1e-3,
        abort_early: bool = True,
    ):
        s = CarliniWagnerSettings.of(locals(), where=self.name)
        self.steps, self.binary_search_steps = s.steps, s.binary_search_steps
        self.lr, self.confidence = float(s.lr), float(s.confidence)
        self.initial_const, self.abort_early = float(s.initial_const), s.abort_early

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None,
        generator: torch.Generator | None,
        opening: Opening,
    ) -> tuple[Tensor, Tensor]:
        n = x.shape[0]
        targeted = targets is not None
        label = targets if targets is not None else y
        queries = opening.queries()
        done = ~opening.robust

        lo, hi = threat.bounds
        best = x.clone()
        best_l2 = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
        const = torch.full((n,), self.initial_const, dtype=x.dtype, device=x.device)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, _NO_UPPER)
        todo = (~done).nonzero().squeeze(1)
        if todo.numel() == 0:
            return best, queries
        # w such that lo + (hi - lo) (tanh(w) + 1) / 2 = x, nudged off the box faces
        unit = ((x[todo] - lo) / (hi - lo) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)
        w_clean = torch.atanh(unit)
        for _round in range(self.binary_search_steps):
            succeeded = self._round(
                model,
                x,
                label,
                targeted,
                todo,
                w_clean,
                const[todo],
                lo,
                hi,
                best,
                best_l2,
                queries,
            )
            c = const[todo]
            lo_c, up_c = lower[todo], upper[todo]
            up_c = torch.where(succeeded, torch.minimum(up_c, c), up_c)
            lo_c = torch.where(succeeded, lo_c, torch.maximum(lo_c, c))
            bounded = up_c < _NO_UPPER
            c = torch.where(bounded, (lo_c + up_c) / 2, c * 10)
            const[todo], lower[todo], upper[todo] = c, lo_c, up_c
        return best, queries

    def _round(
        self,
        model: nn.Module,
        x: Tensor,
        label: Tensor,
        targeted: bool,
        todo: Tensor,
        w_clean: Tensor,
        const: Tensor,
        lo: float,
        hi: float,
        best: Tensor,
        best_l2: Tensor,
        queries: Tensor,
    ) -> Tensor:
        """One Adam run at fixed constants ``const`` for the examples ``todo``; updates
        ``best``/``best_l2``/``queries`` in place and returns which examples succeeded."""
        succeeded = torch.zeros(todo.numel(), dtype=torch.bool, device=x.device)
        pos = torch.arange(todo.numel(), device=x.device)  # working rows, positions in todo
        w = w_clean.clone()
        m = torch.zeros_like(w)
        v = torch.zeros_like(w)
        x0, lab, c = x[todo], label[todo], const
        check_every = max(self.steps // 10, 1)
        prev_loss = torch.full((todo.numel(),), float("inf"), dtype=x.dtype, device=x.device)
        for step in range(1, self.steps + 1):
            wg = w.detach().requires_grad_(True)
            with torch.enable_grad(), input_gradients_only(model):
                xa = lo + (hi - lo) * (torch.tanh(wg) + 1) / 2
                logits = model(xa)
                sq = (xa - x0).flatten(1).pow(2).sum(1)
                margin = _margins(logits, lab, targeted)
                loss = sq + c * margin.clamp_min(-self.confidence)
                (g,) = torch.autograd.grad(loss.sum(), wg)
            queries[todo[pos]] += 1
            with torch.no_grad():
                margin_d, l2 = margin.detach(), sq.detach().sqrt()
                hit = margin_d < -self.confidence  # strict: the class wins, by more than kappa
                succeeded[pos[hit]] = True
                better = hit & (l2 < best_l2[todo[pos]])
                if bool(better.any()):
                    rows = todo[pos[better]]
                    best[rows] = xa.detach()[better]
                    best_l2[rows] = l2[better]
                # Adam (Kingma & Ba 2015), per coordinate, so dropping rows keeps it exact
                m = _BETA1 * m + (1 - _BETA1) * g
                v = _BETA2 * v + (1 - _BETA2) * g * g
                m_hat = m / (1 - _BETA1**step)
                v_hat = v / (1 - _BETA2**step)
                w = w - self.lr * m_hat / (v_hat.sqrt() + _ADAM_EPS)
                if self.abort_early and step % check_every == 0:
                    cur = loss.detach()
                    # keep the examples whose loss fell by 0.01% at least (or with no history yet)
                    keep = ~(cur > prev_loss - 1e-4 * prev_loss.abs())
                    prev_loss = cur
                    if not bool(keep.all()):
                        pos, w, m, v = pos[keep], w[keep], m[keep], v[keep]
                        x0, lab, c, prev_loss = x0[keep], lab[keep], c[keep], prev_loss[keep]
                        if pos.numel() == 0:
                            break
        return succeeded
