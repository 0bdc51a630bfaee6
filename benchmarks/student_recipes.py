# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""
The one-step student's recipe comparison: short consistency distillations of the same number of optimiser steps
(the same CPU time: no option compared here changes the cost of a step), one change at a time against the current
recipe, each evaluated by `scripts/evaluate.py` at 1, 2 and 4 LCM steps. Collect the finished runs into
`benchmarks/student_recipes.json` and print the table of docs/results-log.md:

    python benchmarks/student_recipes.py --runs eps=runs/rec-eps v=runs/rec-v --baseline eps \
        --output benchmarks/student_recipes.json

Each run folder holds the student `scripts/distill.py` wrote, with its `training_config.json`, and `eval.json`, the
evaluation at 1, 2 and 4 steps (and, where the run was also sampled with `TCDScheduler`, its tcd results in `eval.json`
or `eval_tcd.json`). What a run changed is read from the recorded options against the baseline's, and each lever is
kept or not by the rule of docs/distillation.md ("The recipe table and the shipping rule").

With `--candidates`, apply that rule's shipping half instead: which of the students (rows of committed comparisons,
`FILE:NAME`) ships as `pretrained/mnist-lcm`, at which steps and sampler, and which as `pretrained/mnist-lcm-1step`:

    python benchmarks/student_recipes.py --candidates benchmarks/student_recipes.json:shipped \
        benchmarks/ict_student/students.json:final --teacher_table benchmarks/guidance.json \
        --output benchmarks/ict_student/choice.json

With `--store CHOICE`, write what that choice ships: each chosen student whose run folder `--runs` names becomes
`pretrained/mnist-lcm` (or `-1step`), storing the chosen steps and sampler; its evaluations, figures and card are
made afterwards by the usual scripts. A chosen student without a run folder (the one shipped now) keeps its folder,
with the chosen steps and sampler stored in it.
"""

import argparse
import json
import shutil
from pathlib import Path

from recipes import check_runs, name_and_folder, recipe_change

from mnist_diffusion.lab.evaluation import store_in_model_index, worst_digit_accuracy
from mnist_diffusion.lab.evaluation.guidance_search import fresh_folder, move_in, store_sampler
from mnist_diffusion.lab.reporting import levers_table, students_table
from mnist_diffusion.lab.training.distillation import build_parser

STEPS = (1, 2, 4)
SAMPLERS = ("lcm", "tcd")
# The rule of docs/distillation.md, written before the final run. A lever is kept when its mean accuracy over 1, 2 and
# 4 LCM steps beats the baseline's and its 4-step accuracy is at most this much below the baseline's:
MAX_FOUR_STEP_DROP = 0.005
# A student stores TCD's sampler at a step count when TCD's accuracy there beats LCM's by at least this:
TCD_MARGIN = 0.002
# The targets (issue 39): 1 step ≥ 97%, no digit < 94%, Fréchet ratio ≤ 3× the teacher default's; 2 steps ≥ 99.3%;
# 4 steps ≥ 99.5%, no digit < 98.5%.
ONE_STEP_TARGET = {"min_accuracy": 0.97, "min_worst_digit_accuracy": 0.94, "max_frechet_vs_teacher": 3.0}
TWO_STEP_TARGET = {"min_accuracy": 0.993}
FOUR_STEP_TARGET = {"min_accuracy": 0.995, "min_worst_digit_accuracy": 0.985}


def run_row(name: str, run_dir: Path, baseline: dict) -> dict:
    """
    One run's record: what it changed, how long it distilled, and its evaluation at 1, 2 and 4 LCM steps (and with
    TCD at the steps it was sampled with, under `evaluation_tcd`).
    """
    record = json.loads((run_dir / "training_config.json").read_text())
    files = [run_dir / "eval.json"] + [path for path in [run_dir / "eval_tcd.json"] if path.is_file()]
    evaluations = [json.loads(path.read_text()) for path in files]
    for path, results in zip(files[1:], evaluations[1:]):
        for key in ("samples_per_digit", "real_floor_frechet_distance"):
            if results[key] != evaluations[0][key]:
                raise ValueError(f"{path} has {key} {results[key]}, {files[0]} {evaluations[0][key]}: "
                                 "expected one evaluation setting")
    row = {
        "name": name,
        "change": recipe_change(record, baseline, build_parser()),
        "command": record["command"],
        "global_step": record["global_step"],
        "images_seen": record["images_seen"],
        "train_minutes": record["train_minutes"],
        "samples_per_digit": evaluations[0]["samples_per_digit"],
        "real_floor_frechet_distance": evaluations[0]["real_floor_frechet_distance"],
        "evaluation": {},
    }
    for results in evaluations:
        for run in results["runs"]:
            if run["sampler"] in SAMPLERS and run["num_inference_steps"] in STEPS and run["unet_dtype"] == "float32":
                key = "evaluation" if run["sampler"] == "lcm" else "evaluation_tcd"
                row.setdefault(key, {})[str(run["num_inference_steps"])] = {
                    key: run[key] for key in ("accuracy", "worst_digit", "frechet_distance",
                                              "frechet_ratio_to_real_floor")
                } | {"worst_digit_accuracy": worst_digit_accuracy(run)}
    missing = [str(steps) for steps in STEPS if str(steps) not in row["evaluation"]]
    if missing:
        raise ValueError(f"{run_dir / 'eval.json'} has no float32 lcm result at {', '.join(missing)} steps")
    return row


def mean_accuracy(row: dict) -> float:
    """A run's mean accuracy over 1, 2 and 4 LCM steps, the score that keeps a lever."""
    return sum(row["evaluation"][str(steps)]["accuracy"] for steps in STEPS) / len(STEPS)


