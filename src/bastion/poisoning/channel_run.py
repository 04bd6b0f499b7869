"""``bastion run``'s ``poisoning:`` section for the text and tabular channels.

In a config with a ``text:`` or ``tabular:`` section (and no ``models``), the section is a
drill on that channel's data set, run with :func:`~.drill.run_drill`: the training split is
poisoned (``trigger-word`` on texts, :mod:`.text_backdoor`; ``feature-pattern`` on tables,
:mod:`.tabular_backdoor`), the channel's model is trained on it (the victim), the configured
scans run (``trigger-token`` / ``feature-value`` by default), what they flag is written to
``quarantine.json`` with scores and reasons, the model is retrained on the kept rows (when
``quarantine``) and both are measured for clean accuracy and attack success.

The scorecard section has the image drill's keys (``n_scanned``, ``n_quarantined``,
``n_trained_on``, ``detection``, ``score_histograms``, ``quarantine_table``, ``models``) and the
gate's figures (``poison_fraction_quarantined``, ``backdoor_attack_success``): ``models`` holds
the model the run ends with (the retrained one, or the victim without quarantine), ``undefended``
the victim's figures. Data sets are split with the run's ``seed``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion.errors import ConfigError
from bastion.poisoning.config import PoisoningConfig, run_channel
from bastion.poisoning.drill import DrillOutcome, run_drill
from bastion.poisoning.quarantine import write_quarantine
from bastion.poisoning.verify import gate_figures, quarantine_table, score_histograms

LogFn = Callable[[str], None]

#: The model entry of each channel's drill in the scorecard.
MODEL_NAMES = {"text": "word-cnn", "tabular": "mlp"}


def _quiet(message: str) -> None:
    return None


def _resolve(value: str, config_dir: Path | None) -> Path:
    p = Path(value).expanduser()
    if not p.is_absolute() and config_dir is not None and not p.exists():
        p = config_dir / p
    return p


def _check_target(target: int, num_classes: int) -> None:
    if target >= num_classes:
        raise ConfigError(
            f"poisoning.attack.target: expected a class index in 0..{num_classes - 1}, got {target}"
        )


def _epochs(pcfg: PoisoningConfig, default: int) -> int:
    m = pcfg.scan.model
    return m.epochs if "epochs" in m.model_fields_set else default


def text_channel(
    pcfg: PoisoningConfig, run: Any, *, data_dir: str | None, config_dir: Path | None
) -> Any:
    """The :class:`~.text_drill.TextDrillChannel` of a text config: its data set (split with
    the run's seed; the first ``train_examples`` training texts), its vocabulary length and
    epochs (``scan.model.epochs`` wins), the ``trigger-word`` attack of the section."""
    from bastion.text.experiment_parts import load_config_data

    from .text_drill import TextDrillChannel, TextDrillSettings, poison_text_split

    tcfg, a = run.text, pcfg.attack
    assert a is not None
    if tcfg.file is not None:
        folder: Path | None = _resolve(tcfg.file.path, config_dir)
    else:
        folder = None if data_dir is None else Path(data_dir)
    if folder is None:
        raise ConfigError(
            f"text: give the folder of the {tcfg.dataset} files with --data-dir or data.data_dir"
        )
    data = load_config_data(tcfg, folder, seed=run.seed)
    if pcfg.train_examples is not None:
        n = pcfg.train_examples
        data = dataclasses.replace(data, train=data.train.subset(n))
    _check_target(a.target, data.num_classes)
    settings = TextDrillSettings(
        rate=a.rate,
        target=a.target,
        trigger=a.word,
        repeats=a.repeats,
        epochs=_epochs(pcfg, tcfg.training.epochs),
        max_length=tcfg.vocab.max_length,
        quarantine_by=tuple(pcfg.methods("text")),
        spectral_eps=pcfg.scan.eps,
        seed=run.seed,
    )
    return TextDrillChannel(
        data, poison_text_split(data, settings), settings, scan_names=settings.quarantine_by
    )


def tabular_channel(pcfg: PoisoningConfig, run: Any, *, config_dir: Path | None) -> Any:
    """The :class:`~.tabular_drill.TabularDrillChannel` of a tabular config: the CSV and schema
    of its ``data`` section (split with the run's seed and the tabular section's fractions;
    the first ``train_examples`` training rows), the ``feature-pattern`` attack of the section,
    ``scan.model.epochs`` epochs (default: the tabular section's)."""
    from bastion.data import Split
    from bastion.tabular.loading import load_constrained_csv

    from .tabular_drill import TabularDrillChannel, TabularDrillSettings, poison_tabular_split

    a, tcfg = pcfg.attack, run.tabular
    assert a is not None
    data = load_constrained_csv(
        _resolve(run.data.path, config_dir),
        _resolve(run.data.schema_path, config_dir),
        seed=run.seed,
        val_fraction=tcfg.val_fraction,
        test_fraction=tcfg.test_fraction,
    )
    if pcfg.train_examples is not None:
        n = pcfg.train_examples
        data = dataclasses.replace(data, train=Split(data.train.x[:n], data.train.y[:n]))
    _check_target(a.target, len(data.classes))
    settings = TabularDrillSettings(
        rate=a.rate,
        target=a.target,
        k=a.k,
        epochs=_epochs(pcfg, tcfg.epochs),
        quarantine_by=tuple(pcfg.methods("tabular")),
        spectral_eps=pcfg.scan.eps if "eps" in pcfg.scan.model_fields_set else None,
        seed=run.seed,
    )
    try:
        pattern, p = poison_tabular_split(data, settings, a.features)
    except ConfigError as e:  # the attack's own field names, as the run config spells them
        raise ConfigError(str(e).replace("poisoning.trigger.", "poisoning.attack.", 1)) from None
    return TabularDrillChannel(data, p, pattern, settings, scan_names=settings.quarantine_by)


def _section(
    pcfg: PoisoningConfig, channel: str, out: DrillOutcome[Any], record: dict[str, Any]
) -> dict[str, Any]:
    n = len(out.quarantine.mask)
    shipped = out.retrained if out.retrained is not None else out.undefended
    section: dict[str, Any] = {
        "channel": channel,
        "quarantine_file": "quarantine.json",
        "n_scanned": n,
        "n_quarantined": len(out.quarantine.entries),
        "n_trained_on": len(out.quarantine.kept) if pcfg.quarantine else n,
        "quarantine_applied": pcfg.quarantine,
        "detection": {
            **{k: _metrics(v) for k, v in out.scans.items()},
            "quarantine": out.quarantined,
        },
        "attack": {k: v for k, v in record.items() if k != "indices"},
        "scans": {k: {f: v[f] for f in v if f not in _METRIC_KEYS} for k, v in out.scans.items()},
        "score_histograms": score_histograms(out.outcomes),
        "quarantine_table": quarantine_table(out.quarantine),
        "undefended": out.undefended,
        "scan_model_attack_success_rate": out.undefended["attack_success_rate"],
        "models": {MODEL_NAMES[channel]: {k: v for k, v in shipped.items() if k != "kept"}},
    }
    section.update(gate_figures(section))
    return section


_METRIC_KEYS = ("precision", "recall", "f1", "clean_flagged_rate", "n_flagged", "n_poisoned")


def _metrics(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in _METRIC_KEYS if k in doc}


def run_channel_poisoning(
    pcfg: PoisoningConfig,
    run: Any,
    run_dir: str | Path,
    *,
    data_dir: str | None = None,
    config_dir: Path | None = None,
    log: LogFn = _quiet,
) -> dict[str, Any]:
    """Run the text or tabular drill of a run config (``run``: a validated
    :class:`~bastion.config.RunConfig` with a ``text`` or ``tabular`` section and no
    ``models``); write ``quarantine.json`` into ``run_dir``; return the scorecard section.
    ``data_dir`` is the resolved ``--data-dir`` (text data sets), ``config_dir`` the folder
    relative paths of the config are read from."""
    channel = run_channel(run)
    if channel == "image":
        raise ConfigError("poisoning: expected a config with a text or tabular section")
    pcfg.check_channel(channel)
    t0 = time.perf_counter()
    if channel == "text":
        drill = text_channel(pcfg, run, data_dir=data_dir, config_dir=config_dir)
    else:
        drill = tabular_channel(pcfg, run, config_dir=config_dir)
    log(f"poisoning: the {channel} drill, {int(drill.truth.sum())} of {len(drill.truth)} poisoned")
    out = run_drill(drill, pcfg.methods(channel), retrain=pcfg.quarantine, log=log)
    record = drill.p.record()
    write_quarantine(out.quarantine, Path(run_dir) / "quarantine.json", extra={"poisoning": record})
    section = _section(pcfg, channel, out, record)
    section["seconds"] = round(time.perf_counter() - t0, 2)
    return section


__all__ = ["run_channel_poisoning", "tabular_channel", "text_channel"]
