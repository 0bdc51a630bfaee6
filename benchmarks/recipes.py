# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""
The quality-per-CPU-minute comparison of training recipes: short runs of equal wall time on this CPU, each evaluated
at the same settings, one change at a time against the current recipe, and the benchmark's peer (diffusers'
`UNet2DModel`, `benchmarks/train_peer.py`) trained for the same time. Collect the finished runs into
`benchmarks/recipes.json` and print its table (docs/results-log.md):

    python benchmarks/recipes.py --runs current=runs/r25/current minsnr5=runs/r25/minsnr5 peer=runs/r25/peer \
        --baseline current --output benchmarks/recipes.json

Each run folder holds the pipeline `scripts/train.py` (or `train_peer.py`) wrote, with its `training_config.json`,
and `eval.json`, the `scripts/evaluate.py` results at guidance 1 and 1.5. What a run changed is read from the
recorded options, not typed: every option that differs from the baseline's (the output folder and the resume flag
aside), or the peer's script.
"""

import argparse
import json
from pathlib import Path

from mnist_diffusion.lab.evaluation import worst_digit_accuracy
from mnist_diffusion.lab.reporting import recipes_table
from mnist_diffusion.lab.training.ddpm import build_parser

# Options that say where a run went or how it was restarted, not what it trained.
NOT_RECIPE = {"output_dir", "resume_from_checkpoint", "data_dir", "logger", "checkpointing_steps", "validation_steps",
              "max_train_steps", "push_to_hub", "hub_model_id"}
GUIDANCE_SCALES = (1.0, 1.5)


def recipe_change(record: dict, baseline: dict, parser: argparse.ArgumentParser | None = None) -> str:
    """
    What `record`'s run changed from the baseline's: its script if another, and every differing recipe option. An
    option the baseline's record lacks (it predates the option) counts as the default of `parser` (that of
    `scripts/train.py` unless another is given).
    """
    changes = []
    script, baseline_script = record["command"].split()[0], baseline["command"].split()[0]
    if script != baseline_script:
        changes.append(f"`{script}`")
    defaults = vars((parser or build_parser()).parse_args([]))
    for name, value in record["args"].items():
        if name not in NOT_RECIPE and baseline["args"].get(name, defaults.get(name)) != value:
            changes.append(f"`--{name} {' '.join(map(str, value)) if isinstance(value, list) else value}`")
    return ", ".join(changes) or "none (the current recipe)"


def run_row(name: str, run_dir: Path, baseline: dict) -> dict:
    """One run's record: what it changed, how long and fast it trained, and its evaluation at guidance 1 and 1.5."""
    record = json.loads((run_dir / "training_config.json").read_text())
    results = json.loads((run_dir / "eval.json").read_text())
    row = {
        "name": name,
        "change": recipe_change(record, baseline),
        "command": record["command"],
        "num_parameters": record["num_parameters"],
        "global_step": record["global_step"],
        "images_seen": record["images_seen"],
        "train_minutes": record["train_minutes"],
        "images_per_second": record["images_seen"] / (60 * record["train_minutes"]),
        "samples_per_digit": results["samples_per_digit"],
        "real_floor_frechet_distance": results["real_floor_frechet_distance"],
        "evaluation": {},
    }
    for run in results["runs"]:
        if run["guidance_interval"] is None and run["guidance_scale"] in GUIDANCE_SCALES:
            row["sampler"] = f"{run['sampler']} {run['num_inference_steps']} steps, {run['unet_dtype']} UNet"
            row["evaluation"][f"{run['guidance_scale']:g}"] = {
                key: run[key] for key in ("accuracy", "worst_digit", "frechet_distance", "frechet_ratio_to_real_floor")
            } | {"worst_digit_accuracy": worst_digit_accuracy(run)}
    missing = [f"{scale:g}" for scale in GUIDANCE_SCALES if f"{scale:g}" not in row["evaluation"]]
    if missing:
        raise ValueError(f"{run_dir / 'eval.json'} has no result at guidance {', '.join(missing)} (every step)")
    return row


def collect(runs: dict[str, Path], baseline: str) -> dict:
    """The comparison of `runs` (name → run folder) against the run named `baseline`."""
    if baseline not in runs:
        raise ValueError(f"--baseline {baseline!r} is not one of the runs {sorted(runs)}")
    baseline_record = json.loads((runs[baseline] / "training_config.json").read_text())
    return {"baseline": baseline, "runs": [run_row(name, folder, baseline_record) for name, folder in runs.items()]}


def name_and_folder(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected name=folder, got {text!r}")
    return name, Path(folder)


def check_runs(runs: list[tuple[str, Path]], baseline: str, script: str = "scripts/train.py or benchmarks/train_peer.py"
               ) -> list[str]:
    """
    Every reason the runs named on the command line can't be compared, all at once and before anything is read
    further or written, so that a long `--runs` list is fixed in one go rather than one traceback at a time: names
    that repeat, a `--baseline` among none of them, a folder or file that isn't there (named with the script that
    writes it), and a recorded wall time that isn't a positive number of minutes (images per second divides by it).
    """
    names = [name for name, _ in runs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    problems = [f"--runs names must differ, got {', '.join(repeated)} more than once"] if repeated else []
    if baseline not in names:
        problems.append(f"--baseline {baseline!r} is not one of the --runs names {sorted(set(names))}")
    for name, folder in runs:
        if not folder.is_dir():
            problems.append(f"--runs {name}: {folder} is not a folder (expected a run of {script})")
            continue
        writers = {"training_config.json": f"{script} --output_dir {folder}",
                   "eval.json": f"scripts/evaluate.py --output {folder / 'eval.json'}"}
        problems += [f"--runs {name}: {folder / file} is missing (written by {writer})"
                     for file, writer in writers.items() if not (folder / file).is_file()]
        if (folder / "training_config.json").is_file():
            minutes = json.loads((folder / "training_config.json").read_text()).get("train_minutes", "none")
            if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > 0:
                problems.append(f"--runs {name}: train_minutes must be a positive number of minutes, got {minutes} "
                                f"(in {folder / 'training_config.json'})")
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--runs", type=name_and_folder, nargs="+", required=True, help="name=folder of each run.")
    parser.add_argument("--baseline", required=True, help="The run of the current recipe.")
    parser.add_argument("--output", default="benchmarks/recipes.json", help="Where to write the comparison.")
    args = parser.parse_args(argv)
    problems = check_runs(args.runs, args.baseline)
    if problems:
        parser.error("; ".join(problems))
    results = collect(dict(args.runs), args.baseline)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(recipes_table(results))


if __name__ == "__main__":
    main()
