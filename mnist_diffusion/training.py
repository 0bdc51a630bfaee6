"""Training of the class-conditional DDPM on MNIST, behind `accelerate launch scripts/train.py`, and the pieces that
every training loop of the project is made of.

The loop is the algorithm of the spec: draw t uniformly, jump to x_t in closed form, regress the noise with a
plain MSE; drop the label to the null label with probability `cond_drop_prob` for classifier-free guidance.
Everything a run writes sits in `output_dir`: the pipeline (model_index.json, unet/, scheduler/) at the top,
checkpoints in `checkpoints/`, TensorBoard logs in `logs/`, validation grids in `samples/`.

[`train`] reads as numbered steps: accelerator, models, data, resume, loop, save. Each step is a function of this
module that takes what it needs and knows nothing of the DDPM's loss, so that another loop (the evaluation
classifier's in `classifier_training.py`, say) is made of the same pieces: option groups and their checks, seeding,
the length of a run and its batches after a resume, checkpoints that survive a kill, the time budget, the run record.
"""

import argparse
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, broadcast, set_seed
from accelerate.utils.constants import OPTIMIZER_NAME, SAFE_WEIGHTS_NAME, SCHEDULER_NAME
from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler, ModelMixin
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from PIL import Image
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from .arguments import out_of_range
from .data import MNIST_FILES, MNISTDataset, describe_training_data
from .hub import add_hub_arguments, check_hub_arguments, push_pipeline_to_hub
from .images import make_grid
from .pipeline_mnist_ddpm import MNISTDDPMPipeline, null_class_label
from .redaction import redact, redact_command
from .run_folder import CHECKPOINTS, LOGS, PIPELINE_ENTRIES, RUN_ENTRIES, SAMPLES, TRAINING_CONFIG
from .scheduling_mnist_ddpm import BETA_SCHEDULES, PREDICTION_TYPES, MNISTDDPMScheduler
from .unet_mnist import ClassConditionedUNet

logger = get_logger(__name__)

SCRIPT = "scripts/train.py"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINING_STATE = "training_state.json"
# What `accelerator.save_state` writes besides the random states: the model, optimiser and lr schedule; each object
# registered for checkpointing (an EMA, say) goes to `custom_checkpoint_<i>.pkl`.
CHECKPOINT_FILES = (SAFE_WEIGHTS_NAME, f"{OPTIMIZER_NAME}.bin", f"{SCHEDULER_NAME}.bin")
TRAINING_IMAGES = MNIST_FILES["train"][0].count
# The options that define what a run trains (the model, its noise schedule and its objective): a resume with any of
# them changed would continue another run's weights under a record that describes only the new ones.
MODEL_OPTIONS = ("block_out_channels", "layers_per_block", "attention_resolutions", "attention_head_dim",
                 "norm_num_groups", "dropout", "num_train_timesteps", "beta_schedule", "prediction_type",
                 "cond_drop_prob", "snr_gamma")
LR_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
# What draws train.py's validation grids (see `train`).
VALIDATION_SAMPLER = "DPM-Solver++ (a fast preview; the saved model samples with the full DDPM chain)"

