import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, UniPCMultistepScheduler
from PIL import Image

from mnist_diffusion import ClassConditionedUNet, MNISTDDPMPipeline, MNISTDDPMScheduler


def run(pipe, labels=(7,), seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", 10)
    return pipe(labels=list(labels), generator=torch.Generator().manual_seed(seed), **kwargs).images


def test_pil_output_one_image_per_label_in_order(tiny_pipe):
    images = run(tiny_pipe, labels=[7, 0, 3], num_images_per_label=2)
    assert len(images) == 6
    assert all(isinstance(im, Image.Image) and im.mode == "L" and im.size == (28, 28) for im in images)


def test_output_types_agree(tiny_pipe):
    pil = run(tiny_pipe, labels=[1, 2])
    as_np = run(tiny_pipe, labels=[1, 2], output_type="np")
    as_pt = run(tiny_pipe, labels=[1, 2], output_type="pt")
    assert as_np.shape == (2, 28, 28, 1) and as_np.min() >= 0 and as_np.max() <= 1
    assert as_pt.shape == (2, 1, 28, 28)
    np.testing.assert_allclose(as_pt.permute(0, 2, 3, 1).numpy(), as_np)
    np.testing.assert_array_equal(np.asarray(pil[1]), (as_np[1, :, :, 0] * 255).round().astype(np.uint8))
    assert isinstance(tiny_pipe([4], num_inference_steps=2, return_dict=False)[0][0], Image.Image)


def test_same_generator_same_images_different_seed_different_images(tiny_pipe):
    a = run(tiny_pipe, output_type="np", guidance_scale=2.0)
    b = run(tiny_pipe, output_type="np", guidance_scale=2.0)
    c = run(tiny_pipe, output_type="np", guidance_scale=2.0, seed=1)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1


def test_a_list_of_generators_gives_each_image_its_own_stream(tiny_pipe):
    generators = [torch.Generator().manual_seed(s) for s in (5, 6)]
    both = tiny_pipe([3, 3], num_inference_steps=5, generator=generators, output_type="np").images
    alone = tiny_pipe([3], num_inference_steps=5, generator=[torch.Generator().manual_seed(6)], output_type="np").images
    np.testing.assert_allclose(both[1], alone[0], atol=1e-5)  # batched convolutions round differently
    with pytest.raises(ValueError, match="Got 1 generators for 2 images"):
        tiny_pipe([3, 4], generator=[torch.Generator()])


def test_label_forms_are_equivalent(tiny_pipe):
    reference = run(tiny_pipe, labels=[5], output_type="np")
    for labels in (5, np.int64(5), (5,), torch.tensor([5]), np.array([5])):
        np.testing.assert_array_equal(
            tiny_pipe(labels, num_inference_steps=10, generator=torch.Generator().manual_seed(0), output_type="np").images,
            reference,
        )


@pytest.mark.parametrize(
    "labels,shown",
    [(10, "10"), (-1, "-1"), (3.5, "3.5"), ("7", "'7'"), (True, "True"), ([], "empty"), ([1, 12], "12"),
     (torch.tensor([[1, 2]]), "2-d"), (torch.tensor([1.0]), "float"), ([2, None], "None")],
)
def test_bad_labels_raise_value_error_naming_value_and_range(tiny_pipe, labels, shown):
    with pytest.raises(ValueError) as error:
        tiny_pipe(labels, num_inference_steps=2)
    assert shown in str(error.value) and "0–9" in str(error.value)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_images_per_label": 0}, "num_images_per_label"),
    ({"guidance_scale": -1.0}, "guidance_scale"),
    ({"output_type": "latent"}, "output_type"),
    ({"num_inference_steps": 5000}, "num_inference_steps"),
])
def test_bad_arguments_raise_value_error(tiny_pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_pipe([1], **{"num_inference_steps": 2, **kwargs})


def test_guidance_off_skips_the_unconditional_pass_and_on_batches_both(tiny_pipe):
    batches = []
    hook = tiny_pipe.unet.register_forward_pre_hook(lambda module, args: batches.append(args[2].tolist()))
    run(tiny_pipe, labels=[2, 4], num_inference_steps=3, guidance_scale=1.0)
    assert batches == [[2, 4]] * 3
    batches.clear()
    run(tiny_pipe, labels=[2, 4], num_inference_steps=3, guidance_scale=3.0)
    assert batches == [[2, 4, 10, 10]] * 3
    hook.remove()


def test_guidance_combines_conditional_and_unconditional_predictions(tiny_pipe):
    """ε = ε_uncond + w (ε_cond − ε_uncond), checked on the first step against direct UNet calls."""
    captured = {}

    def capture(pipe, i, t, kwargs):
        captured.setdefault("first", (int(t), kwargs["latents"]))
        return kwargs

    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn(1, 1, 28, 28, generator=generator)
    tiny_pipe([6], num_inference_steps=4, guidance_scale=2.5, generator=torch.Generator().manual_seed(0),
              callback_on_step_end=capture)
    t, first_latents = captured["first"]
    assert t == 750
    cond = tiny_pipe.unet(x_T, t, torch.tensor([6])).sample
    uncond = tiny_pipe.unet(x_T, t, torch.tensor([10])).sample
    expected = tiny_pipe.scheduler.step(uncond + 2.5 * (cond - uncond), t, x_T, generator=generator).prev_sample
    torch.testing.assert_close(first_latents, expected, atol=1e-5, rtol=1e-5)


def test_default_is_the_full_ddpm_chain_and_pipeline_defaults_are_config(tiny_unet):
    pipe = MNISTDDPMPipeline(tiny_unet, MNISTDDPMScheduler(), default_guidance_scale=3.0, default_num_inference_steps=4)
    pipe.set_progress_bar_config(disable=True)
    steps = []
    pipe([1], callback_on_step_end=lambda p, i, t, kw: steps.append(int(t)) or kw)
    assert steps == [750, 500, 250, 0]
    plain = MNISTDDPMPipeline(tiny_unet, MNISTDDPMScheduler())
    plain.set_progress_bar_config(disable=True)
    plain([1], num_inference_steps=None, callback_on_step_end=lambda p, i, t, kw: steps.append(int(t)) or kw)
    assert len(steps) == 4 + 1000 and steps[4] == 999 and steps[-1] == 0


def test_callback_can_replace_latents(tiny_pipe):
    def zero_latents(pipe, i, t, kwargs):
        return {"latents": torch.zeros_like(kwargs["latents"])}

    out = run(tiny_pipe, output_type="pt", num_inference_steps=2, callback_on_step_end=zero_latents)
    assert torch.equal(out, torch.full_like(out, 0.5))


def test_save_pretrained_round_trip_gives_identical_images(tiny_unet, tmp_path):
    pipe = MNISTDDPMPipeline(tiny_unet, MNISTDDPMScheduler(variance_type="fixed_large"), default_guidance_scale=2.0)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path)
    loaded = MNISTDDPMPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.unet, ClassConditionedUNet) and isinstance(loaded.scheduler, MNISTDDPMScheduler)
    assert loaded.config.default_guidance_scale == 2.0 and loaded.scheduler.config.variance_type == "fixed_large"
    np.testing.assert_array_equal(run(loaded, output_type="np"), run(pipe, output_type="np"))


