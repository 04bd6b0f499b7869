"""The two audits behind ``bastion audit privacy`` and ``bastion audit extraction``.

Both return a JSON-ready document shaped like a scorecard (``schema_version``, a ``models``
mapping), so ``bastion gate`` can judge it with dotted metric paths such as
``mia.tpr_at_0.1pct_fpr``, ``inversion.identified`` or ``extraction.fidelity_at_budget``.

* :func:`privacy_audit`: membership inference (LiRA online and offline, loss threshold) and
  model inversion against one model of a run directory. The data and split come from the
  model's sidecar (:func:`bastion.provenance.load_model_split`); members are its training
  split, non-members its test split. Shadows are trained with the run's own recipe (the
  ``config.yaml`` of the run directory: the model entry's training settings, objective and the
  threat model) on seeded random halves of that population.
* :func:`extraction_audit`: Knockoff Nets (soft and label-only) and Jacobian augmentation
  against any queryable target, queries drawn from data the victim was not trained on (the
  test split of its recorded split), fidelity and accuracy measured on the validation split,
  and the transferability of PGD from the best stolen copy back to the victim.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from bastion.data import Dataset
from bastion.errors import BastionError, ConfigError
from bastion.privacy.extraction import (
    ExtractionResult,
    StudentSettings,
    jacobian_augmentation,
    knockoff_nets,
    student_spec,
    transferability,
)
from bastion.privacy.inversion import (
    InversionSettings,
    class_means,
    inversion_similarity,
    invert_classes,
    save_grid,
)
from bastion.privacy.membership import ShadowProgress, ShadowRecipe, run_lira
from bastion.threat import ThreatModel

if TYPE_CHECKING:
    from bastion.data.core import Split
    from bastion.models.zoo import ModelSpec
    from bastion.serve.budget import CoverageReference

__all__ = [
    "EXTRACTION_METHODS",
    "default_budgets",
    "extraction_audit",
    "privacy_audit",
    "resolve_run_model",
    "run_recipe",
]

SCHEMA_VERSION = 1
EXTRACTION_METHODS = ("knockoff", "knockoff-labels", "jacobian")


def resolve_run_model(run_dir: Path, model: str | None) -> tuple[Path, Path]:
    """``(run directory, model stem)`` for ``RUN_DIR`` (and ``--model NAME``; default: the
    only model, else ``baseline``, which is the undefended one), or for a model file inside a
    run's ``models/`` folder."""
    if run_dir.is_file() or run_dir.with_name(run_dir.name + ".json").is_file():
        stem = run_dir.with_suffix("") if run_dir.suffix in (".safetensors", ".json") else run_dir
        return stem.parent.parent, stem
    if not run_dir.is_dir():
        raise BastionError(f"RUN_DIR: not a run directory or model file: {run_dir}")
    models = sorted(p.with_suffix("") for p in (run_dir / "models").glob("*.safetensors"))
    if not models:
        raise BastionError(f"RUN_DIR: {run_dir / 'models'} holds no saved model")
    names = [m.name for m in models]
    if model is not None:
        if model not in names:
            raise BastionError(f"--model: expected one of {', '.join(names)}, got {model!r}")
        return run_dir, models[names.index(model)]
    if len(models) == 1:
        return run_dir, models[0]
    if "baseline" in names:
        return run_dir, models[names.index("baseline")]
    raise BastionError(f"--model: the run has several models; name one of {', '.join(names)}")


def run_recipe(run_dir: Path, name: str, spec: Any) -> ShadowRecipe:
    """The recipe of model ``name`` from ``run_dir/config.yaml`` (its training settings and
    objective or its DP-SGD settings, the run's threat model) and the saved model's ``spec``."""
    from bastion.config import load_config

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise BastionError(
            f"{path}: not found; the shadow models must be trained with the recipe of the "
            "audited model, which the run's config.yaml records"
        )
    cfg, _ = load_config(path)
    entries = {m.name: m for m in cfg.models}
    if name not in entries:
        raise BastionError(
            f"{path}: has no model entry {name!r} (entries: {', '.join(entries) or 'none'})"
        )
    entry = entries[name]
    dp = None
    if entry.dp is not None:  # a DP-SGD model: its shadows are trained with DP-SGD too
        from bastion.privacy.dp import dp_settings_from

        dp = dp_settings_from(entry.dp, where=f"models.{name}.dp")
    return ShadowRecipe(spec, cfg.train_settings(entry), cfg.threat_model(), dp)


