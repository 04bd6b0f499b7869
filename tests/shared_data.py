"""Where the tests find the real data sets: ``$BASTION_DATA`` when set, else
``../shared/datasets`` beside the project.

``$BASTION_DATA`` may name the folder holding the data sets' sub-folders (``mnist/``,
``sms_spam/``, ``movie_review_polarity/``), as ``../shared/datasets`` does, or, as the product
accepts it, a folder holding the four MNIST files themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_MNIST_MARKER = "t10k-labels-idx1-ubyte.gz"


def datasets_root(environ: dict[str, str] | None = None) -> Path:
    """The folder of the data sets' sub-folders."""
    env = os.environ if environ is None else environ
    value = env.get("BASTION_DATA", "").strip()
    return Path(value).expanduser() if value else ROOT.parent / "shared" / "datasets"


def mnist_dir(environ: dict[str, str] | None = None) -> Path:
    """The folder of the four MNIST files (``<root>/mnist``, or the root itself)."""
    root = datasets_root(environ)
    return root if (root / _MNIST_MARKER).exists() else root / "mnist"


DATASETS = datasets_root()
MNIST = mnist_dir()
# The pretrained MiniLM encoder (Hugging Face layout): ``$BASTION_MINILM`` when set, else
# ``../shared/models/all-MiniLM-L6-v2`` beside the project.
MINILM = Path(
    os.environ.get("BASTION_MINILM", "").strip()
    or ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2"
).expanduser()
