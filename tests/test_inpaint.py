from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler
from PIL import Image

from mnist_diffusion import MNISTDDPMInpaintPipeline
from mnist_diffusion.pipeline_mnist_inpaint import repaint_walk

FAST = dict(num_inference_steps=12, jump_length=3, jump_n_sample=2)


@pytest.fixture
def inpaint(tiny_pipe):
    pipe = MNISTDDPMInpaintPipeline(**tiny_pipe.components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def digit_and_bottom_mask():
    pixels = np.random.default_rng(0).integers(0, 256, size=(28, 28), dtype=np.uint8)
    mask = np.zeros((28, 28), dtype=np.uint8)
    mask[14:] = 255
    return Image.fromarray(pixels, mode="L"), Image.fromarray(mask, mode="L")


def test_repaint_walk_goes_down_with_jumps_back():
    walk = repaint_walk(num_levels=6, jump_length=2, jump_n_sample=2)
    assert walk == [5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0]
    assert all(abs(b - a) == 1 for a, b in zip([6] + walk, walk))
    assert repaint_walk(10, 3, 1) == list(range(9, -1, -1))  # one sample per stretch: no jumps


def test_kept_pixels_are_exactly_the_given_ones(inpaint):
    image, mask = digit_and_bottom_mask()
    completions = inpaint(image, mask, labels=[3, 8], generator=torch.Generator().manual_seed(0), **FAST).images
    for completion in completions:
        kept = np.asarray(completion)[:14]
        np.testing.assert_array_equal(kept, np.asarray(image)[:14])
    assert not np.array_equal(np.asarray(completions[0])[14:], np.asarray(image)[14:])


def test_same_generator_same_completion_and_forms_of_input_agree(inpaint):
    image, mask = digit_and_bottom_mask()
    run = lambda img, msk: inpaint(img, msk, labels=[2], output_type="np", generator=torch.Generator().manual_seed(4),
                                   **FAST).images
    reference = run(image, mask)
    np.testing.assert_array_equal(run(image, mask), reference)
    as_float = torch.from_numpy(np.asarray(image) / 255.0).float()
    np.testing.assert_allclose(run(as_float, np.asarray(mask)), reference, atol=1e-6)
    as_uint8_tensor = torch.from_numpy(np.asarray(image).copy())  # what load_mnist returns
    np.testing.assert_allclose(run(as_uint8_tensor, mask), reference, atol=1e-6)


@pytest.mark.parametrize(
    "image,mask,match",
    [
        (np.zeros((27, 27), np.uint8), np.full((28, 28), 255, np.uint8), r"`image` must be 28×28.*\(27, 27\)"),
        (np.zeros((28, 28), np.uint8), np.zeros((28, 27), np.uint8), r"`mask_image` must be 28×28"),
        (np.zeros((28, 28), np.uint8), np.zeros((28, 28), np.uint8), "all black"),
        (np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8), "all white"),
        (torch.full((28, 28), 2.0), np.full((28, 28), 255, np.uint8), r"must lie in \[0, 1\]"),
        ("digit.png", np.full((28, 28), 255, np.uint8), "PIL image \(or a list of them\), a numpy array or a tensor"),
    ],
)
def test_bad_inputs_are_clear_errors(inpaint, image, mask, match):
    with pytest.raises(ValueError, match=match):
        inpaint(image, mask, labels=[1], **FAST)


def test_bad_labels_and_options_are_clear_errors(inpaint):
    image, mask = digit_and_bottom_mask()
    with pytest.raises(ValueError, match="0–9"):
        inpaint(image, mask, labels=[10], **FAST)
    with pytest.raises(ValueError, match="`jump_length` must be a positive integer, got 0"):
        inpaint(image, mask, labels=[1], num_inference_steps=12, jump_length=0)
    inpaint.scheduler = DPMSolverMultistepScheduler.from_config(inpaint.scheduler.config)
    with pytest.raises(ValueError, match="needs an MNISTDDPMScheduler"):
        inpaint(image, mask, labels=[1], **FAST)


def test_loads_from_the_folder_of_the_generation_pipeline(tiny_pipe, tmp_path):
    tiny_pipe.register_to_config(default_guidance_scale=2.5)
    tiny_pipe.save_pretrained(tmp_path)
    loaded = MNISTDDPMInpaintPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded, MNISTDDPMInpaintPipeline) and loaded.config.default_guidance_scale == 2.5


def test_a_batch_of_images_one_label_each(inpaint):
    image, mask = digit_and_bottom_mask()
    other = Image.fromarray(255 - np.asarray(image), mode="L")
    both = inpaint([image, other], mask, labels=[3, 5], output_type="np", generator=torch.Generator().manual_seed(1),
                   **FAST).images
    np.testing.assert_array_equal((both[0, :14, :, 0] * 255).round(), np.asarray(image)[:14])
    np.testing.assert_array_equal((both[1, :14, :, 0] * 255).round(), np.asarray(other)[:14])
    with pytest.raises(ValueError, match="Got 2 `image`s for 3 labels"):
        inpaint([image, other], mask, labels=[1, 2, 3], **FAST)


def test_the_readme_inpainting_table_is_the_shipped_measurement():
    import json

    from mnist_diffusion.evaluation import inpainting_table
    from mnist_diffusion.generate import SHIPPED_MODEL

    results = SHIPPED_MODEL / "evaluation" / "inpainting.json"
    if not results.is_file():
        pytest.skip(f"no inpainting measurement at {results}")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert inpainting_table(json.loads(results.read_text())) in readme, "README's inpainting table is out of date"
