"""Connection bounds below the ASGI app: at most N open connections per client address, and
a deadline for a new connection's first request head.

uvicorn counts connections in total (``limit_concurrency``) but has no per-address bound and
no timeout for a connection that never sends a request. :func:`bounded_protocol` wraps its
HTTP protocol class: a connection over the per-address bound is closed as soon as it is
accepted (before any byte is read), and one that has not completed a request head within
``idle_timeout_s`` is closed. Of a body, uvicorn buffers only what it has read before the app
asks for it: reads are at most 64 KiB (asyncio's default is 256 KiB) and reading pauses once
body bytes wait unasked (the app checks the key first), so an upload without a key costs at
most one read.
Everything runs on the server's event loop: no locks.
"""

from __future__ import annotations

import asyncio
from typing import Any

READ_SIZE = 64 * 1024


def default_protocol() -> type[asyncio.Protocol]:
    """The HTTP protocol class uvicorn's ``http="auto"`` would pick."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol


class ConnectionCounts:
    """Open connections per client address (read by the tests and the benchmark)."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}
        self.refused = 0
        self.timed_out = 0

    def total(self) -> int:
        return sum(self.open.values())


def bounded_protocol(
    base: type[asyncio.Protocol],
    *,
    per_client: int,
    idle_timeout_s: float,
    counts: ConnectionCounts | None = None,
) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's protocol class ``base`` enforcing the bounds above."""
    state = counts if counts is not None else ConnectionCounts()

    class Bounded(base):  # type: ignore[valid-type,misc]
        _bastion_peer: str | None = None
        _bastion_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            peer = transport.get_extra_info("peername")
            host = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else ""
            if state.open.get(host, 0) >= per_client:
                state.refused += 1
                transport.abort()  # never handed to uvicorn: connection_lost is ours alone
                return
            state.open[host] = state.open.get(host, 0) + 1
            self._bastion_peer = host
            if isinstance(getattr(transport, "max_size", None), int):
                # asyncio reads up to 256 KiB per call, and uvicorn buffers what arrives with a
                # request head before the app checks its key: 64 KiB reads bound that buffer
                transport.max_size = READ_SIZE
            super().connection_made(transport)
            loop = asyncio.get_running_loop()
            self._bastion_timer = loop.call_later(idle_timeout_s, self._bastion_idle, transport)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # body bytes arrived for a request whose app has not asked for them (its key is
            # being checked): stop reading until it does. uvicorn resumes reading when the app
            # calls receive() and after each response, so at most one read is buffered.
            cycle = getattr(self, "cycle", None)
            flow = getattr(self, "flow", None)
            if cycle is None or flow is None:
                return
            if getattr(cycle, "body", None) and not getattr(cycle, "response_complete", True):
                flow.pause_reading()

        def _bastion_idle(self, transport: Any) -> None:
            self._bastion_timer = None
            # ``cycle`` is set by uvicorn once a complete request head has arrived
            if getattr(self, "cycle", None) is None and not transport.is_closing():
                state.timed_out += 1
                transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            host = self._bastion_peer
            if host is None:
                return  # refused in connection_made
            self._bastion_peer = None
            if self._bastion_timer is not None:
                self._bastion_timer.cancel()
                self._bastion_timer = None
            left = state.open.get(host, 1) - 1
            if left > 0:
                state.open[host] = left
            else:
                state.open.pop(host, None)
            super().connection_lost(exc)

    Bounded.__name__ = Bounded.__qualname__ = f"Bounded{base.__name__}"
    return Bounded
