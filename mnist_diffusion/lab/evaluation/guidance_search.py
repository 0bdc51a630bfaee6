"""
The guidance search's table (docs/generation.md, "Which guidance"): the runs of several evaluations measured the
same way (classifier, n, seed, real floor) side by side, each named by its guidance (classifier-free guidance, a
diffusers guider, autoguidance by a weaker UNet), sampler and steps, with its cost against classifier-free guidance with
DPM-Solver++ at the same steps; the rule that picks the stored default among them; and the writing of the winner, with its
guider and guidance UNet, into a model folder.
"""

import json
import shutil
import statistics
import time
from pathlib import Path

import torch
from diffusers import guiders

from ..guiders import step_dependence
from ..samplers import SAMPLERS, use_sampler
from .default_rule import DEFAULT_RULE, choose_default, store_in_model_index, worst_digit_accuracy
from .sampling import SetupError, load_pipeline

# What must be equal for runs of different evaluations to share a table (their models differ on purpose).
SHARED_KEYS = ("classifier_sha256", "num_samples", "seed", "samples_per_digit")
def build_table(evaluations: dict[str, dict]) -> dict:
    """
    One table of the runs of `evaluations` (name → an evaluation written by `scripts/evaluate.py`), which must share
    the classifier, n, seed and real floor.

    Returns:
        `dict`: the shared set-up, `sources` (per name: model folder, identity, guider, guidance UNet) and `rows`, one per
        run: its source, guidance kind, sampler, steps, scale, interval, accuracy, worst digit, Fréchet ratio,
        seconds per digit, cost against classifier-free guidance with DPM-Solver++ at the same steps ([`set_costs`];
        None without such a run) and why its guider depends on the step (None: it does not).

    Raises:
        [`SetupError`]: naming every evaluation measured differently from the first.
    """
    if not evaluations:
        raise SetupError("The table needs at least one evaluation.")
    (first_name, first), *others = evaluations.items()
    problems = []
    for name, results in others:
        for key in (*SHARED_KEYS, "real_floor_frechet_distance"):
            if results.get(key) != first.get(key):
                problems.append(f"{name}'s {key} is {results.get(key)!r}, {first_name}'s {first.get(key)!r}")
    if problems:
        raise SetupError("Evaluations measured differently cannot share a table: " + "; ".join(problems) + ".")

    sources, rows = {}, []
    for name, results in evaluations.items():
        guider, guide = results.get("guider"), results.get("guidance_unet")
        kind = "autoguidance" if guide is not None else guider["class_name"] if guider is not None else "CFG"
        sources[name] = {"model_dir": results["model_dir"], "model_sha256": results["model_sha256"],
                         "guider": guider, "guidance_unet": guide, "kind": kind}
        for run in results["runs"]:
            rows.append({
                "source": name, "kind": kind,
                **{key: run[key] for key in ("sampler", "num_inference_steps", "guidance_scale", "guidance_interval",
                                             "unet_dtype", "accuracy", "worst_digit", "per_digit", "frechet_distance",
                                             "frechet_ratio_to_real_floor", "generation_seconds")},
                "worst_digit_accuracy": worst_digit_accuracy(run),
                "seconds_per_digit": run["generation_seconds"] / first["num_samples"],
                "step_dependence": step_dependence(guider),
            })
    set_costs(rows)
    shared = {key: first[key] for key in (*SHARED_KEYS, "classifier_dir", "real_floor_frechet_distance")}
    return {**shared, "sources": sources, "rows": rows}


def time_settings(table: dict, batch_size: int = 100, repeats: int = 3) -> dict[str, float]:
    """
    Seconds per digit of each (source, sampler, steps) of `table`, timed side by side in one process: every setting
    draws `batch_size` digits, round after round (`repeats` rounds, interleaved so that a slower minute of the machine
    falls on all of them), and the median round counts. Keys are `"source|sampler|steps"`.
    """
    settings = {}
    for row in table["rows"]:
        key = f"{row['source']}|{row['sampler']}|{row['num_inference_steps']}"
        if key not in settings:
            source = table["sources"][row["source"]]
            pipe, _ = load_pipeline(source["model_dir"], torch.float32, source["guidance_unet"])
            use_sampler(pipe, row["sampler"])
            settings[key] = (pipe, row)
    labels = torch.arange(batch_size) % 10
    seconds = {key: [] for key in settings}
    for _ in range(repeats):
        for key, (pipe, row) in settings.items():
            started = time.perf_counter()
            pipe(labels=labels, num_inference_steps=row["num_inference_steps"], guidance_scale=row["guidance_scale"],
                 generator=torch.Generator().manual_seed(0), output_type="pt")
            seconds[key].append((time.perf_counter() - started) / batch_size)
    return {key: statistics.median(values) for key, values in seconds.items()}


def apply_timings(table: dict, timings: dict[str, float]) -> None:
    """Replace each row's seconds per digit and cost against CFG by the side-by-side `timings` ([`time_settings`])."""
    for row in table["rows"]:
        row["seconds_per_digit"] = timings[f"{row['source']}|{row['sampler']}|{row['num_inference_steps']}"]
    set_costs(table["rows"])
    table["timing"] = "side by side in one process ([`time_settings`]), not the evaluations' wall times"