# Options ------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The options of `scripts/train.py`: data and model here, then the shared groups."""
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train a class-conditional DDPM on MNIST (run with `accelerate launch` for several processes).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data and output")
    data.add_argument("--data_dir", default="data/mnist",
                      help="Folder with the four MNIST IDX .gz files; missing files are downloaded there when online.")
    data.add_argument("--output_dir", default="mnist-ddpm",
                      help="Where the trained pipeline goes, with checkpoints/, logs/ and samples/ beside it.")
    data.add_argument("--dataloader_num_workers", type=int, default=0,
                      help="Worker processes for data loading (the data set is in memory: 0 is usually fastest).")
    model = parser.add_argument_group("model and noise schedule")
    model.add_argument("--block_out_channels", type=int, nargs="+", default=[32, 64, 96],
                       help="UNet width at 28, 14 and 7 pixels.")
    model.add_argument("--layers_per_block", type=int, default=1, help="Residual blocks per resolution.")
    model.add_argument("--attention_resolutions", type=int, nargs="*", default=[7],
                       help="Feature-map sizes with self-attention (the bottleneck always has it).")
    model.add_argument("--attention_head_dim", type=int, default=32, help="Channels per attention head.")
    model.add_argument("--norm_num_groups", type=int, default=8, help="Groups of every GroupNorm.")
    model.add_argument("--dropout", type=float, default=0.0, help="Dropout inside residual blocks.")
    model.add_argument("--num_train_timesteps", type=int, default=1000, help="T, the diffusion steps.")
    model.add_argument("--beta_schedule", choices=BETA_SCHEDULES, default="linear",
                       help="Noise schedule: linear β from 1e-4 to 0.02 (DDPM), or cosine.")
    model.add_argument("--prediction_type", choices=PREDICTION_TYPES, default="epsilon",
                       help="What the UNet learns to predict; the spec's L_simple is `epsilon`.")
    model.add_argument("--cond_drop_prob", type=float, default=0.1,
                       help="Probability of replacing the label by the null label (classifier-free guidance).")
    model.add_argument("--snr_gamma", type=float, default=None,
                       help="Min-SNR-γ loss weighting (Hang et al., 2023): each timestep's loss weighted by "
                            "min(SNR, γ) over what the prediction type already weights; the paper uses 5. Unset: "
                            "the spec's L_simple.")
    model.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=False,
                       help="Train with the UNet's weights and activations in channels_last memory format.")
    add_run_arguments(parser)
    return parser


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of `scripts/train.py`, checked by [`check_args`]."""
    return parse_checked(build_parser(), check_args, argv)


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


def check_args(args: argparse.Namespace) -> list[str]:
    """Every nonsense option value of `scripts/train.py`, named, so that nothing starts training with it."""
    problems = out_of_range(args, ["layers_per_block", "num_train_timesteps", "attention_head_dim", "norm_num_groups"],
                            "a positive integer")
    problems += out_of_range(args, ["dataloader_num_workers"], "≥ 0")
    problems += out_of_range(args, ["cond_drop_prob", "dropout"], "in [0, 1)")
    problems += out_of_range(args, ["snr_gamma"], "positive")
    problems += check_batch_size(args.train_batch_size, TRAINING_IMAGES, "the MNIST training split")
    if any(c < 1 or (args.norm_num_groups >= 1 and c % args.norm_num_groups) for c in args.block_out_channels):
        problems.append(f"--block_out_channels {args.block_out_channels} must be positive multiples of "
                        f"--norm_num_groups {args.norm_num_groups}")
    if 28 % 2 ** (len(args.block_out_channels) - 1):
        problems.append(f"--block_out_channels has {len(args.block_out_channels)} levels; 28 pixels halve at most "
                        "twice (28 → 14 → 7)")
    # Attention splits the width of each level that has it (those of --attention_resolutions, and the bottleneck)
    # into heads of --attention_head_dim channels.
    attended = {channels for level, channels in enumerate(args.block_out_channels)
                if 28 // 2**level in args.attention_resolutions} | {args.block_out_channels[-1]}
    if args.attention_head_dim >= 1 and any(channels % args.attention_head_dim for channels in attended):
        problems.append(f"--attention_head_dim {args.attention_head_dim} must divide the width of every level with "
                        f"attention, {sorted(attended)}")
    problems += output_dir_problems(Path(args.output_dir), resuming=args.resume_from_checkpoint is not None)
    return problems + check_run_arguments(args)


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


# The run record -----------------------------------------------------------------------------------------------------


def recorded_options(args: argparse.Namespace) -> dict:
    """
    The options as written to training_config.json and the logs: everything but the Hub token, and no text shaped like
    a token either (one pasted into the wrong option).
    """
    return {name: redact(value) if isinstance(value, str) else value
            for name, value in vars(args).items() if name != "hub_token"}


def describe_hardware(accelerator: Accelerator) -> str:
    """What the run trained on, for the record: the GPUs, or the CPU model with its cores and threads."""
    if accelerator.device.type == "cuda":
        return f"{accelerator.num_processes} × {torch.cuda.get_device_name(accelerator.device)}"
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return (f"{cpu}, {os.cpu_count()} cores, {accelerator.num_processes} process(es) × "
            f"{torch.get_num_threads()} thread(s), no GPU")


def run_record(accelerator: Accelerator, script: str, args: argparse.Namespace, state: dict, model) -> dict:
    """
    What a run did, as saved beside the model it trained: the command line and the options (secrets redacted), the
    data set it trained on, the steps, images and minutes of training (from `state`, summed over resumed runs) and what it ran on.

    Args:
        accelerator: the run's accelerator.
        script: the script as the command line should name it, e.g. `"scripts/train.py"`.
        args: the parsed options.
        state: the training state of [`new_training_state`], as the loop has counted it.
        model: the model being trained (wrapped or not), whose parameters are counted.
    """
    return {
        "command": " ".join([script, *redact_command(sys.argv[1:])]),
        "args": recorded_options(args),
        "data": describe_training_data(args.data_dir),
        "global_step": state["global_step"],
        "images_seen": state["images_seen"],
        "train_minutes": round(state["train_seconds"] / 60, 2),
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "hardware": describe_hardware(accelerator),
        "mixed_precision": accelerator.mixed_precision,
        "num_parameters": accelerator.unwrap_model(model).num_parameters(),
        "torch_version": torch.__version__,
    }


# Accelerator, models and data ---------------------------------------------------------------------------------------


def make_accelerator(
    run_dir: Path, mixed_precision: str | None, gradient_accumulation_steps: int = 1, log_with: str = "none"
) -> Accelerator:
    """
    The accelerator of a run writing to `run_dir`, with TensorBoard logs (`log_with="tensorboard"`) in its `logs/`.
    Its seedable sampler shuffles by seed and epoch alone, so that a resumed run sees the batches of an uninterrupted
    one.
    """
    return Accelerator(
        gradient_accumulation_steps=gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        log_with=None if log_with == "none" else log_with,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / LOGS)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )


def build_seeded(seed: int, build: Callable):
    """
    `build()`, seeded so that every rank starts from the same weights; then each rank is seeded apart (with the seed
    plus its index) so that ranks draw different noise, timesteps, label drops and augmentations.

    Returns:
        What `build()` returns.
    """
    torch.manual_seed(seed)
    built = build()
    set_seed(seed, device_specific=True)
    return built


def make_unet(args: argparse.Namespace) -> ClassConditionedUNet:
    """A fresh UNet of the model options of [`build_parser`]."""
    return ClassConditionedUNet(
        block_out_channels=tuple(args.block_out_channels),
        layers_per_block=args.layers_per_block,
        attention_resolutions=tuple(args.attention_resolutions),
        attention_head_dim=args.attention_head_dim,
        norm_num_groups=args.norm_num_groups,
        dropout=args.dropout,
    )


def make_ema(accelerator: Accelerator, model: ModelMixin, args: argparse.Namespace) -> EMAModel | None:
    """
    The EMA of `model`'s weights that `--use_ema` asks for (None without it), with the warm-up of
    [`add_ema_arguments`], on the accelerator's device and registered so that checkpoints hold it.
    """
    if not args.use_ema:
        return None
    ema = EMAModel(
        model.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, inv_gamma=args.ema_inv_gamma,
        power=args.ema_power, model_cls=type(model), model_config=model.config,
    )
    ema.to(accelerator.device)
    accelerator.register_for_checkpointing(ema)
    return ema


def make_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.AdamW:
    """AdamW over `model`'s parameters, with the options of [`add_optimizer_arguments`]."""
    return torch.optim.AdamW(
        model.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay, eps=args.adam_epsilon,
    )


