"""The guidance search's table (benchmarks/guidance.py): evaluations side by side, the rule, and the stored winner."""

import json

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler
from diffusers.guiders import AdaptiveProjectedGuidance

from mnist_diffusion import ClassConditionedUNet, MNISTDDPMPipeline
from mnist_diffusion.lab.evaluation import SetupError
from mnist_diffusion.lab.evaluation.guidance_search import build_table, choose_from_table, store_guidance
from mnist_diffusion.lab.guiders import guider_record, step_dependence
from mnist_diffusion.lab.reporting import GUIDANCE_SEARCH_RESULTS, guidance_table
from mnist_diffusion.lab.samplers import sampler_of
from mnist_diffusion.lab.shipped import SHIPPED_MODEL

from .conftest import ROOT, TINY_UNET, documentation

APG = {"class_name": "AdaptiveProjectedGuidance", "guidance_scale": 1.4, "eta": 0.0,
       "adaptive_projected_guidance_momentum": None}


def run(scale, accuracy, worst, ratio, seconds=100.0, sampler="dpm"):
    return {"sampler": sampler, "num_inference_steps": 20, "guidance_scale": scale, "guidance_interval": None,
            "unet_dtype": "float32", "accuracy": accuracy, "worst_digit": "7", "per_digit": {"7": {"accuracy": worst}},
            "frechet_distance": 0.07 * ratio, "frechet_ratio_to_real_floor": ratio, "generation_seconds": seconds}


def evaluation(*runs, n=5000, seed=0, **header):
    return {"model_dir": "m", "model_sha256": "a", "classifier_dir": "c", "classifier_sha256": "c1", "num_samples": n,
            "samples_per_digit": n // 10, "seed": seed, "real_floor_frechet_distance": 0.07, **header,
            "runs": list(runs)}


def test_step_dependence_names_momentum_and_zeroed_first_steps_and_unknown_guiders():
    assert step_dependence(None) is None and step_dependence(APG) is None
    assert "momentum" in step_dependence({**APG, "adaptive_projected_guidance_momentum": -0.5})
    zero_star = {"class_name": "ClassifierFreeZeroStarGuidance", "zero_init_steps": 1}
    assert "first 1 step" in step_dependence(zero_star)
    assert step_dependence({**zero_star, "zero_init_steps": 0}) is None
    assert "not among" in step_dependence({"class_name": "SkipLayerGuidance"})
    assert "start and stop" in step_dependence({**APG, "start": 0.2})


def test_the_table_puts_every_run_side_by_side_with_its_cost_against_todays_cfg_at_the_same_steps():
    table = build_table({
        "CFG": evaluation(run(1.2, 0.99, 0.97, 0.9, 100.0), run(1.4, 0.997, 0.99, 1.4, 120.0),
                          run(1.2, 0.996, 0.99, 1.3, 104.0, sampler="dpm-sde")),
        "AG": evaluation(run(2.0, 0.996, 0.992, 1.1, 55.0), guidance_unet="guides/g", model_sha256="b"),
        "APG": evaluation(run(1.6, 0.997, 0.995, 1.0, 110.0), guider={**APG, "adaptive_projected_guidance_momentum": -0.5}),
    })
    kinds = [(row["source"], row["kind"], row["sampler"]) for row in table["rows"]]
    assert kinds == [("CFG", "CFG", "dpm"), ("CFG", "CFG", "dpm"), ("CFG", "CFG", "dpm-sde"),
                     ("AG", "autoguidance", "dpm"), ("APG", "AdaptiveProjectedGuidance", "dpm")]
    assert [row["cost_vs_cfg"] for row in table["rows"]] == pytest.approx([100 / 110, 120 / 110, 104 / 110, 0.5, 1.0])
    assert table["sources"]["AG"]["guidance_unet"] == "guides/g" and table["rows"][3]["worst_digit_accuracy"] == 0.992
    # APG with momentum has the lowest ratio of the legible rows, but depends on the step: autoguidance wins.
    chosen = choose_from_table(table)
    assert chosen["source"] == "AG" and table["default"]["row"] == 3
    rendered = guidance_table(table).splitlines()
    assert len(rendered) == 2 + 5 and "**the stored default**" in rendered[5] and "step-dependent" in rendered[6]
    assert "| AG | dpm 20 | 2 | every step | 99.60% | 7 (99.2%) | 1.10× | 0.50× |" in rendered[5]


