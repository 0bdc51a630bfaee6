"""The figures of the README and the model card, made from a trained pipeline with fixed seeds.

- `sample_grid`: 10 × N generated digits, one row per digit.
- `reverse_process`: x_t at several t of the reverse chain for each digit (static → blur → shape → digit), as a strip
  and as the frames of an animated GIF.
- `forward_process`: real digits noised in closed form at the same t.
- `guidance_plot`: accuracy against Fréchet ratio, one curve per guidance family, from an evaluation sweep's JSON.
- `confusion_figure`: which real test digits the model, as a zero-shot classifier, takes for which, from the JSON of
  `scripts/evaluate_likelihood.py`.
"""

import argparse
import json
from pathlib import Path

import torch
from diffusers import LCMScheduler
from PIL import Image

from ..data import load_mnist
from ..images import make_grid, model_range_to_pil, pixels_to_model_range
from ..pipeline_mnist_ddpm import MNISTDDPMPipeline
from .evaluation import DEFAULT_RULE
from .inpainting_evaluation import INPAINT_JUMP_LENGTH, INPAINT_JUMP_N_SAMPLE, INPAINT_STEPS, bottom_half_task
from .samplers import SAMPLERS, sampler_of, use_sampler
from .shipped import SHIPPED_MODEL

DIGITS = list(range(10))
# Where the reverse chain is sampled for the strips: mostly late t, where the digit takes shape.
STRIP_TIMESTEPS = (999, 800, 600, 500, 400, 300, 200, 100, 50, 0)


def sample_grid(pipe: MNISTDDPMPipeline, images_per_digit: int = 10, seed: int = 0, scale: int = 3,
                **call_kwargs) -> Image.Image:
    """A grid of generated digits, one row per digit 0–9, with the pipeline's defaults unless overridden."""
    images = pipe(labels=DIGITS, num_images_per_label=images_per_digit, generator=torch.Generator().manual_seed(seed),
                  **call_kwargs).images
    return make_grid(images, rows=10, scale=scale, row_labels=[str(d) for d in DIGITS])


def reverse_process(pipe: MNISTDDPMPipeline, timesteps=STRIP_TIMESTEPS, seed: int = 0,
                    **call_kwargs) -> dict[int, list[Image.Image]]:
    """
    Run the reverse chain once for each digit 0–9 and keep the sample right after the steps at `timesteps`.

    Returns:
        `{t: [10 PIL images, digits 0–9]}`, the output of step t (x_{t−1}); after step 0 the digit is finished.
    """
    wanted, captured = set(timesteps), {}

    def keep(pipeline, step_index, t, tensors):
        if int(t) in wanted:
            captured[int(t)] = model_range_to_pil(tensors["latents"])
        return tensors

    pipe(labels=DIGITS, generator=torch.Generator().manual_seed(seed), callback_on_step_end=keep, **call_kwargs)
    return {t: captured[t] for t in timesteps if t in captured}


def reverse_strip(strips: dict[int, list[Image.Image]], scale: int = 3) -> Image.Image:
    """Rows: digits 0–9; columns: the chain after each captured step, from noise to the finished digit."""
    columns = list(strips)
    images = [strips[t][digit] for digit in DIGITS for t in columns]
    return make_grid(images, rows=10, scale=scale, row_labels=[str(d) for d in DIGITS])


def reverse_animation(pipe: MNISTDDPMPipeline, path: str | Path, every: int = 20, seed: int = 0, scale: int = 4,
                      **call_kwargs) -> Path:
    """An animated GIF of the ten digits being denoised, one frame every `every` steps, holding the last frame."""
    frames = []

    def keep(pipeline, step_index, t, tensors):
        if step_index % every == 0:
            frames.append(make_grid(model_range_to_pil(tensors["latents"]), rows=1, scale=scale))
        return tensors

    final = pipe(labels=DIGITS, generator=torch.Generator().manual_seed(seed), callback_on_step_end=keep,
                 output_type="pt", **call_kwargs).images
    frames.append(make_grid(model_range_to_pil(final * 2 - 1), rows=1, scale=scale))
    path = Path(path)
    frames[0].save(path, save_all=True, append_images=frames[1:] + [frames[-1]] * 15, duration=60, loop=0)
    return path


