"""The pieces every training loop of the project is made of: the accelerator, seeding, the data and the length of a
run, its batches after a resume, the optimiser step, the time budget, the bookkeeping after each step (logs,
checkpoints, validation grids), the run record, the pipeline written whole and the push to the Hub."""

import argparse
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, broadcast, set_seed
from diffusers import DiffusionPipeline, ModelMixin
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from PIL import Image
from tqdm.auto import tqdm

from ...data import MNISTDataset
from ...images import make_grid
from ...pipeline_mnist_ddpm import MNISTDDPMPipeline
from ..hub import push_pipeline_to_hub
from ..run_folder import LOGS, SAMPLES
from .checkpoints import check_output_dir, resolve_checkpoint, resume_state, save_checkpoint
from .options import check_batch_size
from .record import recorded_options, run_record, write_pipeline

logger = get_logger(__name__)


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


def end_run(accelerator: Accelerator, args: argparse.Namespace) -> None:
    """End the logs, then push the pipeline written to `--output_dir` to the Hub if `--push_to_hub` asks for it."""
    accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        commit = push_pipeline_to_hub(Path(args.output_dir), args.hub_model_id, token=args.hub_token)
        accelerator.print(f"Pushed the pipeline to {commit.commit_url}")


# A diffusion run: what comes before its loop, what each step ends with, and what comes after -----------------------


@dataclass
class Run:
    """
    A started run of `train.py` or `distill.py`: the prepared model, its EMA, optimiser and lr schedule, the data and the
    length of the run, and the `state` its checkpoints hold (steps, images seen, training seconds). Made by
    [`start_run`]; the loop itself is the script's own.
    """

    accelerator: Accelerator
    args: argparse.Namespace
    model: torch.nn.Module
    ema: EMAModel | None
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    dataloader: torch.utils.data.DataLoader
    length: TrainingLength
    state: dict
    global_batch: int
    progress: tqdm
    stopwatch: Stopwatch
    throughput: Throughput

    def batches(self) -> Iterator:
        """The batches left to train on ([`training_batches`]): after a resume, those an uninterrupted run had left."""
        return training_batches(self.accelerator, self.dataloader, self.state["global_step"], self.length)

    def end_step(self, loss: torch.Tensor, save: Callable[[], None], validation_scheduler: Callable) -> bool:
        """
        The bookkeeping after the optimiser step just taken: count it, log every 10 steps, checkpoint every
        `--checkpointing_steps` and at the end, `save()` the model every `--save_model_steps`, and save a validation grid
        sampled with the scheduler `validation_scheduler()` makes every `--validation_steps`. Returns whether the run ends with this step
        ([`should_stop`]).
        """
        args, state = self.args, self.state
        step = count_step(state, self.global_batch, self.stopwatch.seconds())
        if step % 10 == 0 or step == self.length.max_train_steps:
            log_step(self.accelerator, self.progress, step, loss, self.lr_scheduler.get_last_lr()[0],
                     self.throughput.read(state["images_seen"]))
        self.progress.update(1)
        done = should_stop(self.accelerator, state, self.length.max_train_steps, args.max_train_minutes)
        if step % args.checkpointing_steps == 0 or done:
            save_checkpoint(self.accelerator, Path(args.output_dir), state, args.checkpoints_total_limit)
        if args.save_model_steps and step % args.save_model_steps == 0 and not done:
            save()
        if step % args.validation_steps == 0 and self.accelerator.is_main_process:
            unet = ema_copy(self.accelerator, self.model, self.ema)
            grid = validation_grid(unet, validation_scheduler(), args.validation_inference_steps,
                                   args.validation_images_per_digit, args.validation_guidance_scale, args.seed)
            save_validation_grid(self.accelerator, Path(args.output_dir), grid, step)
        return done

    def end(self, save: Callable[[], None]) -> Path:
        """
        End the run: `save()` the model (also after a resume that found the run finished: a kill may have come before
        it was written), end the logs, and push to the Hub if `--push_to_hub` asks. Returns the output folder.
        """
        self.progress.close()
        save()
        end_run(self.accelerator, self.args)
        return Path(self.args.output_dir)

    def save_pipeline(self, build_pipeline: Callable[[ModelMixin], DiffusionPipeline], script: str,
                      record: dict | None = None) -> None:
        """
        Write `build_pipeline(unet)` with the EMA (or live) weights and the run record (with `record`'s entries) to
        `--output_dir`. Only the main process builds it, so that [`ema_copy`] leaves the random state of the other
        ranks alone; they wait for it.
        """
        if self.accelerator.is_main_process:
            run = {**run_record(self.accelerator, script, self.args, self.state, self.model), **(record or {})}
            write_pipeline(build_pipeline(ema_copy(self.accelerator, self.model, self.ema)), Path(self.args.output_dir),
                           run)
        self.accelerator.wait_for_everyone()


def start_run(accelerator: Accelerator, args: argparse.Namespace, model: ModelMixin, identity: dict, name: str,
              description: str, registered: tuple = ()) -> Run:
    """
    Everything before the loop of a run writing to `args.output_dir`: the checks that need no data (the checkpoint to
    resume, written by a run of the same `identity`, and the output folder), the EMA and optimiser of `model`, the data
    (which sets the length of the run and of its lr schedule; a bad file or batch size fails here), `accelerator.prepare`,
    the resume, and the logs (project `name`; the first line says `description`). `registered` are objects the
    checkpoints hold besides the model, its optimiser and EMA (a target network, say).
    """
    output_dir = Path(args.output_dir)
    for extra in registered:  # before the EMA: checkpoints number the registered objects in this order
        accelerator.register_for_checkpointing(extra)
    resume_from = resolve_checkpoint(args.resume_from_checkpoint, output_dir,
                                     num_registered=len(registered) + int(args.use_ema), identity=identity)
    if accelerator.is_main_process:
        check_output_dir(output_dir, resuming=args.resume_from_checkpoint is not None)
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    ema = make_ema(accelerator, model, args)
    optimizer = make_optimizer(model, args)
    dataset, dataloader, length, lr_scheduler = mnist_training_data(accelerator, args, optimizer)
    model, optimizer, dataloader, lr_scheduler = accelerator.prepare(model, optimizer, dataloader, lr_scheduler)
    state = resume_state(accelerator, resume_from, output_dir, identity)
    global_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    start_trackers(accelerator, name, args)
    logger.info(
        f"{description}: {len(dataset)} images, {accelerator.unwrap_model(model).num_parameters()} parameters, "
        f"{accelerator.num_processes} process(es) ({accelerator.distributed_type}), global batch {global_batch}, "
        f"{length.max_train_steps} steps.", main_process_only=True,
    )
    model.train()
    return Run(accelerator, args, model, ema, optimizer, lr_scheduler, dataloader, length, state, global_batch,
               progress_bar(accelerator, state, length.max_train_steps), Stopwatch(state["train_seconds"]),
               Throughput(state["images_seen"]))