def test_torch_dtype_and_to(tiny_unet, tmp_path):
    MNISTDDPMPipeline(tiny_unet, MNISTDDPMScheduler()).save_pretrained(tmp_path)
    pipe = MNISTDDPMPipeline.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).to("cpu")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.dtype == torch.bfloat16
    latent_dtypes = []

    def record(pipe, i, t, tensors):
        latent_dtypes.append(tensors["latents"].dtype)

    images = run(pipe, output_type="np", num_inference_steps=5, guidance_scale=2.0, callback_on_step_end=record)
    assert images.dtype == np.float32 and np.isfinite(images).all()
    assert latent_dtypes == [torch.float32] * 5  # the chain itself is never rounded to bf16
    reference = run(MNISTDDPMPipeline.from_pretrained(tmp_path), output_type="np", num_inference_steps=5,
                    guidance_scale=2.0)
    difference = np.abs(images - reference)  # bf16 rounds the network's activations only: close, not equal
    assert 0 < difference.mean() < 0.01 and difference.max() < 0.2


def test_unet_weights_are_channels_last_in_memory_and_saved_contiguous(tiny_unet, tmp_path):
    pipe = MNISTDDPMPipeline(tiny_unet, MNISTDDPMScheduler())
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    pipe.save_pretrained(tmp_path)
    loaded = ClassConditionedUNet.from_pretrained(tmp_path / "unet")
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, pipe.unet.state_dict()[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("scheduler_class", [DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                                             UniPCMultistepScheduler])
def test_diffusers_schedulers_swap_in_via_from_config(tiny_pipe, scheduler_class):
    assert scheduler_class.__name__ in tiny_pipe.scheduler._compatibles
    tiny_pipe.scheduler = scheduler_class.from_config(tiny_pipe.scheduler.config)
    images = run(tiny_pipe, labels=[0, 9], output_type="pt", num_inference_steps=8, guidance_scale=2.0)
    assert images.shape == (2, 1, 28, 28) and torch.isfinite(images).all()
    np.testing.assert_array_equal(run(tiny_pipe, labels=[0, 9], output_type="pt", num_inference_steps=8,
                                      guidance_scale=2.0), images)