def make_dataloader(
    dataset: torch.utils.data.Dataset, batch_size: int, seed: int, source: str, num_workers: int = 0
) -> torch.utils.data.DataLoader:
    """
    The shuffled training batches of `dataset`, incomplete ones dropped, in an order set by `seed`.

    Raises:
        `ValueError`: if `dataset` (read from `source`, for the message) has fewer images than one batch. The option
        checks know the size of MNIST; a data set of its own (see `data.CHECKSUMS_FILE`) may be smaller.
    """
    problems = check_batch_size(batch_size, len(dataset), source)
    if problems:
        raise ValueError(problems[0] + ".")
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )


def mnist_training_data(accelerator: Accelerator, args: argparse.Namespace, optimizer: torch.optim.Optimizer) -> tuple[
    MNISTDataset, torch.utils.data.DataLoader, "TrainingLength", torch.optim.lr_scheduler.LRScheduler
]:
    """
    The data step of a run on the MNIST training split of `--data_dir` (the main process downloads missing files):
    the data set, its data loader, the length of the run, and `optimizer`'s lr schedule over it. A bad file or a
    batch larger than the data fails here, before any training.
    """
    dataset = MNISTDataset(args.data_dir, split="train", download=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    dataloader = make_dataloader(dataset, args.train_batch_size, args.seed, args.data_dir, args.dataloader_num_workers)
    length = training_length(len(dataloader), accelerator.num_processes, args.gradient_accumulation_steps,
                             args.num_epochs, args.max_train_steps)
    lr_scheduler = make_lr_scheduler(optimizer, args, length.max_train_steps, accelerator.num_processes)
    return dataset, dataloader, length, lr_scheduler


@dataclass
class TrainingLength:
    """How long a run is: optimiser steps per epoch, optimiser steps in all, and the epochs that takes."""

    steps_per_epoch: int
    max_train_steps: int
    num_epochs: int


def training_length(
    num_batches: int, num_processes: int, gradient_accumulation_steps: int, num_epochs: int,
    max_train_steps: int | None = None,
) -> TrainingLength:
    """
    The length of a run over `num_batches` batches an epoch (the data loader before `accelerator.prepare` shards it
    over `num_processes`), one optimiser step per `gradient_accumulation_steps` batches: `num_epochs` epochs, or
    `max_train_steps` steps when given, over as many epochs as they take.
    """
    steps_per_epoch = math.ceil(num_batches / num_processes / gradient_accumulation_steps)
    max_train_steps = max_train_steps or num_epochs * steps_per_epoch
    return TrainingLength(steps_per_epoch, max_train_steps, math.ceil(max_train_steps / steps_per_epoch))


def make_lr_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace, max_train_steps: int,
                      num_processes: int) -> torch.optim.lr_scheduler.LRScheduler:
    """
    The `--lr_scheduler` schedule with `--lr_warmup_steps` of warm-up over `max_train_steps`. accelerate steps a
    prepared schedule once per process at every optimiser step, hence the factor `num_processes`.
    """
    return get_scheduler(
        args.lr_scheduler, optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * num_processes,
        num_training_steps=max_train_steps * num_processes,
    )


def start_trackers(accelerator: Accelerator, project_name: str, args: argparse.Namespace) -> None:
    """Start the logger's run (TensorBoard: in logs/) on the main process, with the recorded options as hparams."""
    if accelerator.is_main_process:
        # TensorBoard's hparams take numbers, strings and booleans only.
        config = {name: str(value) if isinstance(value, (list, tuple)) or value is None else value
                  for name, value in recorded_options(args).items()}
        accelerator.init_trackers(project_name, config=config)


# Checkpoints --------------------------------------------------------------------------------------------------------


def new_training_state(identity: dict | None = None) -> dict:
    """
    The training state of a new run, as a checkpoint's training_state.json holds it, with the run's `identity`:
    what it trains, which a resume must match (see [`identity_problems`]).
    """
    return {"global_step": 0, "images_seen": 0, "train_seconds": 0.0, "run_identity": identity}