def forward_process(scheduler, data_dir: str, timesteps=STRIP_TIMESTEPS, seed: int = 0, scale: int = 3) -> Image.Image:
    """The first real test digit of each class noised in closed form, x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, at `timesteps`."""
    images, labels = load_mnist(data_dir, "test")
    x0 = pixels_to_model_range(torch.stack([images[(labels == d).nonzero()[0, 0]] for d in DIGITS]))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    columns = [model_range_to_pil(x0)] + [model_range_to_pil(scheduler.add_noise(x0, noise, torch.full((10,), t))) for t in reversed(timesteps)]
    ordered = [columns[c][d] for d in DIGITS for c in range(len(columns))]
    return make_grid(ordered, rows=10, scale=scale, row_labels=[str(d) for d in DIGITS])


def guidance_family(run: dict) -> str:
    """The curve a run of a guidance sweep belongs to: its sampler and the timesteps it guides."""
    interval = run.get("guidance_interval")
    guided = "every step" if interval is None else f"t in [{interval[0]:g}, {interval[1]:g}]"
    return f"{run['sampler']} {run['num_inference_steps']} steps, guidance at {guided}"


def guidance_plot(results_path: str | Path, path: str | Path, rule: dict | None = None) -> Path:
    """
    The trade-off of a guidance sweep: accuracy against the Fréchet ratio to the real floor, one curve per family
    (sampler and guidance interval), each point labelled with its guidance scale. The region of the default rule
    (accuracy bar) is shaded, so the chosen default is the left-most point above it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads(Path(results_path).read_text())
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for family in sorted({guidance_family(run) for run in results["runs"]}):
        runs = sorted((r for r in results["runs"] if guidance_family(r) == family), key=lambda r: r["guidance_scale"])
        ratios = [r["frechet_ratio_to_real_floor"] for r in runs]
        accuracies = [100 * r["accuracy"] for r in runs]
        axis.plot(ratios, accuracies, marker="o", label=family)
        for run, x, y in zip(runs, ratios, accuracies):
            axis.annotate(f"{run['guidance_scale']:g}", (x, y), textcoords="offset points", xytext=(3, -9), fontsize=7)
    if rule is not None:
        axis.axhspan(100 * rule["min_accuracy"], 100.05, color="green", alpha=0.08,
                     label=f"accuracy ≥ {100 * rule['min_accuracy']:g}% (the default's rule)")
    axis.set(xlabel="Fréchet distance / real floor (lower: closer to real digits)",
             ylabel="accuracy by the classifier (%)",
             title=f"Guidance: legibility against realism (n = {results['num_samples']} per point)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def confusion_figure(results_path: str | Path, path: str | Path) -> Path:
    """
    The zero-shot classifier's confusion matrix (true digit by row, predicted by column, counts; the diagonal left
    blank so that the mistakes stand out) at its most accurate trial count and weighting.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zero_shot = json.loads(Path(results_path).read_text())["zero_shot"]
    best = max(zero_shot["accuracy"], key=lambda row: (row["accuracy"], -row["num_trials"]))
    matrix = torch.tensor(best["confusion_matrix"], dtype=torch.float64)
    mistakes = matrix.clone().fill_diagonal_(float("nan"))
    figure, axis = plt.subplots(figsize=(5.2, 4.6))
    image = axis.imshow(mistakes.numpy(), cmap="Reds", vmin=0)
    for true in range(10):
        for predicted in range(10):
            count = int(matrix[true, predicted])
            if count:
                axis.text(predicted, true, str(count), ha="center", va="center", fontsize=7,
                          color="grey" if true == predicted else "black")
    axis.set(xticks=DIGITS, yticks=DIGITS, xlabel="digit the model finds most probable", ylabel="true digit",
             title=f"Zero-shot: {100 * best['accuracy']:.2f}% of {best['n']} test digits\n"
                   f"({best['num_trials']} trials per class, {best['weighting']} weighting; mistakes shaded)")
    figure.colorbar(image, ax=axis, fraction=0.046, label="mistakes")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def steps_figure(pipe: MNISTDDPMPipeline, steps: tuple[int, ...] = (1, 2, 4, 8), seed: int = 0,
                 scale: int = 3) -> Image.Image:
    """One row per number of steps, one column per digit, each row from the same starting noise (`seed`)."""
    rows = [pipe(labels=DIGITS, num_inference_steps=count, generator=torch.Generator().manual_seed(seed)).images
            for count in steps]
    return make_grid([image for row in rows for image in row], rows=len(steps), scale=scale,
                     row_labels=[str(count) for count in steps])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="make_figures.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(SHIPPED_MODEL), help="Pipeline folder.")
    parser.add_argument("--data_dir", default="data/mnist", help="MNIST IDX files, for the forward-process strip.")
    parser.add_argument("--sweep", default=None, help="An evaluation sweep's results JSON, for the guidance plot.")
    parser.add_argument("--likelihood", default=None,
                        help="The results JSON of scripts/evaluate_likelihood.py, for the zero-shot confusion matrix.")
    parser.add_argument("--output_dir", default=None, help="Where the figures go (default: MODEL/images).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid_sampler", default=None, choices=sorted(SAMPLERS),
                        help="Sampler of the 10 × 10 sample grid (at its default steps and the model's default "
                             "guidance; default: the model's own when it stores a fast solver, else dpm); the "
                             "reverse-process figures always show the full DDPM chain.")
    args = parser.parse_args(argv)

    output_dir = Path(args.output_dir or Path(args.model) / "images")
    output_dir.mkdir(parents=True, exist_ok=True)
    pipe = MNISTDDPMPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    if isinstance(pipe.scheduler, LCMScheduler):  # a distilled student: its own sampler, at its stored defaults
        sample_grid(pipe, seed=args.seed).save(output_dir / "samples.png")
        steps_figure(pipe, seed=args.seed).save(output_dir / "steps.png")
        print(f"Figures written to {output_dir}")
        return
    own_sampler = sampler_of(pipe.scheduler.config)
    grid_sampler = args.grid_sampler or ("dpm" if own_sampler in (None, "ddpm") else own_sampler)
    grid_pipe = MNISTDDPMPipeline(**pipe.components)  # the same UNet, its own scheduler
    grid_pipe.set_progress_bar_config(disable=True)
    grid_steps = use_sampler(grid_pipe, grid_sampler)
    if grid_steps is None and grid_sampler == own_sampler:
        grid_steps = pipe.resolve_defaults()[0]  # the model's own sampler at its stored steps
    sample_grid(grid_pipe, seed=args.seed, num_inference_steps=grid_steps,
                guidance_scale=pipe.config.default_guidance_scale).save(output_dir / "samples.png")
    chain = MNISTDDPMPipeline(**pipe.components)  # the full DDPM chain of the model's noise schedule
    chain.set_progress_bar_config(disable=True)
    use_sampler(chain, "ddpm")
    _, guidance_scale, guidance_interval = pipe.resolve_defaults()  # the model's stored guidance
    chain_call = dict(num_inference_steps=chain.scheduler.config.num_train_timesteps, guidance_scale=guidance_scale,
                      guidance_interval=guidance_interval)
    reverse_strip(reverse_process(chain, seed=args.seed, **chain_call)).save(output_dir / "reverse_process.png")
    reverse_animation(chain, output_dir / "reverse_process.gif", seed=args.seed, **chain_call)
    forward_process(pipe.scheduler, args.data_dir, seed=args.seed).save(output_dir / "forward_process.png")
    inpainting_figure(args.model, args.data_dir, seed=args.seed).save(output_dir / "inpainting.png")
    if args.sweep:
        guidance_plot(args.sweep, output_dir / "guidance.png", DEFAULT_RULE)
    if args.likelihood:
        confusion_figure(args.likelihood, output_dir / "zero_shot_confusion.png")
    print(f"Figures written to {output_dir}")


def inpainting_figure(model: str, data_dir: str, seed: int = 0, scale: int = 3) -> Image.Image:
    """
    Rows: the first test digit of each class with its bottom half hidden (grey), its completion as its own class, and
    its completion as the next class ((y + 1) mod 10).
    """
    from ..pipeline_mnist_inpaint import MNISTDDPMInpaintPipeline

    pipe = MNISTDDPMInpaintPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    images, labels = load_mnist(data_dir, "test")
    chosen, mask = bottom_half_task(images, labels, per_class=1)
    masked = images[chosen].clone()
    masked[:, mask.bool()] = 60
    rows = [[Image.fromarray(m.numpy(), mode="L") for m in masked]]
    for shift in (0, 1):
        rows.append(pipe(images[chosen][:, None], mask, labels=(labels[chosen] + shift) % 10,
                         generator=torch.Generator().manual_seed(seed), num_inference_steps=INPAINT_STEPS,
                         jump_length=INPAINT_JUMP_LENGTH, jump_n_sample=INPAINT_JUMP_N_SAMPLE).images)
    return make_grid([image for row in rows for image in row], rows=3, scale=scale,
                     row_labels=["in", "y", "y+1"])
