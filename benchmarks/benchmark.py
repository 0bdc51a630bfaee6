# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""
Side-by-side CPU benchmark of mnist-diffusion against "the peer": diffusers' own class-conditional `UNet2DModel`
(same widths, parameter count within ±10%) driven by diffusers' `DDPMScheduler` in the plain DDPM loop, with the
same classifier-free guidance as `MNISTDDPMPipeline`. Run it from the repository root on an otherwise idle machine:

    python benchmarks/benchmark.py

It measures training throughput (and the FLOP/s it reaches against a measured matmul peak), generation latency and
throughput, and peak memory, and writes `benchmarks/RESULTS.md` and `benchmarks/results.json`. Ours and the peer are
measured alternately within each repeat, so that drift of the machine's speed affects both alike; the ratios are
the result, the absolute numbers only context. `--quick` is a smoke test that finishes well within a minute and
writes to a temporary folder.
"""

import argparse
import contextlib
import copy
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import diffusers
import jinja2
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, LCMScheduler, UNet2DModel
from torch.utils.flop_counter import FlopCounterMode

from mnist_diffusion import ClassConditionedUNet, MNISTDDPMPipeline, MNISTDDPMScheduler
from mnist_diffusion.lab.reporting import SIDES, benchmark_tables, format_ratio

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported by the tests
from peer import (CPU_SDPA_FLOP_FORMULAS, GUIDANCE_SCALE, NULL_LABEL, NUM_TRAIN_TIMESTEPS, PEER_UNET_CONFIG,  # noqa: E402
                  PeerPipeline)

START = time.perf_counter()
BENCHMARKS_DIR = Path(__file__).resolve().parent
MEMORY_KINDS = tuple(f"{kind}-{side}" for kind in ("train", "generate") for side in SIDES)
SEED = 0
TRAIN_BATCH_SIZE = 128
GENERATION_LABELS = list(range(10))
IMAGES_PER_LABEL = 10  # batch 100
MATMUL_SIZE = 2048


def stored_student_steps() -> int:
    """The shipped student's stored default number of steps, the steps its benchmark row times."""
    from mnist_diffusion.lab.shipped import SHIPPED_STUDENT

    return MNISTDDPMPipeline.load_config(SHIPPED_STUDENT)["default_num_inference_steps"]

# Opt-in speed-ups of our pipeline, measured next to its defaults.
OPTIONS = {"bf16": "a bf16 UNet (`torch_dtype=torch.bfloat16`)", "compiled": "`torch.compile(pipe.unet)`"}

@dataclass(frozen=True)
class Settings:
    """How much work each measurement does."""

    repeats: int
    warmup_rounds: int  # rounds of every measurement run and discarded before the timed repeats
    train_steps: int  # timed training steps per repeat
    matmul_count: int  # timed matmuls per repeat and dtype
    batch1_steps: int  # timed steps of the 1000-step chain at batch 1 (all of them unless --quick)
    steps_for_batch100: int  # timed steps of the 1000-step chain at batch 100, extrapolated to 1000
    strided_steps: int
    dpm_solver_steps: int
    memory_steps: int  # training or generation steps run by each memory measurement
    # The few-step student (pretrained/mnist-lcm: the same UNet under LCMScheduler, guidance baked in): its default
    # steps, and the digits generated in batches of 100 by it and by the teacher's DPM-Solver++ (older results lack it).
    student_steps: int = field(default_factory=stored_student_steps)
    many_digits: int = 1000

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Settings":
        if args.quick:
            return cls(
                repeats=1,
                warmup_rounds=0,
                train_steps=2,
                matmul_count=1,
                batch1_steps=5,
                steps_for_batch100=2,
                strided_steps=5,
                dpm_solver_steps=5,
                memory_steps=1,
                many_digits=100,
            )
        return cls(
            repeats=args.repeats,
            warmup_rounds=1,
            train_steps=10,
            matmul_count=5,
            batch1_steps=NUM_TRAIN_TIMESTEPS,
            steps_for_batch100=args.steps_for_batch100,
            strided_steps=100,
            dpm_solver_steps=20,
            memory_steps=3,
        )


def build_unet(side: str) -> torch.nn.Module:
    torch.manual_seed(SEED)
    return ClassConditionedUNet() if side == "ours" else UNet2DModel(**PEER_UNET_CONFIG)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def compile_unet(unet: torch.nn.Module) -> torch.nn.Module:
    """`torch.compile` with inductor's freezing (weights become constants, so oneDNN can pre-pack them)."""
    return torch.compile(unet, dynamic=False, options={"freezing": True})


