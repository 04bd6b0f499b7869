"""Membership inference: does a model reveal which examples it was trained on?

Two attacks, both black-box (they read the model's scores on an example and its label):

* :func:`threshold_scores`: the loss-threshold attack of Yeom, Giacomelli, Fredrikson and Jha
  2018 ("Privacy risk in machine learning: analyzing the connection to overfitting", CSF):
  an example is called a member when its loss is below a threshold; the score is ``-loss``
  (or the true-class confidence, ``kind="confidence"``).
* LiRA, the likelihood-ratio attack of Carlini et al. 2022 ("Membership inference attacks from
  first principles", IEEE S&P). Shadow models are trained *with bastion's own trainer on the
  target's recipe* (:class:`ShadowRecipe`), each on a seeded random half of a population data
  set (:func:`train_shadows`). For every example, the logit-scaled confidence
  ``phi = log(p_y / (1 - p_y))`` of the models that trained on it ("IN") and of those that did
  not ("OUT") are fitted with Gaussians; the target's ``phi`` is then scored by
  :func:`lira_scores`:

  - online: ``log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)``;
  - offline (OUT models only, so shadows need not be retrained per query):
    ``-log P[Z > phi]`` for ``Z ~ N(mu_out, s_out^2)`` (the one-sided test of the paper).

  With few shadows the per-example variances are noisy; the paper then uses one global
  variance (``fixed_variance=True``, the default below 64 shadows). An example with no IN (or
  OUT) shadow at all gets the mean over examples of the missing statistic.

``phi`` is computed from the logits as ``z_y - logsumexp_{j != y} z_j``, which equals
``log(p_y / (1 - p_y))`` without the rounding of ``1 - p_y`` near 1.

Shadow training checkpoints and resumes: every finished shadow is written to
``<directory>/shadow-<i>.safetensors`` (weights, plus the recipe's and population's fingerprints
in the file's metadata) and a later call skips the shadows present, so an interrupted run
continues where it stopped and ends with the same models. With ``workers > 1`` shadows train in
parallel in a ``torch.multiprocessing`` pool (spawned processes, one torch thread each).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from bastion.errors import ConfigError, ModelFileError
from bastion.models.zoo import BastionModel, ModelSpec, build_model
from bastion.privacy.dp import DPSettings, train_dp
from bastion.privacy.metrics import membership_report
from bastion.threat import ThreatModel
from bastion.training.trainer import Trainer, TrainSettings

__all__ = [
    "LiraResult",
    "ShadowRecipe",
    "ShadowSet",
    "build_seeded",
    "example_losses",
    "lira_leave_one_out",
    "lira_scores",
    "logit_confidence",
    "run_lira",
    "shadow_half",
    "shifted",
    "threshold_scores",
    "train_shadows",
    "view_confidences",
]

SHADOW_FORMAT = "bastion-shadow/1"
ShadowProgress = Callable[[dict[str, Any]], None]


# ------------------------------------------------------------------------------ model outputs
def _logits(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    model.eval()
    with torch.no_grad():
        parts = [model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(parts).to(torch.float64) if parts else torch.zeros(0, 1, dtype=torch.float64)


def logit_confidence(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 512) -> Tensor:
    """``phi = log(p_y / (1 - p_y))`` per example, ``(N,)`` float64, from ``x`` ``(N, ...)``
    and labels ``y`` ``(N,)``; computed as ``z_y - logsumexp_{j != y} z_j`` (Carlini et al.
    2022, section IV-B: the logit scaling makes the confidences approximately Gaussian)."""
    z = _logits(model, x, batch_size)
    zy = z.gather(1, y.view(-1, 1)).squeeze(1)
    others = z.scatter(1, y.view(-1, 1), float("-inf"))
    return zy - torch.logsumexp(others, dim=1)


def shifted(x: Tensor, dy: int, dx: int, *, fill: float = 0.0) -> Tensor:
    """Images ``(N, C, H, W)`` moved ``dy`` rows down and ``dx`` columns right, the vacated
    pixels set to ``fill`` (a translation, not a roll: nothing wraps around)."""
    if x.dim() != 4:
        raise ConfigError(
            f"lira.shifts: shifted views need images (N, C, H, W), got {tuple(x.shape)}"
        )
    out = torch.full_like(x, fill)
    h, w = x.shape[-2], x.shape[-1]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def view_confidences(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    shifts: Sequence[tuple[int, int]],
    *,
    fill: float = 0.0,
) -> Tensor:
    """``phi`` on several shifted views of each example, ``(N, K)`` float64 for ``K`` shifts
    ``(dy, dx)`` (``(0, 0)`` is the example itself): the "multiple queries" of Carlini et al.
    2022 (section VI-A), which query a model on augmentations it was trained with."""
    return torch.stack(
        [logit_confidence(model, shifted(x, dy, dx, fill=fill), y) for dy, dx in shifts], dim=1
    )


def example_losses(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 512) -> Tensor:
    """Cross-entropy per example, ``(N,)`` float64."""
    z = _logits(model, x, batch_size)
    return torch.nn.functional.cross_entropy(z, y, reduction="none")


def threshold_scores(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    kind: Literal["loss", "confidence"] = "loss",
    batch_size: int = 512,
) -> Tensor:
    """Yeom et al. 2018's attack: membership scores ``(N,)`` float64, higher = member.

    ``kind="loss"``: ``-CE(model(x), y)`` (a member when its loss is below the threshold);
    ``kind="confidence"``: ``p_y``, the true-class probability. Any threshold on the score is
    one attack; :func:`~bastion.privacy.metrics.membership_report` sweeps them all.
    """
    if kind == "loss":
        return -example_losses(model, x, y, batch_size=batch_size)
    if kind == "confidence":
        z = _logits(model, x, batch_size)
        return torch.softmax(z, dim=1).gather(1, y.view(-1, 1)).squeeze(1)
    raise ConfigError(f"threshold.kind: expected 'loss' or 'confidence', got {kind!r}")


# ------------------------------------------------------------------------------ the recipe
@dataclass(frozen=True)
class ShadowRecipe:
    """How the target was trained, so shadows can be trained the same way.

    Attributes:
        spec: the architecture, input shape, classes and normalisation (a bastion model spec).
        settings: the trainer settings (objective included).
        threat: the threat model the trainer validates against (and adversarial objectives use).
        dp: train with DP-SGD instead (:func:`bastion.privacy.dp.train_dp`; ``settings`` and
            ``threat`` are then not used), to measure what differential privacy buys.
    """

    spec: ModelSpec
    settings: TrainSettings
    threat: ThreatModel
    dp: DPSettings | None = None

    def fingerprint(self) -> str:
        """sha256 of the recipe's canonical description (identifies compatible shadows)."""
        doc = {
            "spec": self.spec.to_dict(),
            "settings": repr(self.settings),
            "threat": repr(self.threat),
        }
        if self.dp is not None:
            doc["dp"] = repr(self.dp)
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def build_seeded(spec: ModelSpec, seed: int) -> BastionModel:
    """A fresh model whose initial weights depend only on ``seed`` (the caller's global RNG is
    left as it was, through ``torch.random.fork_rng``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec)


def tensor_fingerprint(*tensors: Tensor) -> str:
    """sha256 over the shapes, dtypes and bytes of ``tensors``."""
    h = hashlib.sha256()
    for t in tensors:
        c = t.detach().cpu().contiguous()
        h.update(f"{tuple(c.shape)}{c.dtype}".encode())
        h.update(c.numpy().tobytes())
    return h.hexdigest()


def shadow_half(n: int, seed: int, index: int) -> tuple[Tensor, int]:
    """Shadow ``index``'s membership mask ``(n,)`` bool (exactly ``n // 2`` True, a seeded random
    half) and its training seed; both are functions of ``(seed, index)`` only, so shadows can be
    added to a folder later."""
    rng = np.random.default_rng([int(seed), int(index), 0x5AD0])
    members = rng.permutation(n)[: n // 2]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.from_numpy(members)] = True
    return mask, int(rng.integers(0, 2**31 - 1))


# ------------------------------------------------------------------------------ shadow training
def _shadow_path(directory: Path, index: int) -> Path:
    return directory / f"shadow-{index:03d}.safetensors"


@dataclass(frozen=True)
class _Job:
    recipe: ShadowRecipe
    x: Tensor
    y: Tensor
    x_val: Tensor | None
    y_val: Tensor | None
    seed: int
    index: int
    directory: str
    population: str
    threads: int


def _train_one(job: _Job) -> tuple[int, float]:
    """Train shadow ``job.index`` and write it; returns ``(index, seconds)``. Runs in the
    calling process or in a pool worker."""
    if job.threads > 0:
        torch.set_num_threads(job.threads)
    start = time.perf_counter()
    mask, train_seed = shadow_half(job.x.shape[0], job.seed, job.index)
    model = build_seeded(job.recipe.spec, train_seed)
    if job.x_val is not None and job.y_val is not None:
        xv, yv = job.x_val, job.y_val
    else:  # the shadow's own OUT half validates (selection only, never trained on)
        xv, yv = job.x[~mask], job.y[~mask]
    if job.recipe.dp is not None:
        train_dp(model, job.x[mask], job.y[mask], job.recipe.dp, seed=train_seed)
    else:
        Trainer(job.recipe.settings, job.recipe.threat, seed=train_seed).fit(
            model, job.x[mask], job.y[mask], xv, yv
        )
    path = _shadow_path(Path(job.directory), job.index)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(
        state,
        str(tmp),
        metadata={
            "format": SHADOW_FORMAT,
            "recipe": job.recipe.fingerprint(),
            "population": job.population,
            "seed": str(job.seed),
            "index": str(job.index),
        },
    )
    os.replace(tmp, path)
    return job.index, time.perf_counter() - start


def _read_shadow(path: Path, recipe: ShadowRecipe, population: str, seed: int) -> BastionModel:
    """Load one finished shadow, checking it was written for this recipe, population and seed."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: not a shadow model file ({e})") from None
    if meta.get("format") != SHADOW_FORMAT:
        raise ModelFileError(f"{path}: not a bastion shadow model (format {meta.get('format')!r})")
    for key, want in (("recipe", recipe.fingerprint()), ("population", population)):
        if meta.get(key) != want:
            raise ModelFileError(
                f"{path}: written for another {key} (fingerprint {str(meta.get(key))[:12]}...); "
                "use a new shadow directory for a new recipe or population"
            )
    if meta.get("seed") != str(seed):
        raise ModelFileError(
            f"{path}: written with shadow seed {meta.get('seed')}, got seed {seed}; use the same "
            "seed to resume, or a new shadow directory"
        )
    model = build_model(recipe.spec)
    model.load_state_dict(state, strict=True)
    return model.eval()


