"""The model card (the Hub page) of a trained pipeline, rendered from the files in its folder.

Every number on the card comes from the folder itself: the UNet's and scheduler's configs, `training_config.json`
(written by `scripts/train.py`) and the evaluation's results JSON files in `evaluation/` (written by
`scripts/evaluate.py`). Nothing is typed by hand, so a user's own `train.py --push_to_hub` gets a card for their run,
and the top-level `model_card.md` of this repository is this module's rendering of `pretrained/mnist-ddpm/`.

    python -m mnist_diffusion.card --model_dir pretrained/mnist-ddpm --output model_card.md
"""

import argparse
import json
import re
from importlib.metadata import PackageNotFoundError, metadata
from pathlib import Path, PureWindowsPath

from huggingface_hub import EvalResult, ModelCardData

from .pipeline_mnist_ddpm import MNISTDDPMPipeline
from .redaction import redact, redact_command
from .run_folder import TRAINING_CONFIG

# The evaluation files a card reads, relative to the model folder (written by scripts/evaluate.py --output).
DEFAULT_RESULTS = "evaluation/default.json"  # the sampler and guidance of the pipeline's defaults
FAST_RESULTS = "evaluation/fast.json"  # the fast solver
# The fast solver at the n of default.json, so that the default sampling has a partner at its own n (a Fréchet ratio
# compares only with one at the same n: the real floor shrinks as n grows).
FAST_AT_DEFAULT_N_RESULTS = "evaluation/fast_at_default_n.json"
SWEEP_RESULTS = "evaluation/guidance_sweep.json"
BF16_RESULTS = "evaluation/bf16.json"  # the fast solver with a bfloat16 UNet (`torch_dtype=torch.bfloat16`)
# A distilled student's folder may hold its teacher's evaluations at the guidance it was distilled with, for comparison.
TEACHER_RESULTS = "evaluation/teacher_*.json"
FIGURES = {
    "images/samples.png": "Generated digits, one row per class",
    "images/steps.png": "The same starting noise in 1, 2, 4 and 8 steps (rows), one column per digit",
    "images/reverse_process.gif": "The reverse process: static, blur, digit shape, clear digit",
    "images/reverse_process.png": "x_t along the reverse chain for each digit",
    "images/forward_process.png": "The forward process: real digits noised in closed form",
    "images/guidance.png": "Accuracy and Fréchet ratio against the guidance scale",
}


def package_source_url() -> str | None:
    """Where the package's source lives: the `url` of setup.py, read from the installed package (None if unset)."""
    try:
        return metadata("mnist-diffusion").get("Home-page")
    except PackageNotFoundError:
        return None


def check_source_url(source_url: str) -> str:
    """`source_url` if it is the web address of a Git repository that `pip install "git+<url>"` can install from."""
    if not re.fullmatch(r"https?://\S+", source_url):
        raise ValueError(
            f"The package's source location must be the http(s) URL of its Git repository, e.g. "
            f"https://github.com/org/mnist-diffusion; got {source_url!r}."
        )
    return source_url


