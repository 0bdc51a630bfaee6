"""`scripts/generate.py` (`mnist_diffusion/lab/generate.py`): bad options are usage errors, good ones write the grid."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from mnist_diffusion.lab.arguments import MAX_SEED, check_number
from mnist_diffusion.lab.generate import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_model(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "model")
    return str(tmp_path / "model")


@pytest.mark.parametrize(
    "options, message",
    [
        (["--scheduler", "dpm", "--num_inference_steps", "-3"],
         "--num_inference_steps: expected an integer ≥ 1, got -3"),
        (["--num_inference_steps", "0"], "--num_inference_steps: expected an integer ≥ 1, got 0"),
        (["--num_inference_steps", "2.5"], "--num_inference_steps: expected an integer ≥ 1, got '2.5'"),
        (["--guidance_scale", "inf"], "--guidance_scale: expected a finite number ≥ 0, got inf"),
        (["--guidance_scale", "nan"], "--guidance_scale: expected a finite number ≥ 0, got nan"),
        (["--guidance_scale", "-1"], "--guidance_scale: expected a finite number ≥ 0, got -1.0"),
        (["--scale", "0"], "--scale: expected an integer ≥ 1, got 0"),
        (["--seed", str(2**70)], f"--seed: expected an integer from 0 to {MAX_SEED}, got {2**70}"),
        (["--seed", "-1"], f"--seed: expected an integer from 0 to {MAX_SEED}, got -1"),
        (["--labels", "3", "12"], "--labels: expected an integer from 0 to 9, got 12"),
        (["--num_images_per_label", "0"], "--num_images_per_label: expected an integer ≥ 1, got 0"),
        (["--output", "digits"], "--output: expected a file name ending in .png,"),
        (["--output", "digits.txt"], "got 'digits.txt'"),
    ],
)
def test_bad_options_are_usage_errors_that_name_the_value(options, message, tmp_path, capsys):
    output = tmp_path / "out.png"
    with pytest.raises(SystemExit) as exit_info:
        main(["--output", str(output), *options])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # refused before any model was loaded or file written


def test_a_value_only_the_model_can_check_is_a_usage_error_too(tiny_model, tmp_path, capsys):
    # The tiny model was trained with T = 1000 timesteps; the DDPM chain cannot take more steps than that.
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", tiny_model, "--num_inference_steps", "2000", "--output", str(tmp_path / "out.png")])
    assert exit_info.value.code == 2
    assert "2000" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_generate_writes_one_row_per_digit_at_the_asked_scale(tiny_model, tmp_path, capsys):
    output = tmp_path / "grid" / "digits.webp"
    main(["--model", tiny_model, "--labels", "3", "7", "--num_images_per_label", "2", "--scheduler", "dpm",
          "--num_inference_steps", "2", "--guidance_scale", "0", "--scale", "2", "--output", str(output)])
    assert capsys.readouterr().out.strip() == f"Wrote {output}"
    with Image.open(output) as image:
        assert image.format == "WEBP"
        # make_grid: 2 px padding around 28 px digits and a 12 px label margin for rows of several digits, × scale.
        assert image.size == (2 * (12 + 2 + 2 * 30), 2 * (2 + 2 * 30))


def test_check_number_accepts_the_range_and_refuses_everything_else():
    assert check_number(3, 1, integer=True) == 3 and check_number(4.0, 1, 8, integer=True) == 4
    assert check_number(0, 0) == 0.0 and isinstance(check_number(2, 0, 6), float)
    for value in (None, "3", True, 1.5, float("inf"), float("nan"), 0, 9):
        with pytest.raises(ValueError, match="expected an integer from 1 to 8, got"):
            check_number(value, 1, 8, integer=True)


def test_the_script_exits_2_with_the_message_and_no_traceback():
    process = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate.py"), "--scheduler", "dpm", "--num_inference_steps", "-3"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert process.returncode == 2
    assert "--num_inference_steps: expected an integer ≥ 1, got -3" in process.stderr
    assert "Traceback" not in process.stderr


def test_a_students_folder_samples_with_its_own_lcm_scheduler_and_stored_steps(tiny_unet, tmp_path, capsys,
                                                                               monkeypatch):
    from diffusers import LCMScheduler

    from mnist_diffusion import MNISTDDPMPipeline

    student = tmp_path / "mnist-lcm"
    MNISTDDPMPipeline(tiny_unet, LCMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear"),
                      default_guidance_scale=1.0, default_num_inference_steps=4).save_pretrained(student)
    seen = []
    original_call = MNISTDDPMPipeline.__call__
    monkeypatch.setattr(MNISTDDPMPipeline, "__call__", lambda pipe, **kwargs: (
        seen.append((type(pipe.scheduler).__name__, kwargs["num_inference_steps"], kwargs["guidance_scale"])),
        original_call(pipe, **kwargs))[1])
    main(["--model", str(student), "--labels", "7", "--output", str(tmp_path / "seven.png")])
    # No --scheduler: the folder's own, at its stored steps and guidance (None: the pipeline's defaults).
    assert seen == [("LCMScheduler", None, None)]
    pipe = MNISTDDPMPipeline.from_pretrained(student)
    assert pipe.resolve_defaults() == (4, 1.0, None)
    assert Image.open(tmp_path / "seven.png").size == (4 * 32, 4 * 32)


def test_a_model_that_is_not_a_pipeline_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "not-a-pipeline").mkdir()
    (tmp_path / "not-a-pipeline" / "notes.txt").write_text("hello")
    for model in (tmp_path / "missing", tmp_path / "not-a-pipeline"):
        with pytest.raises(SystemExit) as exit_info:
            main(["--model", str(model), "--output", str(tmp_path / "out.png")])
        assert exit_info.value.code == 2
        assert f"--model {model} cannot be loaded as a pipeline" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_guidance_on_a_distilled_student_is_a_usage_error(tiny_unet, tmp_path, capsys):
    from diffusers import LCMScheduler

    from mnist_diffusion import MNISTDDPMPipeline

    MNISTDDPMPipeline(unet=tiny_unet, scheduler=LCMScheduler(beta_start=1e-4, beta_end=0.02),
                      default_num_inference_steps=2, distilled_guidance_scale=1.4).save_pretrained(tmp_path / "student")
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tmp_path / "student"), "--guidance_scale", "3", "--output", str(tmp_path / "out.png")])
    assert exit_info.value.code == 2
    assert "must be 1 for this distilled student, got 3.0" in capsys.readouterr().err


def test_each_sampler_by_name_is_the_scheduler_it_names_and_switching_back_restores_it(tiny_pipe):
    from diffusers import DPMSolverMultistepScheduler

    from mnist_diffusion.lab.samplers import SAMPLERS, use_sampler

    def draw():
        return tiny_pipe(labels=[3], num_inference_steps=4, guidance_scale=1.5, output_type="pt",
                         generator=torch.Generator().manual_seed(0)).images

    assert use_sampler(tiny_pipe, "dpm") == 20
    ode = draw()
    assert use_sampler(tiny_pipe, "dpm-sde") == 20
    assert tiny_pipe.scheduler.config.algorithm_type == "sde-dpmsolver++"
    sde = draw()
    torch.testing.assert_close(draw(), sde, atol=0, rtol=0)  # stochastic, but by the call's generator
    assert (sde - ode).abs().max() > 1e-3
    use_sampler(tiny_pipe, "dpm")
    assert isinstance(tiny_pipe.scheduler, DPMSolverMultistepScheduler)
    torch.testing.assert_close(draw(), ode, atol=0, rtol=0)
    assert set(SAMPLERS) == {"ddpm", "ddim", "dpm", "dpm-sde", "lcm", "tcd"}
