"""How good are the generated digits? Accuracy and Fréchet distance by an independent MNIST classifier.

The classifier (`pretrained/mnist-classifier/`, a transformers image-classification model) plays the role that the
Inception network plays for FID: it reads each generated digit (is it the digit we asked for?) and its pooled
penultimate features are the space where the Fréchet distance between generated and real digits is measured.
Because a Fréchet distance estimated from n samples is biased upwards, every distance is reported next to the
*real floor*: the distance between n real training digits and the test set, at the same n.
"""

import argparse
import hashlib
import itertools
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..data import MNISTDataError, load_mnist
from ..images import IMAGE_SIZE, digits_to_unit_range
from ..pipeline_mnist_ddpm import MNISTDDPMPipeline
from .arguments import MAX_SEED, guidance_interval_type, number_argument
from .fingerprint import config_sha256, model_sha256, weights_sha256
from .samplers import SAMPLERS, every_step_if_all, use_sampler
from .shipped import SHIPPED_CLASSIFIER, SHIPPED_MODEL


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """
    Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ‖mu1 − mu2‖² + Tr(sigma1 + sigma2 − 2 (sigma1^½ sigma2 sigma1^½)^½).

    The matrix square roots are taken by symmetric eigendecomposition (negative round-off eigenvalues clipped to 0),
    which is exact for covariance matrices and needs no SciPy.
    """

    def sqrt_psd(matrix: np.ndarray) -> np.ndarray:
        eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
        return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T

    root1 = sqrt_psd(sigma1)
    cross = np.trace(sqrt_psd(root1 @ sigma2 @ root1))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * cross)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased) of a set of feature vectors, shaped (N, D)."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance_between(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def accuracy_report(predicted: torch.Tensor, requested: torch.Tensor, num_classes: int = 10) -> dict:
    """Overall and per-digit share of images the classifier reads as the requested digit, with the counts."""
    predicted, requested = torch.as_tensor(predicted), torch.as_tensor(requested)
    correct = predicted == requested
    per_digit = {}
    for digit in range(num_classes):
        asked = requested == digit
        if asked.any():
            per_digit[str(digit)] = {
                "accuracy": correct[asked].float().mean().item(),
                "correct": int(correct[asked].sum()),
                "total": int(asked.sum()),
            }
    return {
        "accuracy": correct.float().mean().item(),
        "correct": int(correct.sum()),
        "total": len(correct),
        "worst_digit": min(per_digit, key=lambda d: per_digit[d]["accuracy"]),
        "per_digit": per_digit,
    }


def cache_path(cache_dir: str | Path | None, kind: str, **key) -> Path | None:
    """
    Where the result of `kind` computed from `key` is kept in `cache_dir` (None without one), for [`kept`]: the file
    is named by a hash of `key`, tensors (digits, a proposal) hashed by their bytes and anything else as JSON, so any
    other input is another file.
    """
    if cache_dir is None:
        return None
    digest = hashlib.sha256(kind.encode())
    for name, value in sorted(key.items()):
        digest.update(name.encode())
        if torch.is_tensor(value):
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(json.dumps(value, sort_keys=True).encode())
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return Path(cache_dir) / f"{kind}-{digest.hexdigest()[:24]}.pt"


