"""Tabular backdoors: a feature-pattern trigger that stays inside the schema's constraints.

The image triggers of :mod:`.attacks` stamp pixels; a row of a table has no corner to stamp and
a trigger that breaks the schema (an amount above the credit limit, a changed country) would be
rejected by the first validation step. :class:`FeaturePattern` sets a few features to fixed,
in-range values that are rare in the training data (the tabular trigger of the backdoor studies
on tabular networks, e.g. Pawelczyk et al. 2024, "Tabular data: is attention all you need?"
style; here in the BadNets dirty-label form of Gu et al. 2017):

* only **mutable** features (not ``immutable`` in the schema: the attacker controls them) that
  appear in **no relation** (changing them cannot break ``total == amount + shipping``);
* a numeric feature gets the centre of its least populated of ``bins`` equal-width bins of the
  unit range (integers snapped to a whole raw value); a categorical feature its rarest category;
* by default the ``k`` features whose chosen value is rarest.

Every triggered row is checked with :class:`~bastion.tabular.constraints.ConstraintSet` against
its clean row (bounds, immutables, integers, one-hot groups, relations) before it is returned.

Inputs are encoded unit-space rows ``(N, D)`` float32 (``D = len(schema.columns)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bastion.data.schema import FeatureSpec, TabularSchema
from bastion.errors import ConfigError, DataError
from bastion.poisoning.attacks import (
    PoisonedSet,
    check_class,
    check_rate,
    draw_poisons,
    success_figures,
)
from bastion.poisoning.candidate_scan import CandidateScanResult, flip_test
from bastion.tabular.constraints import ConstraintSet


@dataclass(frozen=True, eq=False)
class FeaturePattern:
    """A tabular trigger: encoded columns set to fixed unit values.

    Attributes:
        schema: the data set's schema.
        values: raw value per trigger feature (a number, or a category name).
        columns: int64 ``(K,)`` encoded columns the trigger writes.
        unit_values: float32 ``(K,)`` the unit values written there.
        clear: int64 ``(M,)`` encoded columns zeroed first (the other columns of each
            categorical trigger feature's one-hot group).
        rarity: per trigger feature, the share of the reference rows that already hold its
            value (its bin, for a numeric feature).

    Guarantee: :meth:`apply` returns rows that satisfy the schema's constraints whenever the
    clean rows do, with immutable columns unchanged; otherwise it raises :class:`DataError`.
    """

    schema: TabularSchema
    values: dict[str, float | str]
    columns: Tensor
    unit_values: Tensor
    clear: Tensor
    rarity: dict[str, float]

    def apply(self, x: Tensor) -> Tensor:
        """The rows ``x`` (``(N, D)`` unit space) with the pattern written; a new tensor."""
        d = len(self.schema.columns)
        if x.ndim != 2 or x.shape[1] != d:
            raise DataError(f"trigger: expected rows of shape (N, {d}), got {tuple(x.shape)}")
        out = x.clone()
        out[:, self.clear] = 0.0
        out[:, self.columns] = self.unit_values.to(out)
        feasible = ConstraintSet(self.schema).check(out.double(), x.double())
        bad = (~feasible.ok) & ConstraintSet(self.schema).check(x.double()).ok
        if bool(bad.any()):
            row = int(bad.nonzero()[0])
            raise DataError(
                f"trigger: row {row} breaks the schema once triggered "
                f"({', '.join(feasible.violations[row])})"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: kind, raw values, rarity of each value."""
        return {
            "kind": "feature-pattern",
            "values": dict(self.values),
            "rarity": {k: round(v, 4) for k, v in self.rarity.items()},
        }


def _eligible(schema: TabularSchema) -> list[FeatureSpec]:
    in_relation = {name for r in schema.relations for name in r.feature_names}
    return [f for f in schema.features if not f.immutable and f.name not in in_relation]


def _offsets(schema: TabularSchema) -> dict[str, int]:
    out, at = {}, 0
    for f in schema.features:
        out[f.name] = at
        at += f.width
    return out


def _rarest_value(
    feature: FeatureSpec, block: np.ndarray, bins: int
) -> tuple[float | str, list[float], float]:
    """(raw value, unit values of its columns, share of rows already there) for one feature
    whose encoded columns are ``block`` (``(N, width)``)."""
    n = max(1, len(block))
    if feature.type == "categorical":
        counts = block.sum(axis=0)
        j = int(np.argmin(counts))
        unit = [0.0] * feature.width
        unit[j] = 1.0
        return feature.categories[j], unit, float(counts[j]) / n
    col = block[:, 0]
    low, high = float(feature.min), float(feature.max)  # type: ignore[arg-type]
    span = high - low
    if feature.type == "integer" and span > 0:
        # one bin per whole value when there are few, else equal-width bins
        whole = np.arange(round(low), round(high) + 1)
        if len(whole) <= bins:
            raw_col = np.rint(low + col * span)
            counts = np.array([(raw_col == v).sum() for v in whole])
            j = int(np.argmin(counts))
            return float(whole[j]), [float((whole[j] - low) / span)], float(counts[j]) / n
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, _ = np.histogram(col, bins=edges)
    j = int(np.argmin(counts))
    u = float((edges[j] + edges[j + 1]) / 2)
    raw = low + u * span
    if feature.type == "integer" and span > 0:
        raw = float(np.clip(np.rint(raw), low, high))
        u = (raw - low) / span
    return raw, [u], float(counts[j]) / n


def feature_pattern_trigger(
    schema: TabularSchema,
    x_reference: Tensor,
    *,
    features: Sequence[str] | None = None,
    k: int = 3,
    bins: int = 10,
) -> FeaturePattern:
    """A :class:`FeaturePattern` on ``features`` (or the ``k`` eligible features whose rarest
    value is rarest in ``x_reference``, ``(N, D)`` unit rows, usually the training split).

    Raises :class:`ConfigError` naming ``poisoning.trigger.features[i]`` for an unknown,
    immutable or relation-bound feature, and ``poisoning.trigger.k`` when the schema has fewer
    eligible features than asked for.
    """
    d = len(schema.columns)
    if x_reference.ndim != 2 or x_reference.shape[1] != d:
        raise DataError(
            f"trigger: expected reference rows of shape (N, {d}), got {tuple(x_reference.shape)}"
        )
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ConfigError(f"poisoning.trigger.bins: expected an integer >= 2, got {bins!r}")
    eligible = _eligible(schema)
    by_name = {f.name: f for f in schema.features}
    if features is not None:
        names = {f.name for f in eligible}
        for i, name in enumerate(features):
            if name not in by_name:
                raise ConfigError(
                    f"poisoning.trigger.features[{i}]: unknown feature {name!r} (features: "
                    f"{', '.join(by_name)})"
                )
            if name not in names:
                raise ConfigError(
                    f"poisoning.trigger.features[{i}]: {name!r} is immutable or named in a "
                    "relation; expected a mutable feature outside every relation"
                )
        chosen = [by_name[n] for n in features]
    else:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(eligible):
            raise ConfigError(
                f"poisoning.trigger.k: expected an integer in 1..{len(eligible)} (the mutable "
                f"features outside every relation), got {k!r}"
            )
        chosen = eligible
    ref = x_reference.detach().double().cpu().numpy()
    offsets = _offsets(schema)
    picks = []
    for f in chosen:
        at = offsets[f.name]
        value, unit, share = _rarest_value(f, ref[:, at : at + f.width], bins)
        picks.append((share, f, value, unit))
    if features is None:
        picks = sorted(picks, key=lambda p: p[0])[:k]
        picks.sort(key=lambda p: offsets[p[1].name])
    columns: list[int] = []
    unit_values: list[float] = []
    clear: list[int] = []
    values: dict[str, float | str] = {}
    rarity: dict[str, float] = {}
    for share, f, value, unit in picks:
        at = offsets[f.name]
        if f.type == "categorical":
            clear.extend(range(at, at + f.width))
        columns.extend(range(at, at + len(unit)))
        unit_values.extend(unit)
        values[f.name] = value
        rarity[f.name] = share
    return FeaturePattern(
        schema,
        values,
        torch.tensor(columns, dtype=torch.int64),
        torch.tensor(unit_values, dtype=torch.float32),
        torch.tensor(clear, dtype=torch.int64),
        rarity,
    )


def feature_pattern_poison(
    x: Tensor,
    y: Tensor,
    pattern: FeaturePattern,
    *,
    rate: float,
    num_classes: int,
    target: int = 0,
    seed: int = 0,
) -> PoisonedSet:
    """Dirty-label feature-pattern poisoning: ``round(rate * N)`` rows whose label is not
    ``target``, drawn with ``numpy.random.default_rng(seed)``, get the pattern and the label
    ``target``. The record's ``trigger`` is None (the pattern is in ``settings``)."""
    if x.ndim != 2 or y.dtype != torch.int64 or y.shape != (len(x),):
        raise DataError(
            f"poisoning: expected rows (N, D) and int64 labels (N,), got {tuple(x.shape)} and "
            f"{y.dtype} {tuple(y.shape)}"
        )
    rate = check_rate(rate)
    target = check_class(target, num_classes, "poisoning.target")
    rng = np.random.default_rng(seed)
    chosen = draw_poisons(y != target, round(rate * len(y)), rng, what="rows")
    xp, yp = x.clone(), y.clone()
    if len(chosen):
        xp[chosen] = pattern.apply(x[chosen])
    yp[chosen] = target
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[chosen] = True
    settings = {"rate": rate, "target": target, "seed": seed, "trigger": pattern.to_dict()}
    return PoisonedSet(xp, yp, y.clone(), mask, "feature-pattern", settings, None)


def pattern_attack_success(
    model: nn.Module, x: Tensor, y: Tensor, pattern: FeaturePattern, *, target: int = 0
) -> dict[str, float]:
    """Attack success of ``pattern`` on rows ``x`` ``(N, D)`` with labels ``y`` ``(N,)``:
    over the rows whose label is not ``target``, ``attack_success_rate`` is the share of those
    classified correctly without the pattern that are classified ``target`` with it;
    ``triggered_as_target`` counts every triggered row classified ``target``;
    ``clean_miss_rate`` the rows classified ``target`` without the pattern."""
    keep = y != target
    xs, ys = x[keep], y[keep]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        before = model(xs).argmax(dim=1) if len(ys) else ys
        after = model(pattern.apply(xs)).argmax(dim=1) if len(ys) else ys
    model.train(was_training)
    return success_figures(before, after, ys, target)


def _cells(feature: FeatureSpec, block: np.ndarray, bins: int) -> tuple[np.ndarray, list[str]]:
    """Cell index per row ``(N,)`` and a name per cell for one feature's columns ``block``."""
    if feature.type == "categorical":
        return block.argmax(axis=1), [f"{feature.name}={c}" for c in feature.categories]
    low, high = float(feature.min), float(feature.max)  # type: ignore[arg-type]
    edges = np.linspace(0.0, 1.0, bins + 1)
    cell = np.clip(np.digitize(block[:, 0], edges[1:-1]), 0, bins - 1)
    names = [
        f"{feature.name} in [{low + edges[j] * (high - low):.4g}, "
        f"{low + edges[j + 1] * (high - low):.4g}]"
        for j in range(bins)
    ]
    return cell, names


#: Per feature: its spec, first encoded column, cell per row, cell names, cell sizes.
_Layout = tuple[FeatureSpec, int, np.ndarray, list[str], np.ndarray]


def _check_scan_args(x: Tensor, y: Tensor, schema: TabularSchema, *shares: float) -> None:
    """:func:`feature_value_scan`'s input checks (shapes; the four shares in (0, 1])."""
    d = len(schema.columns)
    if x.ndim != 2 or x.shape[1] != d or y.shape != (len(x),):
        raise DataError(
            f"scan: expected rows (N, {d}) and labels (N,), got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    names = ("min_purity", "max_share", "min_flip_share", "min_pattern_flip_share")
    for name, value in zip(names, shares, strict=True):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise ConfigError(f"scan.{name}: expected a number in (0, 1], got {value!r}")


def _shared_features(
    layout: list[_Layout], f: FeatureSpec, rows: np.ndarray, n: int, min_purity: float
) -> list[tuple[FeatureSpec, int]]:
    """The other features whose values the candidate's ``rows`` share: at least
    ``min_purity`` of them in one cell, at at least 3x that cell's share of all ``n`` rows (a
    trigger may span features)."""
    out = []
    for g, at_g, cell_g, _names_g, sizes_g in layout:
        if g is f:
            continue
        top = np.bincount(cell_g[rows], minlength=len(sizes_g))
        k = int(np.argmax(top))
        if top[k] >= min_purity * len(rows) and top[k] / len(rows) >= 3 * (sizes_g[k] / n):
            out.append((g, at_g))
    return out


def _layout(schema: TabularSchema, ref: np.ndarray, bins: int) -> list[_Layout]:
    """Per feature of ``schema``, its cells on the rows ``ref`` ``(N, D)`` (:data:`_Layout`)."""
    offsets = _offsets(schema)
    out: list[_Layout] = []
    for f in schema.features:
        at = offsets[f.name]
        cell, names = _cells(f, ref[:, at : at + f.width], bins)
        out.append((f, at, cell, names, np.bincount(cell, minlength=len(names))))
    return out


def _swap_test(
    model: nn.Module,
    xs: Tensor,
    rows: np.ndarray,
    outside: np.ndarray,
    swap: list[tuple[FeatureSpec, int]],
    label: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    """``(drop, share)``: the candidate's ``rows`` with the ``swap`` features' columns taken
    from donors drawn from ``outside`` (one ``rng.choice``), then :func:`flip_test`: the
    per-row drop in the probability of ``label`` and the share of predictions that leave it."""
    donors = rng.choice(outside, size=len(rows))
    swapped = xs[rows].clone()
    for g, at_g in swap:
        swapped[:, at_g : at_g + g.width] = xs[donors, at_g : at_g + g.width]
    drop, flips = flip_test(model, xs[rows], swapped, label)
    return drop.numpy(), float(flips.double().mean())


def feature_value_scan(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    schema: TabularSchema,
    *,
    bins: int = 10,
    min_count: int = 5,
    min_purity: float = 0.95,
    max_share: float = 0.1,
    min_flip_share: float = 0.5,
    min_pattern_flip_share: float = 0.25,
    seed: int = 0,
) -> CandidateScanResult:
    """Backdoor-value scan of a tabular training set: the tabular counterpart of
    :func:`~bastion.poisoning.text_backdoor.trigger_token_scan` (after Chen and Dai 2021).

    A cell is one category of a categorical feature or one of ``bins`` equal-width bins of a
    numeric feature's unit range. Candidates hold at least ``min_count`` and at most
    ``max_share * N`` rows (a backdoor is a small share of the data), at least ``min_purity``
    of them with one label ``c``. For each, the feature's columns of its rows of label ``c``
    are replaced by those of rows drawn (``numpy.random.default_rng(seed)``) from outside the
    cell, together with every other feature those rows share (at least ``min_purity`` of them
    in one cell holding at least three times its share of all rows: a trigger may span several
    features), and re-classified by ``model`` (trained on ``x``). The cell is flagged when at least
    ``min_flip_share`` of the predictions leave ``c``, or, for a pattern that spans several
    features, at least ``min_pattern_flip_share`` (a dozen rows that agree on three rare values
    and lose their label without them are no coincidence, even when the model misses part of
    the class they came from); then its rows of label ``c`` are flagged.

    Shapes: ``x`` ``(N, D)`` unit rows, ``y`` ``(N,)`` int64. Guarantee: only rows in a
    flagged cell are flagged.
    """
    _check_scan_args(x, y, schema, min_purity, max_share, min_flip_share, min_pattern_flip_share)
    rng = np.random.default_rng(seed)
    xs, labels = x.detach().cpu(), y.detach().cpu().numpy()
    n = len(labels)
    num_classes = int(labels.max()) + 1 if n else 0
    scores, flagged = np.zeros(n), np.zeros(n, dtype=bool)
    cells: list[dict[str, Any]] = []
    layout = _layout(schema, xs.double().numpy(), bins)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for f, at, cell, names, sizes in layout:
            for j, name in enumerate(names):
                inside = cell == j
                total = int(sizes[j])
                if total < min_count or total > max_share * n:
                    continue
                counts = np.bincount(labels[inside], minlength=num_classes)
                c = int(np.argmax(counts))
                if (purity := float(counts[c]) / total) < min_purity:
                    continue
                rows = np.flatnonzero(inside & (labels == c))
                swap = [(f, at), *_shared_features(layout, f, rows, n, min_purity)]
                drop, share = _swap_test(model, xs, rows, np.flatnonzero(~inside), swap, c, rng)
                scores[rows] = np.maximum(scores[rows], drop)
                bar = min_pattern_flip_share if len(swap) > 1 else min_flip_share
                if verdict := share >= min(bar, min_flip_share):
                    flagged[rows] = True
                cells.append(
                    {
                        "cell": name, "label": c, "counts": [int(v) for v in counts],
                        "purity": round(purity, 4), "swapped": [g.name for g, _ in swap],
                        "flip_share": round(share, 4), "mean_drop": round(float(drop.mean()), 4),
                        "flagged": verdict,
                    }
                )  # fmt: skip
    model.train(was_training)
    cells.sort(key=lambda r: (-r["flip_share"], -sum(r["counts"])))
    settings = {
        "bins": bins, "min_count": min_count, "min_purity": min_purity, "max_share": max_share,
        "min_flip_share": min_flip_share, "min_pattern_flip_share": min_pattern_flip_share,
        "seed": seed,
    }  # fmt: skip
    return CandidateScanResult(
        "feature-value", "cell", torch.from_numpy(scores), torch.from_numpy(flagged), cells,
        settings,
    )  # fmt: skip
