"""External cross-check of a run's robust accuracy with a peer library (torchattacks).

A robust accuracy that only one attack family has measured is not to be trusted: gradient
masking fools PGD but not a stronger step-size schedule (APGD, Croce & Hein 2020) or a
gradient-free search (Square, Andriushchenko et al. 2020). For each model of a finished run this
script measures, on the first ``--examples`` test examples at the run's threat eps:

* bastion's PGD-50 with ``--restarts`` random restarts,
* torchattacks' APGD-CE (``--apgd-steps`` steps),
* torchattacks' Square (``--square-queries`` queries, linf only) on the examples that survived both,

and the worst case (an example counts as robust only if it survives all three). Results go to
``benchmarks/results/crosscheck-<run>.json`` and ``.md``.

Usage::

    python benchmarks/crosscheck.py runs/mnist-linf-YYYYmmdd-HHMMSS \\
        --data-dir ../shared/datasets/mnist
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from bastion import load_model
from bastion.attacks import PGD
from bastion.attacks.base import predict
from bastion.config import parse_config
from bastion.data import load_dataset
from bastion.evaluation.scorecard import package_versions, write_json
from bastion.threat import ThreatModel


def _batched_correct(model: nn.Module, x: Tensor, y: Tensor, bs: int = 500) -> Tensor:
    return torch.cat([predict(model, x[i : i + bs]) == y[i : i + bs] for i in range(0, len(x), bs)])


def _peer_mask(
    attack: Any, model: nn.Module, x: Tensor, y: Tensor, alive: Tensor, bs: int
) -> Tensor:
    """Examples among ``alive`` that the torchattacks attack fails to break."""
    out = alive.clone()
    idx = alive.nonzero().squeeze(1)
    for i in range(0, idx.numel(), bs):
        b = idx[i : i + bs]
        adv = attack(x[b], y[b])
        if (adv - x[b]).abs().amax() > attack.eps + 1e-5:
            raise RuntimeError(f"{type(attack).__name__} left the eps ball")
        out[b] = predict(model, adv) == y[b]
    return out


def crosscheck_model(
    model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, args: argparse.Namespace
) -> dict[str, Any]:
    import torchattacks

    norm = {"linf": "Linf", "l2": "L2"}[threat.norm]
    clean = _batched_correct(model, x, y)
    rec: dict[str, Any] = {"clean_accuracy": float(clean.float().mean())}
    t = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed)
    pgd = PGD(steps=50, restarts=args.restarts)
    pgd_mask = clean.clone()
    idx = clean.nonzero().squeeze(1)
    for i in range(0, idx.numel(), args.batch_size):
        b = idx[i : i + args.batch_size]
        pgd_mask[b] = ~pgd(model, x[b], y[b], threat, generator=gen).success
    rec[f"bastion_pgd50x{args.restarts}"] = float(pgd_mask.float().mean())
    rec["seconds_pgd"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    apgd = torchattacks.APGD(
        model,
        norm=norm,
        eps=threat.eps,
        steps=args.apgd_steps,
        n_restarts=1,
        loss="ce",
        seed=args.seed,
    )
    apgd_mask = _peer_mask(apgd, model, x, y, clean, args.batch_size)
    rec["torchattacks_apgd_ce"] = float(apgd_mask.float().mean())
    rec["seconds_apgd"] = round(time.perf_counter() - t, 1)
    worst = pgd_mask & apgd_mask

    if args.square_queries > 0:
        t = time.perf_counter()
        square = torchattacks.Square(
            model,
            norm=norm,
            eps=threat.eps,
            n_queries=args.square_queries,
            n_restarts=1,
            seed=args.seed,
        )
        # Square runs on every clean-correct example for its own figure, then joins the worst case.
        sq_mask = _peer_mask(square, model, x, y, clean, args.batch_size)
        rec["torchattacks_square"] = float(sq_mask.float().mean())
        rec["seconds_square"] = round(time.perf_counter() - t, 1)
        worst &= sq_mask
    rec["worst_case_accuracy"] = float(worst.float().mean())
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "run_dir", type=Path, help="a finished run directory (holds config.yaml, models/)"
    )
    ap.add_argument("--data-dir", default=None, help="where the data set's files are (MNIST)")
    ap.add_argument("--models", nargs="*", default=None, help="model names (default: all)")
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--apgd-steps", type=int, default=100)
    ap.add_argument("--square-queries", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    raw = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    cfg = parse_config(raw, source=str(args.run_dir / "config.yaml"))
    data = load_dataset(
        cfg.data.name,
        data_dir=args.data_dir,
        seed=cfg.seed,
        val_fraction=cfg.data.val_fraction,
        test_fraction=cfg.data.test_fraction,
    )
    threat = cfg.threat_model()
    test = data.test.subset(min(args.examples, len(data.test)))
    names = args.models or [e.name for e in cfg.models]
    results: dict[str, Any] = {}
    for name in names:
        model = load_model(args.run_dir / "models" / name)
        print(f"[crosscheck] {name} ...", file=sys.stderr, flush=True)
        results[name] = crosscheck_model(model, test.x, test.y, threat, args)
        print(f"[crosscheck] {name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)

    doc = {
        "run": str(args.run_dir),
        "threat": threat.to_dict(),
        "examples": len(test),
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("run_dir", "out", "data_dir")
        },
        "versions": package_versions(),
        "models": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"crosscheck-{cfg.name}"
    write_json(doc, stem.with_suffix(".json"))
    cols = [
        "clean_accuracy",
        f"bastion_pgd50x{args.restarts}",
        "torchattacks_apgd_ce",
        "torchattacks_square",
        "worst_case_accuracy",
    ]
    lines = [
        f"# Cross-check of {args.run_dir.name} ({threat.norm} eps {threat.eps}, first "
        f"{len(test)} test examples)",
        "",
        "| model | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | " + " | ".join(f"{r[c]:.1%}" if c in r else "-" for c in cols) + " |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
