"""Connection bounds of a real uvicorn server (in a thread): per-address connection limit,
idle connections closed, and keyed requests unaffected."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import numpy as np
from serve_fixtures import digits_test_images

from conftest import MakeServed
from uvicorn_thread import running


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_connections_per_address_and_idle_connections_are_bounded(
    make_served: MakeServed,
) -> None:
    s = make_served(max_connections_per_client=3, idle_connection_timeout_s=0.6)
    x, _ = digits_test_images()
    with running(s.client.app, s.settings) as address:
        host, port = address.split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(3)]
        try:
            time.sleep(0.1)
            extra = socket.create_connection((host, int(port)))
            assert _closed_by_peer(extra, 2.0), "a 4th connection from one address was kept"
            extra.close()
            # the idle ones (no request head) are closed after idle_connection_timeout_s
            assert all(_closed_by_peer(c, 3.0) for c in idle)
        finally:
            for c in idle:
                c.close()
        time.sleep(0.1)
        # and keyed requests on a keep-alive connection are served normally afterwards
        with httpx.Client(base_url=f"http://{address}", headers=s.auth, timeout=10) as c:
            for _ in range(3):
                r = c.post("/v1/predict", json={"input": x[0].tolist()})
                assert r.status_code == 200, r.text
            time.sleep(1.0)  # longer than the idle timeout: a used connection is not cut
            assert c.post("/v1/predict", json={"input": x[0].tolist()}).status_code == 200


def test_an_upload_without_a_key_gets_401_and_the_connection_is_closed(
    make_served: MakeServed,
) -> None:
    s = make_served()
    with running(s.client.app, s.settings) as address:
        host, port = address.split(":")
        head = (
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4000000\r\n\r\n"
        )
        with socket.create_connection((host, int(port))) as c:
            c.sendall(head + b"[" * 200_000)  # and then nothing more: a stalled upload
            c.settimeout(5.0)
            received = b""
            try:
                while chunk := c.recv(65536):
                    received += chunk
            except ConnectionResetError:
                pass  # closed with the rest of the upload unread: also a close
        assert received.startswith(b"HTTP/1.1 401"), received[:200]
        assert b"connection: close" in received.lower()
        # a small body without a key still gets its 401 on a connection that stays usable
        with httpx.Client(base_url=f"http://{address}", timeout=10) as client:
            for _ in range(2):
                r = client.post("/v1/predict", json={"input": [[[0.0] * 8] * 8]})
                assert r.status_code == 401 and "connection" not in r.headers


def test_large_keyed_uploads_stream_through_the_paused_reads(make_served: MakeServed) -> None:
    s = make_served(rate=None, extraction_check=False)
    x, _ = digits_test_images()
    rows = np.tile(x[:1], (250, 1, 1, 1)) + np.linspace(0, 0.001, 250)[:, None, None, None]
    body = json.dumps({"inputs": rows.tolist()}).encode()
    assert len(body) > 5 * 64 * 1024  # many socket reads

    def chunks() -> Iterator[bytes]:  # chunked, no Content-Length
        for i in range(0, len(body), 10_000):
            yield body[i : i + 10_000]

    with (
        running(s.client.app, s.settings) as address,
        httpx.Client(base_url=f"http://{address}", headers=s.auth, timeout=30) as c,
    ):
        for content in (body, chunks()):
            r = c.post("/v1/predict", content=content)
            assert r.status_code == 200, r.text[:300]
            assert len(r.json()["predictions"]) == 250