def kept(path: Path | None, compute: Callable[[], dict]) -> dict:
    """`compute()`, kept in `path` (written atomically, so a kill leaves no half file) and read from there if it is."""
    if path is not None and path.is_file():
        return torch.load(path)
    result = compute()
    if path is not None:
        torch.save(result, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
    return result


def generate_balanced(pipe: MNISTDDPMPipeline, samples_per_digit: int, batch_size: int, seed: int,
                      num_inference_steps: int | None, guidance_scale: float | None,
                      guidance_interval: tuple[float, float] | None = None,
                      cache_dir: Path | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """
    `samples_per_digit` images of each digit 0–9, as a float tensor (N, 1, 28, 28) in [0, 1], their labels, and the
    seconds spent generating them.

    Batch `start` is drawn with the seed `seed + start`, so batches are independent: with `cache_dir`, each finished
    batch is kept there with its generation time (written atomically), and a rerun after a kill generates only the
    missing ones; the seconds returned are still those of every batch.
    """
    labels = torch.arange(10).repeat_interleave(samples_per_digit)
    images, seconds = [], 0.0
    for start in range(0, len(labels), batch_size):
        def generate_batch() -> dict:
            started = time.perf_counter()
            batch_images = pipe(labels=labels[start : start + batch_size], num_inference_steps=num_inference_steps,
                                guidance_scale=guidance_scale, guidance_interval=guidance_interval,
                                generator=torch.Generator().manual_seed(seed + start), output_type="pt").images.cpu()
            return {"images": batch_images, "seconds": time.perf_counter() - started}

        batch_result = kept(None if cache_dir is None else cache_dir / f"batch-{start:06d}.pt", generate_batch)
        images.append(batch_result["images"])
        seconds += batch_result["seconds"]
    return torch.cat(images), labels, seconds


class SetupError(ValueError):
    """A model that cannot be loaded, or a setting that it (or the evaluation a run is appended to) refuses: found
    before any image is drawn, and a usage error on the command line."""


def load_data(data_dir: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """
    [`data.load_mnist`] for an evaluation: a split that is missing (and cannot be downloaded) or corrupt is a
    [`SetupError`] naming `data_dir`, found before any image is drawn.
    """
    try:
        return load_mnist(data_dir, split)
    except MNISTDataError as error:
        raise SetupError(f"--data_dir {data_dir}: {error}") from error


def run_cache_dir(cache_root: Path, key: dict) -> Path:
    """
    The cache folder of one configuration: named by a hash of `key`, everything that determines its images (the
    model's identity from [`fingerprint.model_sha256`], the running sampler's config, the sampler settings, dtype,
    seed and batch layout), so that another model, however it is named, or any other setting never reuses another
    run's images. `key` is also written to the folder's settings.json for a reader.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    folder = cache_root / digest.hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
    return folder


def load_pipeline(model_dir: str, torch_dtype: torch.dtype = torch.float32) -> tuple[MNISTDDPMPipeline, str]:
    """
    The pipeline of `model_dir` (a folder or Hub repo id) with its UNet in `torch_dtype`, and the model's identity
    ([`fingerprint.model_sha256`]), hashed from the weights as stored in float32, whatever dtype the evaluation runs in.
    """
    try:
        pipe = MNISTDDPMPipeline.from_pretrained(model_dir)
    except (OSError, ValueError) as error:  # a missing folder, one without model_index.json, another pipeline
        raise SetupError(f"{model_dir} cannot be loaded as a pipeline: {error}") from error
    identity = model_sha256(pipe.unet, pipe.scheduler)
    if torch_dtype != torch.float32:
        pipe = MNISTDDPMPipeline.from_pretrained(model_dir, torch_dtype=torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe, identity


def plan_runs(pipe: MNISTDDPMPipeline, samplers: list[str], num_inference_steps: list[int | None],
              guidance_scales: list[float | None], guidance_intervals: list) -> list[dict]:
    """
    Every configuration of a sweep (sampler × steps × guidance scale × guidance interval), resolved and checked
    against the model as a call would check it, before any image is drawn, so that a bad value late in a list cannot
    throw away the finished runs before it.

    Returns:
        `list[dict]`: one dict per run: sampler, the steps, guidance scale and guidance interval it uses (None:
        every step is guided).

    Raises:
        [`SetupError`]: naming every configuration the model refuses, and why.
    """
    own_scheduler = pipe.scheduler
    runs, problems = [], []
    for sampler in samplers:
        pipe.scheduler = own_scheduler  # each sampler is built from the model's own scheduler
        default_steps = use_sampler(pipe, sampler)
        every_step = (0, pipe.scheduler.config.num_train_timesteps)
        for steps, guidance_scale, guidance_interval in itertools.product(num_inference_steps, guidance_scales,
                                                                          guidance_intervals):
            try:
                steps, guidance_scale, guidance_interval = pipe.resolve_defaults(
                    default_steps if steps is None else steps, guidance_scale,
                    every_step_if_all(guidance_interval, pipe),
                )
            except ValueError as error:
                problems.append(f"{sampler}: {error}")
                continue
            runs.append({"sampler": sampler, "num_inference_steps": steps, "guidance_scale": guidance_scale,
                         "guidance_interval": None if guidance_interval == every_step else guidance_interval})
    pipe.scheduler = own_scheduler
    if problems:
        raise SetupError(" ".join(dict.fromkeys(problems)))
    return runs


def real_floor(classifier, train_images: torch.Tensor, test_features: np.ndarray, n: int, seed: int) -> float:
    """Fréchet distance between n random real training digits and the test set: the best a generator can score."""
    chosen = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))[:n]
    return frechet_distance_between(classifier.features(train_images[chosen]), test_features)


def classification_accuracy_score(images: torch.Tensor, labels: torch.Tensor, data_dir: str, seed: int) -> dict:
    """
    The Classification Accuracy Score (Ravuri & Vinyals, 2019) of a set of digits: the evaluation classifier's
    architecture, trained from scratch with its own recipe (`scripts/train_classifier.py`'s defaults) on these digits
    alone, then tested on the real test split. It asks whether the digits can stand in for real training data, which
    legibility alone does not: a set of identical perfect 7s is legible and useless to learn from.

    Args:
        images (`torch.Tensor`): digits in [0, 1], (N, 1, 28, 28) (rounded to 8-bit pixels, as saved images would be).
        labels (`torch.Tensor`): their classes.

    Returns:
        A dict with the test `accuracy`, the number of `train_digits` and the training's `wall_minutes`.
    """
    from .training.classifier import parse_args, train_classifier  # transformers and accelerate: imported when used

    pixels = (images.float().clamp(0, 1) * 255).round().to(torch.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    with tempfile.TemporaryDirectory() as work_dir:
        digits = Path(work_dir) / "train_digits.pt"
        torch.save({"images": pixels, "labels": labels.long()}, digits)
        record = train_classifier(parse_args(["--data_dir", str(data_dir), "--output_dir", str(Path(work_dir) / "model"),
                                              "--train_digits", str(digits), "--seed", str(seed)]))
    return {"accuracy": record["test_accuracy"], "train_digits": len(labels), "wall_minutes": record["wall_minutes"]}


def cas_cache_path(cache_dir: Path | None, name: str, data_dir: str, **key) -> Path | None:
    """
    Where a CAS result is kept in `cache_dir` ([`cache_path`]): keyed by `key`, the data folder and the classifier
    recipe's defaults (what the training runs with), so another data set or recipe is trained anew.
    """
    from .training.classifier import build_parser as classifier_parser

    return cache_path(cache_dir, name, **key, data_dir=str(Path(data_dir).resolve()),
                      recipe=vars(classifier_parser().parse_args([])))


def real_training_digits(data_dir: str, samples_per_digit: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`samples_per_digit` random real training digits of each class, in [0, 1]: the real set CAS is compared with."""
    train_images, train_labels = load_mnist(data_dir, "train")
    order = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(seed))
    chosen = torch.cat([order[train_labels[order] == digit][:samples_per_digit] for digit in range(10)])
    return digits_to_unit_range(train_images[chosen]), train_labels[chosen]


def evaluate(model_dir: str, classifier_dir: str, data_dir: str, samplers: list[str], guidance_scales: list[float],
             samples_per_digit: int, num_inference_steps: int | list[int | None] | None = None, batch_size: int = 500,
             seed: int = 0, torch_dtype: torch.dtype = torch.float32,
             guidance_intervals: list[tuple[float, float] | None] = (None,), cache_dir: str | None = None,
             append_to: dict | None = None, cas: bool = False) -> dict:
    """
    Generate a balanced set of digits for every (sampler, steps, guidance scale, guidance interval) and score it.

    Returns:
        A dict with the set-up (model and its identity, classifier and its identity, n, seed), the real floor and one
        entry per configuration: sampler, steps, guidance scale, accuracy (overall and per digit), Fréchet distance,
        its ratio to the real floor, and the wall time of generation.

    `num_inference_steps` is one number of steps or a list of them (None: the sampler's default, or else the
    model's). `torch_dtype` is the UNet's dtype (`from_pretrained(..., torch_dtype=...)`): bfloat16 measures what the faster
    bf16 network costs in quality. A guidance interval `(t_low, t_high)` guides only the steps whose timestep lies
    in it (None: the model's default). With `cache_dir`, generated batches are kept there, so that an evaluation
    killed after hours resumes where it stopped. With `append_to`, an earlier evaluation these runs will be added to
    ([`append_runs`]): it must have been measured the same way, which is checked before any image is drawn.
    With `cas`, every run's digits also train a classifier from scratch ([`classification_accuracy_score`]), and
    the same recipe on as many real training digits gives the real reference (`cas_real`).

    Raises:
        [`SetupError`]: a model that cannot be loaded, a configuration it refuses ([`plan_runs`]), an `append_to`
            measured another way, or a data split missing or corrupt ([`load_data`]; CAS trains and tests on the same
            two), before the classifier loads and any image is drawn.
    """
    from .classifier import DigitClassifier  # transformers is an extra: imported only when evaluating

    pipe, identity = load_pipeline(model_dir, torch_dtype)
    step_counts = num_inference_steps if isinstance(num_inference_steps, (list, tuple)) else [num_inference_steps]
    planned = plan_runs(pipe, samplers, step_counts, guidance_scales, guidance_intervals)
    n = 10 * samples_per_digit
    header = {"model_dir": str(model_dir), "model_sha256": identity, "num_samples": n, "seed": seed}
    if append_to is not None:
        check_appendable(append_to, header)

    train_images, _ = load_data(data_dir, "train")
    test_images, _ = load_data(data_dir, "test")

    classifier = DigitClassifier.from_pretrained(classifier_dir)
    test_features = classifier.features(test_images)
    header.update(classifier_dir=str(classifier_dir), classifier_sha256=weights_sha256(classifier.model),
                  samples_per_digit=samples_per_digit,
                  real_floor_frechet_distance=real_floor(classifier, train_images, test_features, n, seed))
    if append_to is not None:
        check_appendable(append_to, header)
    floor = header["real_floor_frechet_distance"]

    own_scheduler, runs = pipe.scheduler, []
    for plan in planned:
        pipe.scheduler = own_scheduler
        use_sampler(pipe, plan["sampler"])
        cache = None
        if cache_dir is not None:
            key = {**plan, "model_sha256": identity, "scheduler_sha256": config_sha256(pipe.scheduler.config),
                   "unet_dtype": str(torch_dtype), "seed": seed, "samples_per_digit": samples_per_digit,
                   "batch_size": batch_size}
            cache = run_cache_dir(Path(cache_dir), key)
        every_step = (0, pipe.scheduler.config.num_train_timesteps)
        images, labels, seconds = generate_balanced(pipe, samples_per_digit, batch_size, seed,
                                                    plan["num_inference_steps"], plan["guidance_scale"],
                                                    plan["guidance_interval"] or every_step, cache)
        distance = frechet_distance_between(classifier.features(images), test_features)
        scored = {}
        if cas:  # kept beside the run's images: the run's key, and the data and recipe it trains with
            scored["cas"] = kept(cas_cache_path(cache, "cas", data_dir),
                                 lambda: classification_accuracy_score(images, labels, data_dir, seed))
        runs.append({
            **plan,
            "guidance_interval": None if plan["guidance_interval"] is None else list(plan["guidance_interval"]),
            "unet_dtype": str(torch_dtype).removeprefix("torch."),
            **accuracy_report(classifier.predict(images), labels),
            "frechet_distance": distance,
            "frechet_ratio_to_real_floor": distance / floor,
            "generation_seconds": round(seconds, 1),
            **scored,
        })
    pipe.scheduler = own_scheduler
    if cas:
        path = cas_cache_path(None if cache_dir is None else Path(cache_dir), "cas-real", data_dir,
                              samples_per_digit=samples_per_digit, seed=seed)
        header["cas_real"] = kept(path, lambda: classification_accuracy_score(
            *real_training_digits(data_dir, samples_per_digit, seed), data_dir, seed))
    return {**header, "runs": runs}


# The rule that picks the stored default (README, "Evaluation"): the most realistic set among the legible ones.
DEFAULT_RULE = {"min_accuracy": 0.995, "min_worst_digit_accuracy": 0.985, "min_samples": 5000}


def worst_digit_accuracy(run: dict) -> float:
    """The accuracy of the digit the classifier reads worst in `run`."""
    return run["per_digit"][run["worst_digit"]]["accuracy"]


def choose_default(results: dict, min_accuracy: float = DEFAULT_RULE["min_accuracy"],
                   min_worst_digit_accuracy: float = DEFAULT_RULE["min_worst_digit_accuracy"],
                   min_samples: int = DEFAULT_RULE["min_samples"]) -> dict:
    """
    The run of an evaluation with the smallest Fréchet ratio to the real floor among those whose accuracy is at least
    `min_accuracy` and whose worst digit is read correctly at least `min_worst_digit_accuracy` of the time.

    Args:
        results (`dict`): the output of [`evaluate`], measured on at least `min_samples` digits.

    Returns:
        `dict`: the chosen run.

    Raises:
        `ValueError`: the evaluation is smaller than `min_samples`, or no run meets both accuracy bars.
    """
    if results["num_samples"] < min_samples:
        raise ValueError(f"The rule compares Fréchet ratios at n ≥ {min_samples}; this evaluation has "
                         f"n = {results['num_samples']}.")
    legible = [run for run in results["runs"]
               if run["accuracy"] >= min_accuracy and worst_digit_accuracy(run) >= min_worst_digit_accuracy]
    if not legible:
        raise ValueError(f"No run reaches accuracy ≥ {min_accuracy:.1%} with every digit ≥ "
                         f"{min_worst_digit_accuracy:.1%}; widen the sweep.")
    return min(legible, key=lambda run: run["frechet_ratio_to_real_floor"])


def store_default(model_dir: str | Path, run: dict) -> None:
    """Write `run`'s guidance scale and interval into the pipeline's model_index.json as its call defaults."""
    store_in_model_index(model_dir, default_guidance_scale=run["guidance_scale"],
                         default_guidance_interval=run.get("guidance_interval"))


def store_in_model_index(model_dir: str | Path, **values) -> None:
    """Write `values` into the pipeline config of `model_dir`'s model_index.json, atomically."""
    path = Path(model_dir) / "model_index.json"
    index = {**json.loads(path.read_text()), **values}
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)  # a reader sees the old file or the new one, never half of one


# What must be equal for two evaluations to share a table: the model and the classifier (by their weights, however
# their folders are spelled), n and seed, and so the real floor their Fréchet ratios are divided by.
APPEND_KEYS = ("model_sha256", "classifier_sha256", "num_samples", "seed")


def appendable_problems(earlier: dict, results: dict) -> list[str]:
    """
    How `results` (or the part of it known so far) was measured differently from the `earlier` evaluation it is to be
    appended to: each of `APPEND_KEYS` and the real floor that both hold and that differ, and each identity that
    `results` has but `earlier` lacks (an evaluation written before they were recorded).
    """
    problems = []
    for key in APPEND_KEYS:
        if key not in results:
            continue
        if key not in earlier:
            problems.append(f"it records no {key} (it predates them), so this run cannot be shown to match it")
        elif earlier[key] != results[key]:
            problems.append(f"its {key} is {earlier[key]!r}, this run's is {results[key]!r}")
    floor = "real_floor_frechet_distance"
    if floor in results and abs(earlier[floor] - results[floor]) > 1e-9:
        problems.append(f"its real floor differs ({earlier[floor]} against {results[floor]}), so its ratios are not "
                        "comparable")
    return problems


def check_appendable(earlier: dict, results: dict) -> None:
    """Raise a [`SetupError`] naming every [`appendable_problems`] of `results` against `earlier`."""
    problems = appendable_problems(earlier, results)
    if problems:
        raise SetupError(f"Cannot append to the evaluation of {earlier.get('model_dir')}: {'; '.join(problems)}.")


def append_runs(path: str | Path, results: dict) -> dict:
    """
    `results` added to the evaluation already in `path`: its runs appended, after checking that both were measured
    the same way ([`check_appendable`]), so one sweep can grow over runs.
    """
    earlier = json.loads(Path(path).read_text())
    check_appendable(earlier, results)
    # The real CAS reference of these runs (same n, seed and data), if the earlier evaluation had none.
    reference = {"cas_real": results["cas_real"]} if "cas_real" in results and "cas_real" not in earlier else {}
    return {**earlier, **reference, "runs": earlier["runs"] + results["runs"]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Score generated digits with the evaluation classifier: accuracy and Fréchet distance.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model_dir", default=str(SHIPPED_MODEL), help="Pipeline folder to evaluate.")
    parser.add_argument("--classifier_dir", default=str(SHIPPED_CLASSIFIER), help="Evaluation classifier folder.")
    parser.add_argument("--data_dir", default="data/mnist", help="Folder with the MNIST IDX files.")
    parser.add_argument("--samplers", nargs="+", default=["ddpm"], choices=sorted(SAMPLERS),
                        help="ddpm: the full 1000-step chain; dpm: DPM-Solver++ swapped in with from_config; lcm: "
                             "the sampler of a consistency-distilled student (pretrained/mnist-lcm).")
    parser.add_argument("--guidance_scales", type=number_argument(0), nargs="+", default=[None],
                        help="Classifier-free guidance weights to sweep, ≥ 0 (default: the model's stored default).")
    parser.add_argument("--guidance_intervals", type=guidance_interval_type, nargs="+", default=[None],
                        help="Timestep intervals LOW,HIGH that are guided (a single conditional pass elsewhere), "
                             "or 'all' for every step (default: the model's stored default).")
    parser.add_argument("--num_inference_steps", type=number_argument(1, integer=True), nargs="+", default=[None],
                        help="Steps, one run for each (default: the sampler's, or else the model's).")
    parser.add_argument("--samples_per_digit", type=number_argument(2, integer=True), default=100,
                        help="Generated images per digit (at least 2: a covariance needs two samples).")
    parser.add_argument("--batch_size", type=number_argument(1, integer=True), default=500,
                        help="Images generated at once.")
    parser.add_argument("--seed", type=number_argument(0, MAX_SEED, integer=True), default=0,
                        help="Seed of the first batch; batch `start` is drawn with seed + start.")
    parser.add_argument("--torch_dtype", choices=["float32", "bfloat16"], default="float32",
                        help="dtype of the UNet's weights and activations (the latents stay float32).")
    parser.add_argument("--output", default="results.json", help="Where to write the results JSON.")
    parser.add_argument("--cache_dir", default=None,
                        help="Keep generated batches here, so that a killed evaluation resumes where it stopped.")
    parser.add_argument("--append", action="store_true",
                        help="Add the runs to the evaluation already in --output (same model, classifier, n, seed).")
    parser.add_argument("--cas", action="store_true",
                        help="Also train the evaluation classifier's recipe from scratch on each run's digits and test "
                             "it on real test digits (Classification Accuracy Score), next to the same recipe on as "
                             "many real training digits.")
    parser.add_argument("--store_default", action="store_true",
                        help="Apply the rule of docs/evaluation.md to all runs in --output, store the chosen guidance in "
                             "the model's model_index.json and the rule in --output.")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    problems = []
    if args.store_default and 10 * args.samples_per_digit < DEFAULT_RULE["min_samples"]:
        problems.append(f"--store_default applies the rule, which compares runs at n ≥ {DEFAULT_RULE['min_samples']}; "
                        f"--samples_per_digit {args.samples_per_digit} gives n = {10 * args.samples_per_digit}")
    if args.store_default and not (Path(args.model_dir) / "model_index.json").is_file():
        problems.append(f"--store_default writes the model's model_index.json, but --model_dir {args.model_dir} is "
                        "not a local pipeline folder")
    if args.seed + 10 * args.samples_per_digit - 1 > MAX_SEED:
        problems.append(f"--seed {args.seed} is too large: the last batch's seed, seed + its first index, must be at "
                        f"most {MAX_SEED}")
    if args.cas:
        from .training.classifier import build_parser as classifier_parser
        from .training.options import check_seed

        problems += [f"--cas trains the classifier with --seed: {problem}" for problem in check_seed(args.seed)]
        batch_size = classifier_parser().get_default("train_batch_size")
        if 10 * args.samples_per_digit < batch_size:
            problems.append(f"--cas trains on the generated digits in the classifier recipe's batches of {batch_size}: "
                            f"--samples_per_digit {args.samples_per_digit} gives only {10 * args.samples_per_digit}")
    earlier = None
    if args.append:
        if not Path(args.output).is_file():
            problems.append(f"--append adds to an existing evaluation, but {args.output} does not exist")
        else:
            earlier = json.loads(Path(args.output).read_text())
    if problems:
        parser.error("; ".join(problems))
    # What only the model can check (steps, guidance intervals, a student's guidance; --append's model) and the data
    # (both splits, for --cas too) are checked by `evaluate` before the classifier loads: usage errors too.
    try:
        results = evaluate(args.model_dir, args.classifier_dir, args.data_dir, args.samplers, args.guidance_scales,
                           args.samples_per_digit, args.num_inference_steps, args.batch_size, args.seed,
                           getattr(torch, args.torch_dtype), args.guidance_intervals, args.cache_dir, earlier, args.cas)
    except SetupError as error:
        parser.error(str(error))
    new_runs = results["runs"]
    if args.append:
        results = append_runs(args.output, results)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(args.output).with_name(Path(args.output).name + ".tmp")
    temporary.write_text(json.dumps(results, indent=2) + "\n")
    temporary.replace(args.output)  # a finished sweep is never half-overwritten
    if args.store_default:
        chosen = choose_default(results)
        results["default_rule"] = DEFAULT_RULE  # the card says which rule chose the stored default
        temporary.write_text(json.dumps(results, indent=2) + "\n")
        temporary.replace(args.output)
        store_default(args.model_dir, chosen)
        print(f"Stored the default guidance {chosen['guidance_scale']} (interval {chosen['guidance_interval']}) in "
              f"{Path(args.model_dir) / 'model_index.json'}")
    for run in new_runs:
        print(f"{run['sampler']:>5} {run['num_inference_steps']:>4} steps, {run['unet_dtype']}, "
              f"guidance {run['guidance_scale']} in {run['guidance_interval'] or 'every step'}: "
              f"accuracy {100 * run['accuracy']:.2f}% (worst digit {run['worst_digit']}), "
              f"Fréchet {run['frechet_distance']:.3f} = {run['frechet_ratio_to_real_floor']:.2f}× the real floor"
              + (f", CAS {100 * run['cas']['accuracy']:.2f}%" if "cas" in run else ""))
    if "cas_real" in results:
        print(f"CAS of {results['cas_real']['train_digits']} real training digits: "
              f"{100 * results['cas_real']['accuracy']:.2f}%")
