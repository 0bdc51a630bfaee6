"""End-to-end checks of what the repository ships: the trained pipeline and the evaluation classifier."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_diffusion import MNISTDDPMPipeline
from mnist_diffusion.generate import SHIPPED_MODEL, use_sampler

SHIPPED_CLASSIFIER = SHIPPED_MODEL.parent / "mnist-classifier"
needs_model = pytest.mark.skipif(not (SHIPPED_MODEL / "model_index.json").is_file(),
                                 reason=f"no shipped model at {SHIPPED_MODEL}")
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
    use_sampler(pipe, "dpm")
    image = pipe(labels=[7], num_inference_steps=20, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (28, 28) and image.mode == "L"
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32))
    assert 0.05 < (pixels > 127).float().mean() < 0.4  # some ink on a dark background, as MNIST digits are


@needs_model
@needs_classifier
def test_shipped_pipeline_draws_the_requested_digits():
    """A real quality gate: with the fast solver, ≥ 97% of 20 digits per class are read as requested."""
    from mnist_diffusion.classifier import DigitClassifier

    pipe = MNISTDDPMPipeline.from_pretrained(SHIPPED_MODEL)
    pipe.set_progress_bar_config(disable=True)
    use_sampler(pipe, "dpm")
    labels = torch.arange(10).repeat_interleave(20)
    images = pipe(labels=labels, num_inference_steps=20, generator=torch.Generator().manual_seed(0),
                  output_type="pt").images
    predicted = DigitClassifier.from_pretrained(SHIPPED_CLASSIFIER).predict(images)
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy >= 0.97, f"only {accuracy:.1%} of the generated digits are read as requested"
