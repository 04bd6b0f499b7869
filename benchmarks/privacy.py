"""Privacy and model-theft benchmark: LiRA against the loss-threshold attack, Knockoff Nets
fidelity against queries, each beside the Adversarial Robustness Toolbox (ART) where it is
installed.

1. Membership inference (Carlini et al. 2022's protocol). ``--shadows + 1`` models of one
   overfit recipe (an MLP on the embedded digits, no weight decay, the last epoch kept) are
   trained with bastion's trainer, each on a seeded random half of all 1,797 digits. Each model
   in turn is the target and the others its shadows (leave-one-out), so every figure rests on
   ``(shadows + 1) x 1,797`` membership decisions: LiRA online, LiRA offline, and Yeom et al.'s
   loss threshold on the same targets. A single-target figure (model 0, the other 16 as
   shadows) is reported too. ART's ``MembershipInferenceBlackBox`` (a learned attack model,
   trained on half of model 0's members and non-members, tested on the other half) and
   ``MembershipInferenceBlackBoxRuleBased`` run on model 0.
2. Extraction. A small CNN trained on an MNIST subset (``--victim-train``) is the victim; the
   attacker's pool is the first half of the official MNIST test set, fidelity is measured on
   the second half. Knockoff Nets (soft and label-only) and Jacobian augmentation against the
   number of queries; ART's ``KnockoffNets`` (random strategy, soft labels) on the same pool,
   student architecture and budgets. The stolen copy's PGD examples are then transferred to
   the victim.

Usage::

    python benchmarks/privacy.py --data-dir ../shared/datasets/mnist --workers 2

Results: ``benchmarks/results/privacy.json`` and ``privacy.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion.data import load_dataset
from bastion.evaluation.scorecard import package_versions
from bastion.models.zoo import BastionModel, ModelSpec
from bastion.privacy.extraction import (
    StudentSettings,
    jacobian_augmentation,
    knockoff_nets,
    student_spec,
    transferability,
)
from bastion.privacy.membership import (
    ShadowRecipe,
    build_seeded,
    lira_leave_one_out,
    lira_scores,
    threshold_scores,
    train_shadows,
)
from bastion.privacy.metrics import membership_report
from bastion.threat import ThreatModel
from bastion.training.trainer import Trainer, TrainSettings

RESULTS = Path(__file__).resolve().parent / "results"


def _short(rep: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rep.items() if k != "roc"}


def membership(args: argparse.Namespace) -> dict[str, Any]:
    ds = load_dataset("digits", seed=0)
    x = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    y = torch.cat([ds.train.y, ds.val.y, ds.test.y])
    spec = ModelSpec(
        "mlp",
        tuple(ds.input_shape),
        ds.num_classes,
        tuple(ds.mean),
        tuple(ds.std),
        {"hidden": [512]},
    )
    settings = TrainSettings(
        epochs=args.mia_epochs,
        batch_size=64,
        lr=1e-3,
        optimizer="adam",
        schedule="constant",
        weight_decay=0.0,
        val_examples=200,
        select="last",
    )
    recipe = ShadowRecipe(spec, settings, ThreatModel("linf", 0.1))
    models = args.shadows + 1
    t0 = time.perf_counter()
    shadows = train_shadows(
        recipe,
        x,
        y,
        shadows=models,
        directory=args.work / "shadows",
        seed=0,
        workers=args.workers,
        progress=lambda e: print(f"  model {e['done']}/{e['total']}", file=sys.stderr),
    )
    train_s = time.perf_counter() - t0
    out: dict[str, Any] = {
        "recipe": {"spec": spec.to_dict(), "settings": repr(settings)},
        "population": int(x.shape[0]),
        "models": models,
        "shadows_per_target": args.shadows,
        "training_seconds": round(train_s, 1),
        "trained": shadows.trained,
        "reused": shadows.reused,
    }
    loo: dict[str, Any] = {}
    for online in (True, False):
        s, m = lira_leave_one_out(shadows.confidences, shadows.in_mask, online=online)
        loo["lira-online" if online else "lira-offline"] = membership_report(s.numpy(), m.numpy())
    thr, mem = [], []
    accs = []
    for t in range(models):
        net = _load(args.work / "shadows", t, recipe, x, y)
        thr.append(threshold_scores(net, x, y))
        mem.append(shadows.in_mask[t])
        with torch.no_grad():
            pred = net(x).argmax(1)
        accs.append(
            (
                float((pred == y)[shadows.in_mask[t]].float().mean()),
                float((pred == y)[~shadows.in_mask[t]].float().mean()),
            )
        )
    loo["threshold-loss"] = membership_report(torch.cat(thr).numpy(), torch.cat(mem).numpy())
    if args.lira_shifts:
        shifts = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
        views = train_shadows(
            recipe,
            x,
            y,
            shadows=models,
            directory=args.work / "shadows",
            seed=0,
            shifts=shifts,
        )
        for online in (True, False):
            s, m = lira_leave_one_out(views.confidences, views.in_mask, online=online)
            name = "lira-online" if online else "lira-offline"
            loo[f"{name} (5 views: 1-pixel shifts)"] = membership_report(s.numpy(), m.numpy())
    out["leave_one_out"] = loo
    out["train_accuracy"] = float(np.mean([a[0] for a in accs]))
    out["test_accuracy"] = float(np.mean([a[1] for a in accs]))
    # one target (model 0) against the 16 others
    keep = torch.arange(models) != 0
    single: dict[str, Any] = {}
    for online in (True, False):
        s = lira_scores(
            shadows.confidences[0],
            shadows.confidences[keep],
            shadows.in_mask[keep],
            online=online,
        )
        single["lira-online" if online else "lira-offline"] = membership_report(
            s.numpy(), shadows.in_mask[0].numpy()
        )
    single["threshold-loss"] = membership_report(thr[0].numpy(), shadows.in_mask[0].numpy())
    out["single_target"] = single
    out["art"] = _art_membership(args, recipe, x, y, shadows.in_mask[0])
    return out


def _load(
    folder: Path, index: int, recipe: ShadowRecipe, x: torch.Tensor, y: torch.Tensor
) -> torch.nn.Module:
    from bastion.privacy.membership import _read_shadow, tensor_fingerprint

    return _read_shadow(
        folder / f"shadow-{index:03d}.safetensors", recipe, tensor_fingerprint(x, y), 0
    )


def _art_membership(
    args: argparse.Namespace,
    recipe: ShadowRecipe,
    x: torch.Tensor,
    y: torch.Tensor,
    member: torch.Tensor,
) -> dict[str, Any]:
    try:
        from art.attacks.inference.membership_inference import (
            MembershipInferenceBlackBox,
            MembershipInferenceBlackBoxRuleBased,
        )
        from art.estimators.classification import PyTorchClassifier
    except ImportError as e:
        return {"skipped": f"ART not importable: {e}"}
    net = _load(args.work / "shadows", 0, recipe, x, y)
    clf = PyTorchClassifier(
        model=net,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    xn, yn = x.numpy(), y.numpy()
    mem_idx = np.flatnonzero(member.numpy())
    non_idx = np.flatnonzero(~member.numpy())
    rng = np.random.default_rng(0)
    rng.shuffle(mem_idx)
    rng.shuffle(non_idx)
    half_m, half_n = len(mem_idx) // 2, len(non_idx) // 2
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    torch.manual_seed(0)  # ART's attack model draws from the global RNG (benchmark only)
    bb = MembershipInferenceBlackBox(clf, attack_model_type="nn")
    bb.fit(xn[mem_idx[:half_m]], yn[mem_idx[:half_m]], xn[non_idx[:half_n]], yn[non_idx[:half_n]])
    tm, tn = mem_idx[half_m:], non_idx[half_n:]
    p_m = bb.infer(xn[tm], yn[tm], probabilities=True).reshape(-1)
    p_n = bb.infer(xn[tn], yn[tn], probabilities=True).reshape(-1)
    labels = np.r_[np.ones(len(tm), bool), np.zeros(len(tn), bool)]
    out["MembershipInferenceBlackBox (nn attack model, half the target's data as labels)"] = _short(
        membership_report(np.r_[p_m, p_n], labels)
    ) | {"seconds": round(time.perf_counter() - t0, 1)}
    rb = MembershipInferenceBlackBoxRuleBased(clf)
    inferred = rb.infer(xn, yn).reshape(-1)
    out["MembershipInferenceBlackBoxRuleBased (correct = member)"] = _short(
        membership_report(inferred.astype(np.float64), member.numpy())
    )
    return out


def dp_defence(args: argparse.Namespace) -> dict[str, Any]:
    """LiRA (leave-one-out) against models of the membership recipe's architecture trained
    with DP-SGD at ``--dp-epsilon``, each on a seeded random half of the digits."""
    from bastion.privacy.dp import DPSettings

    ds = load_dataset("digits", seed=0)
    x = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    y = torch.cat([ds.train.y, ds.val.y, ds.test.y])
    spec = ModelSpec(
        "mlp",
        tuple(ds.input_shape),
        ds.num_classes,
        tuple(ds.mean),
        tuple(ds.std),
        {"hidden": [512]},
    )
    out: dict[str, Any] = {"population": int(x.shape[0]), "models": args.dp_models, "runs": {}}
    for eps in args.dp_epsilon:
        dp = DPSettings(epochs=args.dp_epochs, batch_size=64, lr=0.5, target_epsilon=eps)
        recipe = ShadowRecipe(spec, TrainSettings(), ThreatModel("linf", 0.1), dp)
        t0 = time.perf_counter()
        shadows = train_shadows(
            recipe,
            x,
            y,
            shadows=args.dp_models,
            directory=args.work / f"dp-{eps:g}",
            seed=0,
            workers=args.workers,
            progress=lambda e: print(f"  dp model {e['done']}/{e['total']}", file=sys.stderr),
        )
        res: dict[str, Any] = {"settings": repr(dp), "seconds": round(time.perf_counter() - t0, 1)}
        for online in (True, False):
            sc, m = lira_leave_one_out(shadows.confidences, shadows.in_mask, online=online)
            res["lira-online" if online else "lira-offline"] = _short(
                membership_report(sc.numpy(), m.numpy())
            )
        accs = []
        for t in range(args.dp_models):
            net = _load(args.work / f"dp-{eps:g}", t, recipe, x, y)
            with torch.no_grad():
                accs.append(float((net(x).argmax(1) == y)[~shadows.in_mask[t]].float().mean()))
        res["test_accuracy"] = float(np.mean(accs))
        out["runs"][f"{eps:g}"] = res
    return out


def train_mnist_victim(ds: Any, n: int, epochs: int) -> BastionModel:
    """The extraction victim of these benchmarks: the small CNN trained by bastion's trainer
    (Adam, lr 1e-3, batch 128, seeded) on MNIST train[:n] for ``epochs``."""
    spec = ModelSpec("small-cnn", tuple(ds.input_shape), 10, tuple(ds.mean), tuple(ds.std), {})
    victim = build_seeded(spec, 0)
    settings = TrainSettings(
        epochs=epochs,
        batch_size=128,
        lr=1e-3,
        optimizer="adam",
        schedule="constant",
        weight_decay=0.0,
        val_examples=500,
    )
    Trainer(settings, ThreatModel("linf", 0.1), seed=0).fit(
        victim, ds.train.x[:n], ds.train.y[:n], ds.val.x, ds.val.y
    )
    return victim


def prada(args: argparse.Namespace) -> dict[str, Any]:
    """Would the service's PRADA monitor (``bastion.serve.extraction``, Juuti et al. 2019)
    catch each extraction? The queries each method sends to an MNIST victim are recorded
    (a :class:`ScoreTarget` around the victim) and replayed, in order, through the monitor
    with the service's default settings, in batches of 64 under one API key."""
    from bastion.attacks.targets import ScoreTarget
    from bastion.serve.extraction import ExtractionMonitor

    ds = load_dataset("mnist", data_dir=args.data_dir, seed=0)
    victim = train_mnist_victim(ds, args.victim_train, args.victim_epochs)
    half = ds.test.x.shape[0] // 2
    pool = ds.test.x[:half]
    ex, ey = ds.test.x[half : half + 10], ds.test.y[half : half + 10]
    sspec = student_spec("small-cnn", pool, 10)
    st = StudentSettings(epochs=args.student_epochs, min_steps=300, batch_size=64, lr=1e-3)
    budget = args.prada_budget
    out: dict[str, Any] = {"budget": budget, "monitor": "ExtractionMonitor() defaults"}
    for method in ("knockoff", "jacobian"):
        seen: list[torch.Tensor] = []

        def record(batch: torch.Tensor, seen: list[torch.Tensor] = seen) -> torch.Tensor:
            seen.append(batch.clone())
            with torch.no_grad():
                return victim(batch)

        target = ScoreTarget(record, 10, kind="logits", inputs="torch", name="victim")
        if method == "knockoff":
            knockoff_nets(target, pool, ex, ey, sspec, budgets=[budget], settings=st, seed=0)
            queries = torch.cat(seen)[:budget]  # the held-out rows come after
        else:
            jacobian_augmentation(
                target,
                pool[:100],
                ex,
                ey,
                sspec,
                rounds=1 + int(np.ceil(np.log2(budget / 100))),
                step=0.1,
                max_queries=budget,
                settings=st,
                seed=0,
            )
            queries = torch.cat(seen)[ex.shape[0] :]  # the held-out rows come first
        with torch.no_grad():
            labels = victim(queries).argmax(1)
        monitor = ExtractionMonitor()
        flagged_at, w = None, None
        for i in range(0, queries.shape[0], 64):
            chunk = queries[i : i + 64]
            status = monitor.observe(
                "key", chunk.reshape(chunk.shape[0], -1).numpy(), labels[i : i + 64].tolist()
            )
            w = status.w
            if status.flagged and flagged_at is None:
                flagged_at = min(i + 64, queries.shape[0])
        out[method] = {
            "queries": int(queries.shape[0]),
            "flagged_after": flagged_at,
            "final_w": w,
            "threshold": monitor.threshold,
        }
        print(f"  prada {method}: {out[method]}", file=sys.stderr)
    return out


