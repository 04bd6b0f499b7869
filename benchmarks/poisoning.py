"""Backdoor benchmark on MNIST with the small CNN: attack, data scans, retraining, Neural
Cleanse, STRIP, and ART's poison detectors on the same data.

BadNets (Gu et al. 2017) 3x3 white patch one pixel from the bottom-right corner, all-to-one to
class 0, at each poison rate (``--attack blended``: a seeded noise pattern blended with
``--alpha``, Chen et al. 2017, and STRIP against the same pattern blended at
``--adaptive-alpha`` at test time; ``--attack clean-label``: Turner et al. 2019, the rate being
the share of class 0 poisoned). For each rate:

1. the undefended model trained on the poisoned set (it is also the scan model): clean
   accuracy on the 10,000 test images, attack success on the triggered test images of the
   other classes;
2. the data scan (activation clustering, PCA and ICA views) on its penultimate features:
   recall of the poisons, share of clean data quarantined, F1; spectral signatures and
   SPECTRE with ``eps`` set to the true poison share of the target class (their best case);
   ART's ActivationDefence and SpectralSignatureDefense (if ART is installed);
3. the model retrained on the kept examples: clean accuracy and attack success;
4. Neural Cleanse on the undefended model and on a model trained on clean data;
5. STRIP guarding the undefended model: false positives on clean test images at a 1% target,
   detection of triggered ones.

Usage::

    python benchmarks/poisoning.py --data-dir /work/shared/datasets/mnist \\
        --train-examples 20000 --rates 0.01 0.05 --out benchmarks/results/poisoning.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bastion.data import load_dataset
from bastion.poisoning import (
    PoisonedSet,
    StripDetector,
    Trigger,
    attack_success_rate,
    badnets,
    blended,
    clean_label,
    detection_metrics,
    neural_cleanse,
    penultimate_features,
    spectral_signatures,
    spectre,
)
from bastion.poisoning.config import ScanConfig, ScanModelConfig
from bastion.poisoning.flow import scan_data
from bastion.poisoning.neural_cleanse import CleanseSettings, save_trigger_png
from bastion.poisoning.training import train_classifier
from bastion.training.trainer import accuracy

MODES = {"clean-label": "target 0, labels untouched, rate = share of class 0 poisoned"}
TRIGGERS = {
    "badnets": "3x3 white patch, bottom-right, margin 1",
    "blended": "seeded uniform noise blended with alpha {alpha}",
    "clean-label": "PGD linf {eps} on the clean model, then the 3x3 white patch",
}


def art_detection(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, truth: torch.Tensor, share: float
) -> dict[str, Any]:
    """ART's ActivationDefence and SpectralSignatureDefense on the same model and data."""
    try:
        import numpy as np
        from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
        from art.estimators.classification import PyTorchClassifier
    except ImportError as e:
        return {"error": f"ART not installed ({e})"}
    import art

    clf = PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    xs = x.numpy()
    onehot = np.eye(10, dtype=np.float32)[y.numpy()]
    out: dict[str, Any] = {"version": art.__version__}
    for name, build in (
        ("art-activation-defence", lambda: ActivationDefence(clf, xs, onehot)),
        (
            "art-spectral-signature",
            lambda: SpectralSignatureDefense(clf, xs, onehot, expected_pp_poison=share),
        ),
    ):
        t = time.perf_counter()
        try:
            defence = build()
            if name == "art-activation-defence":
                _, is_clean = defence.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA")
            else:
                _, is_clean = defence.detect_poison()
            flagged = torch.tensor(np.asarray(is_clean) == 0)
            out[name] = {
                **detection_metrics(flagged, truth),
                "seconds": round(time.perf_counter() - t, 1),
            }
        except Exception as e:  # a peer library's failure is reported, not fatal
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="/work/shared/datasets/mnist")
    ap.add_argument("--train-examples", type=int, default=20000)
    ap.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.05])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cleanse-steps", type=int, default=200)
    ap.add_argument("--cleanse-batch", type=int, default=32)
    ap.add_argument("--cleanse-examples", type=int, default=500)
    ap.add_argument("--strip-examples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-art", action="store_true")
    ap.add_argument("--attack", choices=["badnets", "blended", "clean-label"], default="badnets")
    ap.add_argument("--alpha", type=float, default=0.2, help="blended: weight of the pattern")
    ap.add_argument("--eps", type=float, default=0.3, help="clean-label: PGD linf radius")
    ap.add_argument(
        "--adaptive-alpha",
        type=float,
        default=0.1,
        help="blended: the fainter test-time blend of an attacker who knows STRIP (0: skip)",
    )
    ap.add_argument("--out", default="benchmarks/results/poisoning.md")
    return ap.parse_args()


