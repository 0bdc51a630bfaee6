"""Training of the class-conditional DDPM on MNIST, behind `accelerate launch scripts/train.py`.

The loop is the algorithm of the spec: draw t uniformly, jump to x_t in closed form, regress the noise with a
plain MSE; drop the label to the null label with probability `cond_drop_prob` for classifier-free guidance.
Everything a run writes sits in `output_dir`: the pipeline (model_index.json, unet/, scheduler/) at the top,
checkpoints in `checkpoints/`, TensorBoard logs in `logs/`, validation grids in `samples/`.
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
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from accelerate.utils.constants import OPTIMIZER_NAME, SAFE_WEIGHTS_NAME, SCHEDULER_NAME
from diffusers import DPMSolverMultistepScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from PIL import Image
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from .data import MNIST_FILES, MNISTDataset
from .hub import add_hub_arguments, check_hub_arguments, push_pipeline_to_hub
from .images import make_grid
from .pipeline_mnist_ddpm import MNISTDDPMPipeline
from .redaction import redact, redact_command
from .scheduling_mnist_ddpm import MNISTDDPMScheduler
from .unet_mnist import ClassConditionedUNet

logger = get_logger(__name__)

CHECKPOINTS, LOGS, SAMPLES = "checkpoints", "logs", "samples"
PIPELINE_ENTRIES = ("model_index.json", "unet", "scheduler", "training_config.json")
RUN_ENTRIES = set(PIPELINE_ENTRIES) | {CHECKPOINTS, LOGS, SAMPLES}
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINING_STATE = "training_state.json"
# What `accelerator.save_state` writes besides the random states: the model, optimiser and lr schedule, and the
# objects registered for checkpointing (here the EMA, the first and only one) as `custom_checkpoint_<i>.pkl`.
CHECKPOINT_FILES = (SAFE_WEIGHTS_NAME, f"{OPTIMIZER_NAME}.bin", f"{SCHEDULER_NAME}.bin")
EMA_CHECKPOINT_FILE = "custom_checkpoint_0.pkl"
TRAINING_IMAGES = MNIST_FILES["train"][0].count
LR_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


def build_parser() -> argparse.ArgumentParser:
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
    model.add_argument("--beta_schedule", choices=["linear", "squaredcos_cap_v2"], default="linear",
                       help="Noise schedule: linear β from 1e-4 to 0.02 (DDPM), or cosine.")
    model.add_argument("--prediction_type", choices=["epsilon", "v_prediction", "sample"], default="epsilon",
                       help="What the UNet learns to predict; the spec's L_simple is `epsilon`.")
    model.add_argument("--cond_drop_prob", type=float, default=0.1,
                       help="Probability of replacing the label by the null label (classifier-free guidance).")
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
    ema = parser.add_argument_group("exponential moving average (EMA) of the weights")
    ema.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True,
                     help="Keep an EMA of the weights; the EMA is what validation samples and what gets saved.")
    ema.add_argument("--ema_max_decay", type=float, default=0.9995, help="Upper bound of the EMA decay.")
    ema.add_argument("--ema_inv_gamma", type=float, default=1.0, help="EMA warm-up: decay = 1 − (1 + step/γ)^−p.")
    ema.add_argument("--ema_power", type=float, default=0.75, help="EMA warm-up power p.")
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
                      help="DPM-Solver++ steps for validation samples (fast; the final model uses the full DDPM).")
    save.add_argument("--validation_guidance_scale", type=float, default=2.0, help="Guidance of validation samples.")
    save.add_argument("--logger", choices=["tensorboard", "none"], default="tensorboard", help="Where scalars go.")
    add_hub_arguments(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    problems = check_args(args)
    if problems:
        parser.error("; ".join(problems))
    return args


def check_args(args: argparse.Namespace) -> list[str]:
    """Every nonsense option value, named, so that nothing starts training with it."""
    positive = ["train_batch_size", "num_epochs", "gradient_accumulation_steps", "checkpointing_steps",
                "validation_steps", "validation_images_per_digit", "validation_inference_steps", "layers_per_block",
                "num_train_timesteps", "attention_head_dim", "norm_num_groups", "checkpoints_total_limit"]
    problems = [f"--{name} must be a positive integer, got {getattr(args, name)}"
                for name in positive if getattr(args, name) < 1]
    for name in ("max_train_steps", "save_model_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            problems.append(f"--{name} must be a positive integer, got {getattr(args, name)}")
    problems += check_batch_size(args.train_batch_size, TRAINING_IMAGES, "the MNIST training split")
    if args.max_train_minutes is not None and args.max_train_minutes <= 0:
        problems.append(f"--max_train_minutes must be positive, got {args.max_train_minutes}")
    if not args.learning_rate > 0:
        problems.append(f"--learning_rate must be positive, got {args.learning_rate}")
    for name in ("lr_warmup_steps", "dataloader_num_workers", "seed"):
        if getattr(args, name) < 0:
            problems.append(f"--{name} must be ≥ 0, got {getattr(args, name)}")
    # numpy takes 32-bit seeds, and every process seeds itself with --seed plus its index.
    if args.seed >= 2**31:
        problems.append(f"--seed must be below 2**31 = {2**31}, got {args.seed}")
    for name in ("cond_drop_prob", "dropout", "adam_beta1", "adam_beta2"):
        if not 0 <= getattr(args, name) < 1:
            problems.append(f"--{name} must be in [0, 1), got {getattr(args, name)}")
    for name in ("adam_weight_decay", "adam_epsilon", "max_grad_norm", "validation_guidance_scale"):
        if not getattr(args, name) >= 0:
            problems.append(f"--{name} must be ≥ 0, got {getattr(args, name)}")
    if not 0 < args.ema_max_decay < 1:
        problems.append(f"--ema_max_decay must be in (0, 1), got {args.ema_max_decay}")
    for name in ("ema_inv_gamma", "ema_power"):  # the warm-up decay 1 − (1 + step/γ)^−p needs both positive
        if not getattr(args, name) > 0:
            problems.append(f"--{name} must be positive, got {getattr(args, name)}")
    if any(c < 1 or c % args.norm_num_groups for c in args.block_out_channels):
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
    problems += check_hub_arguments(args)
    return problems


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


def make_unet(args: argparse.Namespace) -> ClassConditionedUNet:
    return ClassConditionedUNet(
        block_out_channels=tuple(args.block_out_channels),
        layers_per_block=args.layers_per_block,
        attention_resolutions=tuple(args.attention_resolutions),
        attention_head_dim=args.attention_head_dim,
        norm_num_groups=args.norm_num_groups,
        dropout=args.dropout,
    )


def checkpoint_step(checkpoint: Path) -> int:
    """The step of a checkpoint folder `checkpoint-N`: N."""
    return int(CHECKPOINT_PATTERN.match(checkpoint.name).group(1))


def list_checkpoints(output_dir: Path) -> list[Path]:
    """The checkpoints of a run, oldest first (a half-written one has a temporary name and is not listed)."""
    folder = output_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if CHECKPOINT_PATTERN.match(p.name) and p.is_dir()), key=checkpoint_step)


def checkpoint_problem(checkpoint: Path, use_ema: bool) -> str | None:
    """
    What makes a checkpoint folder unusable, or None if it is complete and its files are intact.

    Each file is checked by its format, the safetensors header against the file's size and every torch archive
    (optimiser, lr schedule, EMA, random states) against its CRCs, so that a missing, truncated or damaged file is
    named here, before any work, rather than by a raw error from deep inside `accelerator.load_state`.

    Args:
        checkpoint (`Path`): a folder written by `save_checkpoint` in [`train`].
        use_ema (`bool`): whether the run to resume keeps an EMA, which must then be in the checkpoint.

    Returns:
        `str` or `None`: the problem, e.g. `"model.safetensors is missing"`.
    """
    if not checkpoint.is_dir():
        return "there is no such folder"
    required = [TRAINING_STATE, *CHECKPOINT_FILES] + ([EMA_CHECKPOINT_FILE] if use_ema else [])
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


def resolve_checkpoint(args: argparse.Namespace, output_dir: Path) -> Path | None:
    """
    The checkpoint to resume from, or None to start fresh. `latest` is the newest complete checkpoint: newer ones
    that are incomplete or damaged are skipped with a warning. A checkpoint named by its path must be usable.
    """
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            logger.warning(f"No checkpoint in {output_dir / CHECKPOINTS}: starting a new run.", main_process_only=True)
            return None
        skipped = []
        for checkpoint in reversed(checkpoints):
            problem = checkpoint_problem(checkpoint, args.use_ema)
            if problem is None:
                return checkpoint
            logger.warning(f"Skipping the checkpoint {checkpoint}: {problem}.", main_process_only=True)
            skipped.append(f"{checkpoint.name}: {problem}")
        raise ValueError(
            f"--resume_from_checkpoint latest: no checkpoint in {output_dir / CHECKPOINTS} can be resumed "
            f"({'; '.join(skipped)}). Remove them to start a new run there, or choose another --output_dir."
        )
    path = Path(args.resume_from_checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {path}: no checkpoint there (expected a folder written by this script, "
            f"with {TRAINING_STATE}), or pass `latest`."
        )
    problem = checkpoint_problem(path, args.use_ema)
    if problem is not None:
        raise ValueError(f"--resume_from_checkpoint {path} cannot be resumed: {problem}.")
    return path


def check_output_dir(output_dir: Path, resuming: bool) -> None:
    """
    Refuse an output_dir that holds anything but this script's own output, a previous run not resumed, or a folder
    that cannot be created or written to; then create it. All of this is found before training, not at the first
    checkpoint hundreds of steps later.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output_dir {output_dir} exists and is not a folder.")
    if output_dir.is_dir():
        foreign = sorted(p.name for p in output_dir.iterdir()
                         if p.name not in RUN_ENTRIES and not p.name.startswith("."))
        if foreign:
            raise FileExistsError(
                f"--output_dir {output_dir} already holds files this script did not write ({', '.join(foreign[:5])}); "
                "choose an empty or new folder so that nothing there is overwritten."
            )
        if list_checkpoints(output_dir) and not resuming:
            raise FileExistsError(
                f"--output_dir {output_dir} holds checkpoints of an earlier run; pass --resume_from_checkpoint latest "
                "to continue it, or choose another folder."
            )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise OSError(f"--output_dir {output_dir} cannot be created or written to: {error}") from error


