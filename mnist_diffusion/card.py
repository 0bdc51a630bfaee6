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
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

from .evaluation import DEFAULT_RULE
from .redaction import redact, redact_command
from .unet_mnist import ClassConditionedUNet

# The evaluation files a card reads, relative to the model folder (written by scripts/evaluate.py --output).
DEFAULT_RESULTS = "evaluation/default.json"  # the sampler and guidance of the pipeline's defaults
FAST_RESULTS = "evaluation/fast.json"  # the fast solver
SWEEP_RESULTS = "evaluation/guidance_sweep.json"
BF16_RESULTS = "evaluation/bf16.json"  # the fast solver with a bfloat16 UNet (`torch_dtype=torch.bfloat16`)
FIGURES = {
    "images/samples.png": "Generated digits, one row per class",
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


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


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


def read_evaluations(model_dir: str | Path) -> tuple[list[dict], dict | None]:
    """
    The evaluation results stored in a model folder: the main table's results (the pipeline's defaults, the fast
    solver, the fast solver with a bf16 UNet; whichever exist) and the guidance sweep (or None).

    Without a `fast.json`, the sweep's run at the model's default guidance (scale and interval) is the fast solver's
    result.
    """
    model_dir = Path(model_dir)
    model_index = json.loads((model_dir / "model_index.json").read_text())
    default = (model_index.get("default_guidance_scale", 1.0), model_index.get("default_guidance_interval"))
    sweep = read_json(model_dir / SWEEP_RESULTS)
    fast = read_json(model_dir / FAST_RESULTS)
    if fast is None and sweep is not None:
        fast = {**sweep, "runs": [run for run in sweep["runs"]
                                  if (run["guidance_scale"], run.get("guidance_interval")) == default]}
    evaluations = [
        results for results in (read_json(model_dir / DEFAULT_RESULTS), fast, read_json(model_dir / BF16_RESULTS))
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
    training = read_json(model_dir / "training_config.json")
    guidance = f"guidance scale {model_index.get('default_guidance_scale', 1.0):g}"
    if model_index.get("default_guidance_interval") is not None:
        low, high = model_index["default_guidance_interval"]
        guidance += f", applied only at timesteps {low:g} ≤ t ≤ {high:g}"
    evaluations, sweep = read_evaluations(model_dir)
    num_parameters = ClassConditionedUNet.from_pretrained(model_dir / "unet").num_parameters()

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

    steps = model_index.get("default_num_inference_steps") or scheduler_config["num_train_timesteps"]
    widths = ", ".join(str(w) for w in unet_config["block_out_channels"])
    beta_schedule = (
        f"linear from {scheduler_config['beta_start']:g} to {scheduler_config['beta_end']:g}"
        if scheduler_config["beta_schedule"] == "linear" else scheduler_config["beta_schedule"]
    )
    lines = [
        "---", metadata.to_yaml(), "---", "",
        f"# {repo_id.split('/')[-1]}: a class-conditional DDPM for handwritten digits", "",
        "Ask for a digit, get a freshly generated 28×28 handwritten digit of that class. A denoising diffusion "
        "probabilistic model (Ho et al., 2020) whose noise predictor ε_θ(x_t, t, y) is conditioned on the digit label, "
        "sampled with classifier-free guidance (Ho & Salimans, 2022). Made with "
        f"{f'[mnist-diffusion]({source_url})' if source_url else 'mnist-diffusion'}.", "",
    ]
    lines += [f"![{alt}]({path})" for path, alt in FIGURES.items() if (model_dir / path).is_file() and "guidance" not in path]
    diffusers_version = model_index.get("_diffusers_version")
    lines += [
        "", "## Usage", "",
        "diffusers alone loads this repo: it carries its own copy of the pipeline, UNet and scheduler code. "
        "**`trust_remote_code=True` runs that code on your machine**: read `pipeline_mnist_ddpm.py`, "
        "`unet/unet_mnist.py` and `scheduler/scheduling_mnist_ddpm.py` first.", "",
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
        "Fast sampling: swap in a diffusers solver.", "",
        "```python", "from diffusers import DPMSolverMultistepScheduler", "",
        "pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)",
        "images = pipe(labels=list(range(10)), num_inference_steps=20).images", "```", "",
        "## Model", "",
        f"- **Noise predictor**: `ClassConditionedUNet`, {num_parameters:,} parameters; widths {widths} at 28, 14 and 7 "
        f"pixels, {unet_config['layers_per_block']} residual block(s) per resolution on the way down (one more on the "
        f"way up), self-attention at {', '.join(str(r) for r in unet_config['attention_resolutions']) or 'no'} pixels "
        "and in the bottleneck; time (sinusoidal embedding + MLP) and label (learned embedding with a null entry for "
        "classifier-free guidance) condition every block.",
        f"- **Noise schedule**: T = {scheduler_config['num_train_timesteps']}, β {beta_schedule}; "
        f"σ_t² {'= β̃_t' if scheduler_config['variance_type'] == 'fixed_small' else '= β_t'} "
        f"(`{scheduler_config['variance_type']}`), `{scheduler_config['prediction_type']}` prediction.",
        "- **Objective**: L_simple = E‖ε − ε_θ(x_t, t, y)‖² with t uniform and x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε.", "",
    ]
    if training is not None:
        args = training["args"]
        lines += [
            "## Training", "",
            "| | |", "| --- | --- |",
            "| data | MNIST, 60,000 training images, pixels in [−1, 1] |",
            f"| steps | {training['global_step']:,} optimiser steps, {training['images_seen']:,} images "
            f"({training['images_seen'] / 60000:.1f} epochs) |",
            f"| batch, optimiser | {args['train_batch_size']} × {training['num_processes']} process(es); AdamW, lr "
            f"{args['learning_rate']:g}, {args['lr_scheduler']} schedule, {args['lr_warmup_steps']} warm-up steps |",
            f"| label dropout (for guidance) | {args['cond_drop_prob']:g} |",
            f"| EMA | {'max decay ' + format(args['ema_max_decay'], 'g') if args['use_ema'] else 'off'} |",
            f"| precision | {training['mixed_precision']} |",
            f"| hardware | {training.get('hardware', 'not recorded')} |",
            f"| wall time | {training['train_minutes']:.0f} minutes of training |",
            f"| command | `{' '.join(redact_command(training['command'].split()))}` |", "",
        ]
    lines += ["## Evaluation", ""]
    if evaluations:
        lines += [
            "An independent classifier (a transformers RegNet trained on MNIST, ≥ 99.5% test accuracy) reads every "
            "generated digit; its pooled features are the space of the Fréchet distance, reported as a ratio to the "
            "real floor (real training digits against the test set at the same n).", "",
            *EVALUATION_HEADER,
        ]
        for results in evaluations:
            lines += evaluation_rows(results)
        lines.append("")
    else:
        lines += ["Not evaluated yet.", ""]
    if sweep is not None:
        lines += [
            "### Guidance scale", "",
            "The same sampler at every guidance setting of the sweep (scales, and guidance limited to an interval of "
            "timesteps). The model's default, "
            f"{guidance}, is the setting with the smallest Fréchet ratio among those whose accuracy is at least "
            f"{100 * DEFAULT_RULE['min_accuracy']:g}% and whose worst digit is at least "
            f"{100 * DEFAULT_RULE['min_worst_digit_accuracy']:g}% (n ≥ {DEFAULT_RULE['min_samples']:,}).", "",
            *EVALUATION_HEADER,
            *evaluation_rows(sweep), "",
        ]
        if (model_dir / "images/guidance.png").is_file():
            lines += [f"![{FIGURES['images/guidance.png']}](images/guidance.png)", ""]
    lines += [
        "## Limitations", "",
        "28×28 grey digits in the style of MNIST (centred, white on black), of the ten digit classes and nothing else. "
        "The full DDPM chain takes seconds per image on a CPU; a solver with 20–25 steps is much faster.", "",
        "## Citations", "",
        "```bibtex",
        "@inproceedings{ho2020ddpm, title={Denoising Diffusion Probabilistic Models},",
        "  author={Ho, Jonathan and Jain, Ajay and Abbeel, Pieter}, booktitle={NeurIPS}, year={2020}}",
        "@article{ho2022cfg, title={Classifier-Free Diffusion Guidance},",
        "  author={Ho, Jonathan and Salimans, Tim}, journal={arXiv:2207.12598}, year={2022}}",
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
