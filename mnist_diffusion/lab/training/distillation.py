"""Consistency distillation of the shipped DDPM into a few-step student, behind `accelerate launch scripts/distill.py`.

The method is that of Latent Consistency Models (Luo et al., 2023), on pixels: the consistency distillation of Song
et al. (2023, "Consistency Models") with a guided teacher. On the skipping-step schedule t_n = (n + 1)·k − 1 (k =
T / `num_ddim_timesteps`, the training schedule of diffusers' `LCMScheduler`), each step

1. noises a training digit to x_{t_n} in closed form;
2. runs the frozen teacher's DDIM step from t_n to t_n − k with classifier-free guidance at the fixed scale w, so
   that the student learns the guided ODE and needs one UNet pass per step (no unconditional pass);
3. regresses the student's consistency function f(x_{t_n}, t_n) onto the target network's f(x_{t_n − k}, t_n − k),
   where f(x, t) = c_skip(t)·x + c_out(t)·x̂_0(x, t) with the c_skip, c_out of
   `LCMScheduler.get_scalings_for_boundary_condition_discrete` (so training and sampling share the boundary
   condition f(x, 0) = x), and the target network is an EMA of the student.

The teacher's output is read by its own `prediction_type`; the student's and the target's by the student's
(`--student_prediction_type`: ε, v or x_0; see [`original_and_noise`]), which its saved `LCMScheduler` config holds, so
that diffusers samples the student as it was trained. Student and target start from the teacher's weights (an ε
teacher's weights read as v or x_0 are a poor start at first: the distillation relearns the output head). The student is saved as an `MNISTDDPMPipeline` whose scheduler
is diffusers' `LCMScheduler`, with `default_guidance_scale` 1 (the guidance is baked in). Everything else (options,
accelerator, checkpoints that survive a kill, the time budget, validation grids, the run record) is that of `loop.py`, `checkpoints.py` and `options.py`.
"""

import argparse
import inspect
import math
import os
from pathlib import Path

import torch
from diffusers import LCMScheduler

from ...pipeline_mnist_ddpm import MNISTDDPMPipeline
from ...pipeline_mnist_ddpm_checks import is_repo_id
from ...scheduling_mnist_ddpm import PREDICTION_TYPES, MNISTDDPMScheduler
from ..arguments import out_of_range
from ..fingerprint import pipeline_sha256
from ..guiders import step_dependence
from ..shipped import SHIPPED_MODEL
from .checkpoints import output_dir_problems, resume_problems
from .loop import backward_and_step, build_seeded, make_accelerator, start_run
from .options import add_run_arguments, check_run_arguments, parse_checked

SCRIPT = "scripts/distill.py"
# The samplers of a distilled student: a folder that stores one is not a DDPM. Any other scheduler a teacher stores (a
# fast solver saved as its default, say) is read as the DDPM of its config's noise schedule ([`load_teacher`]).
CONSISTENCY_SCHEDULERS = ("LCMScheduler", "TCDScheduler")
LOSS_TYPES = ("huber", "l2", "ict")
# iCT's pseudo-Huber constant per √dimension (Song & Dhariwal, 2024): c = 0.00054·√d on the whole image's L2 distance.
ICT_HUBER_C_PER_SQRT_DIM = 0.00054
# The options that define what the student learns from its teacher: with the student's prediction type, the teacher's
# hash and the guidance scale they make the run's identity, which a resume must match.
IDENTITY_OPTIONS = ("num_ddim_timesteps", "timestep_scaling", "loss_type", "huber_c", "teacher_regression_steps",
                    "num_ddim_timesteps_start", "gap_doubling_steps", "target_decay")