def test_evaluations_measured_differently_cannot_share_a_table():
    with pytest.raises(SetupError, match="B's num_samples is 1000, A's 5000.*B's seed is 3"):
        build_table({"A": evaluation(run(1.4, 0.997, 0.99, 1.4)), "B": evaluation(run(1.4, 0.997, 0.99, 1.4), n=1000,
                                                                                   seed=3)})
    with pytest.raises(ValueError, match="n = 1000"):
        choose_from_table(build_table({"A": evaluation(run(1.4, 0.997, 0.99, 1.4), n=1000)}))


def test_the_stored_winner_brings_its_guider_and_guidance_unet_and_a_cfg_winner_removes_them(tmp_path, tiny_pipe):
    tiny_pipe.save_pretrained(tmp_path / "model")
    torch.manual_seed(1)
    ClassConditionedUNet(**TINY_UNET).save_pretrained(tmp_path / "guide")
    guider = guider_record(AdaptiveProjectedGuidance(guidance_scale=1.8, eta=0.0))
    table = build_table({"CFG": evaluation(run(1.4, 0.997, 0.99, 1.4, sampler="ddpm")),
                         "AG+APG": evaluation(run(1.8, 0.997, 0.995, 1.0), guider=guider,
                                              guidance_unet=str(tmp_path / "guide"))})
    store_guidance(tmp_path / "model", table, choose_from_table(table))
    pipe = MNISTDDPMPipeline.from_pretrained(tmp_path / "model")
    assert isinstance(pipe.guider, AdaptiveProjectedGuidance) and pipe.guider.eta == 0.0
    assert pipe.config.default_guidance_scale == 1.8
    for name, parameter in pipe.guidance_unet.state_dict().items():
        torch.testing.assert_close(parameter, ClassConditionedUNet.from_pretrained(tmp_path / "guide").state_dict()[name])
    assert not list((tmp_path / "model").glob("*.tmp")) and not list((tmp_path / "model").glob("*.old"))

    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler) and pipe.config.default_num_inference_steps == 20

    store_guidance(tmp_path / "model", table, table["rows"][0])
    index = json.loads((tmp_path / "model" / "model_index.json").read_text())
    assert "guider" not in index and "guidance_unet" not in index and index["default_guidance_scale"] == 1.4
    assert sorted(path.name for path in (tmp_path / "model").iterdir()) == ["model_index.json", "scheduler", "unet"]
    pipe = MNISTDDPMPipeline.from_pretrained(tmp_path / "model")
    assert pipe.guider is None and pipe.guidance_unet is None


def test_a_winning_sampler_becomes_the_pipelines_own_on_the_same_noise_schedule(tmp_path, tiny_pipe):
    tiny_pipe.save_pretrained(tmp_path / "model")
    before = MNISTDDPMPipeline.from_pretrained(tmp_path / "model")
    table = build_table({"CFG": evaluation(run(1.3, 0.997, 0.992, 1.2, sampler="dpm-sde"), run(1.4, 0.997, 0.99, 1.4))})
    store_guidance(tmp_path / "model", table, choose_from_table(table))
    pipe = MNISTDDPMPipeline.from_pretrained(tmp_path / "model")
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    assert pipe.scheduler.config.algorithm_type == "sde-dpmsolver++"
    assert pipe.resolve_defaults() == (20, 1.3, None)
    torch.testing.assert_close(pipe.scheduler.alphas_cumprod, before.scheduler.alphas_cumprod, atol=0, rtol=0)
    assert pipe.scheduler.config.clip_sample == before.scheduler.config.clip_sample  # the DDPM's keys stay
    calls = []
    pipe.unet.register_forward_pre_hook(lambda *args: calls.append(1))
    pipe(labels=[3], generator=torch.Generator().manual_seed(0))
    assert len(calls) == 20
    # Storing the DDPM's full chain again restores the DDPM and its fallback of every step.
    ddpm = build_table({"CFG": evaluation({**run(1.4, 0.998, 0.995, 1.3, sampler="ddpm"), "num_inference_steps": 1000})})
    store_guidance(tmp_path / "model", ddpm, choose_from_table(ddpm))
    pipe = MNISTDDPMPipeline.from_pretrained(tmp_path / "model")
    assert type(pipe.scheduler).__name__ == "MNISTDDPMScheduler" and pipe.resolve_defaults() == (1000, 1.4, None)


