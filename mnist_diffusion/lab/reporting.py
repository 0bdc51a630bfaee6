"""
What the lab reports, in one place: the names of the evaluation files (written by the evaluation commands, read by the
model card, the README checks and the docs) and the Markdown tables made of them (the card's evaluation, CAS and
likelihood tables, the inpainting table). The card and the Hub push read files through these names and render these
tables, so they import no evaluation code.
"""

# The evaluation files a card reads, relative to the model folder (written by the evaluation commands' --output).
DEFAULT_RESULTS = "evaluation/default.json"  # the sampler and guidance of the pipeline's defaults
FAST_RESULTS = "evaluation/fast.json"  # the fast solver
# The fast solver at the n of default.json, so that the default sampling has a partner at its own n (a Fréchet ratio
# compares only with one at the same n: the real floor shrinks as n grows).
FAST_AT_DEFAULT_N_RESULTS = "evaluation/fast_at_default_n.json"
SWEEP_RESULTS = "evaluation/guidance_sweep.json"
BF16_RESULTS = "evaluation/bf16.json"  # the fast solver with a bfloat16 UNet (`torch_dtype=torch.bfloat16`)
# The Classification Accuracy Score: a classifier trained on the generated digits alone (scripts/evaluate.py --cas).
CAS_RESULTS = "evaluation/cas.json"
# The model as a likelihood model: bits/dim and zero-shot accuracy (scripts/evaluate_likelihood.py).
LIKELIHOOD_RESULTS = "evaluation/likelihood.json"
# A distilled student's folder may hold its teacher's evaluations at the guidance it was distilled with, for comparison.
TEACHER_RESULTS = "evaluation/teacher_*.json"


def bound_rows(result: dict) -> list[str]:
    """The bits/dim rows of docs/likelihood.md and the README, from the results JSON."""
    bound = result["bound"]
    rows = []
    for name, label in (("conditional", "conditional on the true label"), ("unconditional", "unconditional (null label)")):
        row = bound[name]
        rows.append(f"| this DDPM, {label} | {row['bits_per_dim']['mean']:.3f} ± {row['bits_per_dim']['standard_error']:.3f} "
                    f"| {row['diffusion_bits_per_dim']:.3f} | {row['decoder_bits_per_dim']:.3f} | "
                    f"{bound['num_images']:,} test digits |")
    return rows


def zero_shot_rows(result: dict) -> list[str]:
    """The zero-shot rows (accuracy ± standard error per trial count and weighting, seconds per digit)."""
    zero_shot = result["zero_shot"]
    seconds = {row["num_trials"]: row["seconds_per_image"] for row in zero_shot["timing"]}
    by_trials = {}
    for row in zero_shot["accuracy"]:
        by_trials.setdefault(row["num_trials"], {})[row["weighting"]] = row
    return [
        f"| {count} | {count * 10} | {100 * rows['uniform']['accuracy']:.2f}% ± {100 * rows['uniform']['standard_error']:.2f} "
        f"| {100 * rows['bound']['accuracy']:.2f}% ± {100 * rows['bound']['standard_error']:.2f} | {seconds[count]:.2f} |"
        for count, rows in sorted(by_trials.items())
    ]


def pruning_rows(result: dict, weighting: str = "uniform") -> list[str]:
    """The adaptive scheme's rows: accuracy and UNet rows per digit against the unpruned run."""
    return [
        f"| {row['num_trials']} | after {row['prune_after']}, keep {row['keep']} | {row['unet_rows_per_image']} of "
        f"{row['unet_rows_per_image_unpruned']} | {100 * row['accuracy']:.2f}% ± {100 * row['standard_error']:.2f} |"
        for row in result["zero_shot"]["pruning"][weighting]
    ]


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


def cas_table(results: dict) -> str:
    """The CAS rows: the generated digits of each run as training data, then the same number of real ones."""
    real = results["cas_real"]
    lines = ["| trained on | sampler | steps | guidance | digits | real test accuracy |",
             "| --- | --- | --- | --- | --- | --- |"]
    for run in results["runs"]:
        lines.append(f"| generated | {run['sampler']} | {run['num_inference_steps']} | {run['guidance_scale']:g} | "
                     f"{run['cas']['train_digits']:,} | {100 * run['cas']['accuracy']:.2f}% |")
    lines.append(f"| real training digits | | | | {real['train_digits']:,} | {100 * real['accuracy']:.2f}% |")
    return "\n".join(lines)


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


def inpainting_table(report: dict) -> str:
    """The README's inpainting table, from the report of `evaluate_inpainting`: one row per requested label."""
    header = "| completed as | n | read as requested | worst digit | largest change of a kept pixel |"
    rows = [header, "| --- | --- | --- | --- | --- |"]
    for name, label in (("true_label", "its own digit y"), ("other_label", "another digit, (y + 1) mod 10")):
        result = report[name]
        worst = result["worst_digit"]
        rows.append(
            f"| {label} | {result['total']} | {100 * result['accuracy']:.1f}% | {worst} "
            f"({100 * result['per_digit'][worst]['accuracy']:.0f}%) | {report['max_kept_pixel_change']} / 255 |"
        )
    return "\n".join(rows)
