"""The model card (the Hub page) of a trained pipeline, rendered from the files in its folder.

Every number on the card comes from the folder itself: the UNet's and scheduler's configs, `training_config.json`
(written by `scripts/train.py`) and the evaluation's results JSON files in `evaluation/` (written by
`scripts/evaluate.py`). Nothing is typed by hand, so a user's own `train.py --push_to_hub` gets a card for their run,
and the top-level `model_card.md` of this repository is this module's rendering of `pretrained/mnist-ddpm/`.

    python -m mnist_diffusion.lab.card --model_dir pretrained/mnist-ddpm --output model_card.md
"""

import argparse
import inspect
import json
import re
from importlib.metadata import PackageNotFoundError, metadata
from pathlib import Path, PureWindowsPath

from diffusers.utils.dynamic_modules_utils import get_relative_imports
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..pipeline_mnist_ddpm import MNISTDDPMPipeline
from .redaction import redact, redact_command
from .reporting import (BF16_RESULTS, BOUND_HEADER, CAS_RESULTS, DEFAULT_RESULTS, EVALUATION_HEADER,
                        FAST_AT_DEFAULT_N_RESULTS, FAST_RESULTS, GUIDANCE_SEARCH_RESULTS, LIKELIHOOD_RESULTS, SWEEP_RESULTS, TEACHER_RESULTS,
                        ZERO_SHOT_HEADER, bound_rows, cas_table, evaluation_rows, guidance_table, tables_by_n,
                        zero_shot_rows)
from .run_folder import TRAINING_CONFIG
from .samplers import SAMPLER_NAMES, sampler_of

FIGURES = {
    "images/samples.png": "Generated digits, one row per class",
    "images/steps.png": "The same starting noise in 1, 2, 4 and 8 steps (rows), one column per digit",
    "images/reverse_process.gif": "The reverse process: static, blur, digit shape, clear digit",
    "images/reverse_process.png": "x_t along the reverse chain for each digit",
    "images/forward_process.png": "The forward process: real digits noised in closed form",
    "images/guidance.png": "Accuracy and Fréchet ratio against the guidance scale",
}


def pipeline_code_files() -> list[Path]:
    """
    The files of the pipeline's code that a Hub repo carries at its root: `pipeline_mnist_ddpm.py` and the modules it
    imports relatively (its checks), found as diffusers' remote-code loader finds them.
    """
    pipeline_file = Path(inspect.getsourcefile(MNISTDDPMPipeline))
    return [pipeline_file] + [pipeline_file.with_name(f"{name}.py") for name in get_relative_imports(pipeline_file)]


def package_source_url() -> str | None:
    """Where the package's source lives: the `url` of setup.py, read from the installed package (None if unset)."""
    try:
        return metadata("mnist-diffusion").get("Home-page")
    except PackageNotFoundError:
        return None


def check_source_url(source_url: str) -> str:
    """`source_url` if it is the web address of a Git repository that `pip install "git+<url>"` can install from."""
    if not re.fullmatch(r"https?://\S+", source_url):
        raise ValueError(
            f"The package's source location must be the http(s) URL of its Git repository, e.g. "
            f"https://github.com/org/mnist-diffusion; got {source_url!r}."
        )
    return source_url


