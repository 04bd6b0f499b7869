"""The guarded HTTP service: ``POST /v1/predict``, ``GET /v1/health``, ``GET /metrics``.

Each predict request: API key (401, checked from the headers before a byte of the body is
read) -> declared body size (413) -> bodies in flight per client and in total (429/503) -> body
-> JSON and shape checks (400/413/422) -> per-key rate limit (429; 413 for a batch larger than
the key's burst) -> micro-batched ``guard.decide`` (503 overload, 504 timeout) -> PRADA
extraction check per key -> audit log commit (503 if it fails) -> response. Every error is
JSON ``{"detail", "field", "request_id"}``; no error carries configuration secrets. A client
that disconnects mid-body is counted as status ``499`` (client closed request), not an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
import json
import logging
import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.requests import ClientDisconnect

from bastion.errors import ConfigError
from bastion.guard.decision import Decision, GuardLike
from bastion.monitor import DriftMonitor
from bastion.serve.audit import AuditError, AuditLog, AuditRecord
from bastion.serve.batching import MicroBatcher
from bastion.serve.budget import BudgetMonitor, CoverageReference, answer_bits
from bastion.serve.errors import RequestError
from bastion.serve.extraction import ExtractionMonitor
from bastion.serve.inputs import parse_body, parse_text_body
from bastion.serve.keys import LOCKOUT_S, PREFIX, KeyRecord, KeyStore
from bastion.serve.metrics import ServiceMetrics
from bastion.serve.output_policy import OutputPolicy, parse_policies
from bastion.serve.ratelimit import RateLimiter
from bastion.serve.schemas import (
    ErrorResponse,
    HealthResponse,
    PredictResponse,
    predict_request_schema,
)
from bastion.serve.settings import ServeSettings

_log = logging.getLogger("bastion.serve")

# bodies up to this size are parsed on the event loop (about 1 ms); larger ones in a thread
_PARSE_INLINE_BYTES = 64 * 1024
ANONYMOUS = KeyRecord("anonymous", "anonymous", None, None, 0.0, False)


def guard_layers(guard: GuardLike) -> list[str]:
    """Names of the guard's layers, as far as the guard tells them."""
    layers = getattr(guard, "layers", None)
    if isinstance(layers, (list, tuple)):
        return [str(v) for v in layers]
    describe = getattr(guard, "describe", None)
    if callable(describe):
        info = describe()
        if isinstance(info, dict):
            names = ["validation", *map(str, info.get("thresholds", {}))]
            return [*names, f"prediction:{info.get('prediction', 'model')}"]
    return [type(guard).__name__]


def request_ids() -> Callable[[], str]:
    """Unique request ids: a random 64-bit prefix per app (so ids never repeat across
    restarts) and a counter; one ``os.urandom`` per app, not per request."""
    prefix = secrets.token_hex(8)
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter):016x}"


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


class BodyBudget:
    """Request bodies being received at once: at most ``per_client`` per client and at most
    ``total_bytes`` bytes in all (each body reserves its declared length, or the body limit
    when undeclared). Used on the event loop only, so it needs no lock."""

    def __init__(self, *, per_client: int, total_bytes: int) -> None:
        self.per_client = per_client
        self.total_bytes = total_bytes
        self.bytes = 0
        self._counts: dict[str, int] = {}

    def acquire(self, client: str, size: int) -> None:
        """Reserve ``size`` bytes for ``client``; raises :class:`RequestError` 429 (this
        client) or 503 (all clients) when over budget."""
        if self._counts.get(client, 0) >= self.per_client:
            raise RequestError(
                429,
                "body",
                f"more than {self.per_client} request bodies in flight for this client",
                headers={"Retry-After": "1"},
            )
        if self.bytes + size > self.total_bytes:
            raise RequestError(
                503,
                "service",
                "overloaded: too many request bodies in flight",
                headers={"Retry-After": "1"},
            )
        self._counts[client] = self._counts.get(client, 0) + 1
        self.bytes += size

    def release(self, client: str, size: int) -> None:
        self.bytes -= size
        left = self._counts.get(client, 1) - 1
        if left > 0:
            self._counts[client] = left
        else:
            self._counts.pop(client, None)

    def in_flight(self) -> int:
        """Bodies being received now."""
        return sum(self._counts.values())


