"""A real uvicorn server in a thread, for tests that talk HTTP to the service."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from bastion.serve.runner import uvicorn_options


@contextmanager
def running(app: Any, settings: Any) -> Iterator[str]:
    """``app`` under uvicorn with the service's connection bounds (``settings``), on a free
    loopback port; yields ``127.0.0.1:PORT`` and stops the server on exit."""
    config = uvicorn.Config(app, **uvicorn_options(settings, host="127.0.0.1", port=0))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
