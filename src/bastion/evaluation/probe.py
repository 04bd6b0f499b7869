"""Find the layers of a model that break gradients, and attack through them with BPDA.

Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner 2018, "Obfuscated
gradients give a false sense of security", section 4.1): keep a non-differentiable layer ``g``
on the forward pass, and on the backward pass differentiate a smooth ``h ~ g`` instead, the
identity for quantisers, rounding, JPEG-like purifiers, or an approximation fitted to ``g``.

Which layers? :func:`probe_layers` compares, for every module of the model, autograd's
directional derivative of a random projection of the module's output with a central finite
difference of the same quantity, at two step sizes (1% and 10% of the spread of the module's
input), on clean inputs and on random points of the threat's eps-ball (where attacks start,
and where a detector in front of the model fires). A module is *offending* when, in either set
of points, the autograd figures are not finite, or at every step size where the finite
difference sees a change they disagree with it (cosine below ``0.5`` or a norm ratio outside
``[0.2, 5]``): zero gradients (quantisation, a hard detector), vanishing ones and shattered ones
all show up this way, while piecewise-linear networks (ReLU, max-pooling) agree. A module whose
two forward passes on the same input differ is randomised, not masked (EOT answers that), and
is never flagged.

:func:`find_bpda` then takes every offending module without an offending descendant and
builds the replacement: a shape-preserving leaf layer is bypassed as a whole; a composite module
whose own code transforms its input before its first child (an inline ``torch.round`` before
the network, a detector that purifies flagged inputs) has that step ``x -> child input``
bypassed. The backward approximation is the identity unless a learned element-wise map
``h(t) = t + w2 . tanh(w1 t + b1) + b2`` (16 hidden units, fitted by least squares to samples of
``g``) halves the identity's squared error. :meth:`BPDAPlan.installed` puts the replacements in
place with hooks for the duration of a ``with`` block: the forward pass is exactly the model's
(the layer's own output is returned), only gradients change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from bastion.threat import ThreatModel

PROBE_SCALES = (0.01, 0.1)
_COS_MIN = 0.5
_RATIO = (0.2, 5.0)


class _StraightThrough(torch.autograd.Function):
    """Forward: ``b`` (the layer's real output). Backward: the gradient reaches ``a`` (the
    layer's input) through ``approx`` (identity when None), and nothing flows into ``b``."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, approx: nn.Module | None) -> Tensor:
        ctx.save_for_backward(a)
        ctx.approx = approx
        return b.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None]:
        (a,) = ctx.saved_tensors
        if ctx.approx is None:
            return grad_out, None, None
        with torch.enable_grad():
            ad = a.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(ctx.approx(ad), ad, grad_out)
        return g, None, None


def straight_through(a: Tensor, b: Tensor, approx: nn.Module | None = None) -> Tensor:
    """``b`` on the forward pass, ``d approx(a) / d a`` (identity by default) on the backward
    pass; ``a`` and ``b`` of the same shape."""
    out: Tensor = _StraightThrough.apply(a, b, approx)  # type: ignore[no-untyped-call]
    return out


class PointwiseApprox(nn.Module):
    """``h(t) = t + w2 . tanh(w1 t + b1) + b2`` applied element-wise: a smooth, learned
    approximation of an element-wise non-differentiable map (a staircase, a threshold)."""

    def __init__(self, hidden: int, generator: torch.Generator):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(hidden, generator=generator) * 4.0)
        self.b1 = nn.Parameter(torch.randn(hidden, generator=generator) * 2.0)
        self.w2 = nn.Parameter(torch.zeros(hidden))
        self.b2 = nn.Parameter(torch.zeros(()))

    def forward(self, t: Tensor) -> Tensor:
        z = torch.tanh(t.unsqueeze(-1) * self.w1 + self.b1)
        out: Tensor = t + (z * self.w2).sum(-1) + self.b2
        return out


