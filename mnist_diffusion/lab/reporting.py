"""
What the lab reports, in one place: the names of the evaluation files (written by the evaluation commands, read by the
model card, the README checks and the docs) and the Markdown rows made of them. The card and the Hub push read files
through these names and render these rows, so they import no evaluation code.
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