def set_costs(rows: list[dict], reference_sampler: str = "dpm") -> None:
    """
    Each row's cost per digit against today's fast default, classifier-free guidance with DPM-Solver++
    (`reference_sampler`) at every step, at the row's steps and dtype (None without such a row).
    """
    for row in rows:
        plain = [other["seconds_per_digit"] for other in rows
                 if other["kind"] == "CFG" and other["sampler"] == reference_sampler
                 and other["num_inference_steps"] == row["num_inference_steps"]
                 and other["guidance_interval"] is None and other["unet_dtype"] == row["unet_dtype"]]
        row["cost_vs_cfg"] = row["seconds_per_digit"] / (sum(plain) / len(plain)) if plain else None


def choose_from_table(table: dict, rule: dict = DEFAULT_RULE) -> dict:
    """
    The row the rule of docs/evaluation.md picks (the lowest Fréchet ratio among the legible rows, at n ≥ the rule's),
    among the rows whose guider does not depend on the step; recorded in `table` as `default` with the rule.
    """
    eligible = [row for row in table["rows"] if row["step_dependence"] is None]
    chosen = choose_default({"num_samples": table["num_samples"], "runs": eligible}, **rule)
    table["default"] = {"row": table["rows"].index(chosen), "rule": {**rule, "step_independent_guiders_only": True}}
    return chosen


def store_guidance(model_dir: str | Path, table: dict, row: dict) -> None:
    """
    Make `row`'s guidance the call default of the pipeline folder `model_dir`: its scale, interval and steps in
    model_index.json, its sampler as the pipeline's scheduler ([`store_sampler`]), and its guider (config) and
    guidance UNet (copied from the folder the evaluation used) as the pipeline's components, or none of either when
    `row` is the built-in classifier-free guidance. Each file is
    written beside its place and moved in, and model_index.json last, so an interruption leaves the old default.
    """
    model_dir = Path(model_dir)
    source = table["sources"][row["source"]]
    components = {}
    guider = source["guider"]
    if guider is not None:
        config = {key: value for key, value in guider.items() if key != "class_name"}
        getattr(guiders, guider["class_name"])(**config).save_pretrained(fresh_folder(model_dir / "guider.tmp"))
        move_in(model_dir / "guider.tmp", model_dir / "guider")
        components["guider"] = ["diffusers", guider["class_name"]]
    guide = source["guidance_unet"]
    if guide is not None:
        staging = fresh_folder(model_dir / "guidance_unet.tmp")
        for name in ("config.json", "diffusion_pytorch_model.safetensors"):
            shutil.copy2(Path(guide) / name, staging / name)
        move_in(staging, model_dir / "guidance_unet")
        components["guidance_unet"] = ["mnist_diffusion.unet_mnist", "ClassConditionedUNet"]
    components["scheduler"], steps = store_sampler(model_dir, row["sampler"], row["num_inference_steps"])
    dropped = tuple(name for name in ("guider", "guidance_unet") if name not in components)
    store_in_model_index(model_dir, remove=dropped, default_guidance_scale=row["guidance_scale"],
                         default_guidance_interval=row["guidance_interval"], default_num_inference_steps=steps,
                         **components)
    for name in dropped:  # a component the new default no longer has goes after the index stops naming it
        if (model_dir / name).is_dir():
            shutil.rmtree(model_dir / name)


def store_sampler(model_dir: Path, sampler: str, num_inference_steps: int) -> tuple[list[str], int | None]:
    """
    Make the sampler `sampler` (a name of `lab/samplers.py`) at `num_inference_steps` the pipeline's own: its config
    built from the stored scheduler's (the same noise schedule; the DDPM's keys stay in it, so the likelihood,
    inpainting and distillation read the same DDPM) and written in place of it, unless it is that sampler already.

    Returns:
        The scheduler's `model_index.json` entry, and the steps to store (None: the DDPM's full chain).
    """
    scheduler_class, _, settings = SAMPLERS[sampler]
    current = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    library = "diffusers" if scheduler_class.__module__.startswith("diffusers") else scheduler_class.__module__
    if current["_class_name"] != scheduler_class.__name__ or any(current.get(key) != value
                                                                  for key, value in settings.items()):
        own = {key: value for key, value in current.items() if not key.startswith("_")}
        scheduler_class.from_config(own, **settings).save_pretrained(fresh_folder(model_dir / "scheduler.tmp"))
        move_in(model_dir / "scheduler.tmp", model_dir / "scheduler")
    full_chain = sampler == "ddpm" and num_inference_steps == current.get("num_train_timesteps")
    return [library, scheduler_class.__name__], None if full_chain else num_inference_steps


def fresh_folder(path: Path) -> Path:
    """`path` as a new empty folder (whatever was there removed): where a component is put together."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def move_in(staging: Path, target: Path) -> None:
    """Put the folder `staging` in place of `target` by renames (the old one is removed only once the new is in)."""
    if target.exists():
        old = target.with_name(target.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        target.replace(old)
        staging.replace(target)
        shutil.rmtree(old)
    else:
        staging.replace(target)


def read_evaluations(specs: list[str]) -> dict[str, dict]:
    """`NAME=PATH` pairs as name → evaluation, in order; a malformed pair or a missing file is a [`SetupError`]."""
    evaluations = {}
    for spec in specs:
        name, separator, path = spec.partition("=")
        if not separator or not name or not Path(path).is_file():
            raise SetupError(f"--evaluations takes NAME=PATH pairs of existing results files, got {spec!r}.")
        evaluations[name] = json.loads(Path(path).read_text())
    return evaluations
