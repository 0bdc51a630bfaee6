"""The option groups every training job shares (optimisation, the EMA, checkpoints and validation, the Hub) and their
checks: `parse_checked` stops with one usage error naming every problem, before anything is loaded."""

import argparse
from collections.abc import Callable

from ..arguments import out_of_range
from ..hub import add_hub_arguments, check_hub_arguments

LR_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
# What draws train.py's validation grids (see `train`).
VALIDATION_SAMPLER = "DPM-Solver++ (a fast preview; the saved model samples with the full DDPM chain)"


def add_run_arguments(parser: argparse.ArgumentParser, validation_sampler: str = VALIDATION_SAMPLER) -> None:
    """
    The option groups every run of a diffusion model shares, in their order on `--help`: optimisation, the EMA,
    checkpoints and validation (whose grids `validation_sampler` draws, as `--help` says), the Hub
    ([`add_optimizer_arguments`], [`add_ema_arguments`], [`add_checkpoint_arguments`], `hub.add_hub_arguments`);
    checked by [`check_run_arguments`].
    """
    add_optimizer_arguments(parser)
    add_ema_arguments(parser)
    add_checkpoint_arguments(parser, validation_sampler)
    add_hub_arguments(parser)


def add_optimizer_arguments(parser: argparse.ArgumentParser) -> None:
    """
    The "optimisation" options: seed, batch size, length and time budget of the run, AdamW and its lr schedule,
    gradient accumulation and clipping, mixed precision. Checked by [`check_optimizer_arguments`]; another script
    changes a default with `parser.set_defaults(learning_rate=...)`.
    """
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--seed", type=int, default=0, help="Seed of weights, data order and noise.")
    optim.add_argument("--train_batch_size", type=int, default=128, help="Images per process per step.")
    optim.add_argument("--num_epochs", type=int, default=20, help="Passes over the 60k training images.")
    optim.add_argument("--max_train_steps", type=int, default=None,
                       help="Optimiser steps in total; overrides --num_epochs and sets the length of the lr schedule.")
    optim.add_argument("--max_train_minutes", type=float, default=None,
                       help="Wall-clock budget: stop (and save) once this much training time has passed, summed "
                            "over resumed runs. The lr schedule still spans --max_train_steps.")
    optim.add_argument("--learning_rate", type=float, default=1e-3, help="Peak learning rate of AdamW.")
    optim.add_argument("--lr_scheduler", choices=LR_SCHEDULES, default="cosine", help="Learning-rate schedule.")
    optim.add_argument("--lr_warmup_steps", type=int, default=500, help="Linear warm-up steps.")
    optim.add_argument("--adam_beta1", type=float, default=0.9)
    optim.add_argument("--adam_beta2", type=float, default=0.99)
    optim.add_argument("--adam_weight_decay", type=float, default=0.0)
    optim.add_argument("--adam_epsilon", type=float, default=1e-8)
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1,
                       help="Batches whose gradients are summed before one optimiser step.")
    optim.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping norm (0 disables).")
    optim.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default=None,
                       help="Autocast precision; defaults to accelerate's config (bf16 is fast on recent CPUs).")
    optim.add_argument("--gradient_checkpointing", action="store_true", help="Trade compute for activation memory.")


