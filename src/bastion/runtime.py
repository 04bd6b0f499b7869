"""How many CPU threads torch uses, chosen deliberately.

torch starts with one intra-op thread per core. On a machine whose cores are shared (a CI
runner, a workstation with other jobs) that oversubscribes them: threads spin-wait on each
other and a small model's training or evaluation runs 5-17x slower than with one thread
(measured on 2 cores with two other CPU-bound processes: ``bastion evaluate --subset 100`` took
13-16 s with one thread, 84-229 s with two).

:func:`choose_threads` turns a request (``"auto"`` or a count) into a count and a reason:

- a count is used as given (capped at the cores this process may run on);
- ``"auto"`` honours ``OMP_NUM_THREADS`` when the user set it, else takes the cores that other
  work leaves free (the busier of the 1-minute load average and a 0.1 s sample of
  ``/proc/stat``), rounded to the nearest integer, and at least one. An idle 2-core machine
  gets 2 threads; one running another CPU-bound job gets 1.

:func:`apply_threads` sets the count on torch and returns the :class:`ThreadChoice` that the
run prints and records in its scorecard (``runtime.threads``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Literal

import torch

from bastion.errors import ConfigError

__all__ = [
    "ThreadChoice",
    "ThreadsSetting",
    "apply_threads",
    "available_cores",
    "check_device_name",
    "choose_threads",
    "place_on_device",
    "resolve_device",
]

ThreadsSetting = int | Literal["auto"]


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count used and why (``reason`` is one short phrase for the run's output)."""

    threads: int
    requested: str
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"threads": self.threads, "requested": self.requested, "reason": self.reason}

    def describe(self) -> str:
        unit = "thread" if self.threads == 1 else "threads"
        return f"using {self.threads} torch {unit} ({self.reason})"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat`` (Linux), else ``None``."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_cores_now(window: float = 0.1) -> float | None:
    """How many cores other processes keep busy right now: ``/proc/stat`` sampled ``window``
    seconds apart while this process sleeps (``None`` where it cannot be read)."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(window)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return None
    share = (second[0] - first[0]) / (second[1] - first[1])
    return share * (os.cpu_count() or 1)


def _load_average() -> float | None:
    """The busier of the 1-minute load average and the cores busy right now: the load
    average lags a job that has just started by about a minute, a short sample misses a
    bursty one."""
    try:
        average: float | None = float(os.getloadavg()[0])
    except (AttributeError, OSError):
        average = None
    now = busy_cores_now()
    known = [v for v in (average, now) if v is not None]
    return max(known) if known else None


def parse_threads(value: object, *, where: str = "threads") -> ThreadsSetting:
    """``"auto"`` or an integer >= 1 (strings of digits accepted, as from a command line)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text.isdigit():
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigError(f"{where}: expected 'auto' or an integer >= 1, got {value!r}")


def choose_threads(
    setting: ThreadsSetting = "auto",
    *,
    cores: int | None = None,
    load: float | None = None,
    environ: dict[str, str] | None = None,
) -> ThreadChoice:
    """The thread count for ``setting`` (see the module docstring).

    ``cores``, ``load`` and ``environ`` default to this machine's (affinity, 1-minute load
    average, ``os.environ``); tests pass them to pin the decision.
    """
    setting = parse_threads(setting)
    n = available_cores() if cores is None else max(1, cores)
    if setting != "auto":
        used = min(setting, n)
        why = "as requested" if used == setting else f"requested {setting}, {n} cores"
        return ThreadChoice(used, str(setting), why)
    env = os.environ if environ is None else environ
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return ThreadChoice(min(int(omp), n), "auto", f"OMP_NUM_THREADS={omp}")
    load = _load_average() if load is None else load
    if load is None:
        return ThreadChoice(1, "auto", "load unknown: one thread")
    free = int(n - load + 0.5)
    used = max(1, min(n, free))
    return ThreadChoice(used, "auto", f"auto: {n} cores, load {load:.1f}")


def apply_threads(setting: ThreadsSetting = "auto") -> ThreadChoice:
    """Choose a thread count and set it with ``torch.set_num_threads``."""
    choice = choose_threads(setting)
    torch.set_num_threads(choice.threads)
    return choice


def check_device_name(value: str, *, where: str = "device") -> str:
    """``value`` lower-cased if it names a device kind bastion runs on (``auto``, ``cpu``,
    ``cuda``, ``cuda:N``, ``mps``), whether or not that device exists here; else ConfigError."""
    text = value.strip().lower()
    kind, colon, index = text.partition(":")
    if text in ("auto", "cpu", "cuda", "mps") or (kind == "cuda" and colon and index.isdigit()):
        return text
    raise ConfigError(f"{where}: expected auto, cpu, cuda, cuda:N or mps, got {value!r}")


def place_on_device(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move ``module``'s parameters to ``device`` and make it take and return CPU tensors.

    bastion keeps data sets, attack generators and results on the CPU; the heavy work is the
    model's forward and backward passes. For a device other than the CPU this moves the
    parameters and buffers there and registers hooks that copy every tensor argument of
    ``forward`` to ``device`` and the output (a tensor, or a tuple/list of tensors) back to
    the CPU. Both copies are differentiable, so gradients with respect to CPU inputs (every
    white-box attack) flow through. The state dict keeps its keys (checkpoints and saved
    models do not change); :func:`bastion.models.save_model` and checkpoints store CPU copies.
    Placing a module twice re-targets it (the hooks are registered once). On the CPU this does
    nothing and returns ``module``. Costs: one host-device copy of each batch each way.
    """
    if device.type == "cpu":
        return module
    module.to(device)
    previous = getattr(module, "_bastion_device", None)
    object.__setattr__(module, "_bastion_device", device)
    if previous is not None:
        return module

    def inputs(mod: torch.nn.Module, args: tuple[object, ...]) -> tuple[object, ...]:
        target = mod.__dict__["_bastion_device"]
        return tuple(a.to(target) if isinstance(a, torch.Tensor) else a for a in args)

    def outputs(mod: torch.nn.Module, args: tuple[object, ...], out: object) -> object:
        if isinstance(out, torch.Tensor):
            return out.cpu()
        if isinstance(out, tuple | list):
            return type(out)(o.cpu() if isinstance(o, torch.Tensor) else o for o in out)
        return out

    module.register_forward_pre_hook(inputs)
    module.register_forward_hook(outputs)
    return module


def resolve_device(value: str | None = "auto", *, where: str = "--device") -> torch.device:
    """``"auto"`` (or ``None``): the best device present (CUDA, then Apple's MPS, then the
    CPU); else ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, which must exist here (else a
    ConfigError naming ``where``: ``--device`` or the config's ``device``)."""
    text = check_device_name(value or "auto", where=where)
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{where}: {value!r}, but no CUDA device is available here")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"{where}: {value!r}, but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"{where}: {value!r}, but MPS is not available here")
    return device