@dataclass
class _Service:
    guard: GuardLike
    settings: ServeSettings
    audit: AuditLog
    keys: KeyStore
    model_name: str
    metrics: ServiceMetrics
    limiter: RateLimiter
    monitor: ExtractionMonitor
    batcher: MicroBatcher
    started: float
    clock: Callable[[], float]
    bodies: BodyBudget
    budget: BudgetMonitor | None = None
    policies: dict[str, OutputPolicy] = field(default_factory=dict)
    default_policy: OutputPolicy = field(default_factory=lambda: OutputPolicy("full"))
    drift: DriftMonitor | None = None
    drift_state: Path | None = None
    drift_pool: ThreadPoolExecutor | None = None
    audit_log_lock: threading.Lock = field(default_factory=threading.Lock)
    audit_logged_at: float = -math.inf
    audit_failures_unlogged: int = 0

    def observe_drift(self, x: np.ndarray, decisions: list[Decision]) -> None:
        """Hand the answered inputs and their probabilities to the drift monitor, off the
        request path (a window's tests run in the monitor's own thread); the monitor state is
        saved after each window so ``bastion monitor`` can show it."""
        drift, pool = self.drift, self.drift_pool
        if drift is None or pool is None:
            return
        rows = [i for i, d in enumerate(decisions) if d.answered and d.probabilities is not None]
        if not rows:
            return
        xs = torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32))
        probs = torch.tensor([decisions[i].probabilities for i in rows], dtype=torch.float32)

        def work() -> None:
            before = drift.state.windows
            try:
                drift.observe(xs, probs)
                if self.drift_state is not None and drift.state.windows != before:
                    drift.state.save(self.drift_state)
            except Exception:  # the monitor must never break serving
                _log.exception("drift monitor failed")

        pool.submit(work)

    # -- the predict pipeline, run in a worker thread -------------------------------------
    def authenticate(self, header: str | None, source: str = "") -> KeyRecord:
        """The key of the ``X-API-Key`` header (401 if missing, unknown or revoked; 429 while
        ``source``, the client address, is locked out after repeated wrong secrets)."""
        if not self.settings.require_auth:
            return ANONYMOUS
        if not header:
            self.metrics.auth_failures.inc()
            raise RequestError(401, "X-API-Key", "missing API key: send it in the X-API-Key header")
        record = self.keys.verify(header, source=source)
        if record is None:
            self.metrics.auth_failures.inc()
            if self.keys.locked_out(source):
                raise RequestError(
                    429,
                    "X-API-Key",
                    f"too many wrong API keys from this address; retry in {LOCKOUT_S:g} s",
                    headers={"Retry-After": str(int(LOCKOUT_S))},
                )
            raise RequestError(401, "X-API-Key", "unknown or revoked API key")
        return record

    async def authorize(self, header: str | None, source: str) -> KeyRecord:
        """:meth:`authenticate` on the event loop for a remembered key, else in a worker
        thread (the first check of a key runs scrypt)."""
        if not self.settings.require_auth:
            return ANONYMOUS
        if (
            not header
            or not header.startswith(PREFIX)
            or len(header) > 200
            or self.keys.locked_out(source)
            or self.keys.cached(header) is not None
        ):  # no hash to compute: answer on the event loop, no thread hop for a key-less flood
            return self.authenticate(header, source)
        return await run_in_threadpool(self.authenticate, header, source)

    def log_audit_error(self, request_id: str, error: AuditError) -> None:
        """Log a failed audit commit: the first, then at most one line per 10 s with the
        number of failures in between (an outage must not flood the log)."""
        now = time.monotonic()
        with self.audit_log_lock:
            self.audit_failures_unlogged += 1
            if now - self.audit_logged_at < 10.0:
                return
            count, self.audit_failures_unlogged = self.audit_failures_unlogged, 0
            self.audit_logged_at = now
        _log.warning(
            "request %s: %s (%d failed commit(s) since the last report)", request_id, error, count
        )

    def rate_limit(self, key: KeyRecord, cost: int) -> None:
        s = self.settings
        if s.throttle_flagged and self.is_flagged(key.key_id):
            rate, burst = s.flagged_rate, s.flagged_burst
        else:
            rate = key.rate if key.rate is not None else s.rate  # type: ignore[assignment]
            burst = key.burst if key.burst is not None else s.burst
            if rate is None:
                return
        wait = self.limiter.take(key.key_id, cost, rate=rate, burst=burst)
        if wait > 0:
            self.metrics.rate_limited.inc()
            if math.isinf(wait):  # can never succeed: not a rate limit but a size limit
                raise RequestError(
                    413,
                    "inputs",
                    f"{cost} inputs exceed this key's burst of {burst}: no request with more "
                    f"than {burst} inputs can pass its rate limit; send at most {burst}",
                )
            raise RequestError(
                429,
                "X-API-Key",
                f"rate limit of {rate:g} inputs/s (burst {burst}) exceeded; retry in {wait:.2f} s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def parse(self, body: bytes) -> np.ndarray:
        return parse_body(
            body, input_shape=tuple(self.guard.input_shape), max_batch=self.settings.max_batch
        )[0]

    async def handle(self, body: bytes, key: KeyRecord, request_id: str) -> dict[str, Any]:
        """The predict pipeline after authentication. Runs on the event loop; only the slow
        or blocking steps go to worker threads: parsing a large body, the model (the
        micro-batcher's thread) and the audit commit."""
        if getattr(self.guard, "input_kind", "array") == "text":
            decisions, hashes = await self.decide_texts(body, key)
        else:
            decisions, hashes = await self.decide_arrays(body, key)
        await self.commit_audit(self.audit_records(decisions, hashes, key, request_id), request_id)
        return self.response(decisions, key, request_id)

    async def answer(self, pending: Awaitable[list[Decision]]) -> list[Decision]:
        """The model's decisions, or 504 when they take longer than ``request_timeout_s``."""
        timeout = self.settings.request_timeout_s
        try:
            return await asyncio.wait_for(pending, timeout)
        except TimeoutError:
            self.metrics.timeouts.inc()
            raise RequestError(
                504, "service", f"the model did not answer within {timeout:g} s"
            ) from None

    async def decide_texts(self, body: bytes, key: KeyRecord) -> tuple[list[Decision], list[str]]:
        """A text model's decisions on the body's texts (rate-limited per text) and the
        SHA-256 of each text."""
        texts = parse_text_body(body, max_batch=self.settings.max_batch)
        self.rate_limit(key, len(texts))
        decide = self.guard.decide_texts  # type: ignore[attr-defined]
        decisions = await self.answer(run_in_threadpool(decide, texts))
        hashes = [hashlib.sha256(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]
        return decisions, hashes

    async def decide_arrays(self, body: bytes, key: KeyRecord) -> tuple[list[Decision], list[str]]:
        """An array model's micro-batched decisions on the body's inputs (rate-limited per
        input, then the extraction check and the drift monitor) and each input's SHA-256."""
        if len(body) > _PARSE_INLINE_BYTES:
            x = await run_in_threadpool(self.parse, body)
        else:
            x = self.parse(body)
        self.rate_limit(key, int(x.shape[0]))
        future = self.batcher.submit(x)
        decisions = await self.answer(asyncio.wrap_future(future))
        decisions = self.check_extraction(key, x, decisions)
        self.observe_drift(x, decisions)
        hashes = [hashlib.sha256(np.ascontiguousarray(r).tobytes()).hexdigest() for r in x]
        return decisions, hashes

    def audit_records(
        self, decisions: list[Decision], hashes: list[str], key: KeyRecord, request_id: str
    ) -> list[AuditRecord]:
        """One record per decision that is not ``accept`` (every decision with
        ``audit_all``), stamped with the clock's time."""
        now = self.clock()
        return [
            AuditRecord(
                request_id=request_id,
                index=i,
                time=now,
                key_id=key.key_id,
                key_name=key.name,
                input_sha256=hashes[i],
                verdict=d.verdict,
                label=d.label,
                confidence=d.confidence,
                reasons=d.reasons,
                scores={k: float(v) for k, v in d.scores.items()},
                model=self.model_name,
            )
            for i, d in enumerate(decisions)
            if self.settings.audit_all or d.verdict != "accept"
        ]

    async def commit_audit(self, records: list[AuditRecord], request_id: str) -> None:
        """Commit ``records`` to the audit log in a worker thread; 503 if the commit fails
        (the request is then not answered)."""
        if not records:
            return
        try:
            await run_in_threadpool(self.audit.write, records)
        except AuditError as e:  # its text masks the URL's password; clients get none of it
            self.metrics.audit_errors.inc()
            self.log_audit_error(request_id, e)
            raise RequestError(
                503,
                "service",
                "audit log unavailable; request not answered",
                headers={"Retry-After": "1"},
            ) from None
        self.metrics.audit_writes.inc(len(records))

    def response(
        self, decisions: list[Decision], key: KeyRecord, request_id: str
    ) -> dict[str, Any]:
        """The JSON answer: each decision as ``key``'s output policy shows it."""
        classes = self.guard.classes
        policy = self.policy(key)
        preds = []
        for d in decisions:
            self.metrics.decisions.inc(verdict=d.verdict)
            shown = policy.apply(d.confidence, d.probabilities)
            preds.append(
                {
                    "verdict": d.verdict,
                    "label": d.label,
                    "class_name": classes[d.label]
                    if d.label is not None and 0 <= d.label < len(classes)
                    else None,
                    **shown,
                    "reasons": list(d.reasons),
                    "scores": {k: _finite(float(v)) for k, v in d.scores.items()},
                }
            )
        return {
            "request_id": request_id,
            "model": self.model_name,
            "output": policy.name,
            "predictions": preds,
        }

    def is_flagged(self, key_id: str) -> bool:
        """Whether either extraction monitor has flagged the key."""
        budget = self.budget
        return self.monitor.is_flagged(key_id) or (budget is not None and budget.is_flagged(key_id))

    def policy(self, key: KeyRecord) -> OutputPolicy:
        """The output policy of ``key``'s tier (``serve.default_output`` for other tiers)."""
        return self.policies.get(key.tier, self.default_policy)

    def answer_bits(self, key: KeyRecord) -> float:
        """The budget monitor's charge per answer to ``key``: ``log2 C`` bits, or with
        ``extraction_budget_charge: capacity`` the bits its output policy can carry."""
        classes = max(2, len(self.guard.classes))
        if self.settings.extraction_budget_charge == "label":
            return answer_bits(classes, kind="label")
        return self.policy(key).bits(classes)

    def check_extraction(
        self, key: KeyRecord, x: np.ndarray, decisions: list[Decision]
    ) -> list[Decision]:
        """PRADA and the information budget per key on the answered inputs; once either
        monitor has flagged a key, its answers become ``flag`` with that monitor's reason."""
        s = self.settings
        answered = [i for i, d in enumerate(decisions) if d.answered and d.label is not None]
        if not answered or (not s.extraction_check and self.budget is None):
            return decisions
        flat = x[answered].reshape(len(answered), -1)
        reasons: list[str] = []
        scores: dict[str, float] = {}
        if s.extraction_check:
            labels = [int(decisions[i].label) for i in answered]  # type: ignore[arg-type]
            status = self.monitor.observe(key.key_id, flat, labels)
            if status.newly_flagged:
                self.metrics.extraction_flags.inc()
            if status.flagged:
                reasons.append(status.reason(self.monitor.threshold))
                scores["prada_w"] = float(status.w or 0.0)
        if self.budget is not None:
            spent = self.budget.observe(key.key_id, flat, self.answer_bits(key))
            if spent.newly_flagged:
                self.metrics.extraction_budget_flags.inc()
            if spent.flagged:
                reasons.append(spent.reason(self.budget.threshold))
                scores["budget_bits"] = spent.score
        if not reasons:
            return decisions
        out = list(decisions)
        for i in answered:
            d = out[i]
            out[i] = Decision(
                verdict="flag",
                label=d.label,
                confidence=d.confidence,
                probabilities=d.probabilities,
                reasons=(*d.reasons, *reasons),
                scores={**d.scores, **scores},
            )
        return out


def _error(e: RequestError, request_id: str | None) -> JSONResponse:
    headers = dict(e.headers)
    if request_id:
        headers["X-Request-ID"] = request_id
    return JSONResponse(
        {"detail": e.message, "field": e.field, "request_id": request_id},
        status_code=e.status,
        headers=headers,
    )


def _declared_length(request: Request, limit: int) -> int | None:
    """The ``Content-Length`` (``None`` if absent); 400 if malformed, 413 above ``limit``."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not declared.isascii() or not declared.isdigit():
        raise RequestError(400, "Content-Length", "expected a non-negative integer")
    if len(declared) > 20 or int(declared) > limit:
        raise RequestError(
            413, "body", f"{declared} bytes exceed the request size limit of {limit}"
        )
    return int(declared)


def _large_body_pending(request: Request) -> bool:
    """Whether the request announced a body too large to have arrived with its head (more
    than 64 KiB, or chunked with no length)."""
    declared = request.headers.get("content-length")
    if declared is None:
        return "chunked" in request.headers.get("transfer-encoding", "").lower()
    return not declared.isdigit() or len(declared) > 9 or int(declared) > _PARSE_INLINE_BYTES


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) a streamed size above ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "body", f"more than {limit} bytes; the limit is {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "Body is not JSON."),
        (401, "Missing or unknown API key."),
        (413, "Body or batch too large."),
        (422, "Wrong field, shape, type or image."),
        (429, "Rate limit, bodies in flight or address lockout (see Retry-After)."),
        (503, "Overloaded or audit log unavailable."),
        (504, "The model did not answer in time."),
    )
}


def create_app(
    guard: GuardLike,
    *,
    settings: ServeSettings,
    audit: AuditLog,
    keys: KeyStore,
    model_name: str | None = None,
    clock: Callable[[], float] = time.time,
    drift: DriftMonitor | None = None,
    drift_state: Path | None = None,
) -> FastAPI:
    """The FastAPI app serving ``guard``.

    Args:
        guard: anything with ``input_shape``, ``classes`` and ``decide`` (see
            :class:`~bastion.guard.decision.GuardLike`).
        settings: limits, auth, audit and extraction settings.
        audit: where non-accepted (or, with ``audit_all``, all) decisions are committed before
            each response.
        keys: the API-key store (unused when ``settings.require_auth`` is false).
        model_name: the name reported in responses and audit records (default: the guard's
            ``name`` attribute, else ``"model"``).
        clock: wall-clock time of audit records.
        drift: a drift monitor fed with every answered input and its probabilities (window
            tests run in a background thread); its state is saved to ``drift_state`` after each
            window, and its window and alert counts appear in ``/metrics``.

    The micro-batching worker thread starts here and stops when the app shuts down.
    """
    service = _build_service(
        guard,
        settings=settings,
        audit=audit,
        keys=keys,
        model_name=model_name or str(getattr(guard, "name", "model")),
        clock=clock,
        drift=drift,
        drift_state=drift_state,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.batcher.close()
        if service.drift_pool is not None:
            service.drift_pool.shutdown(wait=True)

    extra: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        # OpenTelemetry hooks of newer FastAPI: off, /metrics covers what the service reports
        extra["telemetry"] = {
            "tracing": False,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
        }
    app = FastAPI(
        title="bastion guarded model service",
        version="1",
        description="A model behind bastion's runtime guard, with API keys, rate limits, "
        "an audit log and model-extraction monitoring.",
        lifespan=lifespan,
        **extra,
    )
    app.state.service = service
    _add_predict_route(app, service)
    _add_info_routes(app, service)

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, e: RequestError) -> JSONResponse:
        return _error(e, None)

    _install_openapi(app, service)
    return app


def _output_policies(
    guard: GuardLike, settings: ServeSettings
) -> tuple[dict[str, OutputPolicy], OutputPolicy]:
    """The output policy of each key tier and the default one, each checked against the
    guard's number of classes (:class:`ConfigError` naming the setting otherwise)."""
    policies = parse_policies(settings.output_policies)
    for tier, policy in policies.items():
        policy.check_classes(len(guard.classes), field=f"serve.output_policies.{tier}")
    default_policy = OutputPolicy.parse(settings.default_output, field="serve.default_output")
    default_policy.check_classes(len(guard.classes), field="serve.default_output")
    return policies, default_policy


def _budget_monitor(guard: GuardLike, settings: ServeSettings) -> BudgetMonitor | None:
    """The information-budget monitor of ``serve.extraction_budget_bits`` (``None`` when
    unset), with its coverage reference when one is given; :class:`ConfigError` if the
    reference was fitted on inputs of another size than the served array model's."""
    if settings.extraction_budget_bits is None:
        return None
    path = settings.extraction_reference
    reference = CoverageReference.load(path) if path is not None else None
    features = math.prod(guard.input_shape)
    array_model = getattr(guard, "input_kind", "array") != "text"
    if reference is not None and array_model and reference.features != features:
        raise ConfigError(
            f"serve.extraction_reference: {path} has cells of {reference.features} "
            f"features, the served model takes {features}; fit it on this model's data "
            "(bastion audit reference RUN_DIR)"
        )
    return BudgetMonitor(threshold=settings.extraction_budget_bits, reference=reference)


def _build_service(
    guard: GuardLike,
    *,
    settings: ServeSettings,
    audit: AuditLog,
    keys: KeyStore,
    model_name: str,
    clock: Callable[[], float],
    drift: DriftMonitor | None,
    drift_state: Path | None,
) -> _Service:
    """The service state behind the routes: monitors, metrics, the micro-batcher (its
    worker thread starts here) and the drift monitor's thread."""
    started = time.monotonic()
    monitor = ExtractionMonitor(
        min_samples=settings.extraction_min_samples,
        threshold=settings.extraction_threshold,
        window=settings.extraction_window,
        every=settings.extraction_every,
    )
    policies, default_policy = _output_policies(guard, settings)
    budget = _budget_monitor(guard, settings)

    def flagged_keys() -> float:
        flagged = set(monitor.flagged_keys())
        return float(len(flagged | set(budget.flagged_keys() if budget is not None else ())))

    metrics = ServiceMetrics(uptime=lambda: time.monotonic() - started, flagged_keys=flagged_keys)
    batcher = MicroBatcher(
        guard,
        max_rows=settings.micro_batch,
        wait_s=settings.micro_batch_wait_ms / 1000.0,
        max_pending=settings.max_pending,
        on_batch=lambda n: metrics.batch_size.observe(float(n)),
    )
    service = _Service(
        guard=guard,
        settings=settings,
        audit=audit,
        keys=keys,
        model_name=model_name,
        metrics=metrics,
        limiter=RateLimiter(),
        monitor=monitor,
        budget=budget,
        policies=policies,
        default_policy=default_policy,
        batcher=batcher,
        started=started,
        clock=clock,
        bodies=BodyBudget(
            per_client=settings.max_bodies_per_client,
            total_bytes=settings.max_body_bytes_in_flight,
        ),
        drift=drift,
        drift_state=drift_state,
        drift_pool=ThreadPoolExecutor(max_workers=1, thread_name_prefix="drift")
        if drift is not None
        else None,
    )
    if drift is not None:
        _add_drift_gauges(metrics, drift)
    return service


def _add_drift_gauges(metrics: ServiceMetrics, drift: DriftMonitor) -> None:
    """``/metrics`` gauges of the drift monitor's windows and alerts per kind."""
    metrics.add_gauge(
        "bastion_drift_windows", "Drift-monitor windows tested.", lambda: drift.state.windows
    )
    for kind in ("input", "confidence", "class_mix"):
        metrics.add_gauge(
            f"bastion_drift_alerts_{kind}",
            f"Drift alerts on the {kind.replace('_', ' ')} so far.",
            lambda kind=kind: float(drift.state.alerts.get(kind, 0)),  # type: ignore[misc]
        )


async def _predict(service: _Service, request: Request, request_id: str) -> Response:
    """Answer one predict request: the key, then the body within its budgets, then
    :meth:`_Service.handle`; every refusal is a JSON error response, a fault of the service
    a JSON 500, a client gone mid-body a bare 499."""
    settings = service.settings
    source = request.client.host if request.client is not None else ""
    body_read = False
    try:
        # the key first: nothing of the body is read (or buffered) for an unknown client
        key = await service.authorize(request.headers.get("x-api-key"), source)
        limit = settings.max_body_bytes
        declared = _declared_length(request, limit)
        reserved = limit if declared is None else declared
        client = key.key_id if settings.require_auth else f"address:{source}"
        service.bodies.acquire(client, reserved)
        try:
            body = await _read_body(request, limit)
            body_read = True
        finally:
            service.bodies.release(client, reserved)
        result = await service.handle(body, key, request_id)
        return Response(
            json.dumps(result, allow_nan=False),
            media_type="application/json",
            headers={"X-Request-ID": request_id},
        )
    except RequestError as e:
        response = _error(e, request_id)
        if not body_read and _large_body_pending(request):
            # refused before its body was read (no key, over a limit): close rather than
            # drain and buffer an upload nobody will read
            response.headers["Connection"] = "close"
        return response
    except ClientDisconnect:  # the client went away mid-body: nobody to answer, no fault
        service.metrics.client_disconnects.inc()
        return Response(status_code=499)
    except Exception:  # a fault of the service or guard, never of the input: JSON 500
        _log.exception("request %s failed", request_id)
        return _error(
            RequestError(500, "service", "internal error; see the service log"), request_id
        )


def _add_predict_route(app: FastAPI, service: _Service) -> None:
    """``POST /v1/predict``, counted and timed in the service's metrics."""
    next_id = request_ids()
    metrics = service.metrics

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
                },
            }
        },
    )
    async def predict(request: Request) -> Response:
        """Guarded prediction for one input or a batch (see PredictRequest)."""
        t0 = time.perf_counter()
        response = await _predict(service, request, next_id())
        metrics.requests.inc(endpoint="/v1/predict", status=str(response.status_code))
        metrics.latency.observe(time.perf_counter() - t0, endpoint="/v1/predict")
        return response


