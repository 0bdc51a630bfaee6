import json
from pathlib import Path

import diffusers
import pytest
from huggingface_hub import ModelCard

from mnist_diffusion.lab.card import read_evaluations, render_model_card
from mnist_diffusion.lab.reporting import TEACHER_RESULTS, evaluation_rows, tables_by_n
from mnist_diffusion.lab.samplers import SAMPLER_NAMES, sampler_of
from mnist_diffusion.lab.shipped import SHIPPED_MODEL, SHIPPED_STUDENT

from .conftest import documentation


def run_result(sampler, steps, guidance, accuracy):
    return {"sampler": sampler, "num_inference_steps": steps, "guidance_scale": guidance, "accuracy": accuracy,
            "worst_digit": "8", "per_digit": {"8": {"accuracy": accuracy - 0.01, "correct": 1, "total": 1}},
            "frechet_distance": 1.234, "frechet_ratio_to_real_floor": 2.468}


def test_card_numbers_come_from_the_folder(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path)
    card = render_model_card(tmp_path, repo_id="someone/digits")
    parsed = ModelCard(card)
    assert parsed.data.library_name == "diffusers" and parsed.data.license == "apache-2.0"
    assert "Not evaluated yet." in card and "## Training" not in card  # no training_config.json: no section
    assert 'MNISTDDPMPipeline.from_pretrained("someone/digits")' in card and "trust_remote_code=True" in card
    num_parameters = tiny_pipe.unet.num_parameters()
    assert f"{num_parameters:,} parameters" in card

    (tmp_path / "training_config.json").write_text(json.dumps({
        "command": "scripts/train.py --max_train_steps 7", "global_step": 7, "images_seen": 896, "train_minutes": 1.5,
        "num_processes": 1, "mixed_precision": "bf16",
        "args": {"train_batch_size": 128, "learning_rate": 0.001, "lr_scheduler": "cosine", "lr_warmup_steps": 5,
                 "cond_drop_prob": 0.1, "use_ema": True, "ema_max_decay": 0.9995},
    }))
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "default.json").write_text(json.dumps({
        "samples_per_digit": 50, "num_samples": 500, "runs": [run_result("ddpm", 1000, 2.0, 0.9934)]}))
    card = render_model_card(tmp_path, repo_id="someone/digits")
    assert "| steps | 7 optimiser steps, 896 images |" in card  # no data set size recorded: no epochs
    assert "| ddpm | 1000 | 2 | all | 50 | 99.34% | 8 (98.3%) | 1.23 | 2.47× |" in card
    results = ModelCard(card).data.eval_results
    assert [(r.metric_type, r.metric_value) for r in results] == [("accuracy", 0.9934), ("frechet_ratio", 2.468)]

    # A guidance sweep: its own table, and its run at the default guidance scale (1 here) is the fast row.
    (tmp_path / "evaluation" / "guidance_sweep.json").write_text(json.dumps({
        "samples_per_digit": 500, "num_samples": 5000,
        "runs": [run_result("dpm", 20, 1.0, 0.975), run_result("dpm", 20, 3.0, 0.996),
                 {**run_result("dpm", 20, 3.0, 0.998), "guidance_interval": [82, 579]}]}))
    card = render_model_card(tmp_path, repo_id="someone/digits")
    assert "### Guidance scale" in card and "| dpm | 20 | 3 | all | 500 | 99.60% |" in card
    assert "| dpm | 20 | 3 | 82 ≤ t ≤ 579 | 500 | 99.80% |" in card and "| dpm | 20 | 1 | none | 500 |" in card
    results = ModelCard(card).data.eval_results
    assert [r.metric_value for r in results] == [0.9934, 2.468, 0.975, 2.468]
    assert "dpm, 20 steps, guidance 1, n=5000" in results[2].metric_name
    # Which rule chose the default is what the sweep recorded (`evaluate.py --store_default`), never assumed.
    assert "is the setting with the smallest Fréchet ratio" not in card
    sweep = json.loads((tmp_path / "evaluation" / "guidance_sweep.json").read_text())
    rule = {"min_accuracy": 0.99, "min_worst_digit_accuracy": 0.98, "min_samples": 5000}
    (tmp_path / "evaluation" / "guidance_sweep.json").write_text(json.dumps({**sweep, "default_rule": rule}))
    assert ("is the setting with the smallest Fréchet ratio among those whose accuracy is at least 99% and whose worst "
            "digit is at least 98% (n ≥ 5,000).") in render_model_card(tmp_path, repo_id="someone/digits")