def _population(ds: Dataset, population: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """The audited population: the training split (members) then the test split
    (non-members), each cut to ``population`` examples when given; returns ``x`` ``(N, ...)``,
    ``y`` ``(N,)`` and the ``(N,)`` member mask. :class:`ConfigError` for a population under 2."""
    if population is not None and population < 2:
        raise ConfigError(f"--population: expected an integer >= 2, got {population}")
    train, test = ds.train, ds.test
    if population is not None:
        train, test = train.subset(population), test.subset(population)
    x = torch.cat([train.x, test.x])
    y = torch.cat([train.y, test.y])
    member = torch.cat(
        [torch.ones(len(train), dtype=torch.bool), torch.zeros(len(test), dtype=torch.bool)]
    )
    return x, y, member


def _inversion(
    net: nn.Module, ds: Dataset, settings: InversionSettings | None, grid: Path
) -> dict[str, Any]:
    """Model inversion of every class (Fredrikson et al. 2015), started from the mean test
    input (the attacker's prior), scored against the training class means; for 1- or
    3-channel images the reconstructions and means are also saved as the PNG ``grid``."""
    classes = torch.arange(ds.num_classes)
    start = ds.test.x.mean(0)  # the attacker's prior: data it holds, not the training set
    recon, info = invert_classes(net, classes, start, settings=settings, bounds=ds.bounds)
    means = class_means(ds.train.x, ds.train.y, ds.num_classes)
    sim = inversion_similarity(recon, classes, means, data_range=ds.bounds[1] - ds.bounds[0])
    inv: dict[str, Any] = {**sim, "confidence": info["confidence"], "steps": info["steps"]}
    if ds.kind == "image" and ds.input_shape[0] in (1, 3):
        inv["grid"] = str(save_grid(grid, [recon, means], bounds=ds.bounds))
    return inv


def privacy_audit(
    run_dir: Path,
    *,
    model: str | None = None,
    shadows: int = 8,
    workers: int = 1,
    seed: int = 0,
    shadow_dir: Path | None = None,
    population: int | None = None,
    inversion: bool = True,
    inversion_settings: InversionSettings | None = None,
    grid: Path | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    progress: ShadowProgress | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Membership inference and inversion against a run's model (see the module docstring).

    Args:
        population: use at most this many examples of each of the training (members) and test
            (non-members) splits (a quicker audit); default all.
        shadow_dir: where shadows are kept (default ``RUN_DIR/privacy/shadows-<model>``), so a
            repeated or interrupted audit reuses the finished ones.
        grid: where to write the inversion PNG (default ``RUN_DIR/privacy/inversion-<model>.png``).
    """
    from bastion.models import load_model, read_sidecar
    from bastion.provenance import load_model_split

    root, stem = resolve_run_model(run_dir, model)
    net = load_model(stem)
    sidecar = read_sidecar(stem)
    name = str((sidecar.get("metadata") or {}).get("name") or stem.name)
    source = load_model_split(sidecar, data_dir=data_dir, where=str(stem), warn=warn)
    ds = source.data
    recipe = run_recipe(root, name, net.spec)
    x, y, member = _population(ds, population)
    folder = shadow_dir or root / "privacy" / f"shadows-{stem.name}"
    lira = run_lira(
        net,
        recipe,
        x,
        y,
        member,
        shadows=shadows,
        directory=folder,
        seed=seed,
        workers=workers,
        progress=progress,
        x_val=ds.val.x,
        y_val=ds.val.y,
    )
    mia = {
        **lira.to_dict(),
        "population": int(x.shape[0]),
        "shadow_dir": str(folder),
        "split": source.note,
        "split_verified": source.verified,
    }
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "privacy-audit",
        "model": str(stem),
        "data": ds.name,
        "mia": mia,
    }
    if inversion:
        grid_path = grid or root / "privacy" / f"inversion-{stem.name}.png"
        doc["inversion"] = _inversion(net, ds, inversion_settings, grid_path)
    doc["models"] = {name: {k: v for k, v in doc.items() if k in ("mia", "inversion")}}
    return doc


def default_budgets(pool: int) -> list[int]:
    """Four query budgets up to the pool size: ``P/8, P/4, P/2, P``."""
    return sorted({max(1, pool // 8), max(1, pool // 4), max(1, pool // 2), pool})


def _steal(
    method: str,
    victim: nn.Module,
    data: Dataset,
    pool: Split,
    held: Split,
    spec: ModelSpec,
    order: list[int],
    settings: StudentSettings | None,
    seed: int,
    step: Callable[[dict[str, Any]], None],
) -> ExtractionResult:
    """One extraction method up to the largest budget: Jacobian augmentation (Papernot et
    al. 2017) from ``10 x classes`` seed inputs of the pool (at most a quarter of it), with
    enough rounds to reach the budget; else Knockoff Nets (Orekondy et al. 2019) at each
    budget, on probabilities or (``knockoff-labels``) labels only."""
    if method == "jacobian":
        per_seed = max(1, min(len(pool) // 4, 10 * data.num_classes))
        rounds = max(1, 1 + math.ceil(math.log2(max(order[-1] / per_seed, 1.0))))
        return jacobian_augmentation(
            victim,
            pool.x[:per_seed],
            held.x,
            held.y,
            spec,
            rounds=rounds,
            max_queries=max(order[-1], per_seed),
            bounds=data.bounds,
            settings=settings,
            seed=seed,
            progress=step,
        )
    return knockoff_nets(
        victim,
        pool.x,
        held.x,
        held.y,
        spec,
        budgets=order,
        labels_only=method == "knockoff-labels",
        settings=settings,
        seed=seed,
        progress=step,
    )


def extraction_audit(
    victim: nn.Module,
    data: Dataset,
    *,
    target_name: str,
    methods: Sequence[str] = EXTRACTION_METHODS,
    budgets: Sequence[int] | None = None,
    student: str | None = None,
    threat: ThreatModel | None = None,
    settings: StudentSettings | None = None,
    transfer_examples: int = 500,
    seed: int = 0,
    note: str = "",
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Steal ``victim`` with each of ``methods`` and report fidelity against queries.

    The attacker's queries come from ``data.test`` (not the victim's training split when
    ``data`` is its recorded split), fidelity and accuracy are measured on ``data.val``.
    ``student``: the stolen copy's architecture (default ``small-cnn`` for images, ``mlp``
    otherwise). ``threat``: for the transferability check (default linf 0.1 in ``data``'s
    bounds). The headline ``extraction.fidelity_at_budget`` is the best method's.
    """
    for m in methods:
        if m not in EXTRACTION_METHODS:
            raise ConfigError(
                f"--method: expected some of {', '.join(EXTRACTION_METHODS)}, got {m!r}"
            )
    if not methods:
        raise ConfigError("--method: expected at least one extraction method")
    pool, held = data.test, data.val
    if len(held) == 0:
        held = data.test
    if len(pool) < 2 or len(held) < 1:
        raise ConfigError(f"data: {data.name!r} has too few test/validation examples to audit")
    arch = student or ("small-cnn" if data.kind == "image" else "mlp")
    spec = student_spec(arch, pool.x, data.num_classes)
    order = sorted(budgets) if budgets else default_budgets(len(pool))
    threat = threat or ThreatModel("linf", 0.1, data.bounds)
    results: dict[str, ExtractionResult] = {}
    for m in methods:

        def step(point: dict[str, Any], m: str = m) -> None:
            if progress is not None:
                progress(m, point)

        results[m] = _steal(m, victim, data, pool, held, spec, order, settings, seed, step)
    best = max(results.values(), key=lambda r: r.curve[-1]["fidelity"])
    best.transfer = transferability(
        best.student,
        victim,
        held.x[:transfer_examples],
        held.y[:transfer_examples],
        threat,
        seed=seed,
    )
    per_method = {m: r.to_dict() for m, r in results.items()}
    extraction = {
        "fidelity_at_budget": best.curve[-1]["fidelity"],
        "accuracy_at_budget": best.curve[-1]["accuracy"],
        "best_method": best.method,
        "queries": max(r.queries for r in results.values()),
        "victim_accuracy": best.victim_accuracy,
        "transfer_success_rate": best.transfer["transfer_success_rate"],
        "student": arch,
        "pool": f"{data.name} test split ({len(pool)} inputs)",
        "held_out": f"{data.name} validation split ({len(held)} inputs)",
        "note": note,
        "methods": per_method,
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "extraction-audit",
        "target": target_name,
        "data": data.name,
        "extraction": extraction,
        "models": {target_name: {"extraction": extraction}},
    }


def extraction_reference(
    run_dir: Path,
    *,
    model: str | None = None,
    cells_per_class: int = 10,
    data_dir: str | os.PathLike[str] | None = None,
    out: Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[Path, CoverageReference]:
    """Fit the coverage reference of the service's information-budget extraction monitor
    (:class:`bastion.serve.budget.CoverageReference`) on the training split a run's model
    recorded (verified against its digest) and save it where ``bastion serve`` finds it,
    ``RUN_DIR/guard/extraction-reference.safetensors`` (or ``out``)."""
    from bastion.models import read_sidecar
    from bastion.provenance import load_model_split
    from bastion.serve.budget import CoverageReference
    from bastion.serve.runner import EXTRACTION_REFERENCE

    root, stem = resolve_run_model(run_dir, model)
    source = load_model_split(read_sidecar(stem), data_dir=data_dir, where=str(stem), warn=warn)
    train = source.data.train
    reference = CoverageReference.fit(
        train.x.numpy(), train.y.numpy(), cells_per_class=cells_per_class
    )
    path = out or root / "guard" / EXTRACTION_REFERENCE
    reference.save(path)
    return path, reference