def _add_info_routes(app: FastAPI, service: _Service) -> None:
    """``GET /v1/health`` and ``GET /metrics``."""
    guard, metrics = service.guard, service.metrics

    @app.get("/v1/health", response_model=HealthResponse)
    def health() -> dict[str, Any]:
        """Model name, input shape, classes, guard layers and uptime."""
        metrics.requests.inc(endpoint="/v1/health", status="200")
        return {
            "status": "ok",
            "model": service.model_name,
            "input_shape": list(guard.input_shape),
            "classes": list(guard.classes),
            "guard_layers": guard_layers(guard),
            "auth_required": service.settings.require_auth,
            "uptime_s": time.monotonic() - service.started,
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        """Prometheus text exposition of the service's counters and histograms."""
        metrics.requests.inc(endpoint="/metrics", status="200")
        return PlainTextResponse(
            metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )


def _install_openapi(app: FastAPI, service: _Service) -> None:
    """Replace the app's OpenAPI document with one built once, on first request, that
    declares the served model's ``PredictRequest`` schema and, with auth on, the API-key
    security scheme."""
    guard, settings = service.guard, service.settings
    lock = threading.Lock()

    def openapi() -> dict[str, Any]:
        with lock:
            if app.openapi_schema is None:
                doc = get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
                components = doc.setdefault("components", {})
                components.setdefault("schemas", {})["PredictRequest"] = predict_request_schema(
                    tuple(guard.input_shape),
                    max_batch=settings.max_batch,
                    text=getattr(guard, "input_kind", "array") == "text",
                )
                if settings.require_auth:
                    components["securitySchemes"] = {
                        "APIKey": {
                            "type": "apiKey",
                            "in": "header",
                            "name": "X-API-Key",
                            "description": "A key from `bastion keys create NAME`.",
                        }
                    }
                    doc["paths"]["/v1/predict"]["post"]["security"] = [{"APIKey": []}]
                app.openapi_schema = doc
            return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