SHIPPED = [(SHIPPED_MODEL, "org/mnist-ddpm", "model_card.md"), (SHIPPED_STUDENT, "org/mnist-lcm", "model_card_lcm.md")]


@pytest.mark.parametrize("folder, repo_id, card_file", SHIPPED, ids=["ddpm", "lcm"])
def test_the_repository_cards_are_the_renderings_of_the_shipped_models(folder, repo_id, card_file):
    if not (folder / "model_index.json").is_file():
        pytest.skip(f"no shipped model at {folder}")
    card = Path(__file__).resolve().parents[1] / card_file
    assert card.read_text() == render_model_card(folder, repo_id), (
        f"{card_file} is out of date: python -m mnist_diffusion.lab.card --model_dir {folder.relative_to(folder.parents[1])} "
        f"--repo_id {repo_id} --output {card_file}"
    )


@pytest.mark.parametrize("folder", [SHIPPED_MODEL, SHIPPED_STUDENT], ids=["ddpm", "lcm"])
def test_the_documented_evaluation_tables_are_the_shipped_results(folder):
    if not (folder / "model_index.json").is_file():
        pytest.skip(f"no shipped model at {folder}")
    evaluations, sweep = read_evaluations(folder)
    if not evaluations:
        pytest.skip(f"{folder} has no evaluation results")
    teacher = [json.loads(path.read_text()) for path in sorted(folder.glob(TEACHER_RESULTS))]
    docs = documentation()
    for results in [*evaluations, *([sweep] if sweep else []), *teacher]:
        for row in evaluation_rows(results):
            assert row in docs, f"neither README.md nor docs/ shows the measured row {row}"


def test_the_default_results_are_the_shipped_defaults_and_the_readme_headline_quotes_them():
    # default.json is "the pipeline's defaults": its run must use the stored guidance and steps, and the caption under
    # the README's picture quotes its accuracy.
    if not (SHIPPED_MODEL / "evaluation" / "default.json").is_file():
        pytest.skip(f"no default evaluation in {SHIPPED_MODEL}")
    config = json.loads((SHIPPED_MODEL / "model_index.json").read_text())
    full_chain = json.loads((SHIPPED_MODEL / "scheduler" / "scheduler_config.json").read_text())["num_train_timesteps"]
    (run,) = json.loads((SHIPPED_MODEL / "evaluation" / "default.json").read_text())["runs"]
    scheduler_config = json.loads((SHIPPED_MODEL / "scheduler" / "scheduler_config.json").read_text())
    assert run["sampler"] == sampler_of(scheduler_config)  # the model's own sampler
    assert run["num_inference_steps"] == (config["default_num_inference_steps"] or full_chain)
    assert run["guidance_scale"] == config["default_guidance_scale"]
    assert run["guidance_interval"] == config["default_guidance_interval"]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    headline = " ".join(readme.split("![The reverse process")[0].split())  # line breaks may fall anywhere
    assert (f"{100 * run['accuracy']:.2f}% of the shipped model's digits with its default settings (the "
            f"{run['num_inference_steps']}-step {SAMPLER_NAMES[run['sampler']]} at guidance "
            f"{run['guidance_scale']:g})") in headline


def save_student(unet, folder, **config):
    """A tiny consistency-distilled student as `scripts/distill.py` saves it: diffusers' LCMScheduler, 4 steps."""
    from diffusers import LCMScheduler

    from mnist_diffusion import MNISTDDPMPipeline

    MNISTDDPMPipeline(unet, LCMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                                         original_inference_steps=50),
                      default_guidance_scale=1.0, default_num_inference_steps=4, **config).save_pretrained(folder)


def student_record(**distilled_from):
    """A student's training_config.json (without `data`, as distill.py wrote it before recording its data set)."""
    return {
        "command": "scripts/distill.py --max_train_minutes 60", "global_step": 9, "images_seen": 1152,
        "train_minutes": 61.4, "num_processes": 1, "mixed_precision": "bf16",
        "args": {"train_batch_size": 128, "learning_rate": 1e-4, "lr_scheduler": "constant_with_warmup",
                 "lr_warmup_steps": 100, "use_ema": True, "ema_max_decay": 0.999, "loss_type": "huber",
                 "target_decay": 0.95},
        "distilled_from": {"teacher": "pretrained/mnist-ddpm", "teacher_solver": "DDIM", "guidance_scale": 1.4,
                           "num_ddim_timesteps": 50, **distilled_from},
    }


