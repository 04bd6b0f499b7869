"""Fine-tune a local MiniLM checkpoint as a sentiment classifier with plain transformers and
PyTorch, as a team would, and save it in the Hugging Face layout (safetensors + tokenizer).

    python examples/byo-model/train_transformer.py --base PATH/TO/all-MiniLM-L6-v2 \
        --data PATH/TO/movie_review_polarity --out minilm-sentiment [--texts 256 --epochs 1]

Nothing here uses bastion: the result is a foreign ``BertForSequenceClassification`` directory
that bastion then evaluates, attacks and serves as a text target (README.md). Reads offline
(``local_files_only``); never downloads.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

import torch

os.environ["HF_HUB_OFFLINE"] = "1"
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def read_reviews(folder: Path, n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` review snippets (balanced, shuffled with ``seed``) from rt-polarity.neg/.pos."""
    rows: list[tuple[str, int]] = []
    for label, name in ((0, "rt-polarity.neg"), (1, "rt-polarity.pos")):
        lines = (folder / name).read_bytes().decode("latin-1").splitlines()
        rows += [(line.strip(), label) for line in lines[: n // 2] if line.strip()]
    random.Random(seed).shuffle(rows)
    return [t for t, _ in rows], [y for _, y in rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True, help="local pretrained encoder")
    ap.add_argument("--data", type=Path, required=True, help="folder of rt-polarity.neg/.pos")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(str(args.base), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(args.base),
        local_files_only=True,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    texts, labels = read_reviews(args.data, args.texts, args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for _ in range(args.epochs):
        for s in range(0, len(texts), 16):
            batch = tok(
                texts[s : s + 16], truncation=True, max_length=48, padding=True, return_tensors="pt"
            )
            out = model(**batch, labels=torch.tensor(labels[s : s + 16]))
            out.loss.backward()
            opt.step()
            opt.zero_grad()
    model.eval()
    model.save_pretrained(str(args.out))
    tok.save_pretrained(str(args.out))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
