"""`eta`: the γ of diffusers' `TCDScheduler` (and the η of `DDIMScheduler`), passed through by the pipeline."""

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, TCDScheduler

from mnist_diffusion import MNISTDDPMPipeline


def draw(pipe, **kwargs):
    return pipe(labels=[3, 7], num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="pt",
                guidance_scale=1.0, **kwargs).images


def with_scheduler(pipe, scheduler_class, **config):
    # Without the private keys: diffusers' from_config gives a key the source left at its default (all of them in the
    # fixture's `MNISTDDPMScheduler()`) the new class's own default, which for TCD is another noise schedule.
    own = {key: value for key, value in pipe.scheduler.config.items() if not key.startswith("_")}
    pipe.scheduler = scheduler_class.from_config(own, **config)
    assert pipe.scheduler.config.beta_schedule == "linear"
    return pipe


def test_tcd_gamma_changes_the_digits(tiny_pipe):
    pipe = with_scheduler(tiny_pipe, TCDScheduler)
    deterministic, default, full = draw(pipe, eta=0.0), draw(pipe), draw(pipe, eta=1.0)
    torch.testing.assert_close(default, draw(pipe, eta=0.3))  # TCDScheduler's own default γ
    assert (deterministic - default).abs().max() > 1e-3 and (full - default).abs().max() > 1e-3
    assert (full - deterministic).abs().max() > 1e-3


def test_a_stored_default_eta_round_trips_and_a_calls_eta_wins(tiny_pipe, tmp_path):
    pipe = with_scheduler(tiny_pipe, TCDScheduler)
    pipe.register_to_config(default_eta=0.0)
    pipe.save_pretrained(tmp_path / "tcd")
    loaded = MNISTDDPMPipeline.from_pretrained(tmp_path / "tcd")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, TCDScheduler) and loaded.config.default_eta == 0.0
    torch.testing.assert_close(draw(loaded), draw(pipe, eta=0.0))
    assert (draw(loaded, eta=0.6) - draw(loaded)).abs().max() > 1e-3
    # A scheduler whose step takes no eta ignores the stored default, as the steps stored for another scheduler.
    torch.testing.assert_close(draw(with_scheduler(loaded, DPMSolverMultistepScheduler)),
                               draw(with_scheduler(pipe, DPMSolverMultistepScheduler)))


def test_ddim_eta_is_passed_through(tiny_pipe):
    pipe = with_scheduler(tiny_pipe, DDIMScheduler)
    assert (draw(pipe, eta=1.0) - draw(pipe)).abs().max() > 1e-3


@pytest.mark.parametrize("scheduler_class, eta, message", [
    (TCDScheduler, 1.5, r"`eta` must be a number in \[0, 1\].*got 1.5"),
    (TCDScheduler, float("nan"), "got nan"),
    (TCDScheduler, "0.3", "got '0.3'"),
    (DPMSolverMultistepScheduler, 0.3, "DPMSolverMultistepScheduler.step takes none"),
])
def test_a_bad_eta_is_refused_before_any_step(tiny_pipe, scheduler_class, eta, message):
    pipe = with_scheduler(tiny_pipe, scheduler_class)
    calls = []
    pipe.unet.register_forward_pre_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=message):
        draw(pipe, eta=eta)
    assert calls == []