def test_an_evaluation_of_a_pipeline_with_a_guider_records_the_guider(tmp_path, tiny_pipe, tiny_model_and_classifier,
                                                                     synthetic_mnist):
    from mnist_diffusion.lab.evaluation import evaluate

    _, classifier_dir = tiny_model_and_classifier
    tiny_pipe.guider = AdaptiveProjectedGuidance(guidance_scale=2.0, eta=0.0)
    tiny_pipe.save_pretrained(tmp_path / "guided")
    results = evaluate(str(tmp_path / "guided"), str(classifier_dir), str(synthetic_mnist), ["dpm"], [None], 2,
                       num_inference_steps=2, batch_size=20)
    assert results["guider"] == guider_record(tiny_pipe.guider) and results["guider"]["eta"] == 0.0
    assert results["runs"][0]["guidance_scale"] == 2.0  # the guider's scale is the call default


def test_the_card_shows_the_search_table_when_the_model_folder_holds_it(tmp_path, tiny_pipe):
    from mnist_diffusion.lab.card import render_model_card

    tiny_pipe.save_pretrained(tmp_path / "model")
    assert "### Which guidance" not in render_model_card(tmp_path / "model")
    table = build_table({"CFG": evaluation(run(1.4, 0.997, 0.99, 1.4)),
                         "AG": evaluation(run(2.0, 0.996, 0.992, 1.1, 55.0), guidance_unet="g", model_sha256="b")})
    choose_from_table(table)
    (tmp_path / "model" / GUIDANCE_SEARCH_RESULTS).parent.mkdir()
    (tmp_path / "model" / GUIDANCE_SEARCH_RESULTS).write_text(json.dumps(table))
    card = render_model_card(tmp_path / "model")
    assert "### Which guidance" in card and "at n = 5,000 with the same noise" in card
    assert guidance_table(table) in card
    assert "The row in bold is the model's default: the smallest Fréchet ratio among the rows whose accuracy is at " \
           "least 99.5% and whose worst digit is at least 99%" in card


def test_side_by_side_timings_replace_the_evaluations_wall_times(tmp_path, tiny_pipe):
    from mnist_diffusion.lab.evaluation.guidance_search import apply_timings, time_settings

    tiny_pipe.save_pretrained(tmp_path / "model")
    torch.manual_seed(1)
    ClassConditionedUNet(**TINY_UNET).save_pretrained(tmp_path / "guide")
    cfg = evaluation(run(1.4, 0.997, 0.99, 1.4), run(1.2, 0.99, 0.98, 1.0), model_dir=str(tmp_path / "model"))
    for row in cfg["runs"]:
        row["num_inference_steps"] = 2
    autoguided = {**cfg, "guidance_unet": str(tmp_path / "guide"), "runs": cfg["runs"][:1]}
    table = build_table({"CFG": cfg, "AG": autoguided})
    timings = time_settings(table, batch_size=4, repeats=1)
    assert sorted(timings) == ["AG|dpm|2", "CFG|dpm|2"] and all(value > 0 for value in timings.values())
    apply_timings(table, {"AG|dpm|2": 0.3, "CFG|dpm|2": 0.2})
    assert [row["cost_vs_cfg"] for row in table["rows"]] == pytest.approx([1.0, 1.0, 1.5])
    assert "side by side" in table["timing"]


def test_the_documented_search_table_is_the_committed_one_and_the_shipped_model_holds_it():
    table = json.loads((ROOT / "benchmarks" / "guidance.json").read_text())
    assert guidance_table(table) in documentation(), "the guidance table in docs/ is out of date"
    assert json.loads((SHIPPED_MODEL / GUIDANCE_SEARCH_RESULTS).read_text()) == table
    chosen = table["rows"][table["default"]["row"]]
    index = json.loads((SHIPPED_MODEL / "model_index.json").read_text())
    assert (index["default_guidance_scale"], index["default_guidance_interval"]) == (chosen["guidance_scale"],
                                                                                     chosen["guidance_interval"])
    scheduler_config = json.loads((SHIPPED_MODEL / "scheduler" / "scheduler_config.json").read_text())
    assert sampler_of(scheduler_config) == chosen["sampler"]
