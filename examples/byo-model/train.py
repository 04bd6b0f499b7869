"""Train `mynet.DigitNet` with plain PyTorch, as a team would, and save it three ways.

    python examples/byo-model/train.py [--out DIR] [--epochs 30]

It trains on the train split of scikit-learn's digits as bastion splits them (seed 0), so that
`bastion attack model.yaml` and `bastion evaluate` score it on test digits it never saw (the
reference files declare that split). Writes model.safetensors (weights for `factory`),
model.ts (TorchScript), model.pt2 (torch.export) and, where the ONNX exporter works, model.onnx.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from mynet import build  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    from bastion.data import load_dataset

    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = build(width=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = data.train.x, data.train.y
    for _ in range(args.epochs):
        order = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            idx = order[i : i + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(data.test.x).argmax(1) == data.test.y).float().mean())
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, args.out / "model.safetensors"
    )
    example = torch.zeros(1, 1, 8, 8)
    torch.jit.trace(model, example).save(str(args.out / "model.ts"))
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(args.out / "model.pt2"))
    written = ["model.safetensors", "model.ts", "model.pt2"]
    try:
        with warnings.catch_warnings():  # the legacy exporter needs no extra package
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (torch.zeros(2, 1, 8, 8),),
                str(args.out / "model.onnx"),
                input_names=["x"],
                output_names=["logits"],
                dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
            )
        written.append("model.onnx")
    except Exception as e:  # the exporter needs optional packages on some installs
        print(f"ONNX export skipped: {type(e).__name__}: {e}")
    print(f"test accuracy {acc:.1%}; wrote {', '.join(written)} to {args.out}")


if __name__ == "__main__":
    main()
