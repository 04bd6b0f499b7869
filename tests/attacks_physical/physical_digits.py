"""Tiny, quickly trained, undefended classifiers on the embedded digits for the universal
perturbation and patch tests.

* ``train_mlp``: a 64-64-10 MLP on the 8x8 images (``(1, 8, 8)`` in [0, 1]).
* ``train_canvas_cnn``: a small CNN with global max pooling on a 16x16 black canvas holding the
  8x8 digit at a random position: the object fills a quarter of the frame, as in Brown et al.'s
  physical setting, so a patch can sit next to it. (On frames the digit fills, upsampled 8x8
  digits, a patch of 30% of the side barely moves these models: the strokes it leaves visible
  outvote it; see the report in the test module.)

Both train with minibatch Adam in well under a second of CPU time, with the global RNG state
restored; the models come back in eval mode with frozen parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.data import load_dataset
from bastion.models import ModelSpec, build_model


@contextmanager
def single_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only spin on a small shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Split:
    """A trained model, the training split it saw, and the held-out test images it classifies
    correctly."""

    model: nn.Module
    x_train: Tensor
    y_train: Tensor
    x: Tensor  # held-out, correctly classified
    y: Tensor
    clean_accuracy: float  # on the whole test split


def _train(model: nn.Module, x: Tensor, y: Tensor, *, epochs: int, seed: int) -> nn.Module:
    with torch.random.fork_rng(), single_thread():
        torch.manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(x.shape[0])
            for start in range(0, x.shape[0], 32):
                idx = order[start : start + 32]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _split(model: nn.Module, x_tr: Tensor, y_tr: Tensor, x_te: Tensor, y_te: Tensor) -> Split:
    with torch.no_grad():
        correct = model(x_te).argmax(1) == y_te
    acc = float(correct.float().mean())
    return Split(model, x_tr, y_tr, x_te[correct], y_te[correct], acc)


def train_mlp(*, seed: int = 0, epochs: int = 6) -> Split:
    """The MLP on the 8x8 digits."""
    ds = load_dataset("digits")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(ModelSpec("mlp", (1, 8, 8), 10, (0.3,), (0.4,), {"hidden": [64]}))
    trained = _train(model, ds.train.x, ds.train.y, epochs=epochs, seed=seed)
    return _split(trained, ds.train.x, ds.train.y, ds.test.x, ds.test.y)


def on_canvas(x: Tensor, side: int, generator: torch.Generator) -> Tensor:
    """Each image of ``x`` ``(N, C, s, s)`` on a black ``side x side`` canvas at a random
    position."""
    n, c, s = x.shape[0], x.shape[1], x.shape[-1]
    rows = torch.randint(0, side - s + 1, (n,), generator=generator).tolist()
    cols = torch.randint(0, side - s + 1, (n,), generator=generator).tolist()
    out = torch.zeros((n, c, side, side), dtype=x.dtype)
    for i, (r, q) in enumerate(zip(rows, cols, strict=True)):
        out[i, :, r : r + s, q : q + s] = x[i]
    return out


class GlobalPoolCNN(nn.Module):
    """Three 3x3 convolutions (16, 32 stride 2, 32 channels), global max pooling, a linear
    layer: a small translation-invariant classifier of ``(N, 1, H, W)`` images in [0, 1]."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.features(x))
        return out


def train_canvas_cnn(*, side: int = 16, seed: int = 0, epochs: int = 8) -> Split:
    """The global-pooling CNN on digits placed at random on a ``side x side`` canvas (a fresh
    placement per training epoch would be better augmentation; one fixed draw keeps it cheap)."""
    ds = load_dataset("digits")
    g = torch.Generator().manual_seed(seed)
    x_tr, x_te = on_canvas(ds.train.x, side, g), on_canvas(ds.test.x, side, g)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GlobalPoolCNN()
    trained = _train(model, x_tr, ds.train.y, epochs=epochs, seed=seed)
    return _split(trained, x_tr, ds.train.y, x_te, ds.test.y)