def lever_decisions(results: dict) -> list[dict]:
    """
    Each run against the baseline by the rule: kept when its mean accuracy over 1, 2 and 4 steps is above the
    baseline's and its 4-step accuracy is no more than `MAX_FOUR_STEP_DROP` below it.
    """
    rows = {row["name"]: row for row in results["runs"]}
    baseline = rows[results["baseline"]]
    decisions = []
    for name, row in rows.items():
        if name == results["baseline"]:
            continue
        four_step_change = row["evaluation"]["4"]["accuracy"] - baseline["evaluation"]["4"]["accuracy"]
        decisions.append({"name": name, "change": row["change"], "mean_accuracy": mean_accuracy(row),
                          "baseline_mean_accuracy": mean_accuracy(baseline), "four_step_change": four_step_change,
                          "kept": mean_accuracy(row) > mean_accuracy(baseline)
                          and four_step_change >= -MAX_FOUR_STEP_DROP})
    return decisions


def collect(runs: dict[str, Path], baseline: str) -> dict:
    """The comparison of `runs` (name → run folder) against the run named `baseline`."""
    if baseline not in runs:
        raise ValueError(f"--baseline {baseline!r} is not one of the runs {sorted(runs)}")
    baseline_record = json.loads((runs[baseline] / "training_config.json").read_text())
    results = {"baseline": baseline, "runs": [run_row(name, folder, baseline_record) for name, folder in runs.items()]}
    results["levers"] = lever_decisions(results)
    return results


def stored_sampler(row: dict, steps: int) -> tuple[str, dict]:
    """The sampler a student stores at `steps` (TCD when it beats LCM by `TCD_MARGIN`) and its evaluation there."""
    lcm = row["evaluation"][str(steps)]
    tcd = row.get("evaluation_tcd", {}).get(str(steps))
    if tcd is not None and tcd["accuracy"] >= lcm["accuracy"] + TCD_MARGIN:
        return "tcd", tcd
    return "lcm", lcm


def targets_met(row: dict, teacher_frechet_ratio: float) -> dict[str, bool]:
    """Which of the targets `row`'s student meets, each read at the sampler it would store at that step count."""
    one = row["evaluation"]["1"]
    two, four = stored_sampler(row, 2)[1], stored_sampler(row, 4)[1]
    return {
        "1 step": one["accuracy"] >= ONE_STEP_TARGET["min_accuracy"]
        and one["worst_digit_accuracy"] >= ONE_STEP_TARGET["min_worst_digit_accuracy"]
        and one["frechet_ratio_to_real_floor"] <= ONE_STEP_TARGET["max_frechet_vs_teacher"] * teacher_frechet_ratio,
        "2 steps": two["accuracy"] >= TWO_STEP_TARGET["min_accuracy"],
        "4 steps": four["accuracy"] >= FOUR_STEP_TARGET["min_accuracy"]
        and four["worst_digit_accuracy"] >= FOUR_STEP_TARGET["min_worst_digit_accuracy"],
    }


def choose_students(candidates: dict[str, dict], teacher_table: dict) -> dict:
    """
    The shipping rule: `pretrained/mnist-lcm` is the candidate meeting the most targets (ties: higher 4-step accuracy),
    storing the step count (2 or 4) and sampler of its best accuracy; when it misses the one-step target and another
    candidate meets it, that one (the best at 1 step) ships as `pretrained/mnist-lcm-1step`. The teacher's Fréchet
    ratio is its stored default's row in `teacher_table` (`benchmarks/guidance.py`), measured on the same real floor.
    """
    teacher = teacher_table["rows"][teacher_table["default"]["row"]]
    for name, row in candidates.items():
        if (row["samples_per_digit"], row["real_floor_frechet_distance"]) != (
                teacher_table["samples_per_digit"], teacher_table["real_floor_frechet_distance"]):
            raise ValueError(f"candidate {name} was evaluated at {row['samples_per_digit']} per digit against a "
                             f"floor of {row['real_floor_frechet_distance']}, the teacher table at "
                             f"{teacher_table['samples_per_digit']} and "
                             f"{teacher_table['real_floor_frechet_distance']}: expected the same evaluation")
    met = {name: targets_met(row, teacher["frechet_ratio_to_real_floor"]) for name, row in candidates.items()}
    multi = max(candidates, key=lambda name: (sum(met[name].values()),
                                              stored_sampler(candidates[name], 4)[1]["accuracy"]))
    steps = max((2, 4), key=lambda count: stored_sampler(candidates[multi], count)[1]["accuracy"])
    choice = {"teacher_frechet_ratio": teacher["frechet_ratio_to_real_floor"], "targets_met": met,
              "mnist-lcm": {"name": multi, "num_inference_steps": steps,
                            "sampler": stored_sampler(candidates[multi], steps)[0]},
              "mnist-lcm-1step": None}
    one_step = [name for name in candidates if met[name]["1 step"]]
    if not met[multi]["1 step"] and one_step:
        best = max(one_step, key=lambda name: candidates[name]["evaluation"]["1"]["accuracy"])
        choice["mnist-lcm-1step"] = {"name": best, "num_inference_steps": 1, "sampler": "lcm"}
    return choice