def checkpoint_step(checkpoint: Path) -> int:
    """The step of a checkpoint folder `checkpoint-N`: N."""
    return int(CHECKPOINT_PATTERN.match(checkpoint.name).group(1))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints of a run, oldest first (a half-written one has a temporary name and is not listed)."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if CHECKPOINT_PATTERN.match(p.name) and p.is_dir()), key=checkpoint_step)


def checkpoint_problem(checkpoint: Path, num_registered: int) -> str | None:
    """
    What makes a checkpoint folder unusable, or None if it is complete and its files are intact.

    Each file is checked by its format, the safetensors header against the file's size and every torch archive
    (optimiser, lr schedule, registered objects, random states) against its CRCs, so that a missing, truncated or
    damaged file is named here, before any work, rather than by a raw error from deep inside `accelerator.load_state`.

    Args:
        checkpoint (`Path`): a folder written by [`save_checkpoint`].
        num_registered (`int`): how many objects the run to resume registers with
            `accelerator.register_for_checkpointing` (the EMA of [`make_ema`], say); their files must be there.

    Returns:
        `str` or `None`: the problem, e.g. `"model.safetensors is missing"`.
    """
    if not checkpoint.is_dir():
        return "there is no such folder"
    required = [TRAINING_STATE, *CHECKPOINT_FILES, *(f"custom_checkpoint_{i}.pkl" for i in range(num_registered))]
    missing = [name for name in required if not (checkpoint / name).is_file()]
    if missing:
        return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    try:
        state = json.loads((checkpoint / TRAINING_STATE).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"{TRAINING_STATE} is not valid JSON ({error})"
    if not (isinstance(state, dict) and all(isinstance(state.get(key), int) for key in ("global_step", "images_seen"))
            and isinstance(state.get("train_seconds"), (int, float))):
        return f"{TRAINING_STATE} does not hold global_step, images_seen and train_seconds"
    for path in sorted(checkpoint.iterdir()):
        try:
            if path.suffix == ".safetensors":
                with safe_open(path, framework="pt"):
                    pass
            elif path.suffix in (".bin", ".pkl"):  # torch.save archives
                with zipfile.ZipFile(path) as archive:
                    damaged = archive.testzip()
                if damaged is not None:
                    return f"{path.name} is damaged (a CRC error in {damaged})"
        except (SafetensorError, zipfile.BadZipFile, OSError) as error:
            return f"{path.name} is truncated or damaged ({error})"
    return None


def identity_problems(checkpoint: Path, identity: dict | None) -> list[str]:
    """
    How the run that wrote `checkpoint` differs from this one in what it trains: each entry of `identity` (option
    values such as `{"guidance_scale": 1.5}`, or a hash of the teacher's weights) that the checkpoint's
    training_state.json records with another value, as `"guidance_scale: 1.5 there, 3.0 now"`. A checkpoint written
    before runs recorded their identity cannot be checked: it is resumed with a warning.
    """
    recorded = json.loads((checkpoint / TRAINING_STATE).read_text()).get("run_identity")
    if identity is None:
        return []
    if recorded is None:
        logger.warning(f"{checkpoint} records no run identity (written by an older version): the options it was "
                       "written with cannot be checked.", main_process_only=True)
        return []
    identity = json.loads(json.dumps(identity))  # as the checkpoint holds it: tuples as lists
    return [f"{name}: {recorded.get(name)!r} there, {value!r} now"
            for name, value in identity.items() if recorded.get(name) != value]


def resolve_checkpoint(resume_from_checkpoint: str | None, run_dir: Path, num_registered: int,
                       identity: dict | None = None) -> Path | None:
    """
    The checkpoint that `--resume_from_checkpoint` names, or None to start fresh. `latest` is the newest complete
    checkpoint of `run_dir`: newer ones that are incomplete or damaged are skipped with a warning. A checkpoint named
    by its path must be usable. `num_registered` is that of [`checkpoint_problem`].

    Raises:
        `ValueError`: also when the checkpoint was written by a run that trained something else than `identity`
            says this one does ([`identity_problems`]), naming each difference.
    """
    checkpoint = _usable_checkpoint(resume_from_checkpoint, run_dir, num_registered)
    if checkpoint is not None:
        differences = identity_problems(checkpoint, identity)
        if differences:
            raise ValueError(
                f"--resume_from_checkpoint {checkpoint} was written by a run with other options "
                f"({'; '.join(differences)}). Resume with the options it was written with, or start a new run in "
                "another --output_dir."
            )
    return checkpoint


def _usable_checkpoint(resume_from_checkpoint: str | None, run_dir: Path, num_registered: int) -> Path | None:
    # The checkpoint `resolve_checkpoint` resumes, before its identity is compared.
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(run_dir)
        if not checkpoints:
            logger.warning(f"No checkpoint in {run_dir / CHECKPOINTS}: starting a new run.", main_process_only=True)
            return None
        skipped = []
        for checkpoint in reversed(checkpoints):
            problem = checkpoint_problem(checkpoint, num_registered)
            if problem is None:
                return checkpoint
            logger.warning(f"Skipping the checkpoint {checkpoint}: {problem}.", main_process_only=True)
            skipped.append(f"{checkpoint.name}: {problem}")
        raise ValueError(
            f"--resume_from_checkpoint latest: no checkpoint in {run_dir / CHECKPOINTS} can be resumed "
            f"({'; '.join(skipped)}). Remove them to start a new run there, or choose another --output_dir."
        )
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {path}: no checkpoint there (expected a folder written by this script, "
            f"with {TRAINING_STATE}), or pass `latest`."
        )
    problem = checkpoint_problem(path, num_registered)
    if problem is not None:
        raise ValueError(f"--resume_from_checkpoint {path} cannot be resumed: {problem}.")
    return path


def output_dir_problems(output_dir: Path, resuming: bool) -> list[str]:
    """
    What makes `output_dir` the wrong place for a run: it is a file, it holds anything but a run's own output, or
    it holds a previous run that is not being resumed. Checked with the options, so that a usage error names it
    before anything is loaded or created.
    """
    if output_dir.exists() and not output_dir.is_dir():
        return [f"--output_dir {output_dir} exists and is not a folder"]
    if not output_dir.is_dir():
        return []
    foreign = sorted(p.name for p in output_dir.iterdir() if p.name not in RUN_ENTRIES and not p.name.startswith("."))
    if foreign:
        return [f"--output_dir {output_dir} already holds files a run did not write ({', '.join(foreign[:5])}); "
                "choose an empty or new folder so that nothing there is overwritten"]
    if list_checkpoints(output_dir) and not resuming:
        return [f"--output_dir {output_dir} holds checkpoints of an earlier run; pass --resume_from_checkpoint latest "
                "to continue it, or choose another folder"]
    return []


def check_output_dir(output_dir: Path, resuming: bool) -> None:
    """
    Refuse an output_dir with [`output_dir_problems`] (for callers that did not parse the options) or one that cannot
    be created or written to; then create it. All of this is found before training, not at the first checkpoint
    hundreds of steps later.
    """
    problems = output_dir_problems(output_dir, resuming)
    if problems:
        raise FileExistsError(problems[0] + ".")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise OSError(f"--output_dir {output_dir} cannot be created or written to: {error}") from error


def resume_state(accelerator: Accelerator, checkpoint: Path | None, run_dir: Path, identity: dict | None = None) -> dict:
    """
    The training state to go on from: a new run's with its `identity`, or that of `checkpoint` (from
    [`resolve_checkpoint`], which checked the identity), whose weights, optimiser, lr schedule, registered objects
    and random states are loaded into the prepared objects. Resuming from an older checkpoint than the newest rolls
    the run back: the newer ones are the abandoned run's, which [`save_checkpoint`] deletes once this run has a
    checkpoint of its own.
    """
    if checkpoint is None:
        return new_training_state(identity)
    try:
        accelerator.load_state(str(checkpoint))
    except (RuntimeError, ValueError, KeyError) as error:  # intact files that do not fit this model or optimiser
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint} does not fit this run ({error}); resume with the model and "
            "optimiser options it was written with."
        ) from error
    state = json.loads((checkpoint / TRAINING_STATE).read_text())
    if state.get("run_identity") is None:  # an older checkpoint: its own checkpoints from now on record the identity
        state["run_identity"] = identity
    accelerator.print(f"Resumed from {checkpoint} at step {state['global_step']}.")
    newer = [p.name for p in list_checkpoints(run_dir) if checkpoint_step(p) > state["global_step"]]
    if newer:
        logger.warning(
            f"Rolling back to step {state['global_step']}: the newer checkpoints {', '.join(newer)} belong to the "
            "abandoned run and are deleted once this run writes its first checkpoint.", main_process_only=True,
        )
    return state


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: dict, limit: int) -> None:
    """
    Save everything a resume needs (`accelerator.save_state` and `state`) to `run_dir/checkpoints/checkpoint-<step>`,
    keeping the newest `limit` checkpoints. The folder is written under a temporary name and renamed when complete,
    so that a run killed mid-save leaves no checkpoint that looks whole. Called on every rank.
    """
    final = run_dir / CHECKPOINTS / f"checkpoint-{state['global_step']}"
    temporary, retired = final.with_name(f".tmp-{final.name}"), final.with_name(f".old-{final.name}")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))  # every rank writes its RNG state; the main rank the rest
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temporary / TRAINING_STATE).write_text(json.dumps(state) + "\n")
        # A run rolled back to an older checkpoint re-writes the steps after it: the abandoned run's checkpoint of
        # this step is moved aside first, since a folder cannot be renamed onto a non-empty one.
        if final.exists():
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(final, retired)
        os.replace(temporary, final)  # a checkpoint exists complete, or not at all
        shutil.rmtree(retired, ignore_errors=True)
        # Checkpoints newer than this one are the abandoned run's: once this run has one of its own they go, so
        # that `latest` and --checkpoints_total_limit only ever see one history.
        checkpoints = list_checkpoints(run_dir)
        kept = checkpoints.index(final) + 1
        for stale in checkpoints[kept:] + checkpoints[: max(kept - limit, 0)]:
            shutil.rmtree(stale)
    accelerator.wait_for_everyone()


