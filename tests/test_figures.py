import json

import pytest
import torch
from PIL import Image

from mnist_diffusion.lab.evaluation import DEFAULT_RULE
from mnist_diffusion.lab.figures import (guidance_family, guidance_plot, reverse_animation, reverse_process, reverse_strip,
                                     sample_grid)


def test_sample_grid_has_one_row_per_digit(tiny_pipe):
    grid = sample_grid(tiny_pipe, images_per_digit=2, scale=1, num_inference_steps=2)
    assert grid.mode == "L" and grid.height == 10 * 30 + 2  # 28 px rows with 2 px padding


def test_reverse_process_keeps_the_requested_steps_and_ends_on_the_output(tiny_pipe):
    strips = reverse_process(tiny_pipe, timesteps=(900, 600, 0), num_inference_steps=10, seed=3)
    assert list(strips) == [900, 600, 0] and all(len(row) == 10 for row in strips.values())
    final = tiny_pipe(labels=list(range(10)), num_inference_steps=10,
                      generator=torch.Generator().manual_seed(3)).images
    assert all((a.mode, a.size, a.tobytes()) == (b.mode, b.size, b.tobytes()) for a, b in zip(strips[0], final))
    assert reverse_strip(strips, scale=1).size[1] == 10 * 30 + 2


def test_reverse_animation_is_a_gif(tiny_pipe, tmp_path):
    path = reverse_animation(tiny_pipe, tmp_path / "a.gif", every=2, num_inference_steps=6)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames >= 4


def test_guidance_plot_draws_one_curve_per_family(tmp_path):
    runs = [{"sampler": "dpm", "num_inference_steps": 20, "guidance_scale": w, "guidance_interval": interval,
             "accuracy": 0.9, "frechet_ratio_to_real_floor": 2.0} for w in (1.0, 2.0) for interval in (None, [82, 579])]
    runs.append({"sampler": "ddpm", "num_inference_steps": 1000, "guidance_scale": 1.5, "accuracy": 0.99,
                 "frechet_ratio_to_real_floor": 1.0})  # an older sweep's run, recorded without an interval
    (tmp_path / "sweep.json").write_text(json.dumps({"num_samples": 20, "runs": runs}))
    assert sorted({guidance_family(run) for run in runs}) == [
        "ddpm 1000 steps, guidance at every step", "dpm 20 steps, guidance at every step",
        "dpm 20 steps, guidance at t in [82, 579]"]
    pytest.importorskip("matplotlib")
    path = guidance_plot(tmp_path / "sweep.json", tmp_path / "plot.png", DEFAULT_RULE)
    assert Image.open(path).size[0] > 500


def test_make_figures_writes_every_figure_of_the_card(tiny_pipe, tmp_path, synthetic_mnist):
    from mnist_diffusion.lab.figures import main

    pytest.importorskip("matplotlib")
    tiny_pipe.save_pretrained(tmp_path / "model")
    runs = [{"sampler": "dpm", "num_inference_steps": 20, "guidance_scale": w, "accuracy": 0.9,
             "frechet_ratio_to_real_floor": 2.0} for w in (1.0, 2.0)]
    (tmp_path / "sweep.json").write_text(json.dumps({"num_samples": 20, "runs": runs}))
    # The figures of real digits (forward process, inpainting) need digits of every class, not real ones: the test
    # split of the generated MNIST has them.
    main(["--model", str(tmp_path / "model"), "--data_dir", str(synthetic_mnist),
          "--sweep", str(tmp_path / "sweep.json")])
    written = {path.name for path in (tmp_path / "model" / "images").iterdir()}
    assert written == {"samples.png", "reverse_process.png", "reverse_process.gif", "forward_process.png",
                       "inpainting.png", "guidance.png"}


def test_make_figures_draws_a_students_grid_and_its_steps(tiny_unet, tmp_path):
    from diffusers import LCMScheduler

    from mnist_diffusion import MNISTDDPMPipeline
    from mnist_diffusion.lab.figures import main

    MNISTDDPMPipeline(tiny_unet, LCMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear"),
                      default_num_inference_steps=4).save_pretrained(tmp_path / "student")
    main(["--model", str(tmp_path / "student")])  # no data: a student's figures are generated digits only
    images = tmp_path / "student" / "images"
    assert {path.name for path in images.iterdir()} == {"samples.png", "steps.png"}
    with Image.open(images / "steps.png") as steps:  # 4 rows (1, 2, 4, 8 steps) of 10 digits, row labels, 3×
        assert steps.size == (3 * (12 + 2 + 10 * 30), 3 * (2 + 4 * 30))
