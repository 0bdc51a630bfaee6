# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""
The one-step student's recipe comparison: short consistency distillations of the same number of optimiser steps
(the same CPU time: no option compared here changes the cost of a step), one change at a time against the current
recipe, each evaluated by `scripts/evaluate.py` at 1, 2 and 4 LCM steps. Collect the finished runs into
`benchmarks/student_recipes.json` and print the table of docs/results-log.md:

    python benchmarks/student_recipes.py --runs eps=runs/rec-eps v=runs/rec-v --baseline eps \
        --output benchmarks/student_recipes.json

Each run folder holds the student `scripts/distill.py` wrote, with its `training_config.json`, and `eval.json`, the
evaluation at 1, 2 and 4 steps. What a run changed is read from the recorded options against the baseline's.
"""

import argparse
import json
from pathlib import Path

from recipes import check_runs, name_and_folder, recipe_change

from mnist_diffusion.lab.evaluation import worst_digit_accuracy
from mnist_diffusion.lab.reporting import students_table
from mnist_diffusion.lab.training.distillation import build_parser

STEPS = (1, 2, 4)


def run_row(name: str, run_dir: Path, baseline: dict) -> dict:
    """One run's record: what it changed, how long it distilled, and its evaluation at 1, 2 and 4 steps."""
    record = json.loads((run_dir / "training_config.json").read_text())
    results = json.loads((run_dir / "eval.json").read_text())
    row = {
        "name": name,
        "change": recipe_change(record, baseline, build_parser()),
        "command": record["command"],
        "global_step": record["global_step"],
        "images_seen": record["images_seen"],
        "train_minutes": record["train_minutes"],
        "samples_per_digit": results["samples_per_digit"],
        "real_floor_frechet_distance": results["real_floor_frechet_distance"],
        "evaluation": {},
    }
    for run in results["runs"]:
        if run["sampler"] == "lcm" and run["num_inference_steps"] in STEPS and run["unet_dtype"] == "float32":
            row["evaluation"][str(run["num_inference_steps"])] = {
                key: run[key] for key in ("accuracy", "worst_digit", "frechet_distance", "frechet_ratio_to_real_floor")
            } | {"worst_digit_accuracy": worst_digit_accuracy(run)}
    missing = [str(steps) for steps in STEPS if str(steps) not in row["evaluation"]]
    if missing:
        raise ValueError(f"{run_dir / 'eval.json'} has no float32 lcm result at {', '.join(missing)} steps")
    return row


def collect(runs: dict[str, Path], baseline: str) -> dict:
    """The comparison of `runs` (name → run folder) against the run named `baseline`."""
    if baseline not in runs:
        raise ValueError(f"--baseline {baseline!r} is not one of the runs {sorted(runs)}")
    baseline_record = json.loads((runs[baseline] / "training_config.json").read_text())
    return {"baseline": baseline, "runs": [run_row(name, folder, baseline_record) for name, folder in runs.items()]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--runs", type=name_and_folder, nargs="+", required=True, help="name=folder of each run.")
    parser.add_argument("--baseline", required=True, help="The run of the current recipe.")
    parser.add_argument("--output", default="benchmarks/student_recipes.json", help="Where to write the comparison.")
    args = parser.parse_args(argv)
    problems = check_runs(args.runs, args.baseline, script="scripts/distill.py")
    if problems:
        parser.error("; ".join(problems))
    results = collect(dict(args.runs), args.baseline)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(students_table(results))


if __name__ == "__main__":
    main()