# The loop -----------------------------------------------------------------------------------------------------------


def training_batches(accelerator: Accelerator, dataloader, global_step: int, length: TrainingLength) -> Iterator:
    """
    The batches a run trains on from optimiser step `global_step` to the end of its last epoch: a resumed run skips
    the batches of its epoch that it trained on before, so that it sees what an uninterrupted run would. A run that
    has taken all its steps gets none.

    Args:
        accelerator: the run's accelerator (its `gradient_accumulation_steps` batches make one step).
        dataloader: the prepared data loader, whose length is the batches of one process.
        global_step: the optimiser steps taken so far.
        length: the run's [`TrainingLength`].
    """
    if global_step >= length.max_train_steps:
        return
    first_epoch, skip_batches = divmod(global_step * accelerator.gradient_accumulation_steps, len(dataloader))
    for epoch in range(first_epoch, length.num_epochs):
        dataloader.set_epoch(epoch)
        if epoch == first_epoch and skip_batches:
            yield from accelerator.skip_first_batches(dataloader, skip_batches)
        else:
            yield from dataloader


def ddpm_loss(model, noise_scheduler: MNISTDDPMScheduler, images: torch.Tensor, labels: torch.Tensor,
              cond_drop_prob: float, null_label: int, snr_gamma: float | None = None) -> torch.Tensor:
    """
    L_simple on one batch: t drawn uniformly, x_t in closed form, the label replaced by `null_label` with probability
    `cond_drop_prob` (classifier-free guidance), and the MSE between the UNet's prediction and its target; with
    `snr_gamma`, each image's MSE weighted by [`min_snr_weights`].
    """
    noise = torch.randn_like(images)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(images),), device=images.device)
    drop = torch.rand(len(labels), device=labels.device) < cond_drop_prob
    labels = torch.where(drop, torch.full_like(labels, null_label), labels)
    noisy_images = noise_scheduler.add_noise(images, noise, timesteps)  # x_t, closed form
    prediction = model(noisy_images, timesteps, labels).sample
    target = training_target(noise_scheduler, images, noise, timesteps)
    if snr_gamma is None:
        return F.mse_loss(prediction.float(), target.float())
    per_image = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (min_snr_weights(noise_scheduler, timesteps, snr_gamma) * per_image).mean()