@dataclass(eq=False)
class Bench:
    """What every step of one benchmark run shares."""

    args: argparse.Namespace
    ds: Any
    x: torch.Tensor
    y: torch.Tensor
    common: dict[str, Any]
    cleanse: CleanseSettings
    x_nc: torch.Tensor
    out_dir: Path
    png_prefix: str
    log: Callable[[str], None]


def setup(b: Bench) -> dict[str, Any]:
    a = b.args
    return {
        "data": "mnist",
        "train_examples": len(b.x),
        "test_examples": len(b.ds.test),
        "epochs": a.epochs,
        "architecture": "small-cnn",
        "attack": a.attack,
        "trigger": TRIGGERS[a.attack].format(alpha=a.alpha, eps=a.eps),
        "mode": MODES.get(a.attack, "all-to-one, target 0"),
        "seed": a.seed,
        "cleanse": b.cleanse.__dict__,
        "cleanse_examples": len(b.x_nc),
        "strip_examples": a.strip_examples,
        "argv": sys.argv[1:],
        "threads": torch.get_num_threads(),
    }


def poison(b: Bench, rate: float, clean_model: nn.Module) -> PoisonedSet:
    a, x, y = b.args, b.x, b.y
    if a.attack == "blended":
        return blended(x, y, rate=rate, num_classes=10, alpha=a.alpha, target=0, seed=a.seed)
    if a.attack == "clean-label":
        return clean_label(
            x, y, clean_model, rate=rate, num_classes=10, target=0, eps=a.eps, seed=a.seed
        )
    return badnets(x, y, rate=rate, num_classes=10, size=3, target=0, seed=a.seed)


def scan_and_retrain(b: Bench, p: PoisonedSet, key: str) -> tuple[dict[str, Any], nn.Module]:
    """The row's attack, scan, detection and retraining figures, and the undefended model."""
    a, test, val, log = b.args, b.ds.test, b.ds.val, b.log
    assert p.trigger is not None
    share = float(p.poisoned.sum()) / float((p.y == 0).sum())
    scan_cfg = ScanConfig(
        model=ScanModelConfig(architecture="small-cnn", epochs=a.epochs),
        methods=["activation-clustering"],
        duplicates=False,
    )
    scan = scan_data(
        p.x, p.y, val.x, val.y, scan=scan_cfg, num_classes=10, mean=b.ds.mean, std=b.ds.std,
        truth=p.poisoned, seed=a.seed, log=log,
    )  # fmt: skip
    victim = scan.model
    row: dict[str, Any] = {
        "n_poisoned": int(p.poisoned.sum()),
        "target_class_poison_share": round(share, 4),
        "scan_seconds": round(scan.seconds, 1),
    }
    row["undefended"] = {
        "clean_accuracy": round(accuracy(victim, test.x, test.y), 4),
        "attack_success_rate": round(
            attack_success_rate(victim, test.x, test.y, p.trigger, num_classes=10), 4
        ),
    }
    log(f"rate {key}: undefended {row['undefended']}")
    assert scan.metrics is not None
    det: dict[str, Any] = {"activation-clustering": scan.metrics["activation-clustering"]}
    feats = penultimate_features(victim, p.x)
    eps = min(0.5, share)
    for name, fn in (("spectral-signatures", spectral_signatures), ("spectre", spectre)):
        t = time.perf_counter()
        res = fn(feats, p.y, eps=eps, seed=a.seed)
        det[name] = {
            **detection_metrics(res.flagged, p.poisoned),
            "seconds": round(time.perf_counter() - t, 1),
            "eps": round(eps, 4),
        }
    if not a.no_art:
        log(f"rate {key}: ART detectors")
        det.update(art_detection(victim, p.x, p.y, p.poisoned, eps))
    row["detection"] = det
    log(f"rate {key}: detection {json.dumps(det)}")
    kept = scan.quarantine.kept
    log(f"rate {key}: retraining on {len(kept)} kept examples")
    defended = train_classifier(p.x[kept], p.y[kept], val.x, val.y, **b.common)
    row["retrained"] = {
        "kept": len(kept),
        "clean_accuracy": round(accuracy(defended, test.x, test.y), 4),
        "attack_success_rate": round(
            attack_success_rate(defended, test.x, test.y, p.trigger, num_classes=10), 4
        ),
    }
    log(f"rate {key}: retrained {row['retrained']}")
    return row, victim