def spoken_list(items: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def teacher_name(distilled: dict) -> str | None:
    """
    The teacher of a distilled student as a Hub visitor can look it up: its Hub repo id when distillation loaded it
    from the Hub, else only its folder's name. The local path typed to distill.py (`pretrained/mnist-ddpm`,
    `/work/runs/...`) means nothing on the Hub and shows the trainer's file system. None when no teacher is recorded.
    """
    if distilled.get("teacher_repo_id"):
        return distilled["teacher_repo_id"]
    if not distilled.get("teacher"):
        return None
    # PureWindowsPath splits at both `/` and `\`: a run on Windows records its path with backslashes.
    return PureWindowsPath(distilled["teacher"]).name or None


def likelihood_fields(results: dict | None) -> dict:
    """The bits/dim and zero-shot tables of the card, from the likelihood evaluation's JSON (none without it)."""
    if results is None:
        return {"bound_table": None, "zero_shot_table": None}
    return {"bound_table": "\n".join(BOUND_HEADER + bound_rows(results)),
            "zero_shot_table": "\n".join(ZERO_SHOT_HEADER + zero_shot_rows(results)),
            "zero_shot_digits": results["zero_shot"]["num_images"]}


def read_evaluations(
    model_dir: str | Path, pipeline: MNISTDDPMPipeline | None = None
) -> tuple[list[dict], dict | None]:
    """
    The evaluation results stored in a model folder: the main table's results (the pipeline's defaults, the fast
    solver at their n, the fast solver, the fast solver with a bf16 UNet; whichever exist) and the guidance sweep (or
    None).

    Without a `fast.json`, the sweep's run at the model's default guidance (scale and interval) is the fast solver's
    result.
    """
    model_dir = Path(model_dir)
    if pipeline is None:  # the caller may have the folder's pipeline loaded already
        pipeline = MNISTDDPMPipeline.from_pretrained(model_dir)
    _, guidance_scale, guidance_interval = pipeline.resolve_defaults()
    default = (guidance_scale, None if guidance_interval is None else list(guidance_interval))
    sweep = read_json(model_dir / SWEEP_RESULTS)
    fast = read_json(model_dir / FAST_RESULTS)
    if fast is None and sweep is not None:
        fast = {**sweep, "runs": [run for run in sweep["runs"]
                                  if (run["guidance_scale"], run.get("guidance_interval")) == default]}
    evaluations = [
        results for results in (read_json(model_dir / DEFAULT_RESULTS), read_json(model_dir / FAST_AT_DEFAULT_N_RESULTS),
                                fast, read_json(model_dir / BF16_RESULTS))
        if results is not None and results["runs"]
    ]
    return evaluations, sweep


TEMPLATE = Path(__file__).with_name("templates") / "model_card.md"


def render_model_card(model_dir: str | Path, repo_id: str = "org/mnist-ddpm", source_url: str | None = None) -> str:
    """
    Render the model card of the pipeline in `model_dir`: `templates/model_card.md` (one template, with the
    distilled student's sections beside the DDPM's) filled with `huggingface_hub.ModelCard.from_template` from the
    folder's configs, run record and evaluation results ([`card_fields`]).

    The card leads with the route that needs no package (diffusers and `trust_remote_code=True`), then installs the
    package from `source_url`. Nothing token-shaped reaches the card, whatever the folder's files hold: a command
    recorded before train.py redacted its own is redacted here.

    Args:
        model_dir: a folder written by `MNISTDDPMPipeline.save_pretrained` or `scripts/train.py`.
        repo_id: the Hub repo the card's code snippets load from.
        source_url: the http(s) URL of the package's Git repository; defaults to setup.py's `url`. Without one, the
            card says to install the package from a checkout of its source.

    Returns:
        `str`: the card, YAML metadata (with `model-index` results when evaluation files are present) and Markdown.
    """
    source_url = check_source_url(source_url) if source_url is not None else package_source_url()
    metadata, fields = card_fields(Path(model_dir), repo_id, source_url)
    card = ModelCard.from_template(metadata, template_path=TEMPLATE, **fields)
    return redact(card.content + "\n")  # jinja drops the template's last line break


def card_fields(model_dir: Path, repo_id: str, source_url: str | None) -> tuple[ModelCardData, dict]:
    """The card's metadata (with `model-index` results from the evaluations) and the values its template shows."""
    model_index = json.loads((model_dir / "model_index.json").read_text())
    unet_config = json.loads((model_dir / "unet" / "config.json").read_text())
    scheduler_config = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    training = read_json(model_dir / TRAINING_CONFIG)
    # The defaults a call uses, resolved by the pipeline itself (the one place that knows the fallbacks).
    pipeline = MNISTDDPMPipeline.from_pretrained(model_dir)
    steps, guidance_scale, guidance_interval = pipeline.resolve_defaults()
    guidance = f"guidance scale {guidance_scale:g}"
    if guidance_interval is not None:
        low, high = guidance_interval
        guidance += f", applied only at timesteps {low:g} ≤ t ≤ {high:g}"
    evaluations, sweep = read_evaluations(model_dir, pipeline)
    metadata = ModelCardData(
        library_name="diffusers",
        license="apache-2.0",
        datasets=["ylecun/mnist"],
        tags=["diffusers", "ddpm", "class-conditional", "classifier-free-guidance", "mnist"],
        pipeline_tag="unconditional-image-generation",
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results(evaluations) or None,
    )
    distilled = distillation_of(model_index, scheduler_config, training)
    teacher = teacher_name(distilled) if distilled else None
    # The code the Hub repo carries: the pipeline's, and that of each component diffusers does not ship.
    own_code = {"pipeline": [path.name for path in pipeline_code_files()]}
    own_code |= {name.replace("unet", "UNet"): [f"{name}/{model_index[name][0].split('.')[-1]}.py"]
                 for name in ("unet", "scheduler") if model_index.get(name, ["diffusers"])[0] != "diffusers"}
    diffusers_version = model_index.get("_diffusers_version")
    fields = {
        "name": repo_id.split("/")[-1],
        "repo_id": repo_id,
        "source_url": source_url,
        "made_with": f"[mnist-diffusion]({source_url})" if source_url else "mnist-diffusion",
        # An absolute address: a link relative to the card would point into the model repo, where the notebook is not.
        "tutorial": f"[`docs/tutorial.ipynb`]({source_url.rstrip('/')}/blob/main/docs/tutorial.ipynb)" if source_url
        else "`docs/tutorial.ipynb` in the mnist-diffusion source",
        "steps": steps,
        "sampler": f" ({SAMPLER_NAMES[name]})" if (name := sampler_of(scheduler_config)) else "",
        "guidance": guidance,
        "student": bool(distilled),
        "figures": [(path, alt) for path, alt in FIGURES.items()
                    if (model_dir / path).is_file() and "guidance" not in path],
        "own_code": spoken_list(list(own_code)),
        "own_code_files": spoken_list([f"`{path}`" for paths in own_code.values() for path in paths]),
        "install_diffusers": f'pip install "diffusers=={diffusers_version}"' if diffusers_version else "pip install diffusers",
        "unet": unet_summary(unet_config, pipeline.unet.num_parameters()),
        "noise_schedule": noise_schedule(scheduler_config),
        "training_rows": training_rows(training, distilled, teacher) if training is not None else None,
        "evaluation_tables": "\n".join(tables_by_n(evaluations)).rstrip("\n") if evaluations else None,
        **sweep_fields(model_dir, sweep, guidance,
                       chosen_elsewhere="default" in (read_json(model_dir / GUIDANCE_SEARCH_RESULTS) or {})),
        "cas_table": cas_table(cas) if (cas := read_json(model_dir / CAS_RESULTS)) else None,
        **guidance_search_fields(read_json(model_dir / GUIDANCE_SEARCH_RESULTS)),
        **likelihood_fields(read_json(model_dir / LIKELIHOOD_RESULTS)),
    }
    if distilled:
        fields |= student_fields(model_dir, distilled, teacher)
    return metadata, fields


def eval_results(evaluations: list[dict]) -> list[EvalResult]:
    """The `model-index` results of the main tables: accuracy and Fréchet ratio of every run."""
    return [
        EvalResult(
            task_type="image-generation", dataset_type="ylecun/mnist", dataset_name="MNIST", dataset_split="test",
            metric_type=metric, metric_name=f"{name} ({run['sampler']}, {run['num_inference_steps']} steps, "
            f"guidance {run['guidance_scale']:g}, n={results['num_samples']}"
            f"{', bf16 UNet' if run.get('unet_dtype') == 'bfloat16' else ''})", metric_value=round(value, 4),
        )
        for results in evaluations
        for run in results["runs"]
        for metric, name, value in (
            ("accuracy", "Classifier accuracy", run["accuracy"]),
            ("frechet_ratio", "Fréchet distance / real floor", run["frechet_ratio_to_real_floor"]),
        )
    ]


def distillation_of(model_index: dict, scheduler_config: dict, training: dict | None) -> dict | None:
    """
    How the folder's model was distilled, or None for a DDPM. A distilled student is told by its pipeline and
    scheduler configs, which every save keeps, not by the run record: a student re-saved with `save_pretrained` has
    no training_config.json. Its record, where there is one, says how it was distilled; without one, the configs give
    the baked-in guidance and the skipping-step schedule, and the teacher is not recorded.
    """
    distilled = (training or {}).get("distilled_from")
    if distilled is None and (model_index.get("distilled_guidance_scale") is not None
                              or model_index.get("scheduler", [None, None])[1] == "LCMScheduler"):
        distilled = {"teacher": None, "teacher_solver": None,
                     "guidance_scale": model_index.get("distilled_guidance_scale"),
                     "num_ddim_timesteps": scheduler_config.get("original_inference_steps")}
    return distilled


def unet_summary(unet_config: dict, num_parameters: int) -> str:
    """The noise predictor's size and layout, for the Model section."""
    widths = ", ".join(str(w) for w in unet_config["block_out_channels"])
    attention = ", ".join(str(r) for r in unet_config["attention_resolutions"]) or "no"
    return (f"{num_parameters:,} parameters; widths {widths} at 28, 14 and 7 pixels, {unet_config['layers_per_block']} "
            "residual block(s) per resolution on the way down (one more on the way up), self-attention at "
            f"{attention} pixels and in the bottleneck")


def noise_schedule(config: dict) -> str:
    """The noise schedule, and how it is sampled: by `LCMScheduler` (a student) or with the DDPM's variance."""
    beta = (f"linear from {config['beta_start']:g} to {config['beta_end']:g}" if config["beta_schedule"] == "linear"
            else config["beta_schedule"])
    schedule = f"T = {config['num_train_timesteps']}, β {beta}; "
    if "original_inference_steps" in config:  # LCMScheduler
        return (schedule + f"`{config['prediction_type']}` prediction; sampled by `LCMScheduler` on the skipping-step "
                f"schedule of {config['original_inference_steps']} timesteps.")
    variance = "= β̃_t" if config["variance_type"] == "fixed_small" else "= β_t"
    return schedule + f"σ_t² {variance} (`{config['variance_type']}`), `{config['prediction_type']}` prediction."


def training_rows(training: dict, distilled: dict | None, teacher: str | None) -> list[tuple[str, str]]:
    """The Training table, from the run record."""
    args = training["args"]
    # What the run trained on, as it recorded it (`describe_training_data`); an older record does not say.
    data = training.get("data") or {}
    num_train_images = data.get("num_train_images")
    data_used = ", ".join(filter(None, [data.get("data_set"),
                                        num_train_images and f"{num_train_images:,} training images"]))
    epochs = f" ({training['images_seen'] / num_train_images:.1f} epochs)" if num_train_images else ""
    if "cond_drop_prob" in args:
        objective = ("label dropout (for guidance)", f"{args['cond_drop_prob']:g}")
    else:
        objective = ("distillation", f"teacher {f'`{teacher}`' if teacher else 'not recorded'}, guidance "
                     f"{distilled['guidance_scale']:g}, {distilled['num_ddim_timesteps']} skipping steps, "
                     f"{args['loss_type']} loss, target decay {args['target_decay']:g}")
    return [
        ("data", f"{f'{data_used},' if data_used else 'not recorded;'} pixels in [−1, 1]"),
        ("steps", f"{training['global_step']:,} optimiser steps, {training['images_seen']:,} images{epochs}"),
        ("batch, optimiser", f"{args['train_batch_size']} × {training['num_processes']} process(es); AdamW, lr "
                             f"{args['learning_rate']:g}, {args['lr_scheduler']} schedule, {args['lr_warmup_steps']} "
                             "warm-up steps"),
        objective,
        ("EMA", "max decay " + format(args["ema_max_decay"], "g") if args["use_ema"] else "off"),
        ("precision", training["mixed_precision"]),
        ("hardware", training.get("hardware", "not recorded")),
        ("wall time", f"{training['train_minutes']:.0f} minutes of {'distillation' if distilled else 'training'}"),
        ("command", f"`{' '.join(redact_command(training['command'].split()))}`"),
    ]


def sweep_fields(model_dir: Path, sweep: dict | None, guidance: str, chosen_elsewhere: bool = False) -> dict:
    """The guidance sweep's table, and the rule that chose the stored default, as the sweep recorded it
    (`evaluate.py --store_default`), unless the default was chosen from the guidance search (`chosen_elsewhere`)."""
    if sweep is None:
        return {"sweep_table": None}
    rule = sweep.get("default_rule")
    chosen_by = " The model's default was chosen from the wider search below." if chosen_elsewhere else "" \
        if rule is None else (
        f" The model's default, {guidance}, is the setting with the smallest Fréchet ratio among those whose "
        f"accuracy is at least {100 * rule['min_accuracy']:g}% and whose worst digit is at least "
        f"{100 * rule['min_worst_digit_accuracy']:g}% (n ≥ {rule['min_samples']:,})."
    )
    return {
        "sweep_table": "\n".join([*EVALUATION_HEADER, *evaluation_rows(sweep)]),
        "chosen_by": chosen_by,
        "guidance_figure": FIGURES["images/guidance.png"] if (model_dir / "images/guidance.png").is_file() else None,
    }


def guidance_search_fields(table: dict | None) -> dict:
    """The guidance search's table (benchmarks/guidance.py), its n, and the rule that chose the default from it."""
    if table is None:
        return {"guidance_search_table": None}
    rule = table.get("default", {}).get("rule")
    chosen = "" if rule is None else (
        " The row in bold is the model's default: the smallest Fréchet ratio among the rows whose accuracy is at least "
        f"{100 * rule['min_accuracy']:g}% and whose worst digit is at least {100 * rule['min_worst_digit_accuracy']:g}%, "
        "among the guiders whose step depends on that step alone (a distilled student learns the guided prediction at "
        "random timesteps).")
    return {"guidance_search_table": guidance_table(table), "guidance_search_n": f"{table['num_samples']:,}",
            "guidance_search_rule": chosen}


def student_fields(model_dir: Path, distilled: dict, teacher: str | None) -> dict:
    """What a distilled student's card says of its distillation, and its teacher's results for comparison."""
    teacher_results = [read_json(path) for path in sorted(model_dir.glob(TEACHER_RESULTS))]
    guidance_scale, steps = distilled["guidance_scale"], distilled["num_ddim_timesteps"]
    return {
        "baked_in": "guidance" if guidance_scale is None else f"guidance at scale {guidance_scale:g}",
        "distilled_steps": f", up to the {steps} steps of the schedule it was distilled on" if steps else "",
        "teacher_named": f"`{teacher}`" if teacher else "a teacher, not recorded in this folder",
        "teacher_step": " ".join(filter(None, [distilled["teacher_solver"], "step"])),
        "teacher_guidance": "" if guidance_scale is None else f" {guidance_scale:g}",
        "teacher_aside": f", `{teacher}`," if teacher else "",
        "teacher_table": "\n".join([*EVALUATION_HEADER, *(row for results in teacher_results
                                                          for row in evaluation_rows(results))])
        if teacher_results else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="card", description="Render the model card of a trained pipeline.")
    parser.add_argument("--model_dir", default="pretrained/mnist-ddpm")
    parser.add_argument("--repo_id", default="org/mnist-ddpm")
    parser.add_argument("--source_url", default=None, help="The package's Git repository (default: setup.py's url).")
    parser.add_argument("--output", default="model_card.md")
    args = parser.parse_args(argv)
    Path(args.output).write_text(render_model_card(args.model_dir, args.repo_id, args.source_url))
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