# What a student's folder keeps from its run: the pipeline and the run's record (not checkpoints, logs or samples).
STUDENT_FILES = ("model_index.json", "unet", "scheduler", "training_config.json")


def store_student(run_dir: Path | None, model_dir: Path, steps: int, sampler: str) -> None:
    """
    Make `model_dir` the student of `run_dir` (a `scripts/distill.py` output), or keep its own student when `run_dir`
    is None, storing `steps` as its default and `sampler` ("lcm" or "tcd") as its scheduler. A new student is put
    together beside `model_dir` and moved in whole, so an interruption leaves the old one; its evaluation/ and images/
    are not carried over (they describe the old student).
    """
    if run_dir is None:
        scheduler, steps = store_sampler(model_dir, sampler, steps)
        store_in_model_index(model_dir, scheduler=scheduler, default_num_inference_steps=steps)
        return
    staging = fresh_folder(model_dir.with_name(model_dir.name + ".tmp"))
    for name in STUDENT_FILES:
        (shutil.copytree if (run_dir / name).is_dir() else shutil.copy2)(run_dir / name, staging / name)
    scheduler, steps = store_sampler(staging, sampler, steps)
    store_in_model_index(staging, scheduler=scheduler, default_num_inference_steps=steps)
    move_in(staging, model_dir)


def candidate_row(text: str) -> tuple[str, dict]:
    """`FILE:NAME` → (NAME, the row named NAME in the comparison FILE)."""
    path, _, name = text.rpartition(":")
    if not path or not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: expected FILE:NAME with FILE a comparison this script wrote")
    rows = {row["name"]: row for row in json.loads(Path(path).read_text())["runs"]}
    if name not in rows:
        raise argparse.ArgumentTypeError(f"{text!r}: {path} has no run {name!r} (it has {', '.join(rows)})")
    return name, rows[name]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--runs", type=name_and_folder, nargs="+", help="name=folder of each run.")
    parser.add_argument("--baseline", help="The run of the current recipe.")
    parser.add_argument("--candidates", type=candidate_row, nargs="+",
                        help="FILE:NAME of each student to choose from (instead of --runs): the shipping rule.")
    parser.add_argument("--teacher_table", default="benchmarks/guidance.json",
                        help="The guidance table whose stored default is the teacher (with --candidates).")
    parser.add_argument("--output", default="benchmarks/student_recipes.json", help="Where to write the comparison.")
    parser.add_argument("--store", type=Path, default=None,
                        help="A choice this script wrote: store its students (their run folders named by --runs) in "
                             "--pretrained_dir.")
    parser.add_argument("--pretrained_dir", type=Path, default=Path("pretrained"))
    args = parser.parse_args(argv)
    if args.store is not None:
        choice, runs = json.loads(args.store.read_text()), dict(args.runs or [])
        for folder in ("mnist-lcm", "mnist-lcm-1step"):
            if choice[folder] is not None:
                chosen = choice[folder]
                store_student(runs.get(chosen["name"]), args.pretrained_dir / folder, chosen["num_inference_steps"],
                              chosen["sampler"])
                print(f"{args.pretrained_dir / folder}: {chosen['name']} at {chosen['num_inference_steps']} "
                      f"{chosen['sampler']} step(s)")
        return
    if args.candidates:
        if args.runs:
            parser.error("give --runs (a comparison) or --candidates (the shipping choice), not both")
        choice = choose_students(dict(args.candidates), json.loads(Path(args.teacher_table).read_text()))
        Path(args.output).write_text(json.dumps(choice, indent=2) + "\n")
        print(json.dumps(choice, indent=2))
        return
    if not args.runs or not args.baseline:
        parser.error("--runs and --baseline are required (or --candidates)")
    problems = check_runs(args.runs, args.baseline, script="scripts/distill.py")
    if problems:
        parser.error("; ".join(problems))
    results = collect(dict(args.runs), args.baseline)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(students_table(results))
    print()
    print(levers_table(results))


if __name__ == "__main__":
    main()