def save_pipeline(pipeline: MNISTDDPMPipeline, output_dir: Path, training_record: dict) -> None:
    """
    Write the pipeline into output_dir next to checkpoints/ and logs/: it is written whole to a staging folder,
    then each entry is swapped in by rename, so an interrupted save never leaves a half-written file in place.
    """
    staging = output_dir / ".tmp-pipeline"
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging)
    (staging / "training_config.json").write_text(json.dumps(training_record, indent=2) + "\n")
    for name in PIPELINE_ENTRIES:
        target, retired = output_dir / name, output_dir / f".old-{name}"
        if target.exists():
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(target, retired)
        os.replace(staging / name, target)
        if retired.is_dir():
            shutil.rmtree(retired)
        elif retired.exists():
            retired.unlink()
    shutil.rmtree(staging)


def training_target(scheduler: MNISTDDPMScheduler, images, noise, timesteps) -> torch.Tensor:
    if scheduler.config.prediction_type == "epsilon":
        return noise  # L_simple = ‖ε − ε_θ(x_t, t, y)‖²
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(images, noise, timesteps)
    return images


def validation_grid(unet, noise_scheduler, args) -> Image.Image:
    """A 10 × N grid, one row per digit, sampled with the current (EMA) weights and a fast solver."""
    pipeline = MNISTDDPMPipeline(unet=unet, scheduler=DPMSolverMultistepScheduler.from_config(noise_scheduler.config))
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    images = pipeline(
        labels=list(range(10)),
        num_images_per_label=args.validation_images_per_digit,
        num_inference_steps=args.validation_inference_steps,
        guidance_scale=args.validation_guidance_scale,
        generator=generator,
    ).images
    return make_grid(images, rows=10)


