"""
`scripts/evaluate.py`: every (sampler, steps, guidance scale, guidance interval) of a sweep drawn and scored, as
one results JSON.
"""

import argparse
import json
from pathlib import Path

import torch

from ..arguments import MAX_SEED, guidance_interval_type, number_argument
from ..fingerprint import config_sha256, weights_sha256
from ..guiders import guider_record
from ..samplers import SAMPLERS, use_sampler
from ..shipped import SHIPPED_CLASSIFIER, SHIPPED_MODEL
from .append import append_runs, check_appendable
from .cache import kept, run_cache_dir
from .cas import cas_cache_path, classification_accuracy_score, real_training_digits
from .default_rule import DEFAULT_RULE, choose_default, store_default
from .sampling import SetupError, generate_balanced, load_data, load_pipeline, plan_runs
from .scores import accuracy_report, frechet_distance_between, real_floor


def evaluate(model_dir: str, classifier_dir: str, data_dir: str, samplers: list[str], guidance_scales: list[float],
             samples_per_digit: int, num_inference_steps: int | list[int | None] | None = None, batch_size: int = 500,
             seed: int = 0, torch_dtype: torch.dtype = torch.float32,
             guidance_intervals: list[tuple[float, float] | None] = (None,), cache_dir: str | None = None,
             append_to: dict | None = None, cas: bool = False, guidance_unet: str | None = None) -> dict:
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
    the same recipe on as many real training digits gives the real reference (`cas_real`). With `guidance_unet` (a
    `ClassConditionedUNet` folder), every run is autoguided by that weaker model (see [`load_pipeline`]).

    Raises:
        [`SetupError`]: a model that cannot be loaded, a configuration it refuses ([`plan_runs`]), an `append_to`
            measured another way, or a data split missing or corrupt ([`load_data`]; CAS trains and tests on the same
            two), before the classifier loads and any image is drawn.
    """
    from ..classifier import DigitClassifier  # transformers is an extra: imported only when evaluating

    pipe, identity = load_pipeline(model_dir, torch_dtype, guidance_unet)
    step_counts = num_inference_steps if isinstance(num_inference_steps, (list, tuple)) else [num_inference_steps]
    planned = plan_runs(pipe, samplers, step_counts, guidance_scales, guidance_intervals)
    n = 10 * samples_per_digit
    header = {"model_dir": str(model_dir), "model_sha256": identity, "num_samples": n, "seed": seed,
              **({} if guidance_unet is None else {"guidance_unet": str(guidance_unet)}),
              **({} if pipe.guider is None else {"guider": guider_record(pipe.guider)})}
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Score generated digits with the evaluation classifier: accuracy and Fréchet distance.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model_dir", default=str(SHIPPED_MODEL), help="Pipeline folder to evaluate.")
    parser.add_argument("--classifier_dir", default=str(SHIPPED_CLASSIFIER), help="Evaluation classifier folder.")
    parser.add_argument("--guidance_unet", default=None,
                        help="Autoguidance: a weaker ClassConditionedUNet folder (e.g. scripts/export_checkpoint.py's "
                             "output) that the guided branch runs on, with the same label; model_sha256 names it too.")
    parser.add_argument("--data_dir", default="data/mnist", help="Folder with the MNIST IDX files.")
    parser.add_argument("--samplers", nargs="+", default=["ddpm"], choices=sorted(SAMPLERS),
                        help="ddpm: the full 1000-step chain; dpm: DPM-Solver++ swapped in with from_config; dpm-sde: "
                             "its SDE variant (fresh noise at every step); lcm: the sampler of a consistency-distilled "
                             "student (pretrained/mnist-lcm); tcd: a student's gamma-sampling (TCDScheduler, the "
                             "model's default_eta or TCD's 0.3).")
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
        from ..training.classifier import build_parser as classifier_parser
        from ..training.options import check_seed

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
                           getattr(torch, args.torch_dtype), args.guidance_intervals, args.cache_dir, earlier, args.cas,
                           args.guidance_unet)
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