def compile_seconds(pipe: MNISTDDPMPipeline) -> dict[str, float]:
    """Seconds of the first one-step call at batch 1 and at batch 100 (each input shape compiles once)."""
    return {
        "batch1": time_generation(pipe, 1, labels=[7]),
        "batch100": time_generation(pipe, 1, labels=GENERATION_LABELS, num_images_per_label=IMAGES_PER_LABEL),
    }


def build_pipeline(side: str) -> MNISTDDPMPipeline | PeerPipeline:
    unet = build_unet(side).eval()
    if side == "peer":
        return PeerPipeline(unet, DDPMScheduler())
    pipe = MNISTDDPMPipeline(unet, MNISTDDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


class _EnoughSteps(Exception):
    """Raised by the step callback of `time_generation` to end a generation once its timed steps are done."""


def time_generation(pipe: MNISTDDPMPipeline | PeerPipeline, num_steps: int, labels: list[int], **kwargs) -> float:
    """Seconds from calling `pipe` to the end of its `num_steps`-th step, or of the whole call if that is its last."""

    def stop_after_num_steps(pipe, step_index, timestep, callback_kwargs):
        if step_index + 1 == num_steps and num_steps < len(pipe.scheduler.timesteps):
            raise _EnoughSteps
        return callback_kwargs

    kwargs.setdefault("guidance_scale", GUIDANCE_SCALE)
    start = time.perf_counter()
    with contextlib.suppress(_EnoughSteps):
        pipe(
            labels=labels,
            generator=torch.Generator().manual_seed(SEED),
            callback_on_step_end=stop_after_num_steps,
            **kwargs,
        )
    return time.perf_counter() - start


class TrainingStep:
    """
    One step of the DDPM objective ‖ε − ε_θ(x_t, t, y)‖² on a fixed random batch (NCHW, the default memory format),
    under bf16 autocast, followed by an AdamW update.
    """

    def __init__(self, unet: torch.nn.Module, batch_size: int = TRAIN_BATCH_SIZE):
        generator = torch.Generator().manual_seed(SEED)
        shape = (batch_size, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        self.unet = unet.train()
        self.batch_size = batch_size
        self.noisy_samples = torch.randn(shape, generator=generator)
        self.noise = torch.randn(shape, generator=generator)
        self.timesteps = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch_size,), generator=generator)
        self.class_labels = torch.randint(0, NULL_LABEL + 1, (batch_size,), generator=generator)
        self.optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)

    def forward_backward(self) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            prediction = self.unet(self.noisy_samples, self.timesteps, class_labels=self.class_labels).sample
        F.mse_loss(prediction.float(), self.noise).backward()

    def __call__(self) -> None:
        self.forward_backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def flops_per_image(self) -> float:
        """FLOPs of the forward and backward pass per image, as counted by `FlopCounterMode` (matmuls, convolutions
        and attention; not elementwise operations or normalisations)."""
        with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOP_FORMULAS) as counter:
            self.forward_backward()
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops() / self.batch_size


def make_matmul(dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED)
    a, b = (torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=generator, dtype=dtype) for _ in range(2))
    return lambda: a @ b


