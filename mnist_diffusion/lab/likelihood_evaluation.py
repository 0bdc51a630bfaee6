"""
The model as a likelihood model, measured on real test digits: its variational bound in bits per dimension
(conditional on the true label, and unconditional), and its zero-shot accuracy as a classifier against the number of
trials per class. Behind `scripts/evaluate_likelihood.py`; the README's and docs/likelihood.md's tables read its JSON.

Two random subsets of the test split, drawn with `seed` and disjoint: `pilot_images` digits whose every term is
computed (the terms' profile, and the importance proposal of the estimate), then `bound_images` digits with the
bound estimated from `bound_timesteps` drawn timesteps each, and the first `classify_images` of a third part for the
zero-shot classifier. With `cache_dir`, the pilot, each bound and each chunk of the classifier's work are kept there,
each under a hash of everything that decides it ([`cache_path`]), so a killed run resumes and nothing is reused for
other digits, another model or other settings.
"""

import argparse
import json
import math
import os
import shlex
import time
from pathlib import Path

import torch

from ..likelihood import ESTIMATOR, BoundCoefficients
from ..zero_shot import check_epsilon_prediction, trial_timesteps
from .arguments import MAX_SEED
from .evaluation import SetupError, cache_path, kept, load_data, load_pipeline, store_in_model_index
from .shipped import SHIPPED_MODEL

TRIAL_COUNTS = (10, 20, 50, 100)
# Share of the uniform distribution mixed into the importance proposal, so that no timestep has a tiny probability
# (which would blow up the weight 1/p(t) of a term the pilot digits happened to find small). Measured on the shipped
# model (16 all-terms digits, each digit's proposal from the 15 others, x_t held fixed): the spread that the choice of
# 16 timesteps adds to one digit's estimate is 0.034 bits/dim at 1%, 0.045 at 5% and 0.057 at 10%, the share the
# committed bound table was measured with.
UNIFORM_SHARE = 0.01


def mean_and_standard_error(values: torch.Tensor) -> dict:
    values = values.double()
    return {"mean": values.mean().item(), "standard_error": (values.std() / math.sqrt(len(values))).item(),
            "n": len(values)}


def importance_proposal(terms: torch.Tensor) -> torch.Tensor:
    """
    The proposal p(t) ∝ √(mean of L_t² over the pilot digits) over timesteps 1 … T−1, mixed with the uniform
    distribution (`UNIFORM_SHARE`): the variance-minimising proposal for terms of that size (Nichol & Dhariwal,
    2021, §3.3).
    """
    root_mean_square = terms[:, 1:].pow(2).mean(0).sqrt()
    shaped = root_mean_square / root_mean_square.sum()
    proposal = (1 - UNIFORM_SHARE) * shaped + UNIFORM_SHARE / len(shaped)
    return torch.cat([torch.zeros(1, dtype=torch.float64), proposal])


def estimate_spread(terms: torch.Tensor, num_timesteps: int) -> dict:
    """
    The standard deviation, over the draw of timesteps, of the estimate of Σ L_t from `num_timesteps` draws, for each
    digit whose every term is known: exact for a proposal p, √((Σ_t L_t²/p(t) − (Σ_t L_t)²) / K). The proposal of
    each digit is made from the others (leave one out), so the digit it is measured on did not shape it.
    """
    diffusion = terms[:, 1:]
    uniform = torch.full((diffusion.shape[1],), 1.0 / diffusion.shape[1], dtype=torch.float64)
    spreads = {"uniform": [], "proposal": []}
    for index in range(len(terms)):
        others = torch.cat([terms[:index], terms[index + 1 :]])
        proposal = importance_proposal(others)[1:] if len(others) else uniform
        for name, p in (("uniform", uniform), ("proposal", proposal)):
            variance = (diffusion[index] ** 2 / p).sum() - diffusion[index].sum() ** 2
            spreads[name].append((variance.clamp(min=0) / num_timesteps).sqrt().item())
    return {name: sum(values) / len(values) for name, values in spreads.items()}


def confusion_matrix(true: torch.Tensor, predicted: torch.Tensor, num_classes: int = 10) -> list[list[int]]:
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    matrix.index_put_((true, predicted), torch.ones_like(true), accumulate=True)
    return matrix.tolist()