def test_a_distilled_folder_gets_a_card_of_its_own(tiny_unet, tmp_path):
    save_student(tiny_unet, tmp_path)
    (tmp_path / "training_config.json").write_text(json.dumps(student_record()))
    (tmp_path / "evaluation").mkdir()
    for name, sampler, steps in (("default.json", "lcm", 4), ("teacher_dpm.json", "dpm", 20)):
        (tmp_path / "evaluation" / name).write_text(json.dumps({
            "samples_per_digit": 500, "num_samples": 5000, "runs": [run_result(sampler, steps, 1.0, 0.99)]}))
    card = render_model_card(tmp_path, repo_id="someone/mnist-lcm")
    assert "# mnist-lcm: a digit in 4 network calls" in card
    assert "guidance at scale 1.4 is baked in" in card and "`LCMScheduler`" in card
    assert "Defaults stored with the model: 4 denoising steps (LCM), guidance scale 1." in card
    # The scheduler is diffusers'; the pipeline's code is its file and the checks it imports.
    assert "read `pipeline_mnist_ddpm.py`, `pipeline_mnist_ddpm_checks.py` and `unet/unet_mnist.py` first" in card
    assert "| wall time | 61 minutes of distillation |" in card
    assert "teacher `mnist-ddpm`, guidance 1.4, 50 skipping steps, huber loss, target decay 0.95" in card
    assert "| lcm | 4 | 1 | none | 500 | 99.00% |" in card and "| dpm | 20 | 1 | none | 500 | 99.00% |" in card
    assert "DPMSolverMultistepScheduler" not in card  # no solver swap: the student samples with its own scheduler


@pytest.mark.parametrize("distilled_guidance_scale", [1.5, None], ids=["distilled-guidance", "lcm-scheduler"])
def test_a_student_without_a_run_record_still_gets_a_student_card(tiny_unet, tmp_path, distilled_guidance_scale):
    # A student re-saved with `save_pretrained` has no training_config.json: its pipeline config
    # (`distilled_guidance_scale`) or its scheduler (LCMScheduler) tells what it is.
    save_student(tiny_unet, tmp_path, distilled_guidance_scale=distilled_guidance_scale)
    assert not (tmp_path / "training_config.json").exists()
    card = render_model_card(tmp_path, repo_id="someone/mnist-lcm")
    assert "# mnist-lcm: a digit in 4 network calls" in card and "consistency distillation" in card
    assert "L_simple" not in card and "swap in a diffusers solver" not in card and "DPMSolver" not in card
    assert "up to the 50 steps of the schedule it was distilled on" in card  # the scheduler's original_inference_steps
    assert "teacher, not recorded in this folder" in card and "mnist-ddpm" not in card  # no teacher is invented
    if distilled_guidance_scale is not None:
        assert "guidance at scale 1.5 is baked in" in card and "classifier-free guidance 1.5" in card
    else:  # the scale is in neither config: the card names none
        assert "guidance is baked in" in card and "guidance at scale" not in card


def test_a_students_card_names_its_teacher_as_a_hub_visitor_can_find_it(tiny_unet, tmp_path):
    # The teacher's local path (as typed to distill.py) means nothing on the Hub: the folder's name, or the repo id.
    save_student(tiny_unet, tmp_path, distilled_guidance_scale=1.4)
    (tmp_path / "evaluation").mkdir()
    for name, sampler, steps in (("default.json", "lcm", 4), ("teacher_dpm.json", "dpm", 20)):
        (tmp_path / "evaluation" / name).write_text(json.dumps({
            "samples_per_digit": 500, "num_samples": 5000, "runs": [run_result(sampler, steps, 1.0, 0.99)]}))
    (tmp_path / "training_config.json").write_text(json.dumps(student_record(teacher="/work/runs/my-teacher")))
    card = render_model_card(tmp_path, repo_id="someone/mnist-lcm")
    assert "/work/runs" not in card
    assert "consistency distillation of `my-teacher`" in card and "| distillation | teacher `my-teacher`," in card
    assert "The teacher, `my-teacher`, at the guidance" in card

    (tmp_path / "training_config.json").write_text(json.dumps(student_record(
        teacher="someone/mnist-ddpm", teacher_repo_id="someone/mnist-ddpm")))
    card = render_model_card(tmp_path, repo_id="someone/mnist-lcm")
    assert "consistency distillation of `someone/mnist-ddpm`" in card
    assert "| distillation | teacher `someone/mnist-ddpm`," in card and "The teacher, `someone/mnist-ddpm`," in card