def verify(b: Bench, p: PoisonedSet, victim: nn.Module, key: str, row: dict[str, Any]) -> None:
    """Neural Cleanse on the undefended model, STRIP guarding it (and, for a blended trigger,
    against the fainter test-time blend of an attacker who knows STRIP), into ``row``."""
    a, test, val, log = b.args, b.ds.test, b.ds.val, b.log
    assert p.trigger is not None
    log(f"rate {key}: neural cleanse on the undefended model")
    nc = neural_cleanse(victim, b.x_nc, num_classes=10, settings=b.cleanse, seed=a.seed)
    png = save_trigger_png(
        nc.triggers[int(nc.norms.argmin())],
        b.out_dir / f"poisoning-trigger-{b.png_prefix}{key}.png",
    )
    row["neural_cleanse"] = {**nc.summary(), "trigger_png": png.name}
    log(f"rate {key}: NC flagged={nc.flagged} target={nc.target} index={nc.max_anomaly:.2f}")
    half = len(val) // 2
    strip = StripDetector(victim, val.x[:half], seed=a.seed).fit(val.x[half:], fpr=0.01)
    others = test.x[test.y != 0][: a.strip_examples]
    row["strip"] = strip.evaluate(test.x[: a.strip_examples], p.trigger.apply(others))
    log(f"rate {key}: STRIP {row['strip']}")
    if a.attack == "blended" and a.adaptive_alpha:
        # an attacker who knows STRIP blends the trigger more faintly at test time: the
        # overlays dilute it below what dominates the prediction (high entropy)
        faint = Trigger(
            torch.full_like(p.trigger.mask, a.adaptive_alpha), p.trigger.pattern, "blend"
        )
        adaptive = strip.evaluate(test.x[: a.strip_examples], faint.apply(others))
        adaptive["alpha"] = a.adaptive_alpha
        adaptive["attack_success_rate"] = round(
            attack_success_rate(victim, test.x, test.y, faint, num_classes=10), 4
        )
        row["strip_adaptive"] = adaptive
        log(f"rate {key}: STRIP against alpha {a.adaptive_alpha}: {adaptive}")


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    ds = load_dataset("mnist", data_dir=args.data_dir, seed=args.seed)
    n = min(args.train_examples, len(ds.train))
    out_dir = Path(args.out).parent
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    b = Bench(
        args, ds, ds.train.x[:n], ds.train.y[:n],
        {"architecture": "small-cnn", "num_classes": 10, "mean": ds.mean, "std": ds.std,
         "epochs": args.epochs, "seed": args.seed},
        CleanseSettings(steps=args.cleanse_steps, batch_size=args.cleanse_batch),
        ds.val.x[: args.cleanse_examples], out_dir,
        # BadNets keeps the names docs/poisoning.md shows; other attacks get their own
        "" if args.attack == "badnets" else f"{args.attack}-", log,
    )  # fmt: skip
    results: dict[str, Any] = {"setup": setup(b), "rates": {}}
    log("clean model")
    clean_model = train_classifier(b.x, b.y, ds.val.x, ds.val.y, **b.common)
    clean_acc = accuracy(clean_model, ds.test.x, ds.test.y)
    log(f"clean model: accuracy {clean_acc:.4f}; neural cleanse")
    nc_clean = neural_cleanse(
        clean_model, b.x_nc, num_classes=10, settings=b.cleanse, seed=args.seed
    )
    save_trigger_png(
        nc_clean.triggers[int(nc_clean.norms.argmin())],
        out_dir / f"poisoning-trigger-{b.png_prefix}clean.png",
    )
    results["clean_model"] = {
        "clean_accuracy": round(clean_acc, 4),
        "neural_cleanse": nc_clean.summary(),
    }
    log(f"clean model: NC flagged={nc_clean.flagged} index={nc_clean.max_anomaly:.2f}")
    for rate in args.rates:
        key = f"{rate:g}"
        log(f"rate {key}: poisoning")
        p = poison(b, rate, clean_model)
        row, victim = scan_and_retrain(b, p, key)
        verify(b, p, victim, key, row)
        results["rates"][key] = row
    results["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))
    Path(args.out).write_text(render(results))
    log(f"written {args.out}")


def command(r: dict[str, Any]) -> str:
    """The benchmark's arguments as run (older results: rebuilt from the setup)."""
    s = r["setup"]
    if "argv" in s:
        argv = list(s["argv"])
        if "--data-dir" in argv:  # a machine's own path says nothing about the result
            i = argv.index("--data-dir")
            del argv[i : i + 2]
        return " ".join(argv)
    return (
        f"--train-examples {s['train_examples']} --rates {' '.join(r['rates'])} "
        f"--epochs {s['epochs']}"
    )


def verification_lines(r: dict[str, Any]) -> list[str]:
    """The Neural Cleanse, STRIP and adaptive-STRIP tables of :func:`render`."""
    s = r["setup"]
    lines: list[str] = []
    lines += [
        "",
        "## Neural Cleanse (anomaly index of the smallest reversed trigger; flagged above 2)",
        "",
        "| model | flagged | suspected target | anomaly index | smallest norm | median norm |",
        "|---|---|---|---|---|---|",
    ]
    nc_rows = [("clean", r["clean_model"]["neural_cleanse"])] + [
        (f"backdoored, {float(k):.0%}", row["neural_cleanse"]) for k, row in r["rates"].items()
    ]
    for name, nc in nc_rows:
        norms = sorted(nc["norms"])
        median = (norms[4] + norms[5]) / 2 if len(norms) == 10 else norms[len(norms) // 2]
        lines.append(
            f"| {name} | {nc['flagged']} | {nc['target']} | {nc['anomaly_index']:.2f} | "
            f"{min(norms):.1f} | {median:.1f} |"
        )
    lines += [
        "",
        "## STRIP on the undefended model (threshold at 1% of clean validation images; first "
        f"{s.get('strip_examples', 2000):,} clean and triggered test images)",
        "",
        "| poison rate | false positives (clean test) | detection (triggered test) "
        "| clean entropy | triggered entropy |",
        "|---|---|---|---|---|",
    ]
    for key, row in r["rates"].items():
        st = row["strip"]
        lines.append(
            f"| {float(key):.0%} | {st['false_positive_rate']:.2%} | {st['detection_rate']:.2%} | "
            f"{st['clean_entropy_mean']:.3f} | {st['triggered_entropy_mean']:.3f} |"
        )
    adaptive = [
        (k, row["strip_adaptive"]) for k, row in r["rates"].items() if "strip_adaptive" in row
    ]
    if adaptive:
        lines += [
            "",
            "## STRIP against an adaptive trigger (the same pattern blended more faintly at test "
            "time; same threshold, so the clean false-positive rate is the one above)",
            "",
            "| poison rate | test-time alpha | attack success | detection | triggered entropy |",
            "|---|---|---|---|---|",
        ]
        for key, st in adaptive:
            lines.append(
                f"| {float(key):.0%} | {st['alpha']} | {st['attack_success_rate']:.2%} | "
                f"{st['detection_rate']:.2%} | {st['triggered_entropy_mean']:.3f} |"
            )
    return lines


def render(r: dict[str, Any]) -> str:
    s = r["setup"]
    lines = [
        f"# Backdoor benchmark (MNIST, small CNN, {s.get('attack', 'badnets')})",
        "",
        f"`python benchmarks/poisoning.py {command(r)}`; {s['train_examples']} training images "
        f"(the first of the seeded split), all {s['test_examples']} test images, {s['epochs']} "
        f"epochs, seed {s['seed']}, {s['threads']} torch threads on a shared 2-core machine; "
        f"total {r['seconds']:.0f} s. Trigger: {s['trigger']}; {s['mode']}.",
        "",
        "## Attack, scan and retraining",
        "",
        "| poison rate | poisons | undefended clean | undefended ASR | scan recall "
        "| clean quarantined | scan F1 | retrained clean | retrained ASR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in r["rates"].items():
        d = row["detection"]["activation-clustering"]
        und, ret = row["undefended"], row["retrained"]
        lines.append(
            f"| {float(key):.0%} | {row['n_poisoned']} | {und['clean_accuracy']:.2%} | "
            f"{und['attack_success_rate']:.2%} | {d['recall']:.2%} | "
            f"{d['clean_flagged_rate']:.2%} | {d['f1']:.3f} | {ret['clean_accuracy']:.2%} | "
            f"{ret['attack_success_rate']:.2%} |"
        )
    lines += [
        "",
        f"Model trained on clean data: {r['clean_model']['clean_accuracy']:.2%} clean accuracy.",
        "",
        "## Detection F1 on the same poisoned data and model",
        "",
        "| poison rate | method | precision | recall | F1 | clean quarantined | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, row in r["rates"].items():
        for name, m in row["detection"].items():
            if name == "version":
                continue
            if "error" in m:
                lines.append(f"| {float(key):.0%} | {name} | - | - | - | - | {m['error'][:80]} |")
                continue
            note = f"eps {m['eps']}" if "eps" in m else ""
            lines.append(
                f"| {float(key):.0%} | {name} | {m['precision']:.3f} | {m['recall']:.3f} | "
                f"{m['f1']:.3f} | {m['clean_flagged_rate']:.2%} | {note} |"
            )
    lines += verification_lines(r)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
