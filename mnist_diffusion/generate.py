"""Generate digits from the command line (`python scripts/generate.py --labels 7`), with the sampler choices shared
with the evaluation and the check of typed numbers shared with the demo."""

import argparse
import math
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, LCMScheduler

from .images import make_grid
from .pipeline_mnist_ddpm import MNISTDDPMPipeline
from .scheduling_mnist_ddpm import MNISTDDPMScheduler



def shipped_models_folder() -> Path:
    """
    Where the shipped models are: `pretrained/` of the checkout this package runs from (an editable install, or the
    source tree on the path), else the copy that an install put inside the package (`setup.py`'s package data).
    """
    checkout = Path(__file__).resolve().parents[1] / "pretrained"
    if (checkout / "mnist-ddpm" / "model_index.json").is_file():
        return checkout
    return Path(__file__).resolve().parent / "pretrained"


SHIPPED_MODEL = shipped_models_folder() / "mnist-ddpm"
SHIPPED_STUDENT = SHIPPED_MODEL.parent / "mnist-lcm"  # its consistency-distilled few-step student

# name → (scheduler class, steps used when none are asked for). None: the pipeline's stored default, or else the full
# chain (1000 for the DDPM); the consistency-distilled student (pretrained/mnist-lcm) stores 4 for its LCMScheduler.
SAMPLERS = {
    "ddpm": (MNISTDDPMScheduler, None),
    "ddim": (DDIMScheduler, 50),
    "dpm": (DPMSolverMultistepScheduler, 20),
    "lcm": (LCMScheduler, None),
}
MAX_SEED = 2**64 - 1  # the largest seed `torch.Generator.manual_seed` takes
# What `--output` may end in: formats PIL writes without extra software, lossless ones first.
IMAGE_EXTENSIONS = (".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")


def use_sampler(pipe: MNISTDDPMPipeline, name: str) -> int | None:
    """
    Swap `pipe.scheduler` for the sampler called `name`, built from the trained scheduler's config.

    Returns:
        The sampler's default number of steps (None: the pipeline's default, the full DDPM chain).
    """
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}.")
    scheduler_class, default_steps = SAMPLERS[name]
    if not isinstance(pipe.scheduler, scheduler_class):  # the model's own sampler keeps its config as it is
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    return default_steps


def check_number(value, minimum: float, maximum: float | None = None, *, integer: bool = False) -> int | float:
    """
    The check behind every number a user types, on the command line and in the demo: `value` must be an integer
    (`integer`) or a finite number, from `minimum` to `maximum` (no upper bound if None).

    Returns:
        `int` or `float`: the value.

    Raises:
        `ValueError`: naming the value and what was expected, e.g. "expected an integer ≥ 1, got 0".
    """
    expected = "an integer" if integer else "a finite number"
    expected += f" ≥ {minimum}" if maximum is None else f" from {minimum} to {maximum}"
    is_number = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if (
        isinstance(value, bool)
        or not is_number
        or (integer and value != int(value))
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        raise ValueError(f"expected {expected}, got {value!r}")
    return int(value) if integer else float(value)


def number_argument(minimum: float, maximum: float | None = None, *, integer: bool = False):
    """An argparse `type` that parses an option's text and applies [`check_number`] to it."""

    def parse(text: str) -> int | float:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            value = text  # not a number at all; check_number says what was expected
        try:
            return check_number(value, minimum, maximum, integer=integer)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def guidance_interval_type(text: str) -> tuple[float, float] | str:
    """
    argparse type of a guidance interval: `LOW,HIGH` in training timesteps, or `all` for every step (kept as the
    string, since only the loaded model knows its last timestep; see [`every_step_if_all`]).
    """
    if text == "all":
        return text
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (e.g. 82,579) or 'all', got {text!r}") from None
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError(f"expected 0 ≤ LOW ≤ HIGH, got {text!r}")
    return low, high


def every_step_if_all(guidance_interval, pipe: MNISTDDPMPipeline):
    """A guidance interval as the pipeline takes it: `all` becomes (0, T), which guides every step even when the
    model stores a narrower default; anything else is passed on."""
    if guidance_interval == "all":
        return 0, pipe.scheduler.config.num_train_timesteps
    return guidance_interval


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
                        help="Default: the model's own (the 1000-step DDPM chain of pretrained/mnist-ddpm, the 4-step "
                             "LCM of pretrained/mnist-lcm). ddpm: the paper's chain; dpm: DPM-Solver++ (20 steps); "
                             "ddim: DDIM (50); lcm: the sampler of a consistency-distilled model.")
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
