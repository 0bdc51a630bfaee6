"""Generate digits from the command line: `python scripts/generate.py --labels 7`."""

import argparse
from pathlib import Path

import torch

from ..images import make_grid
from ..pipeline_mnist_ddpm import MNISTDDPMPipeline
from .arguments import MAX_SEED, guidance_interval_type, number_argument
from .samplers import SAMPLERS, every_step_if_all, use_sampler
from .shipped import SHIPPED_MODEL

# What `--output` may end in: formats PIL writes without extra software, lossless ones first.
IMAGE_EXTENSIONS = (".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")


def image_path(text: str) -> Path:
    """An argparse `type` for `--output`: a path whose extension names an image format (PIL picks it by extension)."""
    if Path(text).suffix.lower() not in IMAGE_EXTENSIONS:
        raise argparse.ArgumentTypeError(f"expected a file name ending in {', '.join(IMAGE_EXTENSIONS)}, got {text!r}")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="generate.py",
        description="Generate handwritten digits with a trained class-conditional DDPM and save them as an image.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    positive_int = number_argument(1, integer=True)
    parser.add_argument("--labels", type=number_argument(0, 9, integer=True), nargs="+", default=[7],
                        help="Digits to draw, 0–9.")
    parser.add_argument("--num_images_per_label", type=positive_int, default=1, help="Images per digit (grid columns).")
    parser.add_argument("--guidance_scale", type=number_argument(0), default=None,
                        help="Classifier-free guidance weight, ≥ 0; the model's stored default when not given.")
    parser.add_argument("--guidance_interval", type=guidance_interval_type, default=None,
                        help="LOW,HIGH: guide only the steps whose timestep t has LOW ≤ t ≤ HIGH (a single "
                             "conditional pass elsewhere), or 'all' for every step; the model's default when not given.")
    parser.add_argument("--scheduler", choices=sorted(SAMPLERS), default=None,
                        help="Default: the model's own at its stored steps (20 of DPM-Solver++ SDE for "
                             "pretrained/mnist-ddpm, 2 of LCM for pretrained/mnist-lcm). ddpm: the paper's 1000-step "
                             "chain; dpm: DPM-Solver++ (20 steps); dpm-sde: its SDE variant (20); ddim: DDIM (50); lcm: "
                             "the sampler of a consistency-distilled model; tcd: its gamma-sampling.")
    parser.add_argument("--num_inference_steps", type=positive_int, default=None,
                        help="Denoising steps (sampler default).")
    parser.add_argument("--seed", type=number_argument(0, MAX_SEED, integer=True), default=0,
                        help="Seed of the starting noise.")
    parser.add_argument("--model", default=str(SHIPPED_MODEL), help="Pipeline folder or Hub repo id.")
    parser.add_argument("--output", type=image_path, default="digits.png",
                        help="Where to write the image; its extension picks the format.")
    parser.add_argument("--scale", type=positive_int, default=4, help="Nearest-neighbour upscaling of the image.")
    return parser


def load_model(name: str) -> MNISTDDPMPipeline:
    """
    The pipeline `--model` names (a folder or Hub repo id).

    Raises:
        `ValueError`: naming the model and why it cannot be loaded (no such folder, no model_index.json, another
            kind of pipeline), so that the command line reports a usage error, not a traceback.
    """
    try:
        return MNISTDDPMPipeline.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise ValueError(f"--model {name} cannot be loaded as a pipeline: {error}") from error


def generate(args: argparse.Namespace) -> Path:
    pipe = load_model(args.model)
    default_steps = None if args.scheduler is None else use_sampler(pipe, args.scheduler)
    images = pipe(
        labels=args.labels,
        num_images_per_label=args.num_images_per_label,
        num_inference_steps=default_steps if args.num_inference_steps is None else args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        guidance_interval=every_step_if_all(args.guidance_interval, pipe),
        generator=torch.Generator().manual_seed(args.seed),
    ).images
    row_labels = [str(label) for label in args.labels] if len(args.labels) > 1 else None
    grid = make_grid(images, rows=len(args.labels), scale=args.scale, row_labels=row_labels)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(output)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        output = generate(args)
    except ValueError as error:  # what only the model can check: that it loads, the steps it takes, a student's guidance
        parser.error(str(error))
    print(f"Wrote {output}")
