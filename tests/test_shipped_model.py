"""End-to-end checks of what the repository ships: the trained pipeline, its distilled few-step student and the
evaluation classifier."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_diffusion import MNISTDDPMPipeline
from mnist_diffusion.lab.samplers import use_sampler
from mnist_diffusion.lab.shipped import SHIPPED_MODEL, SHIPPED_STUDENT

from .conftest import ROOT

SHIPPED_CLASSIFIER = SHIPPED_MODEL.parent / "mnist-classifier"
needs_model = pytest.mark.skipif(not (SHIPPED_MODEL / "model_index.json").is_file(),
                                 reason=f"no shipped model at {SHIPPED_MODEL}")
needs_student = pytest.mark.skipif(not (SHIPPED_STUDENT / "model_index.json").is_file(),
                                   reason=f"no shipped student at {SHIPPED_STUDENT}")
needs_classifier = pytest.mark.skipif(not (SHIPPED_CLASSIFIER / "config.json").is_file(),
                                      reason=f"no shipped evaluation classifier at {SHIPPED_CLASSIFIER}")


@needs_model
def test_shipped_folder_is_a_complete_small_pipeline():
    files = {p.name for p in SHIPPED_MODEL.iterdir()}
    assert {"model_index.json", "unet", "scheduler", "training_config.json"} <= files
    assert not files & {"checkpoints", "logs", "samples"}
    weights = SHIPPED_MODEL / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size <= 10 * 2**20


@needs_model
def test_main_job_generates_a_seven_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = MNISTDDPMPipeline.from_pretrained(Path(SHIPPED_MODEL))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.resolve_defaults()[0] == 20  # the stored fast sampler: the main job is quick
    image = pipe(labels=[7], generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (28, 28) and image.mode == "L"
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32))
    assert 0.05 < (pixels > 127).float().mean() < 0.4  # some ink on a dark background, as MNIST digits are


@needs_model
@needs_classifier
def test_shipped_pipeline_draws_the_requested_digits():
    """A real quality gate: at the stored defaults (a fast solver), ≥ 97% of 20 digits per class are read as
    requested."""
    from mnist_diffusion.lab.classifier import DigitClassifier

    pipe = MNISTDDPMPipeline.from_pretrained(SHIPPED_MODEL)
    pipe.set_progress_bar_config(disable=True)
    labels = torch.arange(10).repeat_interleave(20)
    images = pipe(labels=labels, generator=torch.Generator().manual_seed(0), output_type="pt").images
    predicted = DigitClassifier.from_pretrained(SHIPPED_CLASSIFIER).predict(images)
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy >= 0.97, f"only {accuracy:.1%} of the generated digits are read as requested"


@needs_student
def test_shipped_student_is_a_small_pipeline_that_loads_with_lcm_scheduler():
    from diffusers import LCMScheduler

    files = {p.name for p in SHIPPED_STUDENT.iterdir()}
    assert {"model_index.json", "unet", "scheduler", "training_config.json"} <= files
    assert not files & {"checkpoints", "logs", "samples"}
    assert (SHIPPED_STUDENT / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size <= 10 * 2**20
    pipe = MNISTDDPMPipeline.from_pretrained(SHIPPED_STUDENT)
    assert isinstance(pipe.scheduler, LCMScheduler)
    # The steps and sampler are those the shipping rule of docs/distillation.md chose (benchmarks/ict_student/).
    chosen = json.loads((ROOT / "benchmarks" / "ict_student" / "choice.json").read_text())["mnist-lcm"]
    assert chosen["sampler"] == "lcm" and pipe.resolve_defaults() == (chosen["num_inference_steps"], 1.0, None)


@needs_student
@needs_classifier
def test_shipped_student_draws_the_requested_digits_at_its_stored_steps():
    """The student's quality gate: at its stored steps, ≥ 97% of 20 digits per class are read as requested."""
    from mnist_diffusion.lab.classifier import DigitClassifier

    pipe = MNISTDDPMPipeline.from_pretrained(SHIPPED_STUDENT)
    pipe.set_progress_bar_config(disable=True)
    labels = torch.arange(10).repeat_interleave(20)
    calls = []
    pipe.unet.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    images = pipe(labels=labels, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert calls == [200] * pipe.config.default_num_inference_steps  # one conditional pass per step
    predicted = DigitClassifier.from_pretrained(SHIPPED_CLASSIFIER).predict(images)
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy >= 0.97, f"only {accuracy:.1%} of the student's digits are read as requested"


@needs_model
@needs_classifier
def test_shipped_model_inpaints_the_hidden_half_of_its_own_digits():
    """The inpainting pipeline on the shipped model: each digit's hidden lower half completed, the upper half kept."""
    from mnist_diffusion import MNISTDDPMInpaintPipeline
    from mnist_diffusion.lab.classifier import DigitClassifier

    pipe = MNISTDDPMPipeline.from_pretrained(SHIPPED_MODEL)
    pipe.set_progress_bar_config(disable=True)
    use_sampler(pipe, "dpm")
    labels = torch.arange(10).repeat_interleave(2)
    digits = pipe(labels=labels, num_inference_steps=20, generator=torch.Generator().manual_seed(1),
                  output_type="pt").images
    mask = torch.zeros(1, 1, 28, 28)
    mask[..., 14:, :] = 1  # generate the lower half
    inpaint = MNISTDDPMInpaintPipeline.from_pretrained(SHIPPED_MODEL)
    inpaint.set_progress_bar_config(disable=True)
    completed = inpaint(digits, mask, labels=labels, num_inference_steps=25, jump_length=5, jump_n_sample=2,
                        generator=torch.Generator().manual_seed(2), output_type="pt").images
    torch.testing.assert_close(completed[..., :14, :], digits[..., :14, :], atol=1 / 255, rtol=0)
    assert (completed[..., 14:, :] - digits[..., 14:, :]).abs().mean() > 0.01  # the lower half was drawn anew
    predicted = DigitClassifier.from_pretrained(SHIPPED_CLASSIFIER).predict(completed)
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy >= 0.9, f"only {accuracy:.0%} of the completed digits are read as requested"
