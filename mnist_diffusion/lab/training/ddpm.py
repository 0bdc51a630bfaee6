"""Training of the class-conditional DDPM on MNIST, behind `accelerate launch scripts/train.py`.

The loop is the algorithm of the spec: draw t uniformly, jump to x_t in closed form, regress the noise with a
plain MSE; drop the label to the null label with probability `cond_drop_prob` for classifier-free guidance
([`ddpm_loss`]). [`train`] holds that loop; what comes before it (checks, EMA, optimiser, data, resume) and what each
step ends with (logs, checkpoints) are the pieces of `loop.py`, `checkpoints.py` and `options.py`. Everything a run writes sits in `output_dir` (see `run_folder.py`).
"""

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DPMSolverMultistepScheduler, ModelMixin

from ...data import MNIST_FILES
from ...pipeline_mnist_ddpm import MNISTDDPMPipeline
from ...pipeline_mnist_ddpm_checks import null_class_label
from ...scheduling_mnist_ddpm import BETA_SCHEDULES, PREDICTION_TYPES, MNISTDDPMScheduler
from ...unet_mnist import ClassConditionedUNet
from ..arguments import out_of_range
from .checkpoints import output_dir_problems, resume_problems
from .loop import backward_and_step, build_seeded, make_accelerator, start_run
from .options import add_run_arguments, check_batch_size, check_run_arguments, parse_checked

SCRIPT = "scripts/train.py"
TRAINING_IMAGES = MNIST_FILES["train"][0].count


# The options that define what a run trains (the model, its noise schedule and its objective): a resume with any of
# them changed would continue another run's weights under a record that describes only the new ones.
MODEL_OPTIONS = ("block_out_channels", "layers_per_block", "attention_resolutions", "attention_head_dim",
                 "norm_num_groups", "dropout", "num_train_timesteps", "beta_schedule", "prediction_type",
                 "cond_drop_prob", "snr_gamma")


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of `scripts/train.py`, checked by [`check_args`]."""
    return parse_checked(build_parser(), check_args, argv)


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
    problems += resume_problems(args.resume_from_checkpoint, Path(args.output_dir), run_identity(args))
    return problems + check_run_arguments(args)


def run_identity(args: argparse.Namespace) -> dict:
    """What a run trains, which its checkpoints record and a resume must match: the values of [`MODEL_OPTIONS`]."""
    return {name: getattr(args, name) for name in MODEL_OPTIONS}


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


def train(args: argparse.Namespace, on_step=None, build_unet: Callable[[argparse.Namespace], ModelMixin] = make_unet,
          script: str = SCRIPT) -> Path:
    """
    Train the DDPM with [`ddpm_loss`], resumably, and write the pipeline to `args.output_dir`.

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
    accelerator = make_accelerator(Path(args.output_dir), args.mixed_precision, args.gradient_accumulation_steps,
                                   args.logger)
    model = build_seeded(args.seed, lambda: build_unet(args))
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    noise_scheduler = MNISTDDPMScheduler(num_train_timesteps=args.num_train_timesteps,
                                         beta_schedule=args.beta_schedule, prediction_type=args.prediction_type)
    null_label = null_class_label(model)
    run = start_run(accelerator, args, model, run_identity(args), "train_mnist_ddpm", "Training the DDPM")
    model = run.model  # prepared: wrapped for several processes, autocast for mixed precision

    def save() -> None:  # the saved model samples with the full chain
        run.save_pipeline(lambda unet: MNISTDDPMPipeline(unet=unet, scheduler=noise_scheduler), script)

    # The spec's training loop: a batch, its L_simple at random timesteps, one optimiser step, the EMA; then the
    # bookkeeping (logs, checkpoints, the model written, a validation grid), until the steps or the minutes run out.
    for images, labels in run.batches():
        with accelerator.accumulate(model):  # one optimiser step per `gradient_accumulation_steps` batches
            loss = ddpm_loss(model, noise_scheduler, images, labels, args.cond_drop_prob, null_label, args.snr_gamma)
            backward_and_step(accelerator, loss, model, run.optimizer, run.lr_scheduler, args.max_grad_norm)
        if not accelerator.sync_gradients:
            continue
        if run.ema is not None:
            run.ema.step(model.parameters())
        if on_step is not None:
            on_step(accelerator, model, (images, labels), run.state["global_step"] + 1)
        if run.end_step(loss, save, lambda: DPMSolverMultistepScheduler.from_config(noise_scheduler.config)):
            break
    return run.end(save)


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))