def min_snr_weights(scheduler: MNISTDDPMScheduler, timesteps: torch.Tensor, snr_gamma: float) -> torch.Tensor:
    """
    The Min-SNR-γ weight of each timestep (Hang et al., 2023) for the scheduler's prediction type. With
    SNR(t) = ᾱ_t / (1 − ᾱ_t), the x_0 loss is weighted by min(SNR, γ); an ε loss already carries a factor SNR and a
    v loss SNR + 1, so they are divided by it. Where SNR is 0 (a zero-terminal-SNR schedule's last step) the ε
    weight is its limit, 1.
    """
    alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].double()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    clipped = snr.clamp(max=snr_gamma)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        weights = torch.where(snr > 0, clipped / snr, torch.ones_like(snr))
    elif prediction_type == "v_prediction":
        weights = clipped / (snr + 1)
    else:
        weights = clipped
    return weights.float()


def training_target(scheduler: MNISTDDPMScheduler, images, noise, timesteps) -> torch.Tensor:
    """What the UNet learns to predict under the scheduler's `prediction_type`."""
    if scheduler.config.prediction_type == "epsilon":
        return noise  # L_simple = ‖ε − ε_θ(x_t, t, y)‖²
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(images, noise, timesteps)
    return images


def backward_and_step(accelerator: Accelerator, loss: torch.Tensor, model, optimizer, lr_scheduler,
                      max_grad_norm: float = 0.0) -> None:
    """
    Backpropagate `loss`, clip the gradient norm to `max_grad_norm` (0: no clipping) where gradients are synced, and
    step the optimiser and lr schedule. Under `accelerator.accumulate` the prepared optimiser and schedule only step on
    the last of the accumulated batches.
    """
    accelerator.backward(loss)
    if accelerator.sync_gradients and max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)


@dataclass
class Stopwatch:
    """The training time of a run, summed over resumed runs: `seconds_before` (from the checkpoint) plus this run's."""

    seconds_before: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started


@dataclass
class Throughput:
    """Images per second of training since the last reading, for the progress bar and the logs."""

    images_seen: int = 0
    since: float = field(default_factory=time.perf_counter)

    def read(self, images_seen: int) -> float:
        now = time.perf_counter()
        rate = (images_seen - self.images_seen) / (now - self.since)
        self.images_seen, self.since = images_seen, now
        return rate


def progress_bar(accelerator: Accelerator, state: dict, max_train_steps: int) -> tqdm:
    """The progress bar of the optimiser steps, shown by the first process of each machine."""
    return tqdm(total=max_train_steps, initial=state["global_step"], desc="train",
                disable=not accelerator.is_local_main_process)


def count_step(state: dict, images: int, seconds: float) -> int:
    """Count one optimiser step on `images` images (over all processes) and the training time so far in `state`."""
    state["global_step"] += 1
    state["images_seen"] += images
    state["train_seconds"] = seconds
    return state["global_step"]


def log_step(accelerator: Accelerator, progress: tqdm, step: int, loss: torch.Tensor, lr: float,
             images_per_second: float) -> None:
    """Show the loss, learning rate and speed on the progress bar, and send them to the logger."""
    logs = {"loss": loss.detach().item(), "lr": lr, "images_per_second": images_per_second}
    progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_second:.0f}")
    accelerator.log(logs, step=step)