def time_calls(function: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        function()
    return time.perf_counter() - start


@dataclass
class Timing:
    """A piece of work timed once per repeat, and how its seconds turn into the number reported."""

    measure: Callable[[], float]
    unit: str
    value_from_seconds: Callable[[float], float] = lambda seconds: seconds
    seconds: list[float] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [self.value_from_seconds(seconds) for seconds in self.seconds]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def to_json(self) -> dict:
        return {"unit": self.unit, "seconds": self.seconds, "values": self.values, "median": self.median}


def images_per_second(num_images: int) -> Callable[[float], float]:
    return lambda seconds: num_images / seconds


def build_timings(settings: Settings) -> tuple[dict[str, Timing], dict[str, float], dict[str, float]]:
    """
    Every timed measurement, in the order of one repeat (ours, then the peer, for each), FLOPs per image, and the
    seconds `torch.compile` took (its first calls, which are not part of the timings).
    """
    timings, flops_per_image = {}, {}

    for side in SIDES:
        training_step = TrainingStep(build_unet(side))
        flops_per_image[side] = training_step.flops_per_image()
        timings[f"train_{side}"] = Timing(
            lambda step=training_step: time_calls(step, settings.train_steps),
            "images/s",
            images_per_second(TRAIN_BATCH_SIZE * settings.train_steps),
        )
    matmul_flops = 2 * MATMUL_SIZE**3 * settings.matmul_count
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        timings[f"matmul_{name}"] = Timing(
            lambda matmul=make_matmul(dtype): time_calls(matmul, settings.matmul_count),
            "GFLOP/s",
            lambda seconds: matmul_flops / seconds / 1e9,
        )

    pipes = {side: build_pipeline(side) for side in SIDES}
    # Our pipeline's two opt-in speed-ups, on copies of the same UNet: bf16 weights (what
    # `from_pretrained(..., torch_dtype=torch.bfloat16)` gives) and `torch.compile`.
    pipes["ours_bf16"] = MNISTDDPMPipeline(copy.deepcopy(pipes["ours"].unet).to(torch.bfloat16), MNISTDDPMScheduler())
    pipes["ours_compiled"] = MNISTDDPMPipeline(compile_unet(copy.deepcopy(pipes["ours"].unet)), MNISTDDPMScheduler())
    for pipe in (pipes["ours_bf16"], pipes["ours_compiled"]):
        pipe.set_progress_bar_config(disable=True)
    for side, pipe in pipes.items():
        timings[f"batch1_{side}"] = Timing(
            lambda pipe=pipe: time_generation(pipe, settings.batch1_steps, labels=[7]), "s"
        )
    batch100 = len(GENERATION_LABELS) * IMAGES_PER_LABEL
    for side, pipe in pipes.items():
        timings[f"batch100_{side}"] = Timing(
            lambda pipe=pipe: time_generation(
                pipe, settings.steps_for_batch100, labels=GENERATION_LABELS, num_images_per_label=IMAGES_PER_LABEL
            ),
            "images/s (extrapolated to 1000 steps)",
            lambda seconds: batch100 / (seconds / settings.steps_for_batch100 * NUM_TRAIN_TIMESTEPS),
        )

    log("compiling")
    compiling = compile_seconds(pipes["ours_compiled"])
    ours = pipes["ours"]
    dpm_solver = MNISTDDPMPipeline(ours.unet, DPMSolverMultistepScheduler.from_config(ours.scheduler.config))
    dpm_solver.set_progress_bar_config(disable=True)
    for name, pipe, num_steps in (
        ("strided_ours", ours, settings.strided_steps),
        ("dpm_solver_ours", dpm_solver, settings.dpm_solver_steps),
    ):
        timings[name] = Timing(
            lambda pipe=pipe, num_steps=num_steps: time_generation(
                pipe, num_steps, labels=[7], num_inference_steps=num_steps
            ),
            "s",
        )

    # The few-step student against the teacher's fast solver, one digit at batch 1 and many in batches of 100.
    student = MNISTDDPMPipeline(
        ours.unet, LCMScheduler.from_config(ours.scheduler.config, original_inference_steps=50),
        default_guidance_scale=1.0, default_num_inference_steps=settings.student_steps,
    )
    student.set_progress_bar_config(disable=True)
    timings["student_batch1"] = Timing(
        lambda: time_generation(student, settings.student_steps, labels=[7], guidance_scale=1.0), "s"
    )
    batches = settings.many_digits // batch100
    for name, pipe, num_steps, guidance_scale in (
        ("student_many", student, settings.student_steps, 1.0),
        ("dpm_solver_many_ours", dpm_solver, settings.dpm_solver_steps, GUIDANCE_SCALE),
    ):
        timings[name] = Timing(
            lambda pipe=pipe, num_steps=num_steps, guidance_scale=guidance_scale: sum(
                time_generation(pipe, num_steps, labels=GENERATION_LABELS, num_images_per_label=IMAGES_PER_LABEL,
                                num_inference_steps=num_steps, guidance_scale=guidance_scale)
                for _ in range(batches)
            ),
            f"images/s ({settings.many_digits} digits in batches of {batch100})",
            images_per_second(settings.many_digits),
        )
    return timings, flops_per_image, compiling


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f} s] {message}", file=sys.stderr, flush=True)


