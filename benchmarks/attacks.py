"""Side-by-side attack benchmark: bastion against torchattacks and ART on the same model,
images and machine, in one process.

For FGSM, PGD-20, CW-L2 and the standard AutoAttack suite it records wall-clock seconds and
the robust accuracy each library leaves (lower is a stronger attack). Settings are matched:
PGD-20 with step 2.5 eps / 20 and a random start; CW-L2 with 100 steps, learning rate 0.01
and confidence 0; AutoAttack "standard" (APGD-CE, APGD-T, FAB-T, Square, 100 steps, 5,000
queries; torchattacks' own ``AutoAttack`` class runs only 10 steps, so the matched row builds
the suite from its parts with 100 steps, and the class's default is a separate row) against
bastion's ``standard`` cascade; ``bastion-bf16`` rows take gradients under bfloat16 autocast
(successes decided in float32); ``bastion-bf16-last`` is PGD-20 with bf16 gradients and the
peers' own last-iterate setting (no early stop). Results go to
``benchmarks/results/attacks-<run>-<model>.json`` and ``.md``.

The model is handed to every library as :func:`bastion.load_model` returns it, as a user would
pass a trained model: its parameters require gradients. ART's ``loss_gradient`` calls
``loss.backward()`` and so also computes (and accumulates) parameter gradients it never uses;
bastion and torchattacks differentiate with respect to the input only. ``--freeze-params``
switches parameter gradients off for every library (the setting of earlier runs, kinder to ART).

Usage::

    python benchmarks/attacks.py runs/mnist-linf-<stamp> --model hardened \\
        --data-dir ../shared/datasets/mnist --examples 10000 --slow-examples 500
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from bastion import load_model
from bastion.attacks import FGSM, PGD, CarliniWagnerL2, Cascade
from bastion.attacks.base import predict
from bastion.config import parse_config
from bastion.data import load_dataset
from bastion.evaluation.scorecard import package_versions, write_json
from bastion.threat import ThreatModel


def _acc(model: nn.Module, x_adv: Tensor, y: Tensor, bs: int = 1000) -> float:
    correct = torch.cat(
        [predict(model, x_adv[i : i + bs]) == y[i : i + bs] for i in range(0, len(y), bs)]
    )
    return float(correct.float().mean())


def _timed(fn: Callable[[], Tensor]) -> tuple[Tensor, float]:
    t = time.perf_counter()
    out = fn()
    if out.is_cuda:
        torch.cuda.synchronize(out.device)
    return out, time.perf_counter() - t


def _batched(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, bs: int) -> Tensor:
    return torch.cat([fn(x[i : i + bs], y[i : i + bs]).detach() for i in range(0, len(y), bs)])


def _bastion(
    attack: Any, model: nn.Module, threat: ThreatModel, bs: int
) -> Callable[[Tensor, Tensor], Tensor]:
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(0)

    def run(x: Tensor, y: Tensor) -> Tensor:
        return attack(model, x, y, threat, generator=gen).x_adv

    return run


def _art_classifier(model: nn.Module, input_shape: tuple[int, ...], classes: int) -> Any:
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=input_shape,
        nb_classes=classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if next(model.parameters()).is_cuda else "cpu",
    )


def _art(attack: Any) -> Callable[[Tensor, Tensor], Tensor]:
    def run(x: Tensor, y: Tensor) -> Tensor:
        out = attack.generate(x=x.cpu().numpy(), y=y.cpu().numpy()).astype(np.float32)
        return torch.from_numpy(out).to(x.device)

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--model", default="hardened")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--examples", type=int, default=10000, help="for FGSM and PGD-20")
    ap.add_argument("--slow-examples", type=int, default=500, help="for CW-L2 and AutoAttack")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="subset of: fgsm pgd20 cw autoattack")
    ap.add_argument(
        "--libraries",
        nargs="*",
        default=[
            "bastion",
            "bastion-early-stop",
            "bastion-bf16",
            "bastion-bf16-last",
            "torchattacks",
            "torchattacks-10-steps",
            "art",
        ],
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where the model and data live")
    ap.add_argument(
        "--freeze-params",
        action="store_true",
        help="switch parameter gradients off for every library (see the docstring)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import torchattacks

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
    eps = threat.eps
    device = torch.device(args.device)
    model = load_model(args.run_dir / "models" / args.model).to(device)
    if args.freeze_params:
        for p in model.parameters():
            p.requires_grad_(False)
    shape, classes = tuple(data.input_shape), data.num_classes
    bs = args.batch_size
    pgd_step = 2.5 * eps / 20
    suites: dict[str, dict[str, Callable[[], Callable[[Tensor, Tensor], Tensor]]]] = {
        "fgsm": {
            "bastion": lambda: _bastion(FGSM(), model, threat, bs),
            "bastion-bf16": lambda: _bastion(FGSM(precision="bf16"), model, threat, bs),
            "torchattacks": lambda: torchattacks.FGSM(model, eps=eps),
            "art": lambda: _art(
                __import__(
                    "art.attacks.evasion", fromlist=["FastGradientMethod"]
                ).FastGradientMethod(_art_classifier(model, shape, classes), eps=eps, batch_size=bs)
            ),
        },
        "pgd20": {
            "bastion": lambda: _bastion(
                PGD(steps=20, step_size=2.5 / 20, early_stop=False), model, threat, bs
            ),
            # bastion's evaluation defaults: stop an example once fooled; bf16 gradients
            "bastion-early-stop": lambda: _bastion(
                PGD(steps=20, step_size=2.5 / 20), model, threat, bs
            ),
            "bastion-bf16": lambda: _bastion(
                PGD(steps=20, step_size=2.5 / 20, precision="bf16"), model, threat, bs
            ),
            # the matched setting of the peers (last iterate, no early stop), bf16 gradients
            "bastion-bf16-last": lambda: _bastion(
                PGD(steps=20, step_size=2.5 / 20, precision="bf16", early_stop=False),
                model,
                threat,
                bs,
            ),
            "torchattacks": lambda: torchattacks.PGD(
                model, eps=eps, alpha=pgd_step, steps=20, random_start=True
            ),
            "art": lambda: _art(
                __import__(
                    "art.attacks.evasion", fromlist=["ProjectedGradientDescent"]
                ).ProjectedGradientDescent(
                    _art_classifier(model, shape, classes),
                    eps=eps,
                    eps_step=pgd_step,
                    max_iter=20,
                    num_random_init=1,
                    batch_size=bs,
                    verbose=False,
                )
            ),
        },
        "cw": {
            "bastion": lambda: _bastion(
                CarliniWagnerL2(steps=100, lr=0.01, binary_search_steps=1, initial_const=1.0),
                model,
                ThreatModel("l2", 1e6),
                bs,
            ),
            "torchattacks": lambda: torchattacks.CW(model, c=1, kappa=0, steps=100, lr=0.01),
            "art": lambda: _art(
                __import__("art.attacks.evasion", fromlist=["CarliniL2Method"]).CarliniL2Method(
                    _art_classifier(model, shape, classes),
                    max_iter=100,
                    learning_rate=0.01,
                    binary_search_steps=1,
                    initial_const=1.0,
                    batch_size=bs,
                    verbose=False,
                )
            ),
        },
        "autoattack": {
            "bastion": lambda: _bastion(Cascade(preset="standard"), model, threat, bs),
            # gradients (APGD, APGD-T, FAB-T) under bfloat16 autocast, successes in float32
            "bastion-bf16": lambda: _bastion(
                Cascade(preset="standard", precision="bf16"), model, threat, bs
            ),
            # torchattacks' AutoAttack class runs 10 steps per APGD/FAB run; the paper (and
            # bastion's preset) use 100, so the matched comparison builds the suite by hand.
            "torchattacks": lambda: torchattacks.MultiAttack(
                [
                    torchattacks.APGD(model, eps=eps, steps=100, loss="ce", seed=0),
                    torchattacks.APGDT(model, eps=eps, steps=100, n_classes=classes, seed=0),
                    torchattacks.FAB(
                        model,
                        eps=eps,
                        steps=100,
                        multi_targeted=True,
                        n_classes=classes,
                        seed=0,
                    ),
                    torchattacks.Square(model, eps=eps, n_queries=5000, seed=0),
                ]
            ),
            "torchattacks-10-steps": lambda: torchattacks.AutoAttack(
                model, norm="Linf", eps=eps, version="standard", n_classes=classes, seed=0
            ),
            "art": lambda: _art(
                __import__("art.attacks.evasion", fromlist=["AutoAttack"]).AutoAttack(
                    _art_classifier(model, shape, classes),
                    norm=np.inf,
                    eps=eps,
                    eps_step=0.1,
                    batch_size=bs,
                )
            ),
        },
    }
    rows: list[dict[str, Any]] = []
    for suite, libs in suites.items():
        if args.only and suite not in args.only:
            continue
        n = args.examples if suite in ("fgsm", "pgd20") else args.slow_examples
        subset = data.test.subset(min(n, len(data.test)))
        test = type(subset)(subset.x.to(device), subset.y.to(device))
        for lib, make in libs.items():
            if lib not in args.libraries:
                continue
            print(f"[attacks] {suite} / {lib} on {len(test)} ...", file=sys.stderr, flush=True)
            run = make()
            if device.type == "cuda":  # kernels, cuDNN plans and allocator warm for everyone
                run(test.x[:bs], test.y[:bs])
                torch.cuda.synchronize(device)
            torch.manual_seed(0)
            x_adv, secs = _timed(lambda run=run, t=test: _batched(run, t.x, t.y, bs))  # type: ignore[misc]
            if suite == "cw":
                l2 = (x_adv - test.x).flatten(1).norm(dim=1)
                fooled = predict(model, x_adv) != test.y
                extra = {"median_l2_fooled": float(l2[fooled].median()) if fooled.any() else None}
            else:
                linf = float((x_adv - test.x).abs().amax())
                if linf > eps + 1e-4:
                    raise RuntimeError(f"{lib} {suite} left the eps ball: {linf}")
                extra = {}
            row = {
                "attack": suite,
                "library": lib,
                "examples": len(test),
                "seconds": round(secs, 2),
                "robust_accuracy": _acc(model, x_adv, test.y),
                **extra,
            }
            print(f"[attacks] {row}", file=sys.stderr, flush=True)
            rows.append(row)

    doc = {
        "run": str(args.run_dir),
        "model": args.model,
        "threat": threat.to_dict(),
        "threads": args.threads,
        "device": str(device),
        "frozen_params": args.freeze_params,
        "versions": package_versions(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-" + "-".join(args.only) if args.only else ""
    stem = args.out / f"attacks-{cfg.name}-{args.model}{suffix}"
    write_json(doc, stem.with_suffix(".json"))
    lines = [
        f"# Attacks on {args.run_dir.name}/{args.model} "
        f"({threat.norm} eps {eps}, {args.threads} threads"
        f"{'' if device.type == 'cpu' else ', ' + str(device)}"
        f"{', parameters frozen' if args.freeze_params else ''})",
        "",
        "| attack | library | examples | seconds | vs bastion | robust accuracy | median l2 (CW) |",
        "|---|---|---|---|---|---|---|",
    ]
    base = {r["attack"]: r["seconds"] for r in rows if r["library"] == "bastion"}
    for r in rows:
        ratio = (
            f"{r['seconds'] / base[r['attack']]:.2f}x"
            if r["attack"] in base and base[r["attack"]]
            else "-"
        )
        med = r.get("median_l2_fooled")
        lines.append(
            f"| {r['attack']} | {r['library']} | {r['examples']} | {r['seconds']} | {ratio} | "
            f"{r['robust_accuracy']:.2%} | {'' if med is None else f'{med:.3f}'} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
