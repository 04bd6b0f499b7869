"""Tabular threat channel: constrained attacks and constrained adversarial training, measured.

For two data sets, the synthetic fraud example (``examples/data/fraud.csv`` with its schema:
immutables, integers, categoricals, costs, three relations) and sklearn's breast cancer set
(30 floats, with the ten relations ``mean X <= worst X`` that hold in the data), this trains a
standard tabular MLP, a constrained-PGD-AT tabular MLP and a gradient-boosting classifier and
attacks them under the schema's constraints (``bastion.tabular.experiment.run_tabular_dataset``).
It also runs the unconstrained PGD of ``bastion.attacks`` on the standard MLP with a plain
threat of the same eps, to show how many of its "adversarial examples" are not valid rows.

Writes ``benchmarks/results/tabular.md`` and ``tabular.json``. Run from the project root::

    python benchmarks/tabular.py            # about 5-10 minutes on 2 CPU cores
    python benchmarks/tabular.py --quick    # a smoke run, under a minute
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion.attacks.gradient import PGD
from bastion.data.core import Dataset, fingerprint_arrays
from bastion.data.schema import Relation, TabularSchema
from bastion.data.tabular import breast_cancer_schema, tabular_dataset
from bastion.models import load_model
from bastion.tabular import TabularThreat, check_feasible
from bastion.tabular.experiment import TabularConfig, run_tabular_dataset
from bastion.tabular.loading import load_constrained_csv
from bastion.threat import ThreatModel

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def breast_cancer_with_relations(seed: int) -> Dataset:
    """sklearn's breast cancer set with the relations ``mean X <= worst X`` that hold."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    raw = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    names = [str(n) for n in bunch.feature_names]
    base = breast_cancer_schema(raw, names)
    relations = []
    for name in names:
        if name.startswith("mean "):
            worst = "worst " + name.removeprefix("mean ")
            i, j = names.index(name), names.index(worst)
            if bool(np.all(raw[:, i] <= raw[:, j])):
                relations.append(
                    Relation.parse(f"{name.replace(' ', '_')} <= {worst.replace(' ', '_')}")
                )
    features = tuple(
        type(f)(name=f.name.replace(" ", "_"), type=f.type, min=f.min, max=f.max)
        for f in base.features
    )
    schema = TabularSchema(base.target, base.classes, features, tuple(relations))
    return tabular_dataset(
        "breast-cancer",
        raw,
        y,
        schema,
        fingerprint=fingerprint_arrays("breast-cancer", [raw, y]),
        seed=seed,
        val_fraction=0.1,
        test_fraction=0.3,
    )


def unconstrained_pgd(card: dict[str, Any], data: Dataset, config: TabularConfig) -> dict[str, Any]:
    """Plain linf PGD (no constraints, unit costs) on the standard MLP: robust accuracy and the
    share of its outputs that are not valid rows."""
    assert data.schema is not None
    model = load_model(card["models"]["standard-mlp"]["path"])
    x, y = data.test.x[: config.examples], data.test.y[: config.examples]
    plain = ThreatModel(norm=config.norm, eps=config.eps)
    res = PGD(steps=config.attack_steps)(
        model, x, y, plain, generator=torch.Generator().manual_seed(0)
    )
    report = check_feasible(data.schema, res.x_adv, x_ref=x)
    broken = res.success & ~report.ok
    tabular = TabularThreat(norm=config.norm, eps=config.eps, schema=data.schema)
    return {
        "robust_accuracy": round(float((~res.success).float().mean()), 4),
        "infeasible_share": round(float((~report.ok).float().mean()), 4),
        "successes_infeasible": round(float(broken.sum()) / max(int(res.success.sum()), 1), 4),
        "outside_weighted_ball": round(float((~tabular.in_ball(res.x_adv, x)).float().mean()), 4),
    }


def table(title: str, card: dict[str, Any], plain: dict[str, Any]) -> list[str]:
    lines = [f"### {title}", ""]
    t = card["threat"]
    lines.append(
        f"Threat: {t['norm']} eps {t['eps']} (cost-weighted: {t['use_costs']}), {t['columns']} "
        f"encoded columns, {t['immutable_columns']} immutable, {t['integer_features']} integer "
        f"and {t['categorical_features']} categorical features, {len(t['relations'])} relations. "
        f"Attacked: the first {card['data']['attacked']} test rows."
    )
    lines += ["", "| model | clean acc | attack | robust acc | feasible | mean queries | seconds |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for name, entry in card["models"].items():
        for attack, f in entry["attacks"].items():
            lines.append(
                f"| {name} | {entry['clean_accuracy']:.3f} | {attack} | {f['robust_accuracy']:.3f} "
                f"| {f['feasible_rate']:.3f} | {f['mean_queries']:.0f} | {f['seconds']:.1f} |"
            )
        lines.append(
            f"| {name} | {entry['clean_accuracy']:.3f} | **worst case** | "
            f"**{entry['robust_accuracy']:.3f}** | | | |"
        )
    lines += [
        "",
        "Unconstrained PGD (plain linf threat, no schema) on the standard MLP: robust accuracy "
        f"{plain['robust_accuracy']:.3f}; {100 * plain['infeasible_share']:.0f}% of its outputs "
        f"violate the schema, including {100 * plain['successes_infeasible']:.0f}% of its "
        f"'successes'; {100 * plain['outside_weighted_ball']:.0f}% lie outside the "
        "cost-weighted ball.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny kernels: one thread is faster than two fighting
    common: dict[str, Any] = {"epochs": 20, "examples": 300, "attack_steps": 30, "queries": 300}
    if args.quick:
        common = {
            "epochs": 2,
            "examples": 20,
            "attack_steps": 5,
            "queries": 20,
            "hsj_iterations": 2,
            "hsj_probes": 10,
            "gbm_estimators": 20,
        }
    runs = [
        ("fraud.csv (synthetic), linf eps 0.02", "fraud", {**common, "eps": 0.02}),
        ("fraud.csv (synthetic), linf eps 0.05", "fraud", {**common, "eps": 0.05}),
        ("breast cancer, linf eps 0.05", "breast-cancer", {**common, "eps": 0.05}),
    ]
    out: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread",
        "seed": args.seed,
        "runs": [],
    }
    lines = [
        "# Tabular threat channel: constrained attacks and constrained adversarial training",
        "",
        "Produced by `python benchmarks/tabular.py` (seed "
        f"{args.seed}, {'quick' if args.quick else 'full'} settings) on {out['machine']}, CPU.",
        "Robust accuracy counts an example as robust when the model classifies it correctly and "
        "no attack found an admissible (schema-valid, in-budget) adversarial row; every attack "
        "output is checked with `check_feasible` ('feasible' column).",
        "",
    ]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, (title, which, settings) in enumerate(runs):
            config = TabularConfig.model_validate(settings)
            if which == "fraud":
                data = load_constrained_csv(
                    ROOT / "examples" / "data" / "fraud.csv",
                    ROOT / "examples" / "data" / "fraud-schema.yaml",
                    seed=args.seed,
                )
            else:
                data = breast_cancer_with_relations(args.seed)
            card = run_tabular_dataset(config, data, Path(tmp) / str(i), seed=args.seed)
            plain = unconstrained_pgd(card, data, config)
            out["runs"].append({"title": title, "scorecard": card, "unconstrained_pgd": plain})
            lines += table(title, card, plain)
            print(f"{title}: done after {time.perf_counter() - start:.0f} s", flush=True)
    lines.append(f"Total time: {time.perf_counter() - start:.0f} s.")
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    (RESULTS / f"tabular{suffix}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (RESULTS / f"tabular{suffix}.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
