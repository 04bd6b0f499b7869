"""What a new user hits on a fresh clone: threads, the test split a saved model is evaluated on,
model-card sentences, and one-line errors that leave nothing behind."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from bastion.cli import main
from bastion.config import parse_config
from bastion.errors import BastionError, ConfigError
from bastion.models import read_sidecar
from bastion.provenance import load_model_split
from bastion.runtime import choose_threads

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "name": "tiny",
    "data": {"name": "digits"},
    "threat": {"norm": "linf", "eps": 0.2},
    "model": {"architecture": "mlp"},
    "training": {"epochs": 2, "batch_size": 64, "lr": 0.05, "val_examples": 40, "val_pgd_steps": 2},
    "models": [
        {"name": "baseline", "objective": {"name": "standard"}},
        {"name": "hardened", "objective": {"name": "fast-fgsm"}},
    ],
    "evaluation": {"examples": 40, "attacks": [{"name": "fgsm"}, {"name": "pgd", "steps": 5}]},
}


def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("newuser")
    cfg = _write(d / "cfg.yaml", TINY)
    assert main(["run", str(cfg), "--out", str(d / "runs"), "-q", "--threads", "1"]) == 0
    (run,) = list((d / "runs").iterdir())
    return run


# -- 1. threads -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "load", "env", "expected"),
    [
        ("auto", 0.1, {}, 2),  # idle: every core
        ("auto", 1.9, {}, 1),  # one other CPU-bound job on 2 cores
        ("auto", 7.0, {}, 1),  # very busy: never fewer than one
        ("auto", 0.1, {"OMP_NUM_THREADS": "1"}, 1),  # the user's own setting wins
        (1, 0.0, {}, 1),
        (8, 0.0, {}, 2),  # capped at the cores available
    ],
)
def test_threads_follow_the_load(
    setting: int | str, load: float, env: dict[str, str], expected: int
) -> None:
    choice = choose_threads(setting, cores=2, load=load, environ=env)  # type: ignore[arg-type]
    assert choice.threads == expected
    assert choice.reason


def test_threads_setting_is_validated() -> None:
    with pytest.raises(ConfigError, match="threads"):
        parse_config({**TINY, "threads": 0})
    assert parse_config({**TINY, "threads": "auto"}).threads == "auto"
    assert parse_config({**TINY, "threads": 2}).threads == 2


def test_run_says_and_records_the_threads(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sc = json.loads((run_dir / "scorecard.json").read_text())
    assert sc["runtime"]["threads"] == 1
    assert sc["runtime"]["thread_choice"]["requested"] == "1"
    cfg = _write(tmp_path / "cfg.yaml", {**TINY, "threads": 1})
    out = tmp_path / "sc.json"
    model = run_dir / "models" / "baseline"
    assert main(["evaluate", str(cfg), "-m", str(model), "--out", str(out), "-q"]) == 0
    assert "using 1 torch thread" in capsys.readouterr().err
    assert json.loads(out.read_text())["runtime"]["threads"] == 1


# -- 2. the model's own split and threat ------------------------------------------------------
def _attack_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 0
    return " ".join(capsys.readouterr().out.split())


def test_attack_seed_does_not_resplit_and_eps_comes_from_the_model(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(run_dir / "models" / "hardened")
    base = ["attack", model, "--attack", "fgsm", "-n", "1000"]
    a = _attack_line(capsys, [*base, "--seed", "0"])
    b = _attack_line(capsys, [*base, "--seed", "1"])
    clean = [s for s in a.split(",") if "clean accuracy" in s]
    assert clean and clean == [s for s in b.split(",") if "clean accuracy" in s]
    assert "eps 0.2 " in a  # the model's threat, not the old default 0.3
    sidecar = read_sidecar(model)
    source = load_model_split(sidecar)
    assert source.verified
    assert f"on {len(source.data.test)} test examples" in a


def test_old_sidecar_warns_and_other_split_is_refused(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    stem = tmp_path / "old"
    shutil.copy(run_dir / "models" / "baseline.safetensors", stem.with_suffix(".safetensors"))
    doc = json.loads((run_dir / "models" / "baseline.json").read_text())
    del doc["metadata"]["split"]
    stem.with_suffix(".json").write_text(json.dumps(doc))
    assert main(["attack", str(stem), "--attack", "fgsm", "-n", "10"]) == 0
    assert "records no data split" in capsys.readouterr().err

    model = str(run_dir / "models" / "baseline")
    assert main(["attack", model, "--split-seed", "3", "-n", "10"]) == 2
    assert "--split-seed" in capsys.readouterr().err

    other = _write(tmp_path / "other.yaml", {**TINY, "seed": 3})
    out = tmp_path / "sc.json"
    assert main(["evaluate", str(other), "-m", model, "--out", str(out), "-q"]) == 2
    assert "split differs" in capsys.readouterr().err
    assert not out.exists()


def test_zero_examples_is_an_error_not_nan(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(run_dir / "models" / "baseline")
    for command in (["attack", model], ["certify", model]):
        assert main([*command, "-n", "0"]) == 2
        captured = capsys.readouterr()
        assert "nan" not in captured.out + captured.err


def test_patch_and_transfer_from_the_command_line(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(run_dir / "models" / "hardened")
    line = _attack_line(capsys, ["attack", model, "--attack", "patch", "-p", "epochs=1", "-n", "8"])
    assert "eps 1 " in line  # the ball that holds every patch, chosen without --eps
    surrogate = str(run_dir / "models" / "baseline")
    line = _attack_line(
        capsys, ["attack", model, "--attack", "transfer", "-p", f"surrogate={surrogate}", "-n", "8"]
    )
    assert "TransferAttack" in line and "accuracy under attack" in line
    assert main(["attack", model, "--attack", "transfer", "-p", "surrogate=/nope", "-n", "8"]) == 2
    assert "transfer.surrogate" in capsys.readouterr().err


# -- 3. the model card says only what ran ----------------------------------------------------
def test_model_card_knowledge_comes_from_the_attacks_run(run_dir: Path) -> None:
    from bastion.report.model_card import render_model_card

    sc = json.loads((run_dir / "scorecard.json").read_text())
    white = render_model_card(sc)
    assert "score-based" not in white and "white-box only" in white
    sc["evaluation"]["attacks"].append({"label": "square", "name": "square", "queries": 100})
    black = render_model_card(sc)
    assert "score-based" in black and "white-box only" not in black
    sc["evaluation"]["attacks"] = [{"label": "aa", "name": "cascade", "preset": "standard"}]
    assert "score-based" in render_model_card(sc)


# -- 5. example gate policies hold no wall-clock rule -----------------------------------------
def test_example_policies_have_no_wall_clock_rules() -> None:
    for path in (ROOT / "examples" / "policies").glob("*.yaml"):
        rules = yaml.safe_load(path.read_text())["rules"]
        assert not [r for r in rules if str(r.get("metric", "")).startswith("timings.")], path


# -- 6. latency and the report ----------------------------------------------------------------
def test_latency_gap_between_identical_architectures_is_flagged() -> None:
    from bastion.evaluation.latency import implausible_gaps

    def lat(p50: float) -> dict:
        return {"batch_sizes": {"1": {"p50_ms": p50}}}

    flagged = implausible_gaps({"a": ("small-cnn", lat(47.9)), "b": ("small-cnn", lat(0.21))})
    assert len(flagged) == 1 and "measurement artefact" in flagged[0][1]
    assert not implausible_gaps({"a": ("small-cnn", lat(0.3)), "b": ("small-cnn", lat(0.21))})
    assert not implausible_gaps({"a": ("large-cnn", lat(47.9)), "b": ("mlp", lat(0.21))})


def test_report_shows_every_sanity_check_and_each_timing_once(run_dir: Path) -> None:
    from bastion.report.html import render_html

    sc = json.loads((run_dir / "scorecard.json").read_text())
    checks = sc["models"]["hardened"]["sanity_checks"]
    assert checks and all(c["passed"] for c in checks)
    html = render_html(sc)
    assert 'id="sanity"' in html
    for c in checks:
        assert c["code"] in html
    assert "training baseline" not in html  # already a row: "Train baseline seconds"


# -- 7. plain progress off a terminal ---------------------------------------------------------
def test_progress_off_a_terminal_is_plain_unwrapped_lines() -> None:
    from bastion.progress import ProgressReporter

    buf = io.StringIO()
    reporter = ProgressReporter(Console(file=buf, width=80), interval=0.0)
    assert reporter.plain
    with reporter.session():
        train = reporter.training("a-model-with-a-long-name-" + "x" * 40)
        train(
            {
                "epoch": 1,
                "epochs": 30,
                "train_loss": 0.5,
                "train_accuracy": 0.9,
                "val_clean_accuracy": 0.9,
                "val_robust_accuracy": 0.5,
                "end_of_epoch": True,
            }
        )
        evaluate = reporter.evaluation("m")
        evaluate("pgd eps=0.1", 1, 4)
        evaluate("pgd eps=0.2", 2, 4)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3
    assert "epoch 1/30" in lines[0] and "val robust 50.0%" in lines[0] and len(lines[0]) > 80
    assert "pgd eps=0.1 (1/4" in lines[1] and "pgd eps=0.2 (2/4" in lines[2]


# -- 8. Ctrl-C says what happened -------------------------------------------------------------
def test_interrupted_run_says_nothing_was_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bastion.pipeline

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bastion.pipeline, "train_entry", interrupt)
    out = tmp_path / "runs"
    assert main(["run", str(_write(tmp_path / "c.yaml", TINY)), "--out", str(out), "-q"]) == 130
    assert "interrupted; nothing written" in capsys.readouterr().err
    assert not out.exists()


def test_interrupted_evaluation_says_how_to_resume(
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bastion.pipeline

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bastion.pipeline, "evaluate_models", interrupt)
    cfg = _write(tmp_path / "c.yaml", TINY)
    model = str(run_dir / "models" / "baseline")
    assert main(["evaluate", str(cfg), "-m", model, "--out", str(tmp_path / "s.json"), "-q"]) == 130
    assert "resume by running the same command again" in capsys.readouterr().err


# -- 9. errors found when parsing, one line each, nothing left behind --------------------------
def test_unknown_architecture_is_caught_when_parsing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(tmp_path / "c.yaml", {**TINY, "model": {"architecture": "small-cn"}})
    out = tmp_path / "runs"
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "model.architecture" in err and "small-cnn" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_yaml_syntax_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\nmodels: [{name: a}\nseed: 1\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 3, column 1" in err


def test_weight_mismatch_is_one_line_naming_the_key(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    stem = tmp_path / "bad"
    shutil.copy(run_dir / "models" / "baseline.json", stem.with_suffix(".json"))
    state = load_file(str(run_dir / "models" / "baseline.safetensors"))
    first = sorted(state)[0]
    state["extra.weight"] = state.pop(first)
    save_file(state, str(stem.with_suffix(".safetensors")))
    assert main(["attack", str(stem), "-n", "5"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"missing key '{first}'" in err and "unexpected key 'extra.weight'" in err


def test_failed_run_leaves_no_out_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = {
        "name": "t",
        "data": {"data_dir": str(tmp_path / "missing")},
        "text": {"dataset": "sms_spam"},
    }
    cfg = _write(tmp_path / "c.yaml", doc)
    out = tmp_path / "runs"
    code = main(["run", str(cfg), "--out", str(out)])
    assert code == 2, capsys.readouterr().err
    assert not out.exists()


def test_load_model_split_refuses_another_data_set(run_dir: Path) -> None:
    sidecar = read_sidecar(run_dir / "models" / "baseline")
    with pytest.raises(BastionError, match="--data"):
        load_model_split(sidecar, data="breast-cancer")


# -- devices ----------------------------------------------------------------------------------
def test_device_choice_and_bad_devices(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from bastion.runtime import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda:0")
    with pytest.raises(ConfigError, match="--device"):
        resolve_device("tpu")
    model = str(run_dir / "models" / "baseline")
    line = _attack_line(capsys, ["attack", model, "--attack", "fgsm", "-n", "5", "--device", "cpu"])
    assert "(cpu)" in line
    assert main(["attack", model, "-n", "5", "--device", "gpu7"]) == 2
    assert "--device" in capsys.readouterr().err
