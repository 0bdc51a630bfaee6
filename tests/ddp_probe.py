"""Run by test_training.py under `accelerate launch`: trains a tiny model and records, per rank and per step, a
fingerprint of the weights and of the batch, so the test can check that the ranks stay in step on different data."""

import json
import sys
from pathlib import Path

import torch

from mnist_diffusion.lab.training.ddpm import parse_args, train


def main() -> None:
    report_dir, argv = Path(sys.argv[1]), sys.argv[2:]
    report = {"records": []}

    def on_step(accelerator, model, batch, step):
        images, _ = batch
        weights = torch.cat([p.detach().flatten() for p in accelerator.unwrap_model(model).parameters()]).double()
        report.update(rank=accelerator.process_index, num_processes=accelerator.num_processes,
                      distributed_type=str(accelerator.distributed_type))
        report["records"].append({"step": step, "weights": [weights.sum().item(), weights.abs().sum().item()],
                                  "batch": images.double().sum().item()})

    train(parse_args(argv), on_step=on_step)
    (report_dir / f"rank{report['rank']}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
