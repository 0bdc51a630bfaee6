# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""
One digit at batch 1: the shipped students against their teacher's stored default (DPM-Solver++ SDE, 20 steps, its
default guidance: two UNet rows per step), interleaved in one process, the ratio being the result. Each student is
timed at its stored steps and at 1 step; the UNets are the shipped ones, in float32, as a user loads them.

    python benchmarks/student_speed.py --output benchmarks/student_speed.json

Each round calls every pipeline `--calls` times in the same order (one warm-up round first, not kept); a timing is
the median over the rounds of the mean seconds per call.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import Timing, machine_info, run_interleaved  # noqa: E402

from mnist_diffusion import MNISTDDPMPipeline  # noqa: E402
from mnist_diffusion.lab.samplers import sampler_of  # noqa: E402
from mnist_diffusion.lab.shipped import SHIPPED_MODEL, SHIPPED_STUDENT  # noqa: E402

SEED = 0
LABEL = 7
ONE_STEP_STUDENT = SHIPPED_STUDENT.parent / "mnist-lcm-1step"


def load(folder: Path) -> MNISTDDPMPipeline:
    pipe = MNISTDDPMPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def settings_to_time(teacher: Path, students: list[Path]) -> dict[str, tuple[MNISTDDPMPipeline, dict]]:
    """name → (pipeline, call arguments): the teacher's stored default, each student at its stored steps and at 1."""
    teacher_pipe = load(teacher)
    steps = teacher_pipe.config.default_num_inference_steps
    name = f"teacher: {sampler_of(teacher_pipe.scheduler.config)} {steps} steps, guidance " \
           f"{teacher_pipe.config.default_guidance_scale:g}"
    settings = {name: (teacher_pipe, {})}
    for folder in students:
        pipe = load(folder)
        stored = pipe.config.default_num_inference_steps
        for count in sorted({stored, 1}):
            settings[f"{folder.name}: {count} step{'s' if count > 1 else ''}"] = (pipe, {"num_inference_steps": count})
    return settings


def time_settings(settings: dict[str, tuple[MNISTDDPMPipeline, dict]], rounds: int, calls: int) -> dict[str, list]:
    """Seconds per call of each setting, one entry per round after a warm-up round, interleaved (the benchmark's
    `run_interleaved`)."""

    def seconds_per_call(pipe: MNISTDDPMPipeline, kwargs: dict) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            pipe(labels=[LABEL], generator=torch.Generator().manual_seed(SEED), **kwargs)
        return (time.perf_counter() - start) / calls

    timings = {name: Timing(lambda pipe=pipe, kwargs=kwargs: seconds_per_call(pipe, kwargs), "s")
               for name, (pipe, kwargs) in settings.items()}
    run_interleaved(timings, SimpleNamespace(warmup_rounds=1, repeats=rounds))
    return {name: timing.seconds for name, timing in timings.items()}


def summarize(seconds: dict[str, list]) -> dict:
    """Median milliseconds per digit of each setting, and each student's speed-up over the teacher (the first)."""
    median = {name: statistics.median(values) for name, values in seconds.items()}
    teacher = next(iter(median))
    return {"teacher": teacher,
            "ms_per_digit": {name: 1000 * value for name, value in median.items()},
            "speedup_vs_teacher": {name: median[teacher] / value for name, value in median.items() if name != teacher}}


def speed_table(results: dict) -> str:
    """The Markdown table of a `summarize` result: milliseconds per digit and the speed-up over the teacher."""
    rows = ["| one digit at batch 1 | ms per digit | speed-up over the teacher |", "| --- | --- | --- |"]
    for name, ms in results["summary"]["ms_per_digit"].items():
        speedup = results["summary"]["speedup_vs_teacher"].get(name)
        rows.append(f"| {name} | {ms:.1f} | {'' if speedup is None else f'{speedup:.1f}×'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--teacher", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--students", type=Path, nargs="+", default=None,
                        help="Student folders (default: the shipped pretrained/mnist-lcm, and mnist-lcm-1step if "
                             "present).")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5, help="Calls of each setting per round.")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/student_speed.json"))
    args = parser.parse_args(argv)
    students = args.students or [folder for folder in (SHIPPED_STUDENT, ONE_STEP_STUDENT)
                                 if (folder / "model_index.json").is_file()]
    problems = [f"{folder} is not a pipeline folder (no model_index.json)" for folder in [args.teacher, *students]
                if not (folder / "model_index.json").is_file()]
    problems += [f"--{name} {getattr(args, name)} must be a positive integer" for name in ("rounds", "calls")
                 if getattr(args, name) < 1]
    if problems:
        parser.error("; ".join(problems))
    seconds = time_settings(settings_to_time(args.teacher, students), args.rounds, args.calls)
    results = {"machine": machine_info() | {"command": " ".join(["python", "benchmarks/student_speed.py",
                                                                   *(argv if argv is not None else sys.argv[1:])])},
               "rounds": args.rounds, "calls": args.calls, "label": LABEL, "seconds_per_call": seconds,
               "summary": summarize(seconds)}
    temporary = args.output.with_name(args.output.name + ".tmp")
    temporary.write_text(json.dumps(results, indent=2) + "\n")
    temporary.replace(args.output)  # a reader sees the old result or the new one
    print(speed_table(results))


if __name__ == "__main__":
    main()