def run_interleaved(timings: dict[str, Timing], settings: Settings) -> None:
    """Run every measurement once per round, in the same order each round; keep the rounds after the warm-up."""
    for round_index in range(settings.warmup_rounds + settings.repeats):
        is_warmup = round_index < settings.warmup_rounds
        log(f"{'warm-up' if is_warmup else 'repeat'} {round_index + 1}/{settings.warmup_rounds + settings.repeats}")
        for timing in timings.values():
            seconds = timing.measure()
            if not is_warmup:
                timing.seconds.append(seconds)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_memory(kind: str, settings: Settings) -> dict[str, float]:
    """Run one memory workload in this (fresh) process; return its peak RSS before and after the workload."""
    workload, side = kind.split("-")
    if workload == "train":
        training_step = TrainingStep(build_unet(side))
        before = peak_rss_mib()
        time_calls(training_step, settings.memory_steps)
    else:
        pipe = build_pipeline(side)
        before = peak_rss_mib()
        time_generation(
            pipe, settings.memory_steps, labels=GENERATION_LABELS, num_images_per_label=IMAGES_PER_LABEL
        )
    return {"before_mib": before, "peak_mib": peak_rss_mib()}


def measure_memory_in_fresh_processes(settings: Settings) -> dict[str, dict[str, float]]:
    """
    Run each memory workload in a process of its own, since peak RSS never goes down within a process.

    The processes are forked from a forkserver that has done nothing but imports, so each starts from the footprint
    of the imports. (A process started by fork + exec from this one, as by `subprocess` or multiprocessing's spawn,
    would not: on Linux its `ru_maxrss` starts at the peak of this process.)
    """
    context = multiprocessing.get_context("forkserver")
    # The imports that take seconds, done once in the server rather than in every process. (Preloading "__main__"
    # would cover them all, but the forkserver of Python 3.11 ignores it.)
    context.set_forkserver_preload(["mnist_diffusion", "diffusers.models.unets.unet_2d"])
    with context.Pool(processes=1, maxtasksperchild=1) as pool:
        return {kind: pool.apply(measure_memory, (kind, settings)) for kind in MEMORY_KINDS}


def check_parameter_counts(parameters: dict[str, int]) -> None:
    relative_difference = parameters["peer"] / parameters["ours"] - 1
    if abs(relative_difference) > 0.10:
        raise AssertionError(
            f"The peer has {parameters['peer']:,} parameters, {relative_difference:+.1%} from our "
            f"{parameters['ours']:,}: not a like-for-like comparison (allowed: ±10%)."
        )


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict:
    return {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/benchmark.py", *sys.argv[1:]]),
    }


def summarize(timings: dict[str, Timing], flops_per_image: dict[str, float], memory: dict) -> dict:
    """Achieved FLOP/s and ratios (ours/peer, but peer/ours for latencies, so >1 means ours is faster)."""
    median = {name: timing.median for name, timing in timings.items()}
    achieved_gflops = {side: median[f"train_{side}"] * flops_per_image[side] / 1e9 for side in SIDES}
    peak_fraction = {side: achieved_gflops[side] / median["matmul_bf16"] for side in SIDES}
    ratios = {
        "train_images_per_s": median["train_ours"] / median["train_peer"],
        "flops_per_image": flops_per_image["ours"] / flops_per_image["peer"],
        "achieved_gflops": achieved_gflops["ours"] / achieved_gflops["peer"],
        "batch1_speedup": median["batch1_peer"] / median["batch1_ours"],
        "batch100_images_per_s": median["batch100_ours"] / median["batch100_peer"],
        **{f"batch1_speedup_{option}": median["batch1_peer"] / median[f"batch1_ours_{option}"]
           for option in OPTIONS},
        **{f"batch100_images_per_s_{option}": median[f"batch100_ours_{option}"] / median["batch100_peer"]
           for option in OPTIONS},
        "strided_speedup_vs_peer_ddpm": median["batch1_peer"] / median["strided_ours"],
        "dpm_solver_speedup_vs_peer_ddpm": median["batch1_peer"] / median["dpm_solver_ours"],
        "student_batch1_ms_per_digit": 1000 * median["student_batch1"],
        "student_batch1_speedup_vs_dpm_solver": median["dpm_solver_ours"] / median["student_batch1"],
        "student_batch1_speedup_vs_peer_ddpm": median["batch1_peer"] / median["student_batch1"],
        "student_many_speedup_vs_dpm_solver": median["student_many"] / median["dpm_solver_many_ours"],
        # In images/s; the peer's batch-100 throughput is extrapolated from its first steps to the 1000-step chain.
        "student_many_speedup_vs_peer_ddpm": median["student_many"] / median["batch100_peer"],
        **{f"memory_{kind}": memory[f"{kind}-ours"]["peak_mib"] / memory[f"{kind}-peer"]["peak_mib"]
           for kind in ("train", "generate")},
    }
    return {
        "achieved_gflops": achieved_gflops,
        "bf16_peak_fraction": peak_fraction,
        "ratios": ratios,
    }