@dataclass(frozen=True)
class LayerProbe:
    """What probing one module found.

    Attributes:
        name: the module's qualified name (``""`` for the model itself).
        offending: autograd disagrees with finite differences (see the module docstring).
        cosine, ratio: per probe set (``"clean"``, ``"perturbed"``) and step size, the cosine
            between autograd and finite-difference directional derivatives and the ratio of
            their norms (None where the finite difference saw no change).
        nonfinite: autograd gave a non-finite value.
    """

    name: str
    offending: bool
    cosine: dict[str, list[float | None]]
    ratio: dict[str, list[float | None]]
    nonfinite: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name or "<model>",
            "offending": self.offending,
            "cosine": self.cosine,
            "ratio": self.ratio,
            "nonfinite": self.nonfinite,
        }


@dataclass
class _Call:
    order: int
    inp: Tensor
    out: Tensor | None = None
    end: int = -1


def _record(model: nn.Module, x: Tensor) -> dict[str, _Call]:
    """The first call of every module on ``x``: its single tensor input and output, and the
    order in which calls began and ended."""
    calls: dict[str, _Call] = {}
    counter = [0]
    handles = []

    def pre(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple[Any, ...]) -> None:
            counter[0] += 1
            if name not in calls and len(args) == 1 and isinstance(args[0], Tensor):
                calls[name] = _Call(counter[0], args[0].detach())

        return hook

    def post(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            counter[0] += 1
            c = calls.get(name)
            if c is not None and c.out is None and isinstance(out, Tensor):
                c.out, c.end = out.detach(), counter[0]

        return hook

    for name, mod in model.named_modules():
        handles.append(mod.register_forward_pre_hook(pre(name)))
        handles.append(mod.register_forward_hook(post(name)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return {k: v for k, v in calls.items() if v.out is not None}


def _compare(
    fn: Callable[[Tensor], Tensor], a: Tensor, groups: list[slice], gen: torch.Generator
) -> tuple[bool, dict[str, list[float | None]], dict[str, list[float | None]], bool]:
    """Autograd against central finite differences of ``<r, fn(a)>`` along random directions
    (see the module docstring); returns ``(offending, cosines, ratios, nonfinite)``."""
    with torch.no_grad():
        out0 = fn(a)
        again = fn(a)
    if not torch.allclose(out0, again, rtol=1e-5, atol=1e-6, equal_nan=True):
        return False, {"random": [None]}, {"random": [None]}, False  # randomness, not masking
    r = torch.randn(out0.shape, generator=gen).to(out0.device, out0.dtype)
    k = 4
    dirs = torch.randn((k, *a.shape), generator=gen).to(a.device, a.dtype)
    rms = dirs.flatten(2).pow(2).mean(-1).sqrt().clamp_min(1e-12)
    dirs = dirs / rms.view(k, a.shape[0], *([1] * (a.dim() - 1)))
    with torch.enable_grad():
        ag = a.detach().requires_grad_(True)
        proj = (fn(ag) * r).sum()
        grad = (
            torch.autograd.grad(proj, ag, allow_unused=True)[0] if proj.requires_grad else None
        )  # an output cut off from autograd has no gradient: zero
    if grad is None:
        grad = torch.zeros_like(a)
    ad = (grad.unsqueeze(0) * dirs).flatten(2).sum(-1)  # (k, N)
    nonfinite = not bool(ad.isfinite().all())
    spread = float(a.float().std()) if a.numel() > 1 else 1.0
    spread = spread if spread > 0 and math.isfinite(spread) else 1.0
    cos: dict[str, list[float | None]] = {}
    rat: dict[str, list[float | None]] = {}
    offending = nonfinite
    names = ["clean", "perturbed"]
    for gi, sl in enumerate(groups):
        gname = names[gi] if gi < len(names) else f"set{gi}"
        cos[gname], rat[gname] = [], []
        verdicts: list[bool] = []
        for scale in PROBE_SCALES:
            h = scale * spread
            with torch.no_grad():
                fd = torch.stack(
                    [
                        ((fn(a + h * d) - fn(a - h * d)) * r).flatten(1).sum(1) / (2 * h)
                        for d in dirs
                    ]
                )  # (k, N)
            f, g = fd[:, sl].flatten().double(), ad[:, sl].flatten().double()
            fn_norm = float(f.norm())
            if not math.isfinite(fn_norm) or fn_norm <= 1e-9:
                cos[gname].append(None)
                rat[gname].append(None)
                continue
            gn = float(g.norm())
            c = float((f @ g) / (fn_norm * gn)) if gn > 0 and math.isfinite(gn) else 0.0
            q = gn / fn_norm if math.isfinite(gn) else math.inf
            cos[gname].append(round(c, 4))
            rat[gname].append(round(q, 4) if math.isfinite(q) else None)
            verdicts.append(c < _COS_MIN or not _RATIO[0] <= q <= _RATIO[1])
        if verdicts and all(verdicts):
            offending = True
    return offending, cos, rat, nonfinite


def probe_points(x: Tensor, threat: ThreatModel, gen: torch.Generator, m: int = 16) -> Tensor:
    """``(2m', ...)``: the first ``m' = min(m, N)`` examples, then random points of their
    eps-balls (the two probe sets)."""
    xs = x[:m].detach()
    return torch.cat([xs, threat.random_init(xs, generator=gen)])


def probe_layers(
    model: nn.Module, x: Tensor, threat: ThreatModel, *, generator: torch.Generator
) -> list[LayerProbe]:
    """Probe every module of ``model`` called once with a single tensor on inputs ``x``
    ``(N, ...)`` (the first 16 are used, clean and randomly perturbed within ``threat``); one
    :class:`LayerProbe` per module, in call order. Costs about 20 forward passes of each module
    on 32 inputs. The model is not changed."""
    pts = probe_points(x, threat, generator)
    m = pts.shape[0] // 2
    groups = [slice(0, m), slice(m, 2 * m)]
    calls = _record(model, pts)
    mods = dict(model.named_modules())
    out = []
    for name, c in sorted(calls.items(), key=lambda kv: kv[1].order):
        if not c.inp.is_floating_point():
            continue
        mod = mods[name]
        offending, cos, rat, nonfinite = _compare(mod, c.inp, groups, generator)
        out.append(LayerProbe(name, offending, cos, rat, nonfinite))
    return out


Kind = Literal["layer", "preprocessing"]


@dataclass
class Replacement:
    """One BPDA replacement.

    Attributes:
        module: the offending module's name.
        kind: ``"layer"`` (the whole shape-preserving module is bypassed) or
            ``"preprocessing"`` (the step from the module's input to its first child's input).
        child: for ``"preprocessing"``, the first child's name.
        approximation: ``"identity"`` or ``"learned"`` (a :class:`PointwiseApprox`).
        identity_mse, learned_mse: squared errors of both approximations of the layer.
    """

    module: str
    kind: Kind
    child: str | None
    approximation: str
    identity_mse: float
    learned_mse: float | None
    approx: nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module or "<model>",
            "kind": self.kind,
            "child": self.child,
            "approximation": self.approximation,
            "identity_mse": self.identity_mse,
            "learned_mse": self.learned_mse,
        }


@dataclass
class BPDAPlan:
    """The probes and the replacements that make gradients flow (see :func:`find_bpda`)."""

    probes: list[LayerProbe]
    replacements: list[Replacement]
    unfixable: list[str]

    @property
    def found(self) -> bool:
        return bool(self.replacements)

    def to_dict(self) -> dict[str, Any]:
        return {
            "offending": [p.name or "<model>" for p in self.probes if p.offending],
            "replacements": [r.to_dict() for r in self.replacements],
            "unfixable": self.unfixable,
            "probes": [p.to_dict() for p in self.probes],
        }

    @contextmanager
    def installed(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block, ``model`` computes exactly the same outputs but its gradients go
        through the replacements (hooks, removed on exit)."""
        mods = dict(model.named_modules())
        handles = []
        for rep in self.replacements:
            mod = mods[rep.module]
            approx = rep.approx
            if rep.kind == "layer":

                def layer_hook(
                    m: nn.Module, args: tuple[Any, ...], out: Tensor, approx: Any = approx
                ) -> Tensor:
                    return straight_through(args[0], out, approx)

                handles.append(mod.register_forward_hook(layer_hook))
            else:
                assert rep.child is not None
                cell: list[Tensor] = []

                def outer_pre(m: nn.Module, args: tuple[Any, ...], cell: Any = cell) -> None:
                    cell.append(args[0])

                def outer_post(
                    m: nn.Module, args: tuple[Any, ...], out: Any, cell: Any = cell
                ) -> None:
                    if cell:
                        cell.pop()

                def child_pre(
                    m: nn.Module, args: tuple[Any, ...], cell: Any = cell, approx: Any = approx
                ) -> tuple[Tensor, ...] | None:
                    if not cell or len(args) != 1 or args[0].shape != cell[-1].shape:
                        return None
                    x_outer = cell.pop()  # the first call of the child within this call only
                    return (straight_through(x_outer, args[0], approx),)

                handles.append(mod.register_forward_pre_hook(outer_pre))
                handles.append(mod.register_forward_hook(outer_post))
                handles.append(mods[rep.child].register_forward_pre_hook(child_pre))
        try:
            yield model
        finally:
            for h in handles:
                h.remove()


def _descendants(name: str, names: list[str]) -> list[str]:
    prefix = f"{name}." if name else ""
    return [n for n in names if n != name and n.startswith(prefix)]


def _fit_pointwise(a: Tensor, g: Tensor, gen: torch.Generator, steps: int = 300) -> nn.Module:
    """Least-squares fit of :class:`PointwiseApprox` to the pairs ``(a_i, g_i)``."""
    t, target = a.flatten().float(), g.flatten().float()
    if t.numel() > 20000:
        pick = torch.randperm(t.numel(), generator=gen)[:20000].to(t.device)
        t, target = t[pick], target[pick]
    h = PointwiseApprox(16, gen).to(t.device)
    opt = torch.optim.Adam(h.parameters(), lr=0.02)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss = (h(t) - target).pow(2).mean()
            loss.backward()
            opt.step()
    for p in h.parameters():
        p.requires_grad_(False)
    return h.eval()


def _approximate(
    a: Tensor, g: Tensor, gen: torch.Generator
) -> tuple[str, float, float | None, nn.Module | None]:
    """Identity or a learned element-wise map, whichever fits ``g(a)`` (see the docstring)."""
    id_mse = float((g - a).pow(2).mean())
    if id_mse == 0.0:
        return "identity", 0.0, None, None
    h = _fit_pointwise(a, g, gen)
    with torch.no_grad():
        learned_mse = float((h(a) - g).pow(2).mean())
    if learned_mse < 0.5 * id_mse:
        return "learned", id_mse, learned_mse, h
    return "identity", id_mse, learned_mse, None


def find_bpda(
    model: nn.Module, x: Tensor, threat: ThreatModel, *, generator: torch.Generator
) -> BPDAPlan:
    """Probe ``model`` on ``x`` ``(N, ...)`` within ``threat`` and build the BPDA
    replacements for its offending modules (see the module docstring). Deterministic given
    ``generator`` (for a deterministic model). The model is not changed."""
    probes = probe_layers(model, x, threat, generator=generator)
    names = [p.name for p in probes]
    bad = {p.name for p in probes if p.offending}
    pts = probe_points(x, threat, generator)
    calls = _record(model, pts)
    mods = dict(model.named_modules())
    reps: list[Replacement] = []
    unfixable: list[str] = []
    for name in [n for n in names if n in bad]:
        if any(d in bad for d in _descendants(name, names)):
            continue  # a deeper module is the culprit
        c = calls[name]
        mod = mods[name]
        children = [f"{name}.{k}" if name else k for k, _ in mod.named_children()]
        called = sorted(
            (calls[ch] for ch in children if ch in calls and c.order < calls[ch].order < c.end),
            key=lambda cc: cc.order,
        )
        kind: Kind
        child: str | None
        if not children and c.out is not None and c.out.shape == c.inp.shape:
            kind, a, g, child = "layer", c.inp, c.out, None
        elif called and called[0].inp.shape == c.inp.shape:
            first = called[0]
            child = next(ch for ch in children if ch in calls and calls[ch] is first)
            kind, a, g = "preprocessing", c.inp, first.inp
            if torch.equal(a, g):  # the step is the identity here: not the culprit
                unfixable.append(name or "<model>")
                continue
        else:
            unfixable.append(name or "<model>")
            continue
        how, id_mse, learned_mse, approx = _approximate(a, g, generator)
        reps.append(Replacement(name, kind, child, how, id_mse, learned_mse, approx))
    return BPDAPlan(probes, reps, unfixable)