def test_the_training_table_says_what_data_the_run_used(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path)
    record = {
        "command": "scripts/train.py --data_dir x", "global_step": 7, "images_seen": 896, "train_minutes": 1.5,
        "num_processes": 1, "mixed_precision": "no",
        "args": {"train_batch_size": 128, "learning_rate": 0.001, "lr_scheduler": "cosine", "lr_warmup_steps": 5,
                 "cond_drop_prob": 0.1, "use_ema": False},
    }
    # A generated data set of 320 images (as mnist_diffusion/lab/synthetic_mnist.py writes), recorded by
    # describe_training_data.
    (tmp_path / "training_config.json").write_text(json.dumps({
        **record, "data": {"data_set": "the data set declared in x/checksums.json", "num_train_images": 320}}))
    card = render_model_card(tmp_path)
    assert "| data | the data set declared in x/checksums.json, 320 training images, pixels in [−1, 1] |" in card
    assert "| steps | 7 optimiser steps, 896 images (2.8 epochs) |" in card
    assert "60,000" not in card and "MNIST, 60" not in card

    # A record written before runs recorded their data: the card does not guess.
    (tmp_path / "training_config.json").write_text(json.dumps(record))
    card = render_model_card(tmp_path)
    assert "| data | not recorded; pixels in [−1, 1] |" in card and "60,000" not in card
    assert "| steps | 7 optimiser steps, 896 images |" in card  # no epochs without the data set's size


TOKEN = "hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ01234567"


def test_the_card_never_shows_a_token_recorded_in_the_folder(tiny_pipe, tmp_path):
    # A training_config.json written before train.py redacted its command line, with a token in each form.
    tiny_pipe.save_pretrained(tmp_path)
    (tmp_path / "training_config.json").write_text(json.dumps({
        "command": f"scripts/train.py --hub_token {TOKEN} --token=not-token-shaped --hub_token also-secret --seed 3",
        "global_step": 7, "images_seen": 896, "train_minutes": 1.5, "num_processes": 1, "mixed_precision": "no",
        "hardware": f"a laptop {TOKEN}",
        "args": {"train_batch_size": 128, "learning_rate": 0.001, "lr_scheduler": "cosine", "lr_warmup_steps": 5,
                 "cond_drop_prob": 0.1, "use_ema": True, "ema_max_decay": 0.9995},
    }))
    card = render_model_card(tmp_path)
    command = "scripts/train.py --hub_token <redacted> --token=<redacted> --hub_token <redacted> --seed 3"
    assert f"| command | `{command}` |" in card
    assert TOKEN not in card and "not-token-shaped" not in card and "also-secret" not in card
    assert "| hardware | a laptop <redacted> |" in card


def test_the_card_installs_from_the_source_location_and_leads_with_remote_code(tiny_pipe, tmp_path, monkeypatch):
    tiny_pipe.save_pretrained(tmp_path)
    monkeypatch.setattr("mnist_diffusion.lab.card.package_source_url", lambda: None)  # setup.py without a url
    card = render_model_card(tmp_path, repo_id="someone/digits")
    assert "pypi.org" not in card and "pip install mnist-diffusion" not in card  # the package is not on PyPI
    usage = card[card.index("## Usage"):card.index("## Model")]
    remote_code = usage.index('DiffusionPipeline.from_pretrained("someone/digits", trust_remote_code=True)')
    assert remote_code < usage.index("from mnist_diffusion import MNISTDDPMPipeline")  # the package-free route first
    assert f'pip install "diffusers=={diffusers.__version__}"' in usage  # the version that saved the folder
    assert "installed from a checkout of its source (`pip install -e .`)" in usage and "git+" not in usage

    card = render_model_card(tmp_path, repo_id="someone/digits", source_url="https://example.org/me/mnist-diffusion")
    assert 'pip install "git+https://example.org/me/mnist-diffusion"' in card
    assert "Made with [mnist-diffusion](https://example.org/me/mnist-diffusion)." in card

    # By default, the url of setup.py, as the installed package's metadata records it.
    monkeypatch.setattr("mnist_diffusion.lab.card.package_source_url", lambda: "https://example.org/default")
    assert 'pip install "git+https://example.org/default"' in render_model_card(tmp_path)
    with pytest.raises(ValueError, match="'mnist-diffusion'"):
        render_model_card(tmp_path, source_url="mnist-diffusion")


def test_frechet_ratios_at_different_n_are_never_in_one_table():
    small = {"num_samples": 1000, "samples_per_digit": 100, "real_floor_frechet_distance": 0.267,
             "runs": [run_result("ddpm", 1000, 1.4, 0.998), run_result("dpm", 20, 1.4, 0.997)]}
    large = {"num_samples": 5000, "samples_per_digit": 500, "real_floor_frechet_distance": 0.073,
             "runs": [run_result("dpm", 20, 1.4, 0.996)]}
    text = "\n".join(tables_by_n([large, small]))
    tables = text.split("At n = ")[1:]
    assert [table.split(":")[0] for table in tables] == ["1,000 (100 per digit), real floor 0.267",
                                                        "5,000 (500 per digit), real floor 0.073"]
    assert all(row in tables[0] for row in evaluation_rows(small)) and evaluation_rows(large)[0] in tables[1]
    assert [table.count("| sampler |") for table in tables] == [1, 1]  # one header per n, not one per results file