def classify_in_chunks(pipe, images: torch.Tensor, num_trials: int, seed: int, cache_dir: Path | None,
                       model_identity: str = "", chunk: int = 20) -> tuple[torch.Tensor, float]:
    """Per-trial ε-errors (N, trials, 10) of `images`, chunk by chunk (chunk c drawn with seed `seed + c`), and the
    seconds they took; finished chunks are kept in `cache_dir` (written atomically), under a hash of the model's
    identity, the chunk's digits, its seed and the trials, and not recomputed."""
    errors, seconds = [], 0.0
    for start in range(0, len(images), chunk):
        def classify_chunk() -> dict:
            started = time.perf_counter()
            output = pipe.classify(images[start : start + chunk], num_trials=num_trials,
                                   generator=torch.Generator().manual_seed(seed + start))
            return {"errors": output.errors, "seconds": time.perf_counter() - started}

        path = cache_path(cache_dir, "zero-shot", model=model_identity, images=images[start : start + chunk],
                          seed=seed + start, num_trials=num_trials)
        result = kept(path, classify_chunk)
        errors.append(result["errors"])
        seconds += result["seconds"]
        print(f"classified {start + len(result['errors'])}/{len(images)}", flush=True)
    return torch.cat(errors), seconds


def trial_counts(num_trials: int) -> list[int]:
    """The trial counts a run of `num_trials` reports and times: those of `TRIAL_COUNTS` below it, and its own."""
    return [count for count in TRIAL_COUNTS if count < num_trials] + [num_trials]


def zero_shot_table(errors: torch.Tensor, labels: torch.Tensor, weights_by_name: dict[str, torch.Tensor]) -> list[dict]:
    """Accuracy of the first n trials of each image for each of the run's [`trial_counts`] and every weighting (the
    first n trials are distributed as a run with n trials: `trial_timesteps` is prefix-stable)."""
    rows = []
    for name, weights in weights_by_name.items():
        for count in trial_counts(errors.shape[1]):
            w = weights[:count] / weights[:count].sum()
            predicted = (errors[:, :count].double() * w.reshape(1, -1, 1)).sum(1).argmin(1)
            correct = (predicted == labels).double()
            rows.append({"weighting": name, "num_trials": count, "accuracy": correct.mean().item(),
                         "standard_error": (correct.std() / math.sqrt(len(correct))).item(), "n": len(correct),
                         "confusion_matrix": confusion_matrix(labels, predicted)})
    return rows


PRUNING = ((10, 2), (10, 3), (20, 2), (20, 3))