def train(args: argparse.Namespace, on_step=None) -> Path:
    """
    Train, resumably, and write the pipeline to `args.output_dir`.

    Args:
        args: the options of `build_parser()`.
        on_step: optional `on_step(accelerator, model, batch, global_step)` called after every optimiser step (for
            tests that watch the ranks of a distributed run).

    Returns:
        The output folder, which `MNISTDDPMPipeline.from_pretrained` loads.
    """
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.logger == "none" else args.logger,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / LOGS)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    resume_from = resolve_checkpoint(args, output_dir)
    if accelerator.is_main_process:
        check_output_dir(output_dir, resuming=args.resume_from_checkpoint is not None)
    # Every check and the data come before any training: a bad file or option fails here, on every rank.
    dataset = MNISTDataset(args.data_dir, split="train", download=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    # check_args knows the size of MNIST; a data set of its own (see data.CHECKSUMS_FILE) may be smaller.
    problems = check_batch_size(args.train_batch_size, len(dataset), args.data_dir)
    if problems:
        raise ValueError(problems[0] + ".")

    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = make_unet(args)
    set_seed(args.seed, device_specific=True)  # then different noise, timesteps and label drops per rank
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    noise_scheduler = MNISTDDPMScheduler(
        num_train_timesteps=args.num_train_timesteps,
        beta_schedule=args.beta_schedule,
        prediction_type=args.prediction_type,
    )
    ema = None
    if args.use_ema:
        ema = EMAModel(
            model.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, inv_gamma=args.ema_inv_gamma,
            power=args.ema_power, model_cls=ClassConditionedUNet, model_config=model.config,
        )
        accelerator.register_for_checkpointing(ema)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay, eps=args.adam_epsilon,
    )
    dataloader = torch.utils.data.DataLoader(
        dataset, batch_size=args.train_batch_size, shuffle=True, drop_last=True,
        num_workers=args.dataloader_num_workers, generator=torch.Generator().manual_seed(args.seed),
    )
    steps_per_epoch = math.ceil(len(dataloader) / accelerator.num_processes / args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_epochs * steps_per_epoch
    num_epochs = math.ceil(max_train_steps / steps_per_epoch)
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    model, optimizer, dataloader, lr_scheduler = accelerator.prepare(model, optimizer, dataloader, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)

    state = {"global_step": 0, "images_seen": 0, "train_seconds": 0.0}
    if resume_from is not None:
        try:
            accelerator.load_state(str(resume_from))
        except (RuntimeError, ValueError, KeyError) as error:  # intact files that do not fit this model or optimiser
            raise ValueError(
                f"--resume_from_checkpoint {resume_from} does not fit this run ({error}); resume with the model and "
                "optimiser options it was written with."
            ) from error
        state = json.loads((resume_from / TRAINING_STATE).read_text())
        accelerator.print(f"Resumed from {resume_from} at step {state['global_step']}.")
        newer = [p.name for p in list_checkpoints(output_dir) if checkpoint_step(p) > state["global_step"]]
        if newer:
            logger.warning(
                f"Rolling back to step {state['global_step']}: the newer checkpoints {', '.join(newer)} belong to the "
                "abandoned run and are deleted once this run writes its first checkpoint.", main_process_only=True,
            )

    global_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    if accelerator.is_main_process:
        tracker_config = {
            k: (str(v) if isinstance(v, (list, tuple)) or v is None else v) for k, v in recorded_options(args).items()
        }
        accelerator.init_trackers("train_mnist_ddpm", config=tracker_config)
        unwrapped = accelerator.unwrap_model(model)
        logger.info(
            f"{len(dataset)} images, {unwrapped.num_parameters()} UNet parameters, {accelerator.num_processes} "
            f"process(es) ({accelerator.distributed_type}), global batch {global_batch}, {max_train_steps} steps.",
            main_process_only=True,
        )

    def save_checkpoint() -> None:
        final = output_dir / CHECKPOINTS / f"checkpoint-{state['global_step']}"
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
            checkpoints = list_checkpoints(output_dir)
            kept = checkpoints.index(final) + 1
            for stale in checkpoints[kept:] + checkpoints[: max(kept - args.checkpoints_total_limit, 0)]:
                shutil.rmtree(stale)
        accelerator.wait_for_everyone()

    def sampling_unet() -> ClassConditionedUNet:
        """A copy of the weights to sample with (EMA or live): a pipeline never touches the model being trained."""
        unet = accelerator.unwrap_model(model)
        sampling = ClassConditionedUNet.from_config(unet.config).to(accelerator.device)
        if ema is None:
            sampling.load_state_dict(unet.state_dict())
        else:
            ema.copy_to(sampling.parameters())
        return sampling.eval()

    def save_final_pipeline() -> None:
        if accelerator.is_main_process:
            record = {
                "command": " ".join(["scripts/train.py", *redact_command(sys.argv[1:])]),
                "args": recorded_options(args),
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
            pipeline = MNISTDDPMPipeline(unet=sampling_unet(), scheduler=noise_scheduler)
            save_pipeline(pipeline, output_dir, record)
        accelerator.wait_for_everyone()

    first_epoch, skip_batches = divmod(state["global_step"] * args.gradient_accumulation_steps, len(dataloader))
    progress = tqdm(
        total=max_train_steps, initial=state["global_step"], desc="train", disable=not accelerator.is_local_main_process
    )
    null_label = accelerator.unwrap_model(model).null_class_label
    started, window_start, window_images = time.perf_counter(), time.perf_counter(), 0
    seconds_before = state["train_seconds"]
    done = state["global_step"] >= max_train_steps

    for epoch in range(first_epoch, num_epochs):
        if done:
            break
        dataloader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(dataloader, skip_batches) if epoch == first_epoch else dataloader
        model.train()
        for images, labels in batches:
            with accelerator.accumulate(model):
                noise = torch.randn_like(images)
                timesteps = torch.randint(0, args.num_train_timesteps, (len(images),), device=images.device)
                drop = torch.rand(len(labels), device=labels.device) < args.cond_drop_prob
                labels = torch.where(drop, torch.full_like(labels, null_label), labels)
                noisy_images = noise_scheduler.add_noise(images, noise, timesteps)  # x_t, closed form
                prediction = model(noisy_images, timesteps, labels).sample
                target = training_target(noise_scheduler, images, noise, timesteps)
                loss = F.mse_loss(prediction.float(), target.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            window_images += len(images) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue

            if ema is not None:
                ema.step(model.parameters())
            state["global_step"] += 1
            state["images_seen"] += global_batch
            state["train_seconds"] = seconds_before + time.perf_counter() - started
            step = state["global_step"]
            if on_step is not None:
                on_step(accelerator, model, (images, labels), step)

            if step % 10 == 0 or step == max_train_steps:
                now = time.perf_counter()
                logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0],
                        "images_per_second": window_images / (now - window_start)}
                window_start, window_images = now, 0
                progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}",
                                     img_s=f"{logs['images_per_second']:.0f}")
                accelerator.log(logs, step=step)
            progress.update(1)

            out_of_time = args.max_train_minutes is not None and state["train_seconds"] >= 60 * args.max_train_minutes
            if args.max_train_minutes is not None:
                # All ranks must stop at the same step: the main rank's clock decides.
                out_of_time = bool(accelerator.reduce(torch.tensor(float(out_of_time)), reduction="max"))
            done = step >= max_train_steps or out_of_time

            if step % args.checkpointing_steps == 0 or done:
                save_checkpoint()
            if args.save_model_steps and step % args.save_model_steps == 0 and not done:
                save_final_pipeline()
            if step % args.validation_steps == 0 and accelerator.is_main_process:
                grid = validation_grid(sampling_unet(), noise_scheduler, args)
                (output_dir / SAMPLES).mkdir(parents=True, exist_ok=True)
                grid.save(output_dir / SAMPLES / f"step-{step:06d}.png")
                for tracker in accelerator.trackers:
                    if tracker.name == "tensorboard":
                        tracker.writer.add_image("validation", np.asarray(grid)[None], step)
            if done:
                break

    progress.close()
    save_final_pipeline()
    accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        commit = push_pipeline_to_hub(output_dir, args.hub_model_id, token=args.hub_token)
        accelerator.print(f"Pushed the pipeline to {commit.commit_url}")
    return output_dir


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))
