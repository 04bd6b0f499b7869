"""Settings of the guarded HTTP service (one frozen, keyword-only dataclass)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from bastion.errors import ConfigError
from bastion.serve.output_policy import OutputPolicy, parse_policies


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """Everything the service can be tuned with; every field has a safe default.

    Attributes:
        require_auth: demand an ``X-API-Key`` header on ``POST /v1/predict`` (turn off only for
            local use; the caller is then the key ``anonymous``).
        keys_db: SQLite path of the API-key store (``None``: ``<run_dir>/keys.db`` in
            :func:`bastion.serve.serve`).
        audit_url: ``sqlite:///path.db``, a plain path, or ``postgresql://...`` (``None``:
            ``<run_dir>/audit.db``).
        audit_all: also write accepted requests to the audit log (default: only flagged,
            abstained and rejected ones).
        audit_synchronous: SQLite ``synchronous`` pragma. ``NORMAL`` with WAL keeps every
            committed record across a crash of the process (SIGKILL): the commit has reached
            the WAL file in the kernel's page cache before the response is sent. ``FULL`` also
            fsyncs the WAL at each commit, which is needed only to survive a power loss or a
            kernel crash.
        max_body_bytes: largest request body accepted (413 above it).
        max_connections: most open connections in total (uvicorn's ``limit_concurrency``;
            requests beyond it are answered 503).
        max_connections_per_client: most open connections from one client address; a
            further connection is closed at once.
        idle_connection_timeout_s: a connection that has not sent a complete request head
            within this many seconds of opening is closed (after a response, uvicorn's
            keep-alive timeout applies).
        max_bodies_per_client: most request bodies received at the same time per API key
            (per client address without auth); 429 with ``Retry-After`` above it.
        max_body_bytes_in_flight: most request-body bytes being received at the same time
            across all clients (a body counts its ``Content-Length``, or ``max_body_bytes``
            if undeclared); 503 with ``Retry-After`` above it.
        max_batch: most inputs in one request (413 above it).
        request_timeout_s: longest wait for the guard's answer (504 after it).
        max_pending: most inputs waiting for the guard across all requests (503 above it).
        micro_batch: most inputs one forward pass of the guard serves.
        micro_batch_wait_ms: how long the batcher waits for more requests after the first
            (0: serve whatever arrived while the previous batch ran).
        rate: default tokens per second of a key (one token per input); ``None``: unlimited.
        burst: default bucket size of a key.
        extraction_check: run the PRADA model-extraction test per key.
        extraction_min_samples: distances needed before the first Shapiro-Wilk test.
        extraction_threshold: Shapiro-Wilk W below which a key is flagged.
        extraction_window: most distances (and stored queries per class) kept per key.
        extraction_every: run the test after every this many new distances.
        extraction_budget_bits: flag a key once its coverage-weighted information budget
            (:mod:`bastion.serve.budget`) exceeds this many bits; calibrate it on a replay of
            normal traffic with :func:`bastion.serve.budget.calibrate_threshold` (``None``:
            this monitor is off).
        extraction_reference: safetensors file of the :class:`~bastion.serve.budget.
            CoverageReference` the budget discounts repeats by (``None``: ``bastion serve``
            uses ``<run_dir>/guard/extraction-reference.safetensors`` if present, else no
            coverage discount).
        extraction_budget_charge: what the budget charges per answered query: ``label``
            (``log2 C`` bits whatever the key's output policy) or ``capacity`` (the bits the
            key's policy can carry, :meth:`~bastion.serve.output_policy.OutputPolicy.bits`).
            ``label`` is the default because a Knockoff copy trained on labels alone is nearly
            as faithful as one trained on probabilities (``benchmarks/extraction_monitor.py``):
            charging by capacity would give a ``labels`` key about 60 times more queries.
        output_policies: output hardening per API key tier (``bastion keys create NAME
            --tier TIER``): tier name -> ``full``, ``round-D``, ``top-K``, ``top-K:D`` or
            ``labels`` (:mod:`bastion.serve.output_policy`).
        default_output: the policy of keys whose tier is not in ``output_policies``.
        throttle_flagged: give a flagged key the rate ``flagged_rate`` / ``flagged_burst``.
        flagged_rate: tokens per second of a flagged key.
        flagged_burst: bucket size of a flagged key.
        torch_threads: ``torch.set_num_threads`` for the service (``None``: leave as is).
        model: which model of the run directory to serve (``None``: the last in the
            scorecard, i.e. the hardened one).
    """

    require_auth: bool = True
    keys_db: str | None = None
    audit_url: str | None = field(default=None, repr=False)  # may hold a password
    audit_all: bool = False
    audit_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    max_body_bytes: int = 4 * 1024 * 1024
    max_connections: int = 1000
    max_connections_per_client: int = 100
    idle_connection_timeout_s: float = 10.0
    max_bodies_per_client: int = 8
    max_body_bytes_in_flight: int = 64 * 1024 * 1024
    max_batch: int = 256
    request_timeout_s: float = 10.0
    max_pending: int = 4096
    micro_batch: int = 128
    micro_batch_wait_ms: float = 0.0
    rate: float | None = 100.0
    burst: int = 256
    extraction_check: bool = True
    extraction_min_samples: int = 100
    extraction_threshold: float = 0.90
    extraction_window: int = 2000
    extraction_every: int = 10
    extraction_budget_bits: float | None = None
    extraction_reference: str | None = None
    extraction_budget_charge: Literal["label", "capacity"] = "label"
    output_policies: dict[str, str] = field(default_factory=dict)
    default_output: str = "full"
    throttle_flagged: bool = True
    flagged_rate: float = 1.0
    flagged_burst: int = 10
    torch_threads: int | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        positive_ints = (
            "max_body_bytes",
            "max_batch",
            "max_pending",
            "micro_batch",
            "burst",
            "max_connections",
            "max_connections_per_client",
            "max_bodies_per_client",
            "max_body_bytes_in_flight",
        )
        for name in (*positive_ints, "extraction_window", "extraction_every", "flagged_burst"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"serve.{name}: expected a positive integer, got {value!r}")
        if self.extraction_min_samples < 3:
            raise ConfigError(
                "serve.extraction_min_samples: expected at least 3 (Shapiro-Wilk needs 3 "
                f"samples), got {self.extraction_min_samples!r}"
            )
        if self.extraction_window > 5000 or self.extraction_window < self.extraction_min_samples:
            raise ConfigError(
                "serve.extraction_window: expected extraction_min_samples..5000 (scipy's "
                f"Shapiro-Wilk p-value is exact only up to 5000), got {self.extraction_window!r}"
            )
        if not 0.0 < self.extraction_threshold < 1.0:
            raise ConfigError(
                "serve.extraction_threshold: expected W in (0, 1), got "
                f"{self.extraction_threshold!r}"
            )
        parse_policies(self.output_policies)
        if self.extraction_budget_charge not in ("label", "capacity"):
            raise ConfigError(
                "serve.extraction_budget_charge: expected label or capacity, got "
                f"{self.extraction_budget_charge!r}"
            )
        OutputPolicy.parse(self.default_output, field="serve.default_output")
        budget = self.extraction_budget_bits
        if budget is not None and (
            isinstance(budget, bool)
            or not isinstance(budget, (int, float))
            or not (budget > 0 and math.isfinite(budget))
        ):
            raise ConfigError(
                "serve.extraction_budget_bits: expected a positive number of bits or null, "
                f"got {budget!r}"
            )
        if self.max_body_bytes_in_flight < self.max_body_bytes:
            raise ConfigError(
                "serve.max_body_bytes_in_flight: expected at least max_body_bytes "
                f"({self.max_body_bytes}), got {self.max_body_bytes_in_flight!r}"
            )
        for name in ("request_timeout_s", "flagged_rate", "idle_connection_timeout_s"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"serve.{name}: expected a positive number")
        if self.rate is not None and not self.rate > 0:
            raise ConfigError(f"serve.rate: expected a positive number or null, got {self.rate!r}")
        if self.micro_batch_wait_ms < 0:
            raise ConfigError("serve.micro_batch_wait_ms: expected >= 0")
        if self.audit_synchronous not in ("NORMAL", "FULL"):
            raise ConfigError(
                f"serve.audit_synchronous: expected NORMAL or FULL, got {self.audit_synchronous!r}"
            )
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError("serve.torch_threads: expected a positive integer or null")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> ServeSettings:
        """Build from a config mapping (e.g. the ``serve:`` section of a YAML file); unknown
        keys raise :class:`ConfigError` naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"serve: unknown setting(s) {', '.join(unknown)}; expected some of "
                f"{', '.join(sorted(known))}"
            )
        try:
            return cls(**values)
        except TypeError as e:
            raise ConfigError(f"serve: {e}") from e

    def with_(self, **changes: Any) -> ServeSettings:
        """A copy with some fields changed."""
        return replace(self, **changes)