def add_ema_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the EMA of the weights that [`make_ema`] keeps; checked by [`check_ema_arguments`]."""
    ema = parser.add_argument_group("exponential moving average (EMA) of the weights")
    ema.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True,
                     help="Keep an EMA of the weights; the EMA is what validation samples and what gets saved.")
    ema.add_argument("--ema_max_decay", type=float, default=0.9995, help="Upper bound of the EMA decay.")
    ema.add_argument("--ema_inv_gamma", type=float, default=1.0, help="EMA warm-up: decay = 1 − (1 + step/γ)^−p.")
    ema.add_argument("--ema_power", type=float, default=0.75, help="EMA warm-up power p.")


def add_checkpoint_arguments(parser: argparse.ArgumentParser, validation_sampler: str = VALIDATION_SAMPLER) -> None:
    """
    The options of checkpoints and resuming, of the pipeline written during the run, of validation grids (drawn by
    `validation_sampler`, for `--help`) and of the logger; checked by [`check_checkpoint_arguments`].
    """
    save = parser.add_argument_group("checkpoints, validation and logging")
    save.add_argument("--checkpointing_steps", type=int, default=500,
                      help="Save a resumable checkpoint (weights, optimiser, lr schedule, EMA, RNG) every N steps.")
    save.add_argument("--checkpoints_total_limit", type=int, default=3, help="Keep at most this many checkpoints.")
    save.add_argument("--resume_from_checkpoint", default=None,
                      help="`latest` (the newest in output_dir/checkpoints) or a checkpoint folder to continue from.")
    save.add_argument("--save_model_steps", type=int, default=None,
                      help="Also write the pipeline to output_dir every N steps (it is always written at the end).")
    save.add_argument("--validation_steps", type=int, default=1000,
                      help="Every N steps, sample a 10×N grid (one row per digit) to samples/ and the logger.")
    save.add_argument("--validation_images_per_digit", type=int, default=8, help="Columns of the validation grid.")
    save.add_argument("--validation_inference_steps", type=int, default=25,
                      help=f"Steps of {validation_sampler} for validation samples.")
    save.add_argument("--validation_guidance_scale", type=float, default=2.0, help="Guidance of validation samples.")
    save.add_argument("--logger", choices=["tensorboard", "none"], default="tensorboard", help="Where scalars go.")


def parse_checked(
    parser: argparse.ArgumentParser, check: Callable[[argparse.Namespace], list[str]], argv: list[str] | None = None
) -> argparse.Namespace:
    """
    Parse `argv` with `parser`, then stop with one usage error that names every problem `check(args)` finds, so that
    nothing starts with a nonsense option value and the user fixes them all at once.
    """
    args = parser.parse_args(argv)
    problems = check(args)
    if problems:
        parser.error("; ".join(problems))
    return args


def check_run_arguments(args: argparse.Namespace) -> list[str]:
    """The problems with the options of [`add_run_arguments`]."""
    return (check_optimizer_arguments(args) + check_ema_arguments(args) + check_checkpoint_arguments(args)
            + check_hub_arguments(args))


def check_optimizer_arguments(args: argparse.Namespace) -> list[str]:
    """The problems with the options of [`add_optimizer_arguments`]."""
    problems = out_of_range(args, ["train_batch_size", "num_epochs", "gradient_accumulation_steps", "max_train_steps"],
                            "a positive integer")
    problems += out_of_range(args, ["learning_rate", "max_train_minutes"], "positive")
    problems += out_of_range(args, ["lr_warmup_steps", "adam_weight_decay", "adam_epsilon", "max_grad_norm"], "≥ 0")
    problems += out_of_range(args, ["adam_beta1", "adam_beta2"], "in [0, 1)")
    return problems + check_seed(args.seed)


def check_seed(seed: int) -> list[str]:
    """
    The problem with a `--seed` that [`build_seeded`] cannot use: numpy takes 32-bit seeds, and every process seeds
    itself with the seed plus its index.
    """
    if seed < 0:
        return [f"--seed must be ≥ 0, got {seed}"]
    if seed >= 2**31:
        return [f"--seed must be below 2**31 = {2**31}, got {seed}"]
    return []


def check_ema_arguments(args: argparse.Namespace) -> list[str]:
    """The problems with the options of [`add_ema_arguments`]."""
    # The warm-up decay 1 − (1 + step/γ)^−p needs both γ and p positive.
    return (out_of_range(args, ["ema_max_decay"], "in (0, 1)")
            + out_of_range(args, ["ema_inv_gamma", "ema_power"], "positive"))


def check_checkpoint_arguments(args: argparse.Namespace) -> list[str]:
    """The problems with the options of [`add_checkpoint_arguments`]."""
    positive = ["checkpointing_steps", "checkpoints_total_limit", "save_model_steps", "validation_steps",
                "validation_images_per_digit", "validation_inference_steps"]
    return (out_of_range(args, positive, "a positive integer")
            + out_of_range(args, ["validation_guidance_scale"], "≥ 0"))


def check_batch_size(batch_size: int, num_images: int, data: str) -> list[str]:
    """
    The problem with a batch larger than the data: with incomplete batches dropped, an epoch would have no step.

    Args:
        batch_size: `--train_batch_size`.
        num_images: the number of training images.
        data: what they are, for the message.

    Returns:
        `list[str]`: the problem, or nothing.
    """
    if batch_size > num_images:
        return [f"--train_batch_size {batch_size} is more than the {num_images} images of {data}: an epoch would "
                "have no full batch"]
    return []