def extraction(args: argparse.Namespace) -> dict[str, Any]:
    ds = load_dataset("mnist", data_dir=args.data_dir, seed=0)
    n = args.victim_train
    t0 = time.perf_counter()
    victim = train_mnist_victim(ds, n, args.victim_epochs)
    spec = victim.spec
    half = ds.test.x.shape[0] // 2
    pool = ds.test.x[:half]
    ex, ey = (
        ds.test.x[half : half + args.eval_examples],
        ds.test.y[half : half + args.eval_examples],
    )
    sspec = student_spec("small-cnn", pool, 10)
    budgets = [b for b in args.budgets if b <= pool.shape[0]]
    st = StudentSettings(epochs=args.student_epochs, min_steps=300, batch_size=64, lr=1e-3)
    out: dict[str, Any] = {
        "victim": {
            "spec": spec.to_dict(),
            "train_examples": n,
            "seconds": round(time.perf_counter() - t0, 1),
        },
        "pool": f"MNIST test[:{half}] (the official test set: not the victim's training data)",
        "held_out": f"MNIST test[{half}:{half + ex.shape[0]}]",
        "student": "small-cnn",
        "budgets": budgets,
    }
    methods: dict[str, Any] = {}
    for name, labels_only in (("knockoff", False), ("knockoff-labels", True)):
        t0 = time.perf_counter()
        r = knockoff_nets(
            victim,
            pool,
            ex,
            ey,
            sspec,
            budgets=budgets,
            labels_only=labels_only,
            settings=st,
            seed=0,
            progress=lambda p, n=name: print(f"  {n} {p}", file=sys.stderr),
        )
        methods[name] = r.to_dict() | {"seconds": round(time.perf_counter() - t0, 1)}
        if name == "knockoff":
            t0 = time.perf_counter()
            methods[name]["transfer"] = transferability(
                r.student, victim, ex[:1000], ey[:1000], ThreatModel("linf", 0.2), steps=20
            ) | {"seconds": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    jac = jacobian_augmentation(
        victim,
        pool[:100],
        ex,
        ey,
        sspec,
        rounds=1 + int(np.ceil(np.log2(budgets[-1] / 100))),
        step=0.1,
        max_queries=budgets[-1],
        settings=st,
        seed=0,
        progress=lambda p: print(f"  jacobian {p}", file=sys.stderr),
    )
    methods["jacobian"] = jac.to_dict() | {"seconds": round(time.perf_counter() - t0, 1)}
    out["methods"] = methods
    out["art"] = _art_knockoff(args, victim, pool, ex, sspec, budgets)
    return out


def _art_knockoff(
    args: argparse.Namespace,
    victim: torch.nn.Module,
    pool: torch.Tensor,
    ex: torch.Tensor,
    sspec: ModelSpec,
    budgets: list[int],
) -> dict[str, Any]:
    try:
        from art.attacks.extraction import KnockoffNets
        from art.estimators.classification import PyTorchClassifier
    except ImportError as e:
        return {"skipped": f"ART not importable: {e}"}
    # ART's KnockoffNets treats the victim's predict() output as probabilities: give it them
    vclf = PyTorchClassifier(
        model=torch.nn.Sequential(victim, torch.nn.Softmax(dim=1)),
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(pool.shape[1:]),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    with torch.no_grad():
        vpred = victim(ex).argmax(1)
    curve = []
    for b in budgets:
        t0 = time.perf_counter()
        student = build_seeded(sspec, b)
        sclf = PyTorchClassifier(
            model=student,
            loss=torch.nn.CrossEntropyLoss(),
            optimizer=torch.optim.Adam(student.parameters(), lr=1e-3),
            input_shape=tuple(pool.shape[1:]),
            nb_classes=10,
            clip_values=(0.0, 1.0),
        )
        epochs = max(args.student_epochs, int(np.ceil(300 / max(1, b // 64))))
        attack = KnockoffNets(
            classifier=vclf,
            batch_size_fit=64,
            batch_size_query=256,
            nb_epochs=epochs,
            nb_stolen=b,
            sampling_strategy="random",
            use_probability=True,
            verbose=False,
        )
        stolen = attack.extract(x=pool.numpy(), thieved_classifier=sclf)
        spred = torch.from_numpy(stolen.predict(ex.numpy())).argmax(1)
        curve.append(
            {
                "queries": b,
                "fidelity": float((spred == vpred).float().mean()),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(f"  art knockoff {curve[-1]}", file=sys.stderr)
    return {"KnockoffNets (random, probabilities)": curve}


def markdown(doc: dict[str, Any]) -> str:
    lines = ["# Privacy and model-theft benchmark", ""]
    lines.append(
        f"Machine: {doc['machine']}; torch threads {doc['threads']}; wall "
        f"{doc['seconds']:.0f} s. `python benchmarks/privacy.py {doc['argv']}`."
    )
    if doc.get("kept"):
        lines.append(
            f"Sections {', '.join(doc['kept'])} are kept from earlier runs"
            + (
                f" (`python benchmarks/privacy.py {doc['first_run']}`)."
                if doc.get("first_run")
                else "."
            )
        )
    if "membership" in doc:
        m = doc["membership"]
        lines += [
            "",
            "## Membership inference: LiRA against the loss threshold",
            "",
            f"{m['models']} MLPs (hidden 512, Adam, no weight decay, "
            f"last epoch kept), each on a seeded random half of the {m['population']} "
            f"digits; train accuracy {m['train_accuracy']:.1%}, held-out accuracy "
            f"{m['test_accuracy']:.1%}. Training: {m['training_seconds']:.0f} s "
            f"({m.get('trained', '?')} models trained, {m.get('reused', '?')} reused from "
            f"an earlier run in --work). {m.get('training_note', '')}",
            "",
            "| evaluation | attack | TPR @ 0.1% FPR | TPR @ 1% FPR | AUC | balanced acc. |",
            "|---|---|---|---|---|---|",
        ]
        for title, key in (("leave-one-out", "leave_one_out"), ("single target", "single_target")):
            for name, r in m[key].items():
                lines.append(
                    f"| {title} | {name} | {r['tpr_at_0.1pct_fpr']:.2%} | "
                    f"{r['tpr_at_1pct_fpr']:.2%} | {r['auc']:.3f} | "
                    f"{r['balanced_accuracy']:.3f} |"
                )
        for name, r in m.get("art", {}).items():
            if isinstance(r, dict):
                lines.append(
                    f"| single target (ART) | {name} | {r['tpr_at_0.1pct_fpr']:.2%} | "
                    f"{r['tpr_at_1pct_fpr']:.2%} | {r['auc']:.3f} | "
                    f"{r['balanced_accuracy']:.3f} |"
                )
        lo = m["leave_one_out"]
        ratio = lo["lira-online"]["tpr_at_0.1pct_fpr"] / max(
            lo["threshold-loss"]["tpr_at_0.1pct_fpr"], 1e-12
        )
        lines += [
            "",
            f"LiRA online / loss threshold at 0.1% FPR (leave-one-out): {ratio:.1f}x "
            f"(min FPR resolvable: {lo['lira-online']['min_fpr']:.2e}).",
        ]
    if "dp" in doc:
        d = doc["dp"]
        lines += [
            "",
            "## Defence: DP-SGD (Opacus), LiRA leave-one-out",
            "",
            f"{d['models']} MLPs (hidden 512) per epsilon, DP-SGD (delta = 1/(10 N)), "
            "each on a seeded random half of the digits.",
            "",
            "| epsilon | held-out acc. | LiRA online TPR @ 0.1% FPR | TPR @ 1% FPR | AUC |"
            " offline TPR @ 0.1% FPR | offline AUC |",
            "|---|---|---|---|---|---|---|",
        ]
        for eps, r in d["runs"].items():
            on, off = r["lira-online"], r["lira-offline"]
            lines.append(
                f"| {eps} | {r['test_accuracy']:.1%} | {on['tpr_at_0.1pct_fpr']:.2%} | "
                f"{on['tpr_at_1pct_fpr']:.2%} | {on['auc']:.3f} | "
                f"{off['tpr_at_0.1pct_fpr']:.2%} | {off['auc']:.3f} |"
            )
    if "extraction" in doc:
        e = doc["extraction"]
        lines += [
            "",
            "## Extraction: fidelity against queries",
            "",
            f"Victim: small CNN on {e['victim']['train_examples']} MNIST training "
            f"images; pool {e['pool']}; fidelity on {e['held_out']}; student "
            f"{e['student']}.",
            "",
        ]
        header = "| queries | " + " | ".join(e["methods"]) + " | ART KnockoffNets |"
        lines += [header, "|" + "---|" * (len(e["methods"]) + 2)]
        art = next(iter(e["art"].values())) if isinstance(e["art"], dict) else []
        art_by_q = {p["queries"]: p["fidelity"] for p in art} if isinstance(art, list) else {}
        qs = sorted({int(p["queries"]) for r in e["methods"].values() for p in r["curve"]})
        for q in qs:
            row = [f"{q}"]
            for r in e["methods"].values():
                hit = [p for p in r["curve"] if int(p["queries"]) == q]
                row.append(f"{hit[0]['fidelity']:.1%}" if hit else "")
            row.append(f"{art_by_q[q]:.1%}" if q in art_by_q else "")
            lines.append("| " + " | ".join(row) + " |")
        first = next(iter(e["methods"].values()))
        lines += ["", f"Victim accuracy on the held-out half: {first['victim_accuracy']:.1%}."]
        t = e["methods"]["knockoff"].get("transfer")
        if t:
            lines += [
                "",
                f"Transfer (PGD-20, linf 0.2, crafted on the knockoff copy at the "
                f"largest budget, {t['examples']} held-out images): "
                f"{t['transfer_success_rate']:.1%} of the victim's correct answers "
                f"flipped (random-sign noise of the same size: "
                f"{t['noise_success_rate']:.1%}); victim accuracy "
                f"{t['victim_clean_accuracy']:.1%} -> {t['victim_accuracy_transfer']:.1%}.",
            ]
    if "prada" in doc:
        pr = doc["prada"]
        lines += [
            "",
            "## Would the service's PRADA monitor notice?",
            "",
            f"The queries of each extraction ({pr['budget']} at most) replayed through "
            "`bastion.serve.extraction.ExtractionMonitor` with its defaults (Shapiro-Wilk "
            "W < 0.90 after 100 distances flags a key), 64 per request, one key.",
            "",
            "| extraction | queries | flagged after | last W |",
            "|---|---|---|---|",
        ]
        for method in ("knockoff", "jacobian"):
            r = pr[method]
            when = "never" if r["flagged_after"] is None else f"{r['flagged_after']} queries"
            w = "n/a" if r["final_w"] is None else f"{r['final_w']:.3f}"
            lines.append(f"| {method} | {r['queries']} | {when} | {w} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=Path("../shared/datasets/mnist"))
    p.add_argument("--work", type=Path, default=Path("runs/privacy-bench"))
    p.add_argument("--shadows", type=int, default=16)
    p.add_argument("--mia-epochs", type=int, default=150)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--victim-train", type=int, default=10000)
    p.add_argument("--victim-epochs", type=int, default=8)
    p.add_argument("--student-epochs", type=int, default=20)
    p.add_argument("--eval-examples", type=int, default=5000)
    p.add_argument(
        "--budgets",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[100, 250, 500, 1000, 2500, 5000],
    )
    p.add_argument("--dp-models", type=int, default=9)
    p.add_argument("--dp-epochs", type=int, default=15)
    p.add_argument(
        "--dp-epsilon", type=lambda v: [float(e) for e in v.split(",")], default=[1.0, 8.0]
    )
    p.add_argument("--prada-budget", type=int, default=2000)
    p.add_argument(
        "--skip",
        choices=["membership", "extraction", "dp", "prada"],
        action="append",
        default=[],
    )
    p.add_argument("--out", type=Path, default=RESULTS / "privacy")
    p.add_argument("--render", type=Path, help="Only re-render the Markdown of a results JSON.")
    p.add_argument(
        "--lira-shifts", action="store_true", help="Also LiRA with 5 shifted views per example."
    )
    args = p.parse_args()
    if args.render is not None:
        doc = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(markdown(doc))
        return
    torch.set_num_threads(1)
    start = time.perf_counter()
    previous = args.out.with_suffix(".json")
    kept = json.loads(previous.read_text()) if previous.is_file() and args.skip else {}
    doc: dict[str, Any] = {
        "argv": " ".join(sys.argv[1:]),
        "threads": 1,
        "machine": "2 shared CPU cores, no GPU",
        "versions": package_versions(),
    }
    if "membership" not in args.skip:
        doc["membership"] = membership(args)
    if "dp" not in args.skip:
        doc["dp"] = dp_defence(args)
    if "extraction" not in args.skip:
        doc["extraction"] = extraction(args)
    if "prada" not in args.skip:
        doc["prada"] = prada(args)
    for section in args.skip:  # a partial rerun keeps the other sections of the results
        if section in kept:
            doc[section] = kept[section]
            doc.setdefault("kept", []).append(section)
    if kept.get("first_run"):
        doc["first_run"] = kept["first_run"]
    doc["seconds"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2, default=str))
    args.out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