@dataclass
class ShadowSet:
    """The shadows' view of a population of ``N`` examples.

    Attributes:
        in_mask: ``(M, N)`` bool, ``in_mask[m, i]``: shadow ``m`` trained on example ``i``.
        confidences: ``(M, N)`` float64, each shadow's logit-scaled confidence ``phi``
            (``(M, N, K)`` with ``K`` shifted views).
        trained, reused: how many shadows this call trained and found already on disk.
        seconds: wall time of this call.
    """

    in_mask: Tensor
    confidences: Tensor
    trained: int
    reused: int
    seconds: float


def _check_shadow_arguments(shadows: int, workers: int, x: Tensor, y: Tensor) -> None:
    """:class:`ConfigError` naming the ``lira`` field for a shadow count under 2, a worker
    count under 1, or a population of fewer than 4 labelled examples."""
    if isinstance(shadows, bool) or not isinstance(shadows, int) or shadows < 2:
        raise ConfigError(f"lira.shadows: expected an integer >= 2, got {shadows!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"lira.workers: expected an integer >= 1, got {workers!r}")
    if x.shape[0] != y.shape[0] or x.shape[0] < 4:
        raise ConfigError(
            f"lira.population: expected at least 4 examples with one label each, got "
            f"{x.shape[0]} inputs and {y.shape[0]} labels"
        )


def _run_jobs(jobs: list[_Job], workers: int, report: Callable[[int, float], None]) -> None:
    """Train each job's shadow, in a spawned pool of up to ``workers`` processes when more
    than one is asked and there is more than one job; ``report(index, seconds)`` after each."""
    if workers > 1 and len(jobs) > 1:
        import torch.multiprocessing as tmp

        ctx = tmp.get_context("spawn")
        with ctx.Pool(processes=min(workers, len(jobs))) as pool:
            for index, seconds in pool.imap_unordered(_train_one, jobs):
                report(index, seconds)
    else:
        for job in jobs:
            report(*_train_one(job))


def _score_shadows(
    folder: Path,
    recipe: ShadowRecipe,
    population: str,
    seed: int,
    x: Tensor,
    y: Tensor,
    *,
    shadows: int,
    shifts: Sequence[tuple[int, int]] | None,
) -> tuple[Tensor, Tensor]:
    """Each saved shadow's IN half ``(M, N)`` and confidences ``(M, N)`` (``(M, N, K)`` with
    ``K`` shifted views) on the population ``x`` ``(N, ...)``, ``y`` ``(N,)``."""
    masks, confs = [], []
    for i in range(shadows):
        model = _read_shadow(_shadow_path(folder, i), recipe, population, seed)
        masks.append(shadow_half(x.shape[0], seed, i)[0])
        if shifts:
            confs.append(view_confidences(model, x, y, shifts))
        else:
            confs.append(logit_confidence(model, x, y))
    return torch.stack(masks), torch.stack(confs)


def train_shadows(
    recipe: ShadowRecipe,
    x: Tensor,
    y: Tensor,
    *,
    shadows: int,
    directory: str | os.PathLike[str],
    seed: int = 0,
    workers: int = 1,
    x_val: Tensor | None = None,
    y_val: Tensor | None = None,
    progress: ShadowProgress | None = None,
    threads_per_worker: int = 1,
    shifts: Sequence[tuple[int, int]] | None = None,
) -> ShadowSet:
    """Train (or reuse) ``shadows`` models on seeded random halves of the population ``x``
    ``(N, ...)``, ``y`` ``(N,)`` and score every example with each.

    Args:
        recipe: the target's recipe; every shadow is trained by :class:`Trainer` with it.
        shadows: ``M >= 2``.
        directory: where finished shadows are kept (created); shadows already there, written
            for the same recipe, population and seed, are loaded instead of trained.
        seed: the shadows' seed; shadow ``i``'s half and training seed come from ``(seed, i)``.
        workers: processes training shadows at once (``torch.multiprocessing``, spawn).
        x_val, y_val: validation data for the trainer's checkpoint selection (default: each
            shadow's own OUT half).
        progress: called after each shadow with ``{"shadow", "done", "total", "reused",
            "seconds"}``; an exception raised from it stops the run (finished shadows stay on
            disk for the next call).
        threads_per_worker: torch threads in each pool worker (0: leave torch's default).
        shifts: score each example on these shifted views too (:func:`view_confidences`);
            ``confidences`` is then ``(M, N, K)``.

    Returns:
        a :class:`ShadowSet`; the same arguments give the same set (training is seeded).
    """
    _check_shadow_arguments(shadows, workers, x, y)
    start = time.perf_counter()
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    population = tensor_fingerprint(x, y)
    done = 0
    present = [i for i in range(shadows) if _shadow_path(folder, i).is_file()]
    for i in present:  # check before training anything: a wrong folder fails at once
        _read_shadow(_shadow_path(folder, i), recipe, population, seed)
        done += 1
        if progress is not None:
            progress({"shadow": i, "done": done, "total": shadows, "reused": True, "seconds": 0.0})
    missing = [i for i in range(shadows) if i not in present]
    jobs = [
        _Job(recipe, x, y, x_val, y_val, seed, i, str(folder), population, threads_per_worker)
        for i in missing
    ]

    def report(index: int, seconds: float) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(
                {
                    "shadow": index,
                    "done": done,
                    "total": shadows,
                    "reused": False,
                    "seconds": seconds,
                }
            )

    _run_jobs(jobs, workers, report)
    in_mask, confidences = _score_shadows(
        folder, recipe, population, seed, x, y, shadows=shadows, shifts=shifts
    )
    return ShadowSet(
        in_mask=in_mask,
        confidences=confidences,
        trained=len(jobs),
        reused=len(present),
        seconds=time.perf_counter() - start,
    )


# ------------------------------------------------------------------------------ LiRA
def _masked_stats(conf: Tensor, mask: Tensor, fixed_variance: bool) -> tuple[Tensor, Tensor]:
    """Per-example mean and standard deviation of ``conf`` ``(M, N)`` over rows where ``mask``;
    examples with no row get the mean of the others' means; variances are global with
    ``fixed_variance`` (or where an example has fewer than two rows)."""
    w = mask.to(conf.dtype)
    count = w.sum(0)
    mean = (conf * w).sum(0) / count.clamp_min(1)
    have = count > 0
    fill = mean[have].mean() if bool(have.any()) else conf.new_tensor(0.0)
    mean = torch.where(have, mean, fill)
    resid2 = ((conf - mean) ** 2) * w
    total = float(w.sum())
    global_var = float(resid2.sum()) / max(total - float(have.sum()), 1.0)
    if fixed_variance:
        var = torch.full_like(mean, global_var)
    else:
        var = resid2.sum(0) / (count - 1).clamp_min(1)
        var = torch.where(count >= 2, var, torch.full_like(var, global_var))
    return mean, var.clamp_min(1e-8).sqrt()


def lira_scores(
    target_conf: Tensor,
    shadow_conf: Tensor,
    in_mask: Tensor,
    *,
    online: bool = True,
    fixed_variance: bool | None = None,
) -> Tensor:
    """LiRA membership scores ``(N,)`` float64, higher = member (Carlini et al. 2022, Alg. 1).

    Args:
        target_conf: ``(N,)`` the target model's ``phi`` on each example, or ``(N, K)`` on
            ``K`` views of it (:func:`view_confidences`).
        shadow_conf: ``(M, N)`` the shadows' ``phi`` (``(M, N, K)`` with views); in_mask:
            ``(M, N)`` bool (IN shadows).
        online: the likelihood ratio of the IN and OUT Gaussians; else the offline one-sided
            test against the OUT Gaussian only.
        fixed_variance: one global variance per Gaussian (default: when ``M < 64``).

    With views, each view gets its own Gaussians and the per-view scores are summed (the
    views treated as independent, as in the paper's multiple-query attack).
    """
    if target_conf.dim() == 2 and shadow_conf.dim() == 3:
        if shadow_conf.shape[:2] != in_mask.shape or shadow_conf.shape[1:] != target_conf.shape:
            raise ConfigError(
                f"lira: expected target (N, K), shadows (M, N, K) and mask (M, N), got "
                f"{tuple(target_conf.shape)}, {tuple(shadow_conf.shape)}, {tuple(in_mask.shape)}"
            )
        parts = [
            lira_scores(
                target_conf[:, k],
                shadow_conf[..., k],
                in_mask,
                online=online,
                fixed_variance=fixed_variance,
            )
            for k in range(target_conf.shape[1])
        ]
        return torch.stack(parts).sum(0)
    if shadow_conf.shape != in_mask.shape or shadow_conf.shape[1:] != target_conf.shape:
        raise ConfigError(
            f"lira: expected target (N,), shadows (M, N) and mask (M, N), got "
            f"{tuple(target_conf.shape)}, {tuple(shadow_conf.shape)}, {tuple(in_mask.shape)}"
        )
    fixed = shadow_conf.shape[0] < 64 if fixed_variance is None else fixed_variance
    phi = target_conf.to(torch.float64)
    conf = shadow_conf.to(torch.float64)
    mu_out, sd_out = _masked_stats(conf, ~in_mask, fixed)
    if not online:
        # -log P[Z > phi] = -log Phi(-(phi - mu) / sd), stable in the far tail
        offline: Tensor = -torch.special.log_ndtr(-(phi - mu_out) / sd_out)
        return offline
    mu_in, sd_in = _masked_stats(conf, in_mask, fixed)

    def log_pdf(mu: Tensor, sd: Tensor) -> Tensor:
        return -0.5 * ((phi - mu) / sd) ** 2 - sd.log() - 0.5 * math.log(2 * math.pi)

    return log_pdf(mu_in, sd_in) - log_pdf(mu_out, sd_out)


def lira_leave_one_out(
    confidences: Tensor, in_mask: Tensor, *, online: bool = True, targets: int | None = None
) -> tuple[Tensor, Tensor]:
    """The paper's evaluation: each of the first ``targets`` models (default all ``M``) in turn
    is the target and the other ``M - 1`` its shadows. Returns ``(scores, is_member)``, each
    ``(targets * N,)``."""
    m = confidences.shape[0]
    count = m if targets is None else min(targets, m)
    scores, members = [], []
    for t in range(count):
        keep = torch.arange(m) != t
        scores.append(lira_scores(confidences[t], confidences[keep], in_mask[keep], online=online))
        members.append(in_mask[t])
    return torch.cat(scores), torch.cat(members)


@dataclass
class LiraResult:
    """The figures of one membership audit: ``attacks`` maps ``"lira-online"``,
    ``"lira-offline"``, ``"threshold-loss"`` to :func:`membership_report` dicts."""

    attacks: dict[str, dict[str, Any]]
    shadows: int
    trained: int
    reused: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        best = max(self.attacks.values(), key=lambda r: r["tpr_at_0.1pct_fpr"])
        return {
            "tpr_at_0.1pct_fpr": best["tpr_at_0.1pct_fpr"],
            "tpr_at_1pct_fpr": max(r["tpr_at_1pct_fpr"] for r in self.attacks.values()),
            "auc": max(r["auc"] for r in self.attacks.values()),
            "shadows": self.shadows,
            "shadows_trained": self.trained,
            "shadows_reused": self.reused,
            "seconds": round(self.seconds, 3),
            "attacks": self.attacks,
        }


def run_lira(
    target: nn.Module,
    recipe: ShadowRecipe,
    x: Tensor,
    y: Tensor,
    is_member: Tensor,
    *,
    shadows: int,
    directory: str | os.PathLike[str],
    seed: int = 0,
    workers: int = 1,
    progress: ShadowProgress | None = None,
    x_val: Tensor | None = None,
    y_val: Tensor | None = None,
    attacks: Sequence[str] = ("lira-online", "lira-offline", "threshold-loss"),
    shifts: Sequence[tuple[int, int]] | None = None,
) -> LiraResult:
    """Audit ``target`` on a population ``x`` ``(N, ...)``, ``y`` ``(N,)`` whose true membership
    in the target's training set is ``is_member`` ``(N,)`` bool: train (or reuse) the shadows,
    then run each of ``attacks`` and report it (:func:`membership_report`); ``shifts``: LiRA
    queries these shifted views of each example too. Headline figures in
    :meth:`LiraResult.to_dict` are the strongest attack's."""
    known = {"lira-online", "lira-offline", "threshold-loss", "threshold-confidence"}
    for a in attacks:
        if a not in known:
            raise ConfigError(f"mia.attacks: expected some of {sorted(known)}, got {a!r}")
    start = time.perf_counter()
    shadow_set = train_shadows(
        recipe,
        x,
        y,
        shadows=shadows,
        directory=directory,
        seed=seed,
        workers=workers,
        x_val=x_val,
        y_val=y_val,
        progress=progress,
        shifts=shifts,
    )
    phi = view_confidences(target, x, y, shifts) if shifts else logit_confidence(target, x, y)
    out: dict[str, dict[str, Any]] = {}
    for a in attacks:
        if a.startswith("lira"):
            s = lira_scores(
                phi, shadow_set.confidences, shadow_set.in_mask, online=a == "lira-online"
            )
        else:
            s = threshold_scores(target, x, y, kind="loss" if a.endswith("loss") else "confidence")
        out[a] = membership_report(s.numpy(), is_member.numpy())
    return LiraResult(
        attacks=out,
        shadows=shadows,
        trained=shadow_set.trained,
        reused=shadow_set.reused,
        seconds=time.perf_counter() - start,
    )
