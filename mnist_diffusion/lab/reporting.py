"""
What the lab reports, in one place: the names of the evaluation files (written by the evaluation commands, read by the
model card, the README checks and the docs) and every Markdown table the lab writes: the card's evaluation, CAS and
likelihood tables, the inpainting table, the recipe tables and the speed benchmark's (benchmarks/RESULTS.md). The card
and the Hub push read files through these names and render these tables, so they import no evaluation code.
"""

# The evaluation files a card reads, relative to the model folder (written by the evaluation commands' --output).
DEFAULT_RESULTS = "evaluation/default.json"  # the sampler and guidance of the pipeline's defaults
FAST_RESULTS = "evaluation/fast.json"  # the fast solver
# The fast solver at the n of default.json, so that the default sampling has a partner at its own n (a Fréchet ratio
# compares only with one at the same n: the real floor shrinks as n grows).
FAST_AT_DEFAULT_N_RESULTS = "evaluation/fast_at_default_n.json"
SWEEP_RESULTS = "evaluation/guidance_sweep.json"
BF16_RESULTS = "evaluation/bf16.json"  # the fast solver with a bfloat16 UNet (`torch_dtype=torch.bfloat16`)
# The guidance search: CFG, diffusers' guiders, autoguidance and samplers side by side (benchmarks/guidance.py).
GUIDANCE_SEARCH_RESULTS = "evaluation/guidance_search.json"
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


# The likelihood tables' headers (the card and docs/likelihood.md) ----------------------------------------------------

BOUND_HEADER = ["| model | bits/dim (± s.e.) | of which diffusion terms | decoder | digits |",
                "| --- | --- | --- | --- | --- |"]
ZERO_SHOT_HEADER = ["| trials per class | UNet rows per digit | accuracy, uniform weighting | bound weighting | "
                    "seconds per digit |", "| --- | --- | --- | --- | --- |"]


# The recipe tables of the benchmarks (benchmarks/recipes.py, benchmarks/student_recipes.py) ---------------------------