RESULTS_TEMPLATE = BENCHMARKS_DIR / "results_template.md"


def render_markdown(results: dict, settings: Settings) -> str:
    """RESULTS.md: `results_template.md` (the prose) filled with the run's numbers and `reporting.benchmark_tables`."""
    ratios = results["summary"]["ratios"]
    text = jinja2.Template(RESULTS_TEMPLATE.read_text(encoding="utf-8")).render(
        s=settings, tables=benchmark_tables(results, settings, NUM_TRAIN_TIMESTEPS, OPTIONS), null_label=NULL_LABEL,
        guidance_scale=GUIDANCE_SCALE, train_batch_size=TRAIN_BATCH_SIZE, matmul_size=MATMUL_SIZE,
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        compile_batch1=f"{results['compile_seconds']['batch1']:.0f}",
        compile_batch100=f"{results['compile_seconds']['batch100']:.0f}",
        student_vs_dpm_batch1=format_ratio(ratios["student_batch1_speedup_vs_dpm_solver"]),
        student_vs_dpm_many=format_ratio(ratios["student_many_speedup_vs_dpm_solver"]),
    )
    return text + "\n"  # jinja drops the template's last line break


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; medians are reported")
    parser.add_argument(
        "--steps_for_batch100",
        type=int,
        default=50,
        help="steps of the 1000-step schedule timed at batch 100, then extrapolated to 1000",
    )
    parser.add_argument(
        "--output_dir",
        type=Path,
        default=None,
        help="where RESULTS.md and results.json go (default: benchmarks/, or a new temporary folder with --quick)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        help="only re-render RESULTS.md (next to it) from an existing results.json, measuring nothing",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 repeat and a few steps of everything (overrides --repeats and --steps_for_batch100)",
    )
    args = parser.parse_args()

    if args.repeats < 1:
        parser.error("--repeats must be at least 1.")
    if not 1 <= args.steps_for_batch100 <= NUM_TRAIN_TIMESTEPS:
        parser.error(f"--steps_for_batch100 must be between 1 and {NUM_TRAIN_TIMESTEPS}.")
    if args.output_dir is None:
        args.output_dir = Path(tempfile.mkdtemp(prefix="mnist-diffusion-benchmark-")) if args.quick else BENCHMARKS_DIR
    elif args.quick and args.output_dir.resolve() == BENCHMARKS_DIR:
        parser.error("--quick must not overwrite the committed results in benchmarks/; pick another --output_dir.")
    return args


def main() -> None:
    args = parse_args()
    if args.render is not None:
        results = json.loads(args.render.read_text(encoding="utf-8"))
        markdown = render_markdown(results, Settings(**results["settings"]))
        (args.render.parent / "RESULTS.md").write_text(markdown, encoding="utf-8")
        print(markdown, end="")
        return
    settings = Settings.from_args(args)
    parameters = {side: count_parameters(build_unet(side)) for side in SIDES}
    check_parameter_counts(parameters)
    log("building the models and counting FLOPs")
    timings, flops_per_image, compiling = build_timings(settings)
    run_interleaved(timings, settings)
    log("memory")
    memory = measure_memory_in_fresh_processes(settings)

    results = {
        "machine": machine_info(),
        "settings": asdict(settings),
        "parameters": parameters,
        "flops_per_image": flops_per_image,
        "timings": {name: timing.to_json() for name, timing in timings.items()},
        "memory": memory,
        "compile_seconds": compiling,
    }
    results["summary"] = summarize(timings, flops_per_image, memory)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(results, settings)
    (args.output_dir / "RESULTS.md").write_text(markdown, encoding="utf-8")
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(markdown, end="")
    log(f"wrote {args.output_dir / 'RESULTS.md'} and {args.output_dir / 'results.json'}")


if __name__ == "__main__":
    main()