def pruning_table(errors: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> list[dict]:
    """
    Li et al.'s adaptive scheme, `classify(prune=(after, keep))` at the run's trial count, read from the stored
    errors: the kept classes' errors of a pruned run are those of the full run (tested), so its accuracy is exact
    here; its cost is `after · 10 + (trials − after) · keep` UNet rows per digit instead of `trials · 10`.
    """
    num_trials, num_classes = errors.shape[1], errors.shape[2]
    weighted = errors.double() * (weights / weights.sum()).reshape(1, -1, 1)
    rows = []
    for after, keep in [(a, k) for a, k in PRUNING if a < num_trials and k < num_classes]:
        kept = weighted[:, :after].sum(1).topk(keep, dim=1, largest=False).indices
        scores = torch.full((len(errors), num_classes), math.inf, dtype=torch.float64)
        scores.scatter_(1, kept, weighted.sum(1).gather(1, kept))
        correct = (scores.argmin(1) == labels).double()
        rows.append({"prune_after": after, "keep": keep, "num_trials": num_trials, "accuracy": correct.mean().item(),
                     "standard_error": (correct.std() / math.sqrt(len(correct))).item(),
                     "unet_rows_per_image": after * num_classes + (num_trials - after) * keep,
                     "unet_rows_per_image_unpruned": num_trials * num_classes})
    return rows


def time_classify(pipe, images: torch.Tensor, num_trials: int, seed: int) -> list[dict]:
    """Seconds per image of `pipe.classify` at each of a run's [`trial_counts`], on `images` (nothing else should be
    running)."""
    timings = []
    for count in trial_counts(num_trials):
        started = time.perf_counter()
        pipe.classify(images, num_trials=count, generator=torch.Generator().manual_seed(seed))
        timings.append({"num_trials": count, "seconds_per_image": (time.perf_counter() - started) / len(images),
                        "images_timed": len(images)})
    return timings


def load_likelihood_model(model_dir: str):
    """
    The pipeline of `model_dir` and its identity, if it defines the bound and the classifier (a DDPM teacher that
    predicts ε); otherwise a [`SetupError`] saying why, before any digit is scored.
    """
    pipe, identity = load_pipeline(model_dir)
    try:
        pipe._likelihood_module("likelihood")  # refuses a distilled student
        BoundCoefficients(pipe.scheduler)  # refuses a scheduler the bound is not defined for
        check_epsilon_prediction(pipe.scheduler)  # the classifier's own condition
    except (ImportError, ValueError) as error:
        raise SetupError(f"{model_dir}: {error}") from error
    return pipe, identity


def evaluate_likelihood(model_dir: str, data_dir: str, pilot_images: int = 8, bound_images: int = 1000,
                        bound_timesteps: int = 16, classify_images: int = 400, num_trials: int = 100,
                        timing_images: int = 10, seed: int = 0, cache_dir: str | None = None) -> dict:
    """
    The measurements of the module's docstring, as the results JSON holds them.

    Raises:
        [`SetupError`]: test digits missing, corrupt or too few in `data_dir`, or a model without a bound, before any
            digit is scored.
    """
    images, labels = load_data(data_dir, "test")
    needed = pilot_images + bound_images + classify_images + timing_images
    if needed > len(images):
        raise SetupError(f"The four parts need {needed} test digits; {data_dir} has {len(images)}.")
    pipe, identity = load_likelihood_model(model_dir)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    pilot = order[:pilot_images]
    bound_part = order[pilot_images : pilot_images + bound_images]
    classify_part = order[pilot_images + bound_images : pilot_images + bound_images + classify_images]
    result = {"model_dir": str(model_dir), "model_sha256": identity, "seed": seed,
              "data": f"the test split of {data_dir} ({len(images)} digits), random subsets drawn with "
                      f"torch.randperm({len(images)}) seeded by `seed`, disjoint",
              "scheduler": {k: pipe.scheduler.config[k] for k in ("variance_type", "clip_sample", "prediction_type")}}

    def bound_of(part, labels_given, seed, num_timesteps=None, proposal=None) -> dict:
        # One call of the bound, kept in the cache under the model, the digits, their labels and the settings.
        digits = images[part]

        def compute() -> dict:
            started = time.perf_counter()
            output = pipe.log_likelihood(digits, labels_given, num_timesteps=num_timesteps, proposal=proposal,
                                         generator=torch.Generator().manual_seed(seed))
            return {**output, "seconds": time.perf_counter() - started}

        return kept(cache_path(cache_dir, "bound", model=identity, images=digits, labels=labels_given, seed=seed,
                               num_timesteps=num_timesteps, proposal=proposal, estimator=ESTIMATOR), compute)

    exact = bound_of(pilot, labels[pilot], seed)
    terms = exact["terms_bits_per_dim"]
    result["all_terms"] = {
        "test_indices": pilot.tolist(),
        "bits_per_dim": exact["bits_per_dim"].tolist(),
        "prior_bits_per_dim": exact["prior_bits_per_dim"].tolist(),
        "diffusion_bits_per_dim": exact["diffusion_bits_per_dim"].tolist(),
        "decoder_bits_per_dim": exact["decoder_bits_per_dim"].tolist(),
        # The profile of the terms: their mean over the pilot digits at a few timesteps.
        "mean_term_bits_per_dim": {str(t): terms[:, t].mean().item() for t in (0, 1, 2, 5, 10, 50, 100, 500, 999)},
        "share_of_diffusion_below_t_100": (terms[:, 1:100].sum() / terms[:, 1:].sum()).item(),
        # How far one digit's estimate from `bound_timesteps` draws strays from its sum of all terms (bits/dim).
        "estimate_standard_deviation_bits_per_dim": estimate_spread(terms, bound_timesteps),
        "seconds": round(exact["seconds"], 1),
    }
    proposal = importance_proposal(terms)

    bound_rows = {}
    for name, given in (("conditional", labels[bound_part]), ("unconditional", None)):
        estimate = bound_of(bound_part, given, seed + 1, bound_timesteps, proposal)
        bound_rows[name] = {
            "bits_per_dim": mean_and_standard_error(estimate["bits_per_dim"]),
            "prior_bits_per_dim": estimate["prior_bits_per_dim"].mean().item(),
            "diffusion_bits_per_dim": estimate["diffusion_bits_per_dim"].mean().item(),
            "decoder_bits_per_dim": estimate["decoder_bits_per_dim"].mean().item(),
            "seconds": round(estimate["seconds"], 1),
        }
    result["bound"] = {"num_images": len(bound_part), "timesteps_per_image": bound_timesteps,
                       "proposal": f"sqrt(mean L_t^2) over the all-terms digits, mixed with {UNIFORM_SHARE:.0%} "
                                   "uniform, drawn stratified; the prior exact, the decoder the mean of K // 4 "
                                   "draws", **bound_rows}

    errors, seconds = classify_in_chunks(pipe, images[classify_part], num_trials, seed, cache_dir, identity)
    coefficients = BoundCoefficients(pipe.scheduler)
    timesteps = trial_timesteps(num_trials, coefficients.num_train_timesteps)
    weights = {"uniform": torch.ones(num_trials, dtype=torch.float64),
               "bound": coefficients.epsilon_weights()[timesteps]}
    result["zero_shot"] = {
        "num_images": len(classify_part), "num_trials": num_trials,
        "seconds_in_run": round(seconds, 1),
        "accuracy": zero_shot_table(errors, labels[classify_part], weights),
        "pruning": {name: pruning_table(errors, labels[classify_part], w) for name, w in weights.items()},
        "timing": time_classify(pipe, images[order[-timing_images:]], num_trials, seed),
        "cpu_threads": torch.get_num_threads(),
    }
    return result


def store_proposal(model_dir: str, data_dir: str, pilot_images: int = 8, bound_timesteps: int = 16,
                   spread_images: int = 8, spread_seeds: int = 20, seed: int = 0) -> dict:
    """
    Measure the importance proposal of `model_dir` and store it in its model_index.json as `likelihood_proposal`, the
    timesteps `log_likelihood` draws from by default: [`importance_proposal`] of every term of `pilot_images` random
    test digits. Then the spread it gives, on `spread_images` other test digits: each digit's estimate from
    `bound_timesteps` timesteps, drawn with `spread_seeds` seeds, its standard deviation over the seeds.

    Raises:
        [`SetupError`]: the digits or the model, as for [`evaluate_likelihood`], before any digit is scored; or a model
            that is not a local folder (the proposal is written into its model_index.json).
    """
    if not (Path(model_dir) / "model_index.json").is_file():
        raise SetupError(f"--store_proposal writes the model's model_index.json, but {model_dir} is not a local "
                         "pipeline folder.")
    images, labels = load_data(data_dir, "test")
    if pilot_images + spread_images > len(images):
        raise SetupError(f"The pilot and the spread need {pilot_images + spread_images} test digits; {data_dir} has "
                         f"{len(images)}.")
    pipe, identity = load_likelihood_model(model_dir)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    pilot, held_out = order[:pilot_images], order[pilot_images : pilot_images + spread_images]
    started = time.perf_counter()
    terms = pipe.log_likelihood(images[pilot], labels[pilot],
                                generator=torch.Generator().manual_seed(seed)).terms_bits_per_dim
    pilot_seconds = time.perf_counter() - started
    stored = [float(f"{p:.6g}") for p in importance_proposal(terms).tolist()]
    store_in_model_index(model_dir, likelihood_proposal=stored)
    pipe.register_to_config(likelihood_proposal=stored)  # the spread below is measured with what is stored

    spreads = []
    for index in held_out:
        copies = images[index].expand(spread_seeds, -1, -1)
        generators = [torch.Generator().manual_seed(seed + 1 + k) for k in range(spread_seeds)]
        estimate = pipe.log_likelihood(copies, labels[index].expand(spread_seeds), num_timesteps=bound_timesteps,
                                       generator=generators).bits_per_dim
        spreads.append({"test_index": index.item(), "mean_bits_per_dim": estimate.mean().item(),
                        "standard_deviation_bits_per_dim": estimate.std().item()})
    deviations = [row["standard_deviation_bits_per_dim"] for row in spreads]
    return {"model_dir": str(model_dir), "model_sha256": identity, "seed": seed,
            "proposal": f"sqrt(mean L_t^2) over every term of the pilot digits, mixed with {UNIFORM_SHARE:.0%} uniform",
            "pilot_test_indices": pilot.tolist(), "pilot_seconds": round(pilot_seconds, 1),
            "spread": {"timesteps_per_image": bound_timesteps, "seeds": spread_seeds,
                       "mean_standard_deviation_bits_per_dim": sum(deviations) / len(deviations),
                       "max_standard_deviation_bits_per_dim": max(deviations), "digits": spreads}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate_likelihood.py",
        description="Bits per dimension and zero-shot accuracy of a model on MNIST test digits.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=str(SHIPPED_MODEL), help="Model folder or Hub repo id.")
    parser.add_argument("--data_dir", default="data/mnist", help="Folder with the MNIST IDX files.")
    parser.add_argument("--output", required=True, help="Where the results JSON goes (written atomically).")
    parser.add_argument("--pilot_images", type=int, default=8, help="Digits with every term of the bound computed.")
    parser.add_argument("--bound_images", type=int, default=1000, help="Digits with the bound estimated.")
    parser.add_argument("--bound_timesteps", type=int, default=16, help="Timesteps drawn per digit for the estimate.")
    parser.add_argument("--classify_images", type=int, default=400, help="Digits for the zero-shot classifier.")
    parser.add_argument("--num_trials", type=int, default=100,
                        help="(t, ε) trials per class and digit; accuracy and timing are reported at this count "
                             f"and at those of {', '.join(map(str, TRIAL_COUNTS))} below it.")
    parser.add_argument("--timing_images", type=int, default=10, help="Digits timed at each trial count.")
    parser.add_argument("--seed", type=int, default=0,
                        help="Seed of the subsets and draws (chunks of the classifier use seed + their first index).")
    parser.add_argument("--store_proposal", action="store_true",
                        help="Only measure the model's importance proposal on --pilot_images digits, store it in its "
                             "model_index.json (log_likelihood's default) and measure the spread it gives at "
                             "--bound_timesteps on --spread_images other digits over --spread_seeds seeds.")
    parser.add_argument("--spread_images", type=int, default=8, help="With --store_proposal: digits the spread is "
                                                                      "measured on.")
    parser.add_argument("--spread_seeds", type=int, default=20, help="With --store_proposal: seeds per digit.")
    parser.add_argument("--cache_dir", default=None,
                        help="Keeps the bounds and the classifier's finished chunks: a rerun resumes.")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Two digits at least where a standard error is taken over digits.
    minimum = {"pilot_images": 1, "bound_images": 2, "bound_timesteps": 1, "classify_images": 2, "num_trials": 1,
               "timing_images": 1}
    for name, least in minimum.items():
        if getattr(args, name) < least:
            parser.error(f"--{name} must be at least {least}, got {getattr(args, name)}.")
    if args.pilot_images + args.bound_images + args.classify_images + args.timing_images > 10000:
        parser.error("--pilot_images, --bound_images, --classify_images and --timing_images must add up to at most "
                     "the 10000 test digits.")
    if not 0 <= args.seed <= MAX_SEED - 10000:
        parser.error(f"--seed must be in 0 … {MAX_SEED - 10000} (chunks draw with seed + their first index), "
                     f"got {args.seed}.")
    output = Path(args.output)
    if output.is_dir() or any(parent.exists() and not parent.is_dir() for parent in output.parents):
        parser.error(f"--output {args.output} must be a file path (a folder, or a path through a file, is given).")
    if args.store_proposal and (args.spread_images < 1 or args.spread_seeds < 2):
        parser.error(f"--store_proposal needs --spread_images ≥ 1 and --spread_seeds ≥ 2 (a standard deviation over "
                     f"seeds), got {args.spread_images} and {args.spread_seeds}.")
    proposal_only = ("pilot_images", "bound_timesteps", "spread_images", "spread_seeds", "seed")
    try:
        if args.store_proposal:
            result = store_proposal(args.model, args.data_dir, **{k: getattr(args, k) for k in proposal_only})
        else:
            result = evaluate_likelihood(args.model, **{k: v for k, v in vars(args).items() if k not in (
                "output", "model", "store_proposal", "spread_images", "spread_seeds")})
    except SetupError as error:
        parser.error(str(error))
    used = ("model", "data_dir", "output", "store_proposal", *proposal_only) if args.store_proposal else [
        k for k in vars(args) if k not in ("cache_dir", "store_proposal", "spread_images", "spread_seeds")]
    result["command"] = shlex.join(["python", "scripts/evaluate_likelihood.py"] + [
        part for k in used if getattr(args, k) not in (None, False)
        for part in ((f"--{k}",) if getattr(args, k) is True else (f"--{k}", str(getattr(args, k))))])
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(temporary, output)
    print(json.dumps({k: result[k] for k in ("spread",) if k in result} or
                     {k: result[k] for k in ("all_terms", "bound")}, indent=2))
