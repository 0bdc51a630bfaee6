# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""
Train the benchmark's peer, diffusers' own class-conditional `UNet2DModel` of `benchmark.PEER_UNET_CONFIG`, with our
training loop and recipe (every option of `scripts/train.py` but the architecture's), for the quality per CPU-minute
comparison of `benchmarks/recipes.py`:

    python benchmarks/train_peer.py --data_dir ../shared/data/mnist --output_dir runs/peer \
        --mixed_precision bf16 --max_train_minutes 25

The folder it writes loads with `MNISTDDPMPipeline.from_pretrained` (whose guidance takes the peer's last class
embedding, `num_class_embeds - 1`, as the null label) and is evaluated like ours by `scripts/evaluate.py`.
"""

import argparse
import sys
from pathlib import Path

from diffusers import UNet2DModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer import PEER_UNET_CONFIG  # noqa: E402

from mnist_diffusion.lab.training.ddpm import build_parser, check_args, train  # noqa: E402
from mnist_diffusion.lab.training.options import parse_checked  # noqa: E402

# Our model options that would shape the UNet: the peer's are fixed by PEER_UNET_CONFIG.
ARCHITECTURE_OPTIONS = ("block_out_channels", "layers_per_block", "attention_resolutions", "attention_head_dim",
                        "norm_num_groups")


def build_peer_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    parser.prog = "train_peer.py"
    parser.description = __doc__.split("\n\n")[0].strip()
    parser.set_defaults(output_dir="mnist-ddpm-peer")
    return parser


def check_peer_args(args: argparse.Namespace) -> list[str]:
    """`scripts/train.py`'s checks, and that no architecture option is changed (the peer's is fixed)."""
    defaults = build_parser().parse_args([])
    changed = [f"--{name}" for name in ARCHITECTURE_OPTIONS if getattr(args, name) != getattr(defaults, name)]
    problems = check_args(args)
    if changed:
        problems.append(f"{', '.join(changed)} cannot be changed: the peer's architecture is the benchmark's "
                        "PEER_UNET_CONFIG")
    return problems


def peer_unet(args: argparse.Namespace) -> UNet2DModel:
    """A fresh peer UNet, with the run's dropout."""
    return UNet2DModel(**PEER_UNET_CONFIG, dropout=args.dropout)


def main(argv: list[str] | None = None) -> None:
    train(parse_checked(build_peer_parser(), check_peer_args, argv), build_unet=peer_unet, script="benchmarks/train_peer.py")


if __name__ == "__main__":
    main()