def test_the_readme_quality_table_is_the_shipped_results_at_one_n():
    # The front door's one quality table: the teacher's default sampling and fast solver, and the student in float32,
    # all at the same n, so that their Fréchet ratios compare.
    if not (SHIPPED_STUDENT / "evaluation" / "bf16.json").is_file():
        pytest.skip(f"no shipped evaluations in {SHIPPED_MODEL} and {SHIPPED_STUDENT}")
    default, same_n = (json.loads((SHIPPED_MODEL / "evaluation" / name).read_text())
                       for name in ("default.json", "fast_at_default_n.json"))
    student = json.loads((SHIPPED_STUDENT / "evaluation" / "bf16.json").read_text())
    student = {**student, "runs": [run for run in student["runs"] if run["unet_dtype"] == "float32"]}
    assert default["num_samples"] == same_n["num_samples"] == student["num_samples"]
    rows = [*evaluation_rows(default), *evaluation_rows(same_n), *evaluation_rows(student)]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "\n".join(rows) in readme, "README's quality table is out of date"


def test_the_card_shows_the_classification_accuracy_score_when_measured(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path)
    assert "### The digits as training data" not in render_model_card(tmp_path, repo_id="someone/digits")
    (tmp_path / "evaluation").mkdir()
    runs = [{**run_result("dpm", 20, w, 0.99), "cas": {"accuracy": a, "train_digits": 5000, "wall_minutes": 1.0}}
            for w, a in ((1.4, 0.9712), (1.0, 0.9855))]
    (tmp_path / "evaluation" / "cas.json").write_text(json.dumps({
        "samples_per_digit": 500, "num_samples": 5000, "runs": runs,
        "cas_real": {"accuracy": 0.9901, "train_digits": 5000, "wall_minutes": 1.0}}))
    card = render_model_card(tmp_path, repo_id="someone/digits")
    assert "### The digits as training data" in card
    assert "| generated | dpm | 20 | 1.4 | 5,000 | 97.12% |" in card and "| generated | dpm | 20 | 1 | 5,000 | 98.55% |" in card
    assert "| real training digits | | | | 5,000 | 99.01% |" in card
    assert "## Limitations" in card.split("99.01%")[1]


def test_the_card_shows_the_likelihood_and_zero_shot_tables_when_measured(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path)
    assert "### Likelihood and zero-shot classification" not in render_model_card(tmp_path, repo_id="someone/digits")
    bound = {"bits_per_dim": {"mean": 1.234, "standard_error": 0.011, "n": 1000}, "prior_bits_per_dim": 3e-5,
             "diffusion_bits_per_dim": 0.456, "decoder_bits_per_dim": 0.778}
    accuracy = [{"weighting": w, "num_trials": n, "accuracy": a, "standard_error": 0.005, "n": 400}
                for w, a in (("uniform", 0.95), ("bound", 0.9)) for n in (10, 20)]
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "likelihood.json").write_text(json.dumps({
        "bound": {"num_images": 1000, "conditional": bound, "unconditional": bound},
        "zero_shot": {"num_images": 400, "accuracy": accuracy,
                      "timing": [{"num_trials": 10, "seconds_per_image": 0.51}, {"num_trials": 20, "seconds_per_image": 1.02}]}}))
    card = render_model_card(tmp_path, repo_id="someone/digits")
    assert "| this DDPM, conditional on the true label | 1.234 ± 0.011 | 0.456 | 0.778 | 1,000 test digits |" in card
    assert "| 20 | 200 | 95.00% ± 0.50 | 90.00% ± 0.50 | 1.02 |" in card and "on 400 random test digits" in card


def test_the_card_names_the_tutorial_by_an_address_that_works_on_the_hub(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path)
    card = render_model_card(tmp_path, source_url="https://github.com/org/mnist-diffusion")
    assert "[`docs/tutorial.ipynb`](https://github.com/org/mnist-diffusion/blob/main/docs/tutorial.ipynb)" in card
    assert "](docs/tutorial.ipynb)" not in card  # relative to the model repo, where the notebook is not
    assert "`docs/tutorial.ipynb` in the mnist-diffusion source" in render_model_card(tmp_path)