def build_parser() -> argparse.ArgumentParser:
    """The options of `scripts/distill.py`: teacher, data and the distillation here, then the shared groups of `options.py`."""
    parser = argparse.ArgumentParser(
        prog="distill.py",
        description="Distil the class-conditional DDPM into a few-step consistency model that samples with diffusers' "
                    "LCMScheduler (run with `accelerate launch` for several processes).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("teacher, data and output")
    data.add_argument("--teacher", default=str(SHIPPED_MODEL),
                      help="The DDPM pipeline to distil (its scheduler an MNISTDDPMScheduler): a folder or Hub repo id.")
    data.add_argument("--data_dir", default="data/mnist",
                      help="Folder with the four MNIST IDX .gz files; missing files are downloaded there when online.")
    data.add_argument("--output_dir", default="mnist-lcm",
                      help="Where the student pipeline goes, with checkpoints/, logs/ and samples/ beside it.")
    data.add_argument("--dataloader_num_workers", type=int, default=0, help="Worker processes for data loading.")
    distill = parser.add_argument_group("consistency distillation")
    distill.add_argument("--guidance_scale", type=float, default=None,
                         help="Classifier-free guidance w of the teacher's ODE step, baked into the student (default: "
                              "the teacher's stored default_guidance_scale).")
    distill.add_argument("--guide_every_step", action="store_true",
                         help="Guide the teacher at every timestep even if it stores a guidance interval (one that "
                              "guides some steps only is refused otherwise: the student learns one scale for all).")
    distill.add_argument("--student_prediction_type", choices=PREDICTION_TYPES, default=None,
                         help="What the student's output is (the noise, v or x_0), stored in its LCMScheduler config; "
                              "the teacher is still read by its own type (default: the teacher's).")
    distill.add_argument("--teacher_regression_steps", type=int, default=0,
                         help="Optimiser steps at the start that regress the student's f(x_t, t) onto the teacher's own "
                              "c_skip·x_t + c_out·x̂_0 at the same x_t, before the consistency steps: re-parametrises "
                              "the teacher's weights for a student of another prediction type. Fewer than "
                              "--max_train_steps.")
    distill.add_argument("--num_ddim_timesteps", type=int, default=50,
                         help="N, the skipping-step schedule: the teacher's DDIM step jumps k = T // N ≥ 1 training "
                              "steps; stored as the student scheduler's original_inference_steps.")
    distill.add_argument("--num_ddim_timesteps_start", type=int, default=None,
                         help="Step-gap curriculum (iCT, ECT): start the skipping-step schedule at this N, with the "
                              "teacher's step k = T // N large, and double N every --gap_doubling_steps optimiser "
                              "steps up to --num_ddim_timesteps, the schedule the student samples from (default: a "
                              "fixed schedule).")
    distill.add_argument("--gap_doubling_steps", type=int, default=None,
                         help="Optimiser steps between two doublings of N (with --num_ddim_timesteps_start).")
    distill.add_argument("--target_decay", type=float, default=0.95,
                         help="EMA decay of the target network (the θ⁻ of consistency distillation); 0: the student's "
                              "current weights under stop-gradient, as iCT.")
    distill.add_argument("--loss_type", choices=LOSS_TYPES, default="huber",
                         help="Distance between student and target: pseudo-Huber per pixel (as LCM's script, with "
                              "--huber_c), squared error, or iCT's pseudo-Huber on each image's L2 distance "
                              f"√(‖a − b‖² + c²) − c with c = {ICT_HUBER_C_PER_SQRT_DIM}·√d (d = 784: c ≈ 0.015).")
    distill.add_argument("--huber_c", type=float, default=0.001,
                         help="c of the per-pixel pseudo-Huber loss √(d² + c²) − c (--loss_type huber).")
    distill.add_argument("--timestep_scaling", type=float, default=10.0,
                         help="The boundary condition's time scaling (LCMScheduler's timestep_scaling).")
    distill.add_argument("--default_num_inference_steps", type=int, default=4,
                         help="Steps the saved student samples with by default.")
    add_run_arguments(parser, validation_sampler="the student's LCMScheduler")
    parser.set_defaults(
        learning_rate=1e-4, lr_warmup_steps=100, lr_scheduler="constant_with_warmup", num_epochs=8,
        checkpointing_steps=250, validation_steps=500, validation_inference_steps=4, validation_guidance_scale=1.0,
        ema_max_decay=0.999,
    )
    return parser


def check_args(args: argparse.Namespace) -> list[str]:
    """Every nonsense option value of `scripts/distill.py`, named, so that nothing starts distilling with it."""
    problems = out_of_range(args, ["num_ddim_timesteps", "default_num_inference_steps"], "a positive integer")
    problems += out_of_range(args, ["dataloader_num_workers", "teacher_regression_steps"], "≥ 0")
    problems += out_of_range(args, ["target_decay"], "in [0, 1)")
    problems += out_of_range(args, ["huber_c", "timestep_scaling"], "positive")
    problems += out_of_range(args, ["guidance_scale"], "a finite number ≥ 0")
    if (args.num_ddim_timesteps and args.default_num_inference_steps
            and args.default_num_inference_steps > args.num_ddim_timesteps):
        problems.append(f"--default_num_inference_steps {args.default_num_inference_steps} must be at most "
                        f"--num_ddim_timesteps {args.num_ddim_timesteps}: the student samples from that schedule")
    if args.validation_inference_steps and args.num_ddim_timesteps and (
            args.validation_inference_steps > args.num_ddim_timesteps):
        problems.append(f"--validation_inference_steps {args.validation_inference_steps} must be at most "
                        f"--num_ddim_timesteps {args.num_ddim_timesteps}")
    problems += gap_curriculum_problems(args)
    if args.max_train_steps is not None and 0 < args.max_train_steps <= args.teacher_regression_steps:
        problems.append(f"--teacher_regression_steps {args.teacher_regression_steps} must be fewer than "
                        f"--max_train_steps {args.max_train_steps}: the run would end before its first consistency "
                        "step")
    if Path(args.output_dir).resolve() == Path(args.teacher).resolve():
        problems.append(f"--output_dir {args.output_dir} is the teacher's folder; the student needs a folder of its own")
    else:
        problems += output_dir_problems(Path(args.output_dir), resuming=args.resume_from_checkpoint is not None)
    teacher = teacher_problems(args)
    if not teacher and args.resume_from_checkpoint is not None:
        # The student's prediction type defaults to the teacher's, which its scheduler config holds (read, not loaded).
        teacher_prediction_type = MNISTDDPMScheduler.load_config(args.teacher, subfolder="scheduler").get(
            "prediction_type", "epsilon")
        problems += resume_problems(args.resume_from_checkpoint, Path(args.output_dir),
                                    options_identity(args, teacher_prediction_type))
    return problems + teacher + check_run_arguments(args)


def gap_curriculum_problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with the step-gap curriculum's options: each named with what it needs."""
    start, doubling, final = args.num_ddim_timesteps_start, args.gap_doubling_steps, args.num_ddim_timesteps
    if start is None:
        return [] if doubling is None else [f"--gap_doubling_steps {doubling} needs --num_ddim_timesteps_start"]
    problems = out_of_range(args, ["num_ddim_timesteps_start"], "a positive integer")
    if doubling is None or doubling < 1:
        problems.append(f"--num_ddim_timesteps_start needs --gap_doubling_steps, a positive integer, got {doubling!r}")
    if not problems and final and start >= final:
        problems.append(f"--num_ddim_timesteps_start {start} must be below --num_ddim_timesteps {final}, where the "
                        "curriculum ends")
    return problems


def num_ddim_timesteps_at(step: int, final: int, start: int | None = None, doubling_steps: int | None = None) -> int:
    """
    N of the skipping-step schedule at optimiser step `step`: `final` without a curriculum, else `start` doubled every
    `doubling_steps` steps up to `final` (iCT's doubling of the discretisation; ECT shrinks the gap continuously).
    """
    if start is None:
        return final
    return min(start * 2 ** (step // doubling_steps), final)


def options_identity(args: argparse.Namespace, teacher_prediction_type: str) -> dict:
    """
    The part of the run's identity that the options set: the student's prediction type (by default the teacher's,
    `teacher_prediction_type`) and the [`IDENTITY_OPTIONS`]. [`check_args`] compares it with the checkpoint to resume
    before anything is loaded; the teacher's hash and guidance scale complete it once the teacher is ([`distill`]).
    """
    return {"student_prediction_type": args.student_prediction_type or teacher_prediction_type,
            **{name: getattr(args, name) for name in IDENTITY_OPTIONS}}


def teacher_problems(args: argparse.Namespace) -> list[str]:
    """
    What makes `--teacher` unusable with these options, read from its configs alone (no weights are loaded): no such
    folder, not a pipeline, not a DDPM (a distilled student, say: its scheduler is not an `MNISTDDPMScheduler`), a
    stored guidance interval without `--guide_every_step`, or a skipping-step schedule longer than its training one.
    """
    teacher = args.teacher
    if not os.path.isdir(teacher) and not is_repo_id(teacher):
        return [f"--teacher {teacher}: no such folder (expected a pipeline folder such as {SHIPPED_MODEL}, or a Hub "
                "repo id)"]
    if os.path.isdir(teacher) and not (Path(teacher) / "model_index.json").is_file():
        return [f"--teacher {teacher} is not a pipeline folder: it has no model_index.json (expected a folder "
                "written by scripts/train.py or save_pretrained)"]
    try:
        index = MNISTDDPMPipeline.load_config(teacher)
        scheduler_config = MNISTDDPMScheduler.load_config(teacher, subfolder="scheduler")
    except (OSError, ValueError) as error:
        return [f"--teacher {teacher} cannot be read: {error}"]
    problems = []
    scheduler = index.get("scheduler")
    scheduler_name = scheduler[1] if isinstance(scheduler, (list, tuple)) and len(scheduler) == 2 else scheduler
    if scheduler_name in CONSISTENCY_SCHEDULERS or index.get("distilled_guidance_scale") is not None:
        problems.append(f"--teacher {teacher} samples with {scheduler_name}, not {MNISTDDPMScheduler.__name__}: it is "
                        "not a DDPM (a distilled student cannot teach); pass a pipeline written by scripts/train.py")
    interval = index.get("default_guidance_interval")
    if interval is not None and not args.guide_every_step:
        problems.append(f"--teacher {teacher} guides only the timesteps {interval[0]:g} ≤ t ≤ {interval[1]:g} by "
                        "default, and distillation bakes one guidance scale into every step: pass --guide_every_step "
                        "to guide every step at --guidance_scale")
    guider = index.get("guider")
    if isinstance(guider, (list, tuple)) and len(guider) == 2 and guider[1] is not None:
        from diffusers.guiders import ClassifierFreeGuidance  # any guider class reads guider/guider_config.json

        try:
            config = ClassifierFreeGuidance.load_config(teacher, subfolder="guider")
        except (OSError, ValueError) as error:
            return problems + [f"--teacher {teacher} names a guider whose config cannot be read: {error}"]
        dependence = step_dependence({"class_name": guider[1], **config})
        if dependence is not None:
            problems.append(f"--teacher {teacher} guides with {guider[1]}, whose step depends on the steps before it "
                            f"({dependence}); distillation draws single timesteps, so it needs a guider without")
    num_train_timesteps = scheduler_config.get("num_train_timesteps")
    if args.num_ddim_timesteps and num_train_timesteps and args.num_ddim_timesteps > num_train_timesteps:
        problems.append(f"--num_ddim_timesteps {args.num_ddim_timesteps} must be at most the teacher's "
                        f"num_train_timesteps {num_train_timesteps}: the skipping step k = T // N must be at least 1")
    if scheduler_config.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
        problems.append(f"--teacher {teacher} predicts {scheduler_config['prediction_type']!r}, which distillation "
                        f"cannot read; expected one of {', '.join(map(repr, PREDICTION_TYPES))}")
    return problems


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of `scripts/distill.py`, checked by [`check_args`]."""
    return parse_checked(build_parser(), check_args, argv)


# The method ---------------------------------------------------------------------------------------------------------


def load_teacher(teacher_dir: str | Path) -> MNISTDDPMPipeline:
    """
    The teacher pipeline (a folder or Hub repo id, checked by [`teacher_problems`]), its UNet (and guidance UNet)
    frozen in eval mode, and its scheduler the [`MNISTDDPMScheduler`] of its noise schedule: a teacher that stores a
    fast solver as its sampler is the same DDPM, and distillation's DDIM step reads the DDPM's coefficients.
    """
    teacher = MNISTDDPMPipeline.from_pretrained(teacher_dir)
    if not isinstance(teacher.scheduler, MNISTDDPMScheduler):
        teacher.scheduler = MNISTDDPMScheduler.from_config(teacher.scheduler.config)
    for model in (teacher.unet, getattr(teacher, "guidance_unet", None)):
        if model is not None:
            model.requires_grad_(False).eval()
    teacher.set_progress_bar_config(disable=True)
    return teacher


def student_scheduler(teacher: MNISTDDPMPipeline, num_ddim_timesteps: int, timestep_scaling: float,
                      prediction_type: str | None = None) -> LCMScheduler:
    """
    The student's sampler: `LCMScheduler` on the teacher's noise schedule, over the skipping-step schedule of
    `num_ddim_timesteps` steps it is distilled on, with the boundary condition's `timestep_scaling` and the student's
    `prediction_type` (default: the teacher's). Its step does not clamp x̂_0 (`clip_sample=False`), so that it returns
    exactly the f that [`consistency_function`] trains.

    Its timesteps need no spacing option: `LCMScheduler.set_timesteps` always draws them from the skipping-step
    schedule t_n = (n + 1)·k − 1, which ends at T − 1 (a one-step sample starts from pure noise at t = 999, what Lin et
    al. call "trailing"), and reads no `timestep_spacing`.
    """
    accepted = inspect.signature(LCMScheduler.__init__).parameters  # not the DDPM's variance_type, say
    config = {name: value for name, value in teacher.scheduler.config.items() if name in accepted}
    if prediction_type is not None:
        config["prediction_type"] = prediction_type
    return LCMScheduler.from_config(
        config, original_inference_steps=num_ddim_timesteps, timestep_scaling=timestep_scaling, clip_sample=False
    )


def skipping_timesteps(num_train_timesteps: int, num_ddim_timesteps: int) -> torch.Tensor:
    """
    The skipping-step schedule t_n = (n + 1)·k − 1, n = 0 … N − 1, k = T // N: LCMScheduler's training schedule, from
    which its inference timesteps are drawn (`[19, 39, …, 999]` for T = 1000, N = 50).
    """
    k = num_train_timesteps // num_ddim_timesteps
    return torch.arange(1, num_ddim_timesteps + 1) * k - 1


def broadcast_to_images(values: torch.Tensor) -> torch.Tensor:
    """One value per image, shaped (N,) → (N, 1, 1, 1), to scale a batch of images."""
    return values.float().view(-1, 1, 1, 1)


def original_and_noise(scheduler: LCMScheduler, model_output: torch.Tensor, sample: torch.Tensor,
                       timesteps: torch.Tensor, clip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The model's x̂_0 and ε̂ for x_t = `sample`, one timestep per image, read by `scheduler`'s `prediction_type` (the
    teacher's scheduler for the teacher's output, the student's for the student's) as diffusers' schedulers read it (with a = √ᾱ_t, b = √(1 − ᾱ_t)):

    - `"epsilon"`: ε̂ = output, x̂_0 = (x_t − b·ε̂) / a;
    - `"v_prediction"`: x̂_0 = a·x_t − b·v̂, ε̂ = a·v̂ + b·x_t;
    - `"sample"`: x̂_0 = output, ε̂ = (x_t − a·x̂_0) / b.

    With `clip`, x̂_0 is clamped to [-1, 1] and ε̂ re-derived from it (as in GLIDE, and diffusers' `DDIMScheduler.step`
    with `clip_sample` and `use_clipped_model_output`), so that a DDIM step stays on the line through x_t and x̂_0.
    """
    alpha_bar = broadcast_to_images(scheduler.alphas_cumprod.to(sample.device)[timesteps])
    a, b = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        original, noise = (sample - b * model_output) / a, model_output
    elif prediction_type == "v_prediction":
        original, noise = a * sample - b * model_output, a * model_output + b * sample
    elif prediction_type == "sample":
        original, noise = model_output, (sample - a * model_output) / b
    else:
        raise ValueError(f"prediction_type {prediction_type!r} of the scheduler is not one distillation "
                         f"reads; expected one of {', '.join(map(repr, PREDICTION_TYPES))}.")
    if clip:
        original = original.clamp(-1, 1)
        noise = (sample - a * original) / b
    return original, noise


def ddim_step(scheduler: LCMScheduler, model_output: torch.Tensor, sample: torch.Tensor, timesteps: torch.Tensor,
              next_timesteps: torch.Tensor, clip: bool) -> torch.Tensor:
    """
    The deterministic DDIM step (η = 0) from x_t to x_{t'}, one pair (t, t') per image:
    x_{t'} = √ᾱ_{t'}·x̂_0 + √(1 − ᾱ_{t'})·ε̂, with x̂_0 and ε̂ from [`original_and_noise`] (clamped with `clip`).
    """
    alpha_bar_next = broadcast_to_images(scheduler.alphas_cumprod.to(sample.device)[next_timesteps])
    original, noise = original_and_noise(scheduler, model_output, sample, timesteps, clip)
    return alpha_bar_next.sqrt() * original + (1 - alpha_bar_next).sqrt() * noise


def consistency_function(scheduler: LCMScheduler, model_output: torch.Tensor, sample: torch.Tensor,
                         timesteps: torch.Tensor) -> torch.Tensor:
    """
    f(x_t, t) = c_skip(t)·x_t + c_out(t)·x̂_0(x_t, t) for the model's output (read by the scheduler's
    `prediction_type`): the denoised sample `LCMScheduler.step` returns with `clip_sample=False` (as
    [`student_scheduler`] sets it; a clamp here would stop the gradient of every pixel outside [-1, 1]). f(x, 0) = x.
    """
    c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(timesteps.float())
    original, _ = original_and_noise(scheduler, model_output, sample, timesteps)
    return broadcast_to_images(c_skip) * sample + broadcast_to_images(c_out) * original


def distance(prediction: torch.Tensor, target: torch.Tensor, loss_type: str, huber_c: float) -> torch.Tensor:
    """
    The mean pseudo-Huber distance per pixel √((a − b)² + c²) − c (`"huber"`), the mean squared error (`"l2"`), or
    iCT's pseudo-Huber distance per image √(‖a − b‖² + c²) − c with c = 0.00054·√d, d the pixels of an image
    (`"ict"`: `huber_c` is not used), averaged over the batch.
    """
    difference = prediction.float() - target.float()
    if loss_type == "l2":
        return difference.pow(2).mean()
    if loss_type == "ict":
        c = ICT_HUBER_C_PER_SQRT_DIM * math.sqrt(difference[0].numel())
        return (torch.sqrt(difference.pow(2).flatten(1).sum(1) + c**2) - c).mean()
    return (torch.sqrt(difference**2 + huber_c**2) - huber_c).mean()


def consistency_loss(student, target, teacher: MNISTDDPMPipeline, scheduler: LCMScheduler, images: torch.Tensor,
                     labels: torch.Tensor, guidance_scale: float, num_ddim_timesteps: int, loss_type: str = "huber",
                     huber_c: float = 0.001, regress_on_teacher: bool = False) -> torch.Tensor:
    """
    The consistency-distillation loss on one batch of training digits (steps 1–3 of the module's docstring), or with
    `regress_on_teacher` the distance to the teacher's own f at the same x_t ([`teacher_value`]).

    Args:
        student: the UNet being trained (prepared by accelerate).
        target: the target network, an EMA of the student.
        teacher (`MNISTDDPMPipeline`): the frozen teacher, whose `predict_noise` applies the guidance.
        scheduler (`LCMScheduler`): the student's scheduler: noise schedule, boundary condition and the student's
            `prediction_type` (the teacher's output is read by `teacher.scheduler`'s).
        images, labels: the batch, images in [-1, 1].
        guidance_scale (`float`): the teacher's guidance w.
        num_ddim_timesteps (`int`): N of the skipping-step schedule.
        loss_type, huber_c: see [`distance`].
        regress_on_teacher (`bool`): regress onto [`teacher_value`] instead of the target network's next f.
    """
    num_train_timesteps = scheduler.config.num_train_timesteps
    k = num_train_timesteps // num_ddim_timesteps
    schedule = skipping_timesteps(num_train_timesteps, num_ddim_timesteps).to(images.device)
    timesteps = schedule[torch.randint(0, num_ddim_timesteps, (len(images),), device=images.device)]
    next_timesteps = (timesteps - k).clamp(min=0)
    noise = torch.randn_like(images)
    noisy = scheduler.add_noise(images, noise, timesteps)

    prediction = consistency_function(scheduler, student(noisy, timesteps, labels).sample.float(), noisy, timesteps)
    if regress_on_teacher:
        target_value = teacher_value(teacher, scheduler, noisy, timesteps, labels, guidance_scale)
    else:
        target_value = consistency_target(target, teacher, scheduler, noisy, timesteps, next_timesteps, labels,
                                          guidance_scale)
    return distance(prediction, target_value, loss_type, huber_c)


@torch.no_grad()
def consistency_target(target, teacher: MNISTDDPMPipeline, scheduler: LCMScheduler, noisy: torch.Tensor,
                       timesteps: torch.Tensor, next_timesteps: torch.Tensor, labels: torch.Tensor,
                       guidance_scale: float) -> torch.Tensor:
    """
    What the student's f(x_t, t) is regressed onto: the teacher's guided DDIM step from x_t = `noisy` to x_{t'}
    (t' = `next_timesteps`), its output read by the teacher's own `prediction_type` and clamped as the teacher's
    `clip_sample` says, then the target network's f(x_{t'}, t'), read by the student's `scheduler`.
    """
    # Guidance is linear, so guiding the teacher's ε, v or x_0 is the same.
    teacher_output = teacher_prediction(teacher, noisy, timesteps, labels, guidance_scale)
    clip = bool(teacher.scheduler.config.get("clip_sample", False))
    next_sample = ddim_step(teacher.scheduler, teacher_output, noisy, timesteps, next_timesteps, clip)
    target_output = target(next_sample, next_timesteps, labels).sample.float()
    return consistency_function(scheduler, target_output, next_sample, next_timesteps)


@torch.no_grad()
def teacher_value(teacher: MNISTDDPMPipeline, scheduler: LCMScheduler, noisy: torch.Tensor, timesteps: torch.Tensor,
                  labels: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """
    The teacher's own consistency value at x_t = `noisy`: c_skip(t)·x_t + c_out(t)·x̂_0, x̂_0 from its guided output read
    by its own `prediction_type` and clamped as its `clip_sample` says. A student whose f matches it everywhere
    denoises as the teacher does in one jump; regressing onto it first (`--teacher_regression_steps`) gives a student
    of another prediction type the teacher's knowledge in its own parametrisation, which copying the weights cannot.
    """
    output = teacher_prediction(teacher, noisy, timesteps, labels, guidance_scale)
    clip = bool(teacher.scheduler.config.get("clip_sample", False))
    original, _ = original_and_noise(teacher.scheduler, output, noisy, timesteps, clip)
    c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(timesteps.float())
    return broadcast_to_images(c_skip) * noisy + broadcast_to_images(c_out) * original


def teacher_prediction(teacher: MNISTDDPMPipeline, noisy: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor,
                       guidance_scale: float) -> torch.Tensor:
    """
    The teacher's guided prediction at x_t = `noisy`, one timestep per image, as its call guides a step: by its guider
    (at the distilled scale) when it has one, else classifier-free guidance; with its guidance UNet (autoguidance),
    the second branch runs on that weaker model with the same label. Guidance is linear, so guiding the teacher's ε,
    v or x_0 is the same.
    """
    return teacher.predict_noise(noisy, timesteps, labels, guidance_scale, teacher.unet.dtype,
                                 guider=getattr(teacher, "guider", None))


@torch.no_grad()
def update_target(target: torch.nn.Module, student: torch.nn.Module, decay: float) -> None:
    """θ⁻ ← decay·θ⁻ + (1 − decay)·θ, parameter by parameter."""
    for target_parameter, parameter in zip(target.parameters(), student.parameters()):
        target_parameter.lerp_(parameter.detach().to(target_parameter.dtype), 1 - decay)


def copy_of(model):
    """A fresh model of `model`'s class and config holding a copy of its weights."""
    copy = type(model).from_config(model.config)
    copy.load_state_dict(model.state_dict())
    return copy.to(model.device)


# The run ------------------------------------------------------------------------------------------------------------


def distillation_record(args: argparse.Namespace, teacher_sha256: str, guidance_scale: float,
                        student_prediction_type: str, guider_name: str | None = None,
                        guidance_unet_name: str | None = None) -> dict:
    """What the student's run record says of its teacher and the method, beside what every run records."""
    return {"distilled_from": {
        "teacher": str(args.teacher),
        # What a Hub visitor can look up: the teacher's repo id when it was loaded from the Hub.
        "teacher_repo_id": None if os.path.isdir(args.teacher) else str(args.teacher),
        "teacher_sha256": teacher_sha256,
        "method": "consistency distillation (Latent Consistency Models, Luo et al. 2023)",
        "teacher_solver": "DDIM",
        "guidance_scale": guidance_scale,
        "num_ddim_timesteps": args.num_ddim_timesteps,
        "student_prediction_type": student_prediction_type,
        "teacher_regression_steps": args.teacher_regression_steps,
        "num_ddim_timesteps_start": args.num_ddim_timesteps_start,
        "gap_doubling_steps": args.gap_doubling_steps,
        "loss_type": args.loss_type,
        "target_decay": args.target_decay,
        "teacher_guider": guider_name,
        "teacher_guidance_unet": guidance_unet_name,
    }}


def distill(args: argparse.Namespace, on_step=None) -> Path:
    """
    Distil `args.teacher` into a few-step student with [`consistency_loss`], resumably, and write the student pipeline
    (`LCMScheduler`, guidance 1 and `--default_num_inference_steps` as its defaults, and the distilled guidance scale,
    so that a call refuses to guide again) to `args.output_dir`.

    Args:
        args: the options of `build_parser()`.
        on_step: optional `on_step(accelerator, student, batch, global_step)` called after every optimiser step.

    Returns:
        The output folder, which `MNISTDDPMPipeline.from_pretrained` loads.
    """
    problems = teacher_problems(args)  # as parse_args found them, for callers that built `args` themselves
    if problems:
        raise ValueError("; ".join(problems) + ".")

    accelerator = make_accelerator(Path(args.output_dir), args.mixed_precision, args.gradient_accumulation_steps,
                                   args.logger)
    # The frozen teacher; the student and its target network, both from the teacher's weights.
    teacher = load_teacher(args.teacher).to(accelerator.device)
    _, guidance_scale, _ = teacher.resolve_defaults(guidance_scale=args.guidance_scale)  # every step is guided
    teacher_sha256 = pipeline_sha256(teacher)  # with its guider and guidance UNet, which make the target
    scheduler = student_scheduler(teacher, args.num_ddim_timesteps, args.timestep_scaling, args.student_prediction_type)
    student = build_seeded(args.seed, lambda: copy_of(teacher.unet).train().requires_grad_(True))
    target = copy_of(teacher.unet).requires_grad_(False)
    identity = {"teacher_sha256": teacher_sha256, "guidance_scale": guidance_scale,
                **options_identity(args, teacher.scheduler.config.prediction_type)}
    run = start_run(accelerator, args, student, identity, "distill_mnist_lcm",
                    f"Distilling {args.teacher} at guidance {guidance_scale} on {args.num_ddim_timesteps} skipping steps",
                    registered=(target,))
    student = run.model  # prepared
    guide = getattr(teacher, "guidance_unet", None)
    record = distillation_record(args, teacher_sha256, guidance_scale, scheduler.config.prediction_type,
                                 type(teacher.guider).__name__ if getattr(teacher, "guider", None) else None,
                                 None if guide is None else f"{guide.num_parameters():,}-parameter ClassConditionedUNet")

    def save() -> None:
        run.save_pipeline(lambda unet: MNISTDDPMPipeline(
            unet=unet, scheduler=LCMScheduler.from_config(scheduler.config), default_guidance_scale=1.0,
            default_num_inference_steps=args.default_num_inference_steps, distilled_guidance_scale=guidance_scale,
        ), SCRIPT, record)

    for images, labels in run.batches():
        with accelerator.accumulate(student):
            with accelerator.autocast():  # the teacher and the target too (the prepared student autocasts itself)
                num_ddim_timesteps = num_ddim_timesteps_at(run.state["global_step"], args.num_ddim_timesteps,
                                                           args.num_ddim_timesteps_start, args.gap_doubling_steps)
                loss = consistency_loss(student, target, teacher, scheduler, images, labels, guidance_scale,
                                        num_ddim_timesteps, args.loss_type, args.huber_c,
                                        regress_on_teacher=run.state["global_step"] < args.teacher_regression_steps)
            backward_and_step(accelerator, loss, student, run.optimizer, run.lr_scheduler, args.max_grad_norm)
        if not accelerator.sync_gradients:
            continue
        update_target(target, accelerator.unwrap_model(student), args.target_decay)
        if run.ema is not None:
            run.ema.step(student.parameters())
        if on_step is not None:
            on_step(accelerator, student, (images, labels), run.state["global_step"] + 1)
        if run.end_step(loss, save, lambda: LCMScheduler.from_config(scheduler.config)):
            break
    return run.end(save)


def main(argv: list[str] | None = None) -> None:
    distill(parse_args(argv))
