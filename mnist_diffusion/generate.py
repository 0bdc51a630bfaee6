"""Generate digits from the command line (`python scripts/generate.py --labels 7`), and the sampler choices
shared with the evaluation."""

import argparse
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from .images import make_grid
from .pipeline_mnist_ddpm import MNISTDDPMPipeline
from .scheduling_mnist_ddpm import MNISTDDPMScheduler

SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "pretrained" / "mnist-ddpm"

# name → (scheduler class, steps used when none are asked for); the DDPM default is the pipeline's own (1000).
SAMPLERS = {
    "ddpm": (MNISTDDPMScheduler, None),
    "ddim": (DDIMScheduler, 50),
    "dpm": (DPMSolverMultistepScheduler, 20),
}


def use_sampler(pipe: MNISTDDPMPipeline, name: str) -> int | None:
    """
    Swap `pipe.scheduler` for the sampler called `name`, built from the trained scheduler's config.

    Returns:
        The sampler's default number of steps (None: the pipeline's default, the full DDPM chain).
    """
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}.")
    scheduler_class, default_steps = SAMPLERS[name]
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    return default_steps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="generate.py",
        description="Generate handwritten digits with a trained class-conditional DDPM and save them as a PNG.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--labels", type=int, nargs="+", default=[7], help="Digits to draw, 0–9.")
    parser.add_argument("--num_images_per_label", type=int, default=1, help="Images per digit (grid columns).")
    parser.add_argument("--guidance_scale", type=float, default=None,
                        help="Classifier-free guidance weight; the model's stored default when not given.")
    parser.add_argument("--scheduler", choices=sorted(SAMPLERS), default="ddpm",
                        help="ddpm: the 1000-step chain of the paper; dpm: DPM-Solver++ (20 steps); ddim: DDIM (50).")
    parser.add_argument("--num_inference_steps", type=int, default=None, help="Denoising steps (sampler default).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the starting noise.")
    parser.add_argument("--model", default=str(SHIPPED_MODEL), help="Pipeline folder or Hub repo id.")
    parser.add_argument("--output", default="digits.png", help="Where to write the PNG.")
    parser.add_argument("--scale", type=int, default=4, help="Nearest-neighbour upscaling of the PNG.")
    return parser


def generate(args: argparse.Namespace) -> Path:
    pipe = MNISTDDPMPipeline.from_pretrained(args.model)
    default_steps = use_sampler(pipe, args.scheduler)
    images = pipe(
        labels=args.labels,
        num_images_per_label=args.num_images_per_label,
        num_inference_steps=args.num_inference_steps or default_steps,
        guidance_scale=args.guidance_scale,
        generator=torch.Generator().manual_seed(args.seed),
    ).images
    row_labels = [str(label) for label in args.labels] if len(args.labels) > 1 else None
    grid = make_grid(images, rows=len(args.labels), scale=args.scale, row_labels=row_labels)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(output)
    return output


def main(argv: list[str] | None = None) -> None:
    output = generate(build_parser().parse_args(argv))
    print(f"Wrote {output}")
