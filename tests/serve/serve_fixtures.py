"""Helpers for the service tests: a tiny digits MLP saved as a run directory."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import torch
from PIL import Image

from bastion.data.digits import DIGITS_CLASSES, load_digits_dataset
from bastion.models import ModelSpec, build_model, save_model


def train_digits_run(run_dir: Path, *, seed: int = 0) -> Path:
    """Train a 1-hidden-layer MLP on sklearn digits (about a second) and save it as
    ``run_dir/models/tiny`` with its class names; returns ``run_dir``."""
    data = load_digits_dataset(seed=seed)
    spec = ModelSpec(
        architecture="mlp",
        input_shape=(1, 8, 8),
        num_classes=10,
        mean=(0.3,),
        std=(0.4,),
        options={"hidden": [32]},
    )
    gen = torch.Generator().manual_seed(seed)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = data.train.x, data.train.y
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    save_model(model.eval(), run_dir / "models" / "tiny", {"classes": list(DIGITS_CLASSES)})
    return run_dir


def digits_test_images() -> tuple[np.ndarray, np.ndarray]:
    """The digits test split: ``(N, 1, 8, 8)`` float32 in [0, 1] and labels ``(N,)``."""
    data = load_digits_dataset(seed=0)
    return data.test.x.numpy(), data.test.y.numpy()


def png_base64(image: np.ndarray, *, mode: str = "L") -> str:
    """``image`` ``(H, W)`` in [0, 1] as a base64 PNG (grey, or the grey copied to RGB)."""
    grey = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    pixels = grey if mode == "L" else np.repeat(grey[:, :, None], 3, axis=2)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class AsgiClient:
    """A synchronous face on ``httpx.AsyncClient`` over ``httpx.ASGITransport`` (the app runs
    in this process, on one event loop owned by the client)."""

    def __init__(self, app: Any, *, address: str = "127.0.0.1") -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(address, 40000)),
            base_url="http://testserver",
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def post_many(
        self, url: str, bodies: list[dict[str, Any]], **kwargs: Any
    ) -> list[httpx.Response]:
        """Send the bodies concurrently (they meet in the micro-batcher)."""

        async def all_of() -> list[httpx.Response]:
            return list(
                await asyncio.gather(*(self.client.post(url, json=b, **kwargs) for b in bodies))
            )

        return self.loop.run_until_complete(all_of())

    def close(self, *, stop_app: bool = True) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()
        if stop_app:
            self.app.state.service.batcher.close()


@contextlib.contextmanager
def postgres_database(server_url: str, name: str) -> Iterator[str]:
    """Create database ``name`` on the server at ``server_url``; yields its URL and drops it
    (closing its remaining connections) on exit."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server_url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_ctl(action: str) -> None:
    """``.ci/postgres.sh ACTION`` (e.g. ``restart``) on the test server's cluster."""
    script = Path(__file__).resolve().parents[2] / ".ci" / "postgres.sh"
    subprocess.run([str(script), action], check=True, capture_output=True, timeout=120)
