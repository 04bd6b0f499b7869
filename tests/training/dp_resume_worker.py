"""Worker of test_training_resume_world.py: train a config's first model entry with bastion's
Trainer, alone or as one process of ``torchrun``, writing checkpoints to a folder.

``--stop-at K`` stops the process after its K-th batch, as Ctrl-C would (every process stops at
the same step; rank 0 has written the checkpoint of that step first when ``checkpoint_every``
divides K). ``--resume`` continues from the folder's checkpoint. Rank 0 writes the final
weights (safetensors) and the history (JSON) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from bastion.config import load_config
from bastion.models import build_model
from bastion.pipeline import load_run_data, model_spec
from bastion.training.distributed import DataParallel
from bastion.training.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--stop-at", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg, _ = load_config(args.config)
    data = load_run_data(cfg, config_path=args.config)
    entry = cfg.models[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(model_spec(cfg, entry, data))
    dp = DataParallel.from_env()
    batches = 0

    def progress(event: dict[str, Any]) -> None:
        nonlocal batches
        if event.get("end_of_epoch"):
            return
        batches += 1
        if batches == args.stop_at:
            raise KeyboardInterrupt

    trainer = Trainer(
        cfg.train_settings(entry),
        cfg.threat_model(),
        seed=cfg.seed,
        progress=progress,
        data_parallel=dp,
    )
    try:
        result = trainer.fit(
            model,
            data.train.x,
            data.train.y,
            data.val.x,
            data.val.y,
            checkpoint_dir=args.checkpoints,
            resume_from=args.checkpoints if args.resume else None,
        )
    except KeyboardInterrupt:
        if dp is not None:
            dp.close(wait=False)
        raise SystemExit(3) from None
    if dp is not None:
        dp.close()
    if (dp is None or dp.is_main) and args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(args.out / "model.safetensors"))
        (args.out / "history.json").write_text(json.dumps(result.history))


if __name__ == "__main__":
    main()