def should_stop(accelerator: Accelerator, state: dict, max_train_steps: int, max_train_minutes: float | None) -> bool:
    """
    Whether the run ends with the step just counted in `state`: it has taken `max_train_steps` steps, or its training
    time (summed over resumed runs) has used up `max_train_minutes`.

    All ranks must stop at the same step, and the main rank's clock decides: the main rank's verdict is broadcast to
    the others. The flag lives on `accelerator.device`, since NCCL only communicates tensors on the GPU.
    """
    if state["global_step"] >= max_train_steps:
        return True
    if max_train_minutes is None:
        return False
    out_of_time = torch.tensor(float(state["train_seconds"] >= 60 * max_train_minutes), device=accelerator.device)
    return bool(broadcast(out_of_time, from_process=0).item())


def end_of_step(
    accelerator: Accelerator, args: argparse.Namespace, state: dict, length: TrainingLength, progress: tqdm,
    throughput: Throughput, loss: torch.Tensor, lr: float, write_model: Callable[[], None],
    sample_grid: Callable[[], Image.Image],
) -> bool:
    """
    The bookkeeping after the optimiser step just counted in `state`, by the options of [`add_checkpoint_arguments`]:
    log every 10 steps, checkpoint every `--checkpointing_steps` and at the end, write the model every
    `--save_model_steps` (`write_model()`, on every rank), and save the validation grid `sample_grid()` every
    `--validation_steps` (on the main rank).

    Returns:
        `bool`: whether the run ends with this step ([`should_stop`]).
    """
    step = state["global_step"]
    if step % 10 == 0 or step == length.max_train_steps:
        log_step(accelerator, progress, step, loss, lr, throughput.read(state["images_seen"]))
    progress.update(1)
    done = should_stop(accelerator, state, length.max_train_steps, args.max_train_minutes)
    if step % args.checkpointing_steps == 0 or done:
        save_checkpoint(accelerator, Path(args.output_dir), state, args.checkpoints_total_limit)
    if args.save_model_steps and step % args.save_model_steps == 0 and not done:
        write_model()
    if step % args.validation_steps == 0 and accelerator.is_main_process:
        save_validation_grid(accelerator, Path(args.output_dir), sample_grid(), step)
    return done


# What a run writes --------------------------------------------------------------------------------------------------


def ema_copy(accelerator: Accelerator, model, ema: EMAModel | None) -> ModelMixin:
    """
    A copy of the weights to sample with, in eval mode: the EMA's, or the live ones without an EMA. A pipeline never
    touches the model being trained. The copy starts as a fresh model, whose initialisation draws on the random state
    of the process that calls this.
    """
    unwrapped = accelerator.unwrap_model(model)
    copy = type(unwrapped).from_config(unwrapped.config).to(accelerator.device)
    if ema is None:
        copy.load_state_dict(unwrapped.state_dict())
    else:
        ema.copy_to(copy.parameters())
    return copy.eval()


def validation_grid(unet, scheduler, num_inference_steps: int, images_per_digit: int, guidance_scale: float,
                    seed: int) -> Image.Image:
    """
    A 10 × `images_per_digit` grid, one row per digit, sampled from `unet` (a copy such as [`ema_copy`] makes) with
    `scheduler` in `num_inference_steps` steps, from the same noise (`seed`) at every validation.
    """
    pipeline = MNISTDDPMPipeline(unet=unet, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(
        labels=list(range(10)),
        num_images_per_label=images_per_digit,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator(device="cpu").manual_seed(seed),
    ).images
    return make_grid(images, rows=10)


def save_validation_grid(accelerator: Accelerator, run_dir: Path, grid: Image.Image, step: int) -> None:
    """Save a validation grid to `run_dir/samples/step-<step>.png` and show it in TensorBoard, if that is the logger."""
    (run_dir / SAMPLES).mkdir(parents=True, exist_ok=True)
    grid.save(run_dir / SAMPLES / f"step-{step:06d}.png")
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("validation", np.asarray(grid)[None], step)


def write_pipeline(pipeline: DiffusionPipeline, run_dir: Path, record: dict) -> None:
    """
    Write the pipeline, and the run's `record` as training_config.json, into run_dir next to checkpoints/ and logs/:
    it is written whole to a staging folder, then each entry is swapped in by rename, so an interrupted save never
    leaves a half-written file in place. Called on the main process.
    """
    staging = run_dir / ".tmp-pipeline"
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging)
    (staging / TRAINING_CONFIG).write_text(json.dumps(record, indent=2) + "\n")
    for name in PIPELINE_ENTRIES:
        target, retired = run_dir / name, run_dir / f".old-{name}"
        if target.exists():
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(target, retired)
        os.replace(staging / name, target)
        if retired.is_dir():
            shutil.rmtree(retired)
        elif retired.exists():
            retired.unlink()
    shutil.rmtree(staging)


def save_ddpm_pipeline(accelerator: Accelerator, args: argparse.Namespace, model, ema: EMAModel | None,
                       noise_scheduler: MNISTDDPMScheduler, state: dict, script: str = SCRIPT) -> None:
    """
    Write the pipeline with the EMA (or live) weights and the run record to `args.output_dir`. Only the main process
    builds it, so that [`ema_copy`] leaves the random state of the other ranks alone; they wait for it.
    """
    if accelerator.is_main_process:
        pipeline = MNISTDDPMPipeline(unet=ema_copy(accelerator, model, ema), scheduler=noise_scheduler)
        write_pipeline(pipeline, Path(args.output_dir), run_record(accelerator, script, args, state, model))
    accelerator.wait_for_everyone()