def spoken_list(items: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def teacher_name(distilled: dict) -> str | None:
    """
    The teacher of a distilled student as a Hub visitor can look it up: its Hub repo id when distillation loaded it
    from the Hub, else only its folder's name. The local path typed to distill.py (`pretrained/mnist-ddpm`,
    `/work/runs/...`) means nothing on the Hub and shows the trainer's file system. None when no teacher is recorded.
    """
    if distilled.get("teacher_repo_id"):
        return distilled["teacher_repo_id"]
    if not distilled.get("teacher"):
        return None
    # PureWindowsPath splits at both `/` and `\`: a run on Windows records its path with backslashes.
    return PureWindowsPath(distilled["teacher"]).name or None


EVALUATION_HEADER = [
    "| sampler | steps | guidance | guided steps | n per digit | accuracy | worst digit | Fréchet distance | ÷ real floor |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]


def guided_steps(run: dict) -> str:
    """Which timesteps a run guided: all of them, or its guidance interval `t_low ≤ t ≤ t_high`."""
    interval = run.get("guidance_interval")
    if run["guidance_scale"] == 1:
        return "none"
    return "all" if interval is None else f"{interval[0]:g} ≤ t ≤ {interval[1]:g}"


def evaluation_rows(results: dict) -> list[str]:
    """Markdown table rows (under `EVALUATION_HEADER`), one per evaluated configuration."""
    rows = []
    for run in results["runs"]:
        per_digit = run["per_digit"][run["worst_digit"]]["accuracy"]
        sampler = run["sampler"] + (" (bf16 UNet)" if run.get("unet_dtype") == "bfloat16" else "")
        rows.append(
            f"| {sampler} | {run['num_inference_steps']} | {run['guidance_scale']:g} | {guided_steps(run)} | "
            f"{results['samples_per_digit']} | {100 * run['accuracy']:.2f}% | {run['worst_digit']} "
            f"({100 * per_digit:.1f}%) | {run['frechet_distance']:.2f} | {run['frechet_ratio_to_real_floor']:.2f}× |"
        )
    return rows


def tables_by_n(evaluations: list[dict]) -> list[str]:
    """
    The evaluation rows as Markdown tables, one per number of samples n, each headed with its n and real floor: a
    Fréchet ratio is only comparable with others at the same n, since the real floor it divides by is mostly
    small-sample bias and shrinks as n grows (0.27 at n = 1,000 against 0.07 at n = 5,000 for MNIST).
    """
    by_n = {}
    for results in evaluations:
        by_n.setdefault(results["num_samples"], []).append(results)
    lines = []
    for n, group in sorted(by_n.items()):
        floor = group[0].get("real_floor_frechet_distance")
        heading = f"At n = {n:,} ({n // 10:,} per digit)" + ("" if floor is None else f", real floor {floor:.3f}")
        lines += [f"{heading}:", "", *EVALUATION_HEADER,
                  *(row for results in group for row in evaluation_rows(results)), ""]
    return lines


def read_evaluations(
    model_dir: str | Path, pipeline: MNISTDDPMPipeline | None = None
) -> tuple[list[dict], dict | None]:
    """
    The evaluation results stored in a model folder: the main table's results (the pipeline's defaults, the fast
    solver at their n, the fast solver, the fast solver with a bf16 UNet; whichever exist) and the guidance sweep (or
    None).

    Without a `fast.json`, the sweep's run at the model's default guidance (scale and interval) is the fast solver's
    result.
    """
    model_dir = Path(model_dir)
    if pipeline is None:  # the caller may have the folder's pipeline loaded already
        pipeline = MNISTDDPMPipeline.from_pretrained(model_dir)
    _, guidance_scale, guidance_interval = pipeline.resolve_defaults()
    default = (guidance_scale, None if guidance_interval is None else list(guidance_interval))
    sweep = read_json(model_dir / SWEEP_RESULTS)
    fast = read_json(model_dir / FAST_RESULTS)
    if fast is None and sweep is not None:
        fast = {**sweep, "runs": [run for run in sweep["runs"]
                                  if (run["guidance_scale"], run.get("guidance_interval")) == default]}
    evaluations = [
        results for results in (read_json(model_dir / DEFAULT_RESULTS), read_json(model_dir / FAST_AT_DEFAULT_N_RESULTS),
                                fast, read_json(model_dir / BF16_RESULTS))
        if results is not None and results["runs"]
    ]
    return evaluations, sweep


def render_model_card(model_dir: str | Path, repo_id: str = "org/mnist-ddpm", source_url: str | None = None) -> str:
    """
    Render the model card of the pipeline in `model_dir`.

    The card leads with the route that needs no package (diffusers and `trust_remote_code=True`), then installs the
    package from `source_url`. Nothing token-shaped reaches the card, whatever the folder's files hold: a command
    recorded before train.py redacted its own is redacted here.

    Args:
        model_dir: a folder written by `MNISTDDPMPipeline.save_pretrained` or `scripts/train.py`.
        repo_id: the Hub repo the card's code snippets load from.
        source_url: the http(s) URL of the package's Git repository; defaults to setup.py's `url`. Without one, the
            card says to install the package from a checkout of its source.

    Returns:
        `str`: the card, YAML metadata (with `model-index` results when evaluation files are present) and Markdown.
    """
    model_dir = Path(model_dir)
    source_url = check_source_url(source_url) if source_url is not None else package_source_url()
    model_index = json.loads((model_dir / "model_index.json").read_text())
    unet_config = json.loads((model_dir / "unet" / "config.json").read_text())
    scheduler_config = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    training = read_json(model_dir / TRAINING_CONFIG)
    # The defaults a call uses, resolved by the pipeline itself (the one place that knows the fallbacks).
    pipeline = MNISTDDPMPipeline.from_pretrained(model_dir)
    steps, guidance_scale, guidance_interval = pipeline.resolve_defaults()
    guidance = f"guidance scale {guidance_scale:g}"
    if guidance_interval is not None:
        low, high = guidance_interval
        guidance += f", applied only at timesteps {low:g} ≤ t ≤ {high:g}"
    evaluations, sweep = read_evaluations(model_dir, pipeline)
    num_parameters = pipeline.unet.num_parameters()

    eval_results = [
        EvalResult(
            task_type="image-generation", dataset_type="ylecun/mnist", dataset_name="MNIST", dataset_split="test",
            metric_type=metric, metric_name=f"{name} ({run['sampler']}, {run['num_inference_steps']} steps, "
            f"guidance {run['guidance_scale']:g}, n={results['num_samples']}"
            f"{', bf16 UNet' if run.get('unet_dtype') == 'bfloat16' else ''})", metric_value=round(value, 4),
        )
        for results in evaluations
        for run in results["runs"]
        for metric, name, value in (
            ("accuracy", "Classifier accuracy", run["accuracy"]),
            ("frechet_ratio", "Fréchet distance / real floor", run["frechet_ratio_to_real_floor"]),
        )
    ]
    metadata = ModelCardData(
        library_name="diffusers",
        license="apache-2.0",
        datasets=["ylecun/mnist"],
        tags=["diffusers", "ddpm", "class-conditional", "classifier-free-guidance", "mnist"],
        pipeline_tag="unconditional-image-generation",
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
    )

    widths = ", ".join(str(w) for w in unet_config["block_out_channels"])
    beta_schedule = (
        f"linear from {scheduler_config['beta_start']:g} to {scheduler_config['beta_end']:g}"
        if scheduler_config["beta_schedule"] == "linear" else scheduler_config["beta_schedule"]
    )
    made_with = f"{f'[mnist-diffusion]({source_url})' if source_url else 'mnist-diffusion'}"
    # A distilled student is told by its pipeline and scheduler configs, which every save keeps, not by the run
    # record: a student re-saved with `save_pretrained` has no training_config.json. Its record, where there is one,
    # says how it was distilled; without one, the configs give the baked-in guidance and the skipping-step schedule,
    # and the teacher is not recorded.
    distilled = (training or {}).get("distilled_from")
    if distilled is None and (model_index.get("distilled_guidance_scale") is not None
                              or model_index.get("scheduler", [None, None])[1] == "LCMScheduler"):
        distilled = {"teacher": None, "teacher_solver": None,
                     "guidance_scale": model_index.get("distilled_guidance_scale"),
                     "num_ddim_timesteps": scheduler_config.get("original_inference_steps")}
    if distilled:
        teacher = teacher_name(distilled)
        baked_in = ("guidance" if distilled["guidance_scale"] is None
                    else f"guidance at scale {distilled['guidance_scale']:g}")
        intro = [
            f"# {repo_id.split('/')[-1]}: a digit in {steps} network calls", "",
            "Ask for a digit, get a freshly generated 28×28 handwritten digit of that class in a few UNet passes. A "
            "consistency-distilled student (Latent Consistency Models, Luo et al., 2023; Song et al., 2023) of a "
            f"class-conditional DDPM, whose classifier-free {baked_in} is baked in: one conditional pass per step, "
            f"sampled with diffusers' own `LCMScheduler`. Made with {made_with}.", "",
        ]
    else:
        intro = [
            f"# {repo_id.split('/')[-1]}: a class-conditional DDPM for handwritten digits", "",
            "Ask for a digit, get a freshly generated 28×28 handwritten digit of that class. A denoising diffusion "
            "probabilistic model (Ho et al., 2020) whose noise predictor ε_θ(x_t, t, y) is conditioned on the digit "
            f"label, sampled with classifier-free guidance (Ho & Salimans, 2022). Made with {made_with}.", "",
        ]
    lines = ["---", metadata.to_yaml(), "---", "", *intro]
    lines += [f"![{alt}]({path})" for path, alt in FIGURES.items() if (model_dir / path).is_file() and "guidance" not in path]
    diffusers_version = model_index.get("_diffusers_version")
    # The code the Hub repo carries: the pipeline's, and that of each component diffusers does not ship.
    own_code = {"pipeline": "pipeline_mnist_ddpm.py"}
    own_code |= {name.replace("unet", "UNet"): f"{name}/{model_index[name][0].split('.')[-1]}.py"
                 for name in ("unet", "scheduler") if model_index.get(name, ["diffusers"])[0] != "diffusers"}
    lines += [
        "", "## Usage", "",
        f"diffusers alone loads this repo: it carries its own copy of the {spoken_list(list(own_code))} code. "
        "**`trust_remote_code=True` runs that code on your machine**: read "
        f"{spoken_list([f'`{path}`' for path in own_code.values()])} first.", "",
        "```bash", "pip install torch==2.13.0   # the CPU build; skip on a GPU machine",
        f'pip install "diffusers=={diffusers_version}"' if diffusers_version else "pip install diffusers", "```",
        "", "```python", "from diffusers import DiffusionPipeline", "",
        f'pipe = DiffusionPipeline.from_pretrained("{repo_id}", trust_remote_code=True)',
        "image = pipe(labels=[7]).images[0]  # a 28×28 PIL image of a handwritten 7", "```", "",
        f"Defaults stored with the model: {steps} denoising steps, {guidance}.", "",
        "Offline, download a full snapshot while online and load the folder: "
        f'`DiffusionPipeline.from_pretrained(huggingface_hub.snapshot_download("{repo_id}"), trust_remote_code=True)`.',
        "",
    ]
    if source_url:
        lines += [
            "With the mnist-diffusion package (training, evaluation, inpainting, the demo), no remote code runs:", "",
            "```bash", f'pip install "git+{source_url}"', "```", "",
        ]
    else:
        lines += [
            "With the mnist-diffusion package (training, evaluation, inpainting, the demo) installed from a checkout "
            "of its source (`pip install -e .`), no remote code runs:", "",
        ]
    lines += [
        "```python", "from mnist_diffusion import MNISTDDPMPipeline", "",
        f'pipe = MNISTDDPMPipeline.from_pretrained("{repo_id}")', "image = pipe(labels=[7]).images[0]", "```", "",
    ]
    if distilled:
        lines += [
            "Fewer or more steps: `pipe(labels=[7], num_inference_steps=1)`"
            + (f", up to the {distilled['num_ddim_timesteps']} steps of the schedule it was distilled on"
               if distilled["num_ddim_timesteps"] else "")
            + ". The guidance is in the weights: leave `guidance_scale` at 1.",
            "",
        ]
    else:
        lines += [
            "Fast sampling: swap in a diffusers solver.", "",
            "```python", "from diffusers import DPMSolverMultistepScheduler", "",
            "pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)",
            "images = pipe(labels=list(range(10)), num_inference_steps=20).images", "```", "",
        ]
    lines += [
        "## Model", "",
        f"- **Noise predictor**: `ClassConditionedUNet`, {num_parameters:,} parameters; widths {widths} at 28, 14 and 7 "
        f"pixels, {unet_config['layers_per_block']} residual block(s) per resolution on the way down (one more on the "
        f"way up), self-attention at {', '.join(str(r) for r in unet_config['attention_resolutions']) or 'no'} pixels "
        "and in the bottleneck; time (sinusoidal embedding + MLP) and label (learned embedding with a null entry for "
        "classifier-free guidance) condition every block.",
    ]
    if "original_inference_steps" in scheduler_config:  # LCMScheduler
        lines.append(
            f"- **Noise schedule**: T = {scheduler_config['num_train_timesteps']}, β {beta_schedule}; "
            f"`{scheduler_config['prediction_type']}` prediction; sampled by `LCMScheduler` on the skipping-step "
            f"schedule of {scheduler_config['original_inference_steps']} timesteps."
        )
    else:
        lines.append(
            f"- **Noise schedule**: T = {scheduler_config['num_train_timesteps']}, β {beta_schedule}; "
            f"σ_t² {'= β̃_t' if scheduler_config['variance_type'] == 'fixed_small' else '= β_t'} "
            f"(`{scheduler_config['variance_type']}`), `{scheduler_config['prediction_type']}` prediction."
        )
    if distilled:
        teacher_step = " ".join(filter(None, [distilled["teacher_solver"], "step"]))
        teacher_guidance = "" if distilled["guidance_scale"] is None else f" {distilled['guidance_scale']:g}"
        lines += [
            "- **Objective**: consistency distillation of "
            f"{f'`{teacher}`' if teacher else 'a teacher, not recorded in this folder'}. A training digit is noised to "
            f"x_t at a timestep of the skipping-step schedule; the frozen teacher's {teacher_step} "
            f"with classifier-free guidance{teacher_guidance} takes it to the schedule's next lower "
            "timestep s; the student's f(x_t, t) = c_skip(t)·x_t + c_out(t)·x̂_0 is regressed onto the target "
            "network's (an EMA of the student's weights) f at s. c_skip and c_out are `LCMScheduler`'s boundary "
            "condition, so f(x, 0) = x in training and sampling alike. Student and target start from the teacher.",
            "",
        ]
    else:
        lines += [
            "- **Objective**: L_simple = E‖ε − ε_θ(x_t, t, y)‖² with t uniform and x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε.", "",
        ]
    if training is not None:
        args = training["args"]
        # What the run trained on, as it recorded it (`describe_training_data`); an older record does not say.
        data = training.get("data") or {}
        num_train_images = data.get("num_train_images")
        data_used = ", ".join(filter(None, [data.get("data_set"),
                                            num_train_images and f"{num_train_images:,} training images"]))
        epochs = f" ({training['images_seen'] / num_train_images:.1f} epochs)" if num_train_images else ""
        lines += [
            "## Training", "",
            "| | |", "| --- | --- |",
            f"| data | {f'{data_used},' if data_used else 'not recorded;'} pixels in [−1, 1] |",
            f"| steps | {training['global_step']:,} optimiser steps, {training['images_seen']:,} images{epochs} |",
            f"| batch, optimiser | {args['train_batch_size']} × {training['num_processes']} process(es); AdamW, lr "
            f"{args['learning_rate']:g}, {args['lr_scheduler']} schedule, {args['lr_warmup_steps']} warm-up steps |",
            *([f"| label dropout (for guidance) | {args['cond_drop_prob']:g} |"] if "cond_drop_prob" in args else [
                f"| distillation | teacher {f'`{teacher}`' if teacher else 'not recorded'}, guidance "
                f"{distilled['guidance_scale']:g}, {distilled['num_ddim_timesteps']} skipping steps, "
                f"{args['loss_type']} loss, target decay {args['target_decay']:g} |"]),
            f"| EMA | {'max decay ' + format(args['ema_max_decay'], 'g') if args['use_ema'] else 'off'} |",
            f"| precision | {training['mixed_precision']} |",
            f"| hardware | {training.get('hardware', 'not recorded')} |",
            f"| wall time | {training['train_minutes']:.0f} minutes of {'distillation' if distilled else 'training'} |",
            f"| command | `{' '.join(redact_command(training['command'].split()))}` |", "",
        ]
    lines += ["## Evaluation", ""]
    if evaluations:
        lines += [
            "An independent classifier (a transformers RegNet trained on MNIST, ≥ 99.5% test accuracy) reads every "
            "generated digit; its pooled features are the space of the Fréchet distance, reported as a ratio to the "
            "real floor (real training digits against the test set at the same n); ratios compare only within a "
            "table, at one n.", "",
            *tables_by_n(evaluations),
        ]
        teacher_results = [read_json(path) for path in sorted(model_dir.glob(TEACHER_RESULTS))]
        if distilled and teacher_results:
            lines += [
                f"The teacher{f', `{teacher}`,' if teacher else ''} at the guidance the student was distilled with, "
                "for comparison (two UNet passes per guided step):", "",
                *EVALUATION_HEADER, *(row for results in teacher_results for row in evaluation_rows(results)), "",
            ]
    else:
        lines += ["Not evaluated yet.", ""]
    if sweep is not None:
        # The rule that chose the stored default, as the sweep recorded it (`evaluate.py --store_default`).
        rule = sweep.get("default_rule")
        chosen_by = "" if rule is None else (
            f" The model's default, {guidance}, is the setting with the smallest Fréchet ratio among those whose "
            f"accuracy is at least {100 * rule['min_accuracy']:g}% and whose worst digit is at least "
            f"{100 * rule['min_worst_digit_accuracy']:g}% (n ≥ {rule['min_samples']:,})."
        )
        lines += [
            "### Guidance scale", "",
            "The same sampler at every guidance setting of the sweep (scales, and guidance limited to an interval of "
            f"timesteps).{chosen_by}", "",
            *EVALUATION_HEADER,
            *evaluation_rows(sweep), "",
        ]
        if (model_dir / "images/guidance.png").is_file():
            lines += [f"![{FIGURES['images/guidance.png']}](images/guidance.png)", ""]
    lines += [
        "## Limitations", "",
        "28×28 grey digits in the style of MNIST (centred, white on black), of the ten digit classes and nothing else. "
        + ("Its variety is that of the guided teacher at the baked-in scale; one step gives blurrier digits than "
           "four (see the table)." if distilled else
           "The full DDPM chain takes seconds per image on a CPU; a solver with 20–25 steps is much faster."), "",
        "## Citations", "",
        "```bibtex",
        "@inproceedings{ho2020ddpm, title={Denoising Diffusion Probabilistic Models},",
        "  author={Ho, Jonathan and Jain, Ajay and Abbeel, Pieter}, booktitle={NeurIPS}, year={2020}}",
        "@article{ho2022cfg, title={Classifier-Free Diffusion Guidance},",
        "  author={Ho, Jonathan and Salimans, Tim}, journal={arXiv:2207.12598}, year={2022}}",
        *([
            "@article{luo2023lcm, title={Latent Consistency Models: Synthesizing High-Resolution Images with Few-Step "
            "Inference},", "  author={Luo, Simian and Tan, Yiqin and Huang, Longbo and Li, Jian and Zhao, Hang},",
            "  journal={arXiv:2310.04378}, year={2023}}",
            "@inproceedings{song2023consistency, title={Consistency Models},",
            "  author={Song, Yang and Dhariwal, Prafulla and Chen, Mark and Sutskever, Ilya}, booktitle={ICML}, "
            "year={2023}}",
        ] if distilled else []),
        "```", "",
    ]
    return redact("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="card", description="Render the model card of a trained pipeline.")
    parser.add_argument("--model_dir", default="pretrained/mnist-ddpm")
    parser.add_argument("--repo_id", default="org/mnist-ddpm")
    parser.add_argument("--source_url", default=None, help="The package's Git repository (default: setup.py's url).")
    parser.add_argument("--output", default="model_card.md")
    args = parser.parse_args(argv)
    Path(args.output).write_text(render_model_card(args.model_dir, args.repo_id, args.source_url))
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