def recipes_table(results: dict) -> str:
    """The training recipes: one row per run, accuracy and Fréchet ratio unguided and at guidance 1.5."""
    rows = [
        "| run | change | steps | images/s | guidance 1: accuracy | ÷ real floor | guidance 1.5: accuracy "
        "| worst digit | ÷ real floor |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in results["runs"]:
        unguided, guided = run["evaluation"]["1"], run["evaluation"]["1.5"]
        rows.append(
            f"| {run['name']} | {run['change']} | {run['global_step']:,} | {run['images_per_second']:.0f} | "
            f"{100 * unguided['accuracy']:.2f}% | {unguided['frechet_ratio_to_real_floor']:.2f}× | "
            f"{100 * guided['accuracy']:.2f}% | {guided['worst_digit']} ({100 * guided['worst_digit_accuracy']:.1f}%) | "
            f"{guided['frechet_ratio_to_real_floor']:.2f}× |"
        )
    return "\n".join(rows)


def students_table(results: dict, steps: tuple[int, int, int] = (1, 2, 4)) -> str:
    """The student recipes: one row per run, accuracy and Fréchet ratio at 1, 2 and 4 steps, the worst digit at 1 and 4."""
    rows = [
        "| run | change | steps | minutes | 1 step: accuracy | worst digit | ÷ real floor | 2 steps: accuracy "
        "| ÷ real floor | 4 steps: accuracy | worst digit | ÷ real floor |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in results["runs"]:
        one, two, four = (run["evaluation"][str(count)] for count in steps)
        rows.append(
            f"| {run['name']} | {run['change']} | {run['global_step']:,} | {run['train_minutes']:.1f} | "
            f"{100 * one['accuracy']:.2f}% | {one['worst_digit']} ({100 * one['worst_digit_accuracy']:.1f}%) | "
            f"{one['frechet_ratio_to_real_floor']:.1f}× | {100 * two['accuracy']:.2f}% | "
            f"{two['frechet_ratio_to_real_floor']:.2f}× | {100 * four['accuracy']:.2f}% | "
            f"{four['worst_digit']} ({100 * four['worst_digit_accuracy']:.1f}%) | {four['frechet_ratio_to_real_floor']:.2f}× |"
        )
    return "\n".join(rows)


def levers_table(results: dict) -> str:
    """
    The levers of a student comparison: each run's mean accuracy over 1, 2 and 4 LCM steps against the baseline's,
    its 4-step change, its accuracy with TCD (γ 0.3) at 2 and 4 steps where measured, and whether the rule keeps it.
    """
    rows_by_name = {row["name"]: row for row in results["runs"]}

    def tcd(name: str, steps: int) -> str:
        run = rows_by_name[name].get("evaluation_tcd", {}).get(str(steps))
        return "" if run is None else f"{100 * run['accuracy']:.2f}%"

    levers = results["levers"]
    baseline_mean = f"{100 * levers[0]['baseline_mean_accuracy']:.2f}%" if levers else ""
    rows = [[results["baseline"], "none (the baseline)", baseline_mean, "", tcd(results["baseline"], 2),
             tcd(results["baseline"], 4), ""]]
    rows += [[lever["name"], lever["change"], f"{100 * lever['mean_accuracy']:.2f}%",
              f"{100 * lever['four_step_change']:+.2f}", tcd(lever["name"], 2), tcd(lever["name"], 4),
              "**kept**" if lever["kept"] else "not kept"] for lever in results["levers"]]
    return markdown_table(["run", "change", "mean accuracy, 1/2/4 LCM steps", "4 steps vs baseline (points)",
                           "TCD 2 steps", "TCD 4 steps", "by the rule"], rows)


def guidance_table(table: dict) -> str:
    """
    The guidance search (benchmarks/guidance.py): one row per setting (its guidance, sampler and steps, scale,
    interval), accuracy, worst digit, Fréchet ratio, cost per digit against classifier-free guidance at the same
    sampler and steps; the rule's choice in bold, a step-dependent guider marked.
    """
    chosen = table.get("default", {}).get("row")
    rows = []
    for index, row in enumerate(table["rows"]):
        interval = "every step" if row["guidance_interval"] is None else "t in [{}, {}]".format(*row["guidance_interval"])
        cost = "" if row["cost_vs_cfg"] is None else f"{row['cost_vs_cfg']:.2f}×"
        note = "**the stored default**" if index == chosen else (
            "step-dependent" if row["step_dependence"] is not None else "")
        rows.append([row["source"], f"{row['sampler']} {row['num_inference_steps']}", f"{row['guidance_scale']:g}",
                     interval, f"{100 * row['accuracy']:.2f}%",
                     f"{row['worst_digit']} ({100 * row['worst_digit_accuracy']:.1f}%)",
                     f"{row['frechet_ratio_to_real_floor']:.2f}×", cost, note])
    return markdown_table(["guidance", "sampler, steps", "scale", "guided", "accuracy", "worst digit", "÷ real floor",
                           "cost vs CFG", ""], rows)


# The speed benchmark's tables (benchmarks/RESULTS.md) ---------------------------------------------------------------

SIDES = ("ours", "peer")


def format_number(value: float) -> str:
    """A measured number: whole with thousands separated from 100, three significant figures from 1, else 3 decimals."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value >= 1 else f"{value:.3f}"


def format_ratio(value: float, unit: str = "×") -> str:
    """A ratio as `1.23×`, a fraction as `53%` (`unit="%"`), a time in ms as `39.8 ms`."""
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:.0%}" if unit == "%" else f"{value:.2f}×"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of `header` and `rows` of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def benchmark_tables(results: dict, settings, num_train_timesteps: int, options: dict[str, str]) -> dict[str, str]:
    """
    The Markdown tables of RESULTS.md, by name, from a run's `results.json`, its `settings` (repeats, steps, ...), the
    DDPM's `num_train_timesteps` and the pipeline `options` timed (name → label).
    """
    median = {name: timing["median"] for name, timing in results["timings"].items()}
    batch1_label = (f"{num_train_timesteps} DDPM steps" if settings.batch1_steps == num_train_timesteps
                    else f"first {settings.batch1_steps} of {num_train_timesteps} DDPM steps")
    ratios = results["summary"]["ratios"]
    return {
        "machine": machine_table(results["machine"], settings.repeats),
        "training": training_table(results, median),
        "matmul": markdown_table(["matmul", "GFLOP/s"], [["bf16", format_number(median["matmul_bf16"])],
                                                         ["fp32", format_number(median["matmul_fp32"])]]),
        "generation": markdown_table(["", "ours", "peer", "speed-up (>1: ours faster)"], [
            [f"batch-1 latency, {batch1_label} (s)", format_number(median["batch1_ours"]),
             format_number(median["batch1_peer"]), format_ratio(ratios["batch1_speedup"])],
            [f"batch-100 images/s, {num_train_timesteps} steps (extrapolated)", format_number(median["batch100_ours"]),
             format_number(median["batch100_peer"]), format_ratio(ratios["batch100_images_per_s"])],
        ]),
        "options": markdown_table(
            ["our pipeline with", "batch-1 latency (s)", "speed-up", "batch-100 images/s", "ours/peer"],
            [[label, format_number(median[f"batch1_ours_{option}"]), format_ratio(ratios[f"batch1_speedup_{option}"]),
              format_number(median[f"batch100_ours_{option}"]), format_ratio(ratios[f"batch100_images_per_s_{option}"])]
             for option, label in options.items()],
        ),
        "fewer_steps": markdown_table(["our pipeline, batch 1", "latency (s)", "speed-up over the peer's DDPM"], [
            [f"DDPM, {batch1_label}", format_number(median["batch1_ours"]), format_ratio(ratios["batch1_speedup"])],
            [f"DDPM, {settings.strided_steps} strided steps (`num_inference_steps={settings.strided_steps}`)",
             format_number(median["strided_ours"]), format_ratio(ratios["strided_speedup_vs_peer_ddpm"])],
            [f"`DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)`, {settings.dpm_solver_steps} steps",
             format_number(median["dpm_solver_ours"]), format_ratio(ratios["dpm_solver_speedup_vs_peer_ddpm"])],
        ]),
        "student": student_table(median, ratios, settings, num_train_timesteps),
        "memory": memory_table(results["memory"]),
    }


def machine_table(machine: dict, repeats: int) -> str:
    """Where and how a benchmark ran."""
    return markdown_table(["", ""], [
        ["CPU", f"{machine['cpu']} ({machine['cpu_capability']})"],
        ["logical cores", str(machine["logical_cores"])],
        ["torch threads", str(machine["torch_threads"])],
        ["python / torch / diffusers", f"{machine['python']} / {machine['torch']} / {machine['diffusers']}"],
        ["date (UTC)", machine["date"]],
        ["repeats", str(repeats)],
        ["command", f"`{machine['command']}`"],
    ])


def training_table(results: dict, median: dict) -> str:
    """Training speed, ours against the peer: parameters, images/s, FLOPs and the share of the matmul peak."""
    summary, parameters, flops = results["summary"], results["parameters"], results["flops_per_image"]
    ratios = summary["ratios"]
    return markdown_table(["", "ours", "peer", "ours/peer"], [
        ["parameters", f"{parameters['ours']:,}", f"{parameters['peer']:,}",
         format_ratio(parameters["ours"] / parameters["peer"])],
        ["training images/s", format_number(median["train_ours"]), format_number(median["train_peer"]),
         format_ratio(ratios["train_images_per_s"])],
        ["MFLOPs per image (forward + backward)", *(f"{flops[side] / 1e6:,.1f}" for side in SIDES),
         format_ratio(ratios["flops_per_image"])],
        ["achieved GFLOP/s", *(format_number(summary["achieved_gflops"][side]) for side in SIDES),
         format_ratio(ratios["achieved_gflops"])],
        ["fraction of the bf16 matmul peak", *(format_ratio(summary["bf16_peak_fraction"][side], "%") for side in SIDES),
         ""],
    ])


def student_table(median: dict, ratios: dict, settings, num_train_timesteps: int) -> str:
    """The student against the teacher's DPM-Solver++ and the peer's DDPM, at batch 1 and in batches of 100."""
    return markdown_table(
        ["sampler", "UNet passes per digit", "batch 1: ms per digit",
         f"{settings.many_digits:,} digits in batches of 100: images/s",
         "speed-up over the peer's DDPM (batch 1 / batches of 100)"],
        [
            [f"student, `LCMScheduler`, {settings.student_steps} steps", str(settings.student_steps),
             format_number(1000 * median["student_batch1"]), format_number(median["student_many"]),
             f"{format_ratio(ratios['student_batch1_speedup_vs_peer_ddpm'])} / "
             f"{format_ratio(ratios['student_many_speedup_vs_peer_ddpm'])}"],
            [f"teacher, DPM-Solver++, {settings.dpm_solver_steps} steps", str(2 * settings.dpm_solver_steps),
             format_number(1000 * median["dpm_solver_ours"]), format_number(median["dpm_solver_many_ours"]),
             f"{format_ratio(ratios['dpm_solver_speedup_vs_peer_ddpm'])} / "
             f"{format_ratio(median['dpm_solver_many_ours'] / median['batch100_peer'])}"],
            [f"peer, DDPM, {num_train_timesteps} steps", str(2 * num_train_timesteps),
             format_number(1000 * median["batch1_peer"]), format_number(median["batch100_peer"]), "1.00× / 1.00×"],
        ],
    )


def memory_table(memory: dict) -> str:
    """Resident memory before and at the peak of training and of generation, ours against the peer."""
    return markdown_table(["MiB", "ours", "peer", "ours/peer (<1: ours smaller)"], [
        [f"{label}, {column}", *(format_number(memory[f"{kind}-{side}"][f"{column}_mib"]) for side in SIDES),
         format_ratio(memory[f"{kind}-ours"][f"{column}_mib"] / memory[f"{kind}-peer"][f"{column}_mib"])]
        for kind, label in (("train", "training"), ("generate", "generation"))
        for column in ("before", "peak")
    ])
