"""download_mnist against a local HTTP server (no internet needed)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bastion.data import download_mnist
from bastion.errors import DataError

NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclass
class Mirror:
    """A local HTTP server serving ``root``; ``requests`` lists the paths it was asked for."""

    root: Path
    url: str
    checksums: dict[str, str]
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    root = tmp_path / "served"
    root.mkdir()
    checksums: dict[str, str] = {}
    for position, name in enumerate(NAMES):
        payload = gzip.compress(f"fake {name} ".encode() * (2000 * (position + 1)))
        (root / name).write_bytes(payload)
        checksums[name] = hashlib.md5(payload, usedforsecurity=False).hexdigest()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            """Keep test output quiet."""

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield Mirror(root, f"http://{host!s}:{port}/", checksums, requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_downloads_all_files_atomically(tmp_path: Path, mirror: Mirror) -> None:
    dest = tmp_path / "dest" / "mnist"
    seen: list[tuple[str, int, int]] = []
    result = download_mnist(
        dest,
        base_url=mirror.url,
        checksums=mirror.checksums,
        progress=lambda name, done, total: seen.append((name, done, total)),
    )
    assert result == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(NAMES)  # no temporary files left
    for name in NAMES:
        assert (dest / name).read_bytes() == (mirror.root / name).read_bytes()
        size = (mirror.root / name).stat().st_size
        assert seen[[entry[0] for entry in seen].index(name)][2] == size
        assert (name, size, size) in seen
    assert sorted(mirror.requests) == sorted(f"/{name}" for name in NAMES)


def test_files_with_matching_checksums_are_not_fetched_again(
    tmp_path: Path, mirror: Mirror
) -> None:
    dest = tmp_path / "dest"
    download_mnist(dest, base_url=mirror.url, checksums=mirror.checksums)
    (dest / NAMES[1]).write_bytes(b"stale partial file")
    mirror.requests.clear()
    download_mnist(dest, base_url=mirror.url.rstrip("/"), checksums=mirror.checksums)
    assert mirror.requests == [f"/{NAMES[1]}"]
    assert (dest / NAMES[1]).read_bytes() == (mirror.root / NAMES[1]).read_bytes()


def test_checksum_mismatch_deletes_the_download(tmp_path: Path, mirror: Mirror) -> None:
    dest = tmp_path / "dest"
    wrong = dict(mirror.checksums)
    wrong[NAMES[2]] = "0" * 32
    with pytest.raises(DataError) as info:
        download_mnist(dest, base_url=mirror.url, checksums=wrong)
    message = str(info.value)
    assert NAMES[2] in message
    assert "0" * 32 in message
    assert mirror.checksums[NAMES[2]] in message
    assert sorted(p.name for p in dest.iterdir()) == sorted(NAMES[:2])


def test_default_checksums_are_the_original_release(tmp_path: Path, mirror: Mirror) -> None:
    with pytest.raises(DataError, match="expected MD5 f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        download_mnist(tmp_path / "dest", base_url=mirror.url)


def test_http_error_names_the_url(tmp_path: Path, mirror: Mirror) -> None:
    (mirror.root / NAMES[0]).unlink()
    with pytest.raises(DataError, match="HTTP 404") as info:
        download_mnist(tmp_path / "dest", base_url=mirror.url, checksums=mirror.checksums)
    assert f"{mirror.url}{NAMES[0]}" in str(info.value)
    assert list((tmp_path / "dest").iterdir()) == []


def test_unreachable_server_names_the_url(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mnist/"
    with pytest.raises(DataError, match="cannot fetch") as info:
        download_mnist(tmp_path / "dest", base_url=url, timeout=5)
    assert f"{url}{NAMES[0]}" in str(info.value)


def test_checksums_override_must_cover_every_file(tmp_path: Path, mirror: Mirror) -> None:
    partial = {NAMES[0]: mirror.checksums[NAMES[0]]}
    with pytest.raises(DataError, match=f"checksums: no MD5 given for {NAMES[1]}"):
        download_mnist(tmp_path / "dest", base_url=mirror.url, checksums=partial)