def end_run(accelerator: Accelerator, args: argparse.Namespace) -> None:
    """End the logs, then push the pipeline written to `--output_dir` to the Hub if `--push_to_hub` asks for it."""
    accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        commit = push_pipeline_to_hub(Path(args.output_dir), args.hub_model_id, token=args.hub_token)
        accelerator.print(f"Pushed the pipeline to {commit.commit_url}")


# The DDPM's training ------------------------------------------------------------------------------------------------


def train(args: argparse.Namespace, on_step=None, build_unet: Callable[[argparse.Namespace], ModelMixin] = make_unet,
          script: str = SCRIPT) -> Path:
    """
    Train, resumably, and write the pipeline to `args.output_dir`.

    Args:
        args: the options of `build_parser()`.
        on_step: optional `on_step(accelerator, model, batch, global_step)` called after every optimiser step (for
            tests that watch the ranks of a distributed run).
        build_unet: builds the fresh UNet from `args`; by default our [`ClassConditionedUNet`] of the model options.
            Any UNet that `MNISTDDPMPipeline` takes will do: the benchmark trains diffusers' own `UNet2DModel` this way
            (`benchmarks/train_peer.py`).
        script: the script as the run record's command line names it.

    Returns:
        The output folder, which `MNISTDDPMPipeline.from_pretrained` loads.
    """
    output_dir = Path(args.output_dir)

    # 1. accelerator, and the checks that need no data: the checkpoint to resume and the output folder
    accelerator = make_accelerator(output_dir, args.mixed_precision, args.gradient_accumulation_steps, args.logger)
    identity = {name: getattr(args, name) for name in MODEL_OPTIONS}
    resume_from = resolve_checkpoint(args.resume_from_checkpoint, output_dir, num_registered=1 if args.use_ema else 0,
                                     identity=identity)
    if accelerator.is_main_process:
        check_output_dir(output_dir, resuming=args.resume_from_checkpoint is not None)

    # 2. models: the UNet with its EMA and optimiser, and the noise schedule
    model = build_seeded(args.seed, lambda: build_unet(args))
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = make_ema(accelerator, model, args)
    optimizer = make_optimizer(model, args)
    noise_scheduler = MNISTDDPMScheduler(
        num_train_timesteps=args.num_train_timesteps,
        beta_schedule=args.beta_schedule,
        prediction_type=args.prediction_type,
    )

    # 3. data, which sets the length of the run and of its lr schedule; a bad file or batch size fails here
    dataset, dataloader, length, lr_scheduler = mnist_training_data(accelerator, args, optimizer)
    model, optimizer, dataloader, lr_scheduler = accelerator.prepare(model, optimizer, dataloader, lr_scheduler)

    # 4. resume, and start the logs
    state = resume_state(accelerator, resume_from, output_dir, identity)
    global_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    start_trackers(accelerator, "train_mnist_ddpm", args)
    logger.info(
        f"{len(dataset)} images, {accelerator.unwrap_model(model).num_parameters()} UNet parameters, "
        f"{accelerator.num_processes} process(es) ({accelerator.distributed_type}), global batch {global_batch}, "
        f"{length.max_train_steps} steps.", main_process_only=True,
    )

    # 5. loop: one optimiser step per `gradient_accumulation_steps` batches, until the steps or the minutes run out
    null_label = null_class_label(accelerator.unwrap_model(model))
    progress = progress_bar(accelerator, state, length.max_train_steps)
    stopwatch, throughput = Stopwatch(state["train_seconds"]), Throughput(state["images_seen"])
    model.train()
    for images, labels in training_batches(accelerator, dataloader, state["global_step"], length):
        with accelerator.accumulate(model):
            loss = ddpm_loss(model, noise_scheduler, images, labels, args.cond_drop_prob, null_label, args.snr_gamma)
            backward_and_step(accelerator, loss, model, optimizer, lr_scheduler, args.max_grad_norm)
        if not accelerator.sync_gradients:
            continue
        if ema is not None:
            ema.step(model.parameters())
        step = count_step(state, global_batch, stopwatch.seconds())
        if on_step is not None:
            on_step(accelerator, model, (images, labels), step)
        done = end_of_step(
            accelerator, args, state, length, progress, throughput, loss, lr_scheduler.get_last_lr()[0],
            write_model=lambda: save_ddpm_pipeline(accelerator, args, model, ema, noise_scheduler, state, script),
            sample_grid=lambda: validation_grid(
                ema_copy(accelerator, model, ema),
                DPMSolverMultistepScheduler.from_config(noise_scheduler.config),  # a preview in a few steps
                args.validation_inference_steps, args.validation_images_per_digit, args.validation_guidance_scale,
                args.seed,
            ),
        )
        if done:
            break
    progress.close()

    # 6. save: the pipeline (also after a resume that found the run finished: a kill may have come before this), then
    # the Hub
    save_ddpm_pipeline(accelerator, args, model, ema, noise_scheduler, state, script)
    end_run(accelerator, args)
    return output_dir


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))
