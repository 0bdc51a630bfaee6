"""
A checkpoint of `scripts/train.py` as a model: the UNet's EMA weights at that step (its live weights for a run without
an EMA), written as a `ClassConditionedUNet` folder with a record of where they came from. The checkpoints of one run
thus give models of several training lengths, such as the weaker guides an autoguidance search compares
(docs/generation.md, "Guiders and autoguidance").

    python scripts/export_checkpoint.py --checkpoint runs/guide/checkpoints/checkpoint-2000 --output_dir guides/2000
"""

import argparse
import json
from pathlib import Path

import torch
from accelerate.utils.constants import SAFE_WEIGHTS_NAME
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file

from ...unet_mnist import ClassConditionedUNet
from .checkpoints import TRAINING_STATE, checkpoint_problem
from .ddpm import make_unet
from .options import parse_checked
from .record import swap_in

# Where a DDPM run's checkpoint keeps its EMA: the first object registered for checkpointing (`train.py` registers
# nothing else; a distillation's first is its target network, so its checkpoints are not read here).
EMA_FILE = "custom_checkpoint_0.pkl"
EXPORT_RECORD = "export_record.json"


def checkpoint_unet(checkpoint: Path) -> tuple[ClassConditionedUNet, dict]:
    """
    The UNet of a `scripts/train.py` checkpoint, in eval mode, with the checkpoint's EMA weights (or its live weights
    when the run kept no EMA), and the checkpoint's training state (steps, images seen, seconds, the run's identity).

    Raises:
        `ValueError`: `checkpoint` is not a complete checkpoint of `scripts/train.py`, named with what is missing.
    """
    checkpoint = Path(checkpoint)
    problem = checkpoint_problem(checkpoint, num_registered=0)
    state = json.loads((checkpoint / TRAINING_STATE).read_text()) if problem is None else {}
    identity = state.get("run_identity") or {}
    if problem is not None or "block_out_channels" not in identity:
        raise ValueError(f"{checkpoint} is not a complete checkpoint of scripts/train.py"
                         f"{': ' + problem if problem else ' (its training_state.json names no UNet options)'}.")
    unet = make_unet(argparse.Namespace(**identity))
    unet.load_state_dict(load_file(checkpoint / SAFE_WEIGHTS_NAME))
    if (checkpoint / EMA_FILE).is_file():
        ema = EMAModel(unet.parameters())
        ema.load_state_dict(torch.load(checkpoint / EMA_FILE, map_location="cpu", weights_only=True))
        ema.copy_to(unet.parameters())
    return unet.eval(), state


def export_checkpoint(checkpoint: Path, output_dir: Path) -> dict:
    """
    Write the UNet of `checkpoint` ([`checkpoint_unet`]) to `output_dir` (`ClassConditionedUNet.from_pretrained`
    loads it) with `export_record.json`, atomically: a failed export leaves what was there. Returns the record.
    """
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    unet, state = checkpoint_unet(checkpoint)
    record = {"exported_from": str(checkpoint), "weights": "ema" if (checkpoint / EMA_FILE).is_file() else "live",
              "global_step": state["global_step"], "images_seen": state["images_seen"],
              "train_minutes": round(state["train_seconds"] / 60, 2), "run_identity": state["run_identity"],
              "parameters": unet.num_parameters()}
    staging = output_dir.parent / f".tmp-{output_dir.name}"
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(staging)
    (staging / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    swap_in(staging, output_dir, sorted(path.name for path in staging.iterdir()))
    return record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export_checkpoint.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="A checkpoint folder of scripts/train.py.")
    parser.add_argument("--output_dir", required=True, help="Where the UNet folder goes.")
    return parser


def check_args(args: argparse.Namespace) -> list[str]:
    checkpoint = Path(args.checkpoint)
    problem = checkpoint_problem(checkpoint, num_registered=0)
    return [] if problem is None else [f"--checkpoint {checkpoint}: {problem}"]


def main(argv: list[str] | None = None) -> None:
    args = parse_checked(build_parser(), check_args, argv)
    record = export_checkpoint(Path(args.checkpoint), Path(args.output_dir))
    print(f"Wrote the UNet of step {record['global_step']} ({record['weights']} weights) to {args.output_dir}.")
