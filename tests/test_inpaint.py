
import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, LCMScheduler
from PIL import Image

from mnist_diffusion import MNISTDDPMInpaintPipeline
from mnist_diffusion.pipeline_mnist_inpaint import repaint_schedule

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


def test_repaint_schedule_goes_down_with_jumps_back():
    timesteps = [600, 500, 400, 300, 200, 100]
    schedule = repaint_schedule(timesteps, jump_length=2, jump_n_sample=2)
    # The steps above x_0 after each move: 5, 4, 3, 2, (back up) 3, 4, 3, 2, 1, 0, (back up) 1, 2, 1, 0.
    at = dict(zip([-1, *reversed(timesteps)], range(7)))
    assert [at[t_next] for _, t_next in schedule] == [5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0]
    assert schedule[:5] == [(600, 500), (500, 400), (400, 300), (300, 200), (200, 300)]
    assert schedule[-4:] == [(-1, 100), (100, 200), (200, 100), (100, -1)]
    assert all(abs(at[t] - at[t_next]) == 1 for t, t_next in schedule)  # one step down or up at a time
    assert all(move[1] == following[0] for move, following in zip(schedule, schedule[1:]))  # from where it is
    assert repaint_schedule([9, 6, 3, 0], 3, 1) == [(9, 6), (6, 3), (3, 0), (0, -1)]  # one sample: no jumps
    assert repaint_schedule([500, 0], 1, 3) == [(500, 0), (0, -1), (-1, 0), (0, -1), (-1, 0), (0, -1)]
    assert repaint_schedule([500], 1, 3) == [(500, -1)]  # no stretch below the top one: nothing to resample


def test_the_callback_sees_each_denoising_step_with_its_index_among_all_moves(inpaint):
    seen = []
    inpaint(*digit_and_bottom_mask(), labels=[1], callback_on_step_end=lambda pipe, i, t, kw: seen.append((i, t)),
            **FAST)
    inpaint.scheduler.set_timesteps(FAST["num_inference_steps"])
    schedule = repaint_schedule(inpaint.scheduler.timesteps.tolist(), FAST["jump_length"], FAST["jump_n_sample"])
    assert seen == [(i, t) for i, (t, t_next) in enumerate(schedule) if t_next < t]
    assert len(seen) == 12 + 3 * 3 and len(schedule) == 12 + 3 * 3 * 2  # 3 stretches of 3 steps run twice


def test_the_default_steps_are_the_stored_ones_else_the_250_of_repaint(inpaint):
    def stop(pipe, i, t, tensors):
        pipe._interrupt = True

    inpaint(*digit_and_bottom_mask(), labels=[1], callback_on_step_end=stop)
    assert inpaint.scheduler.num_inference_steps == 250
    assert inpaint.resolve_defaults() == (250, 1.0, None)
    inpaint.register_to_config(default_num_inference_steps=7)
    inpaint(*digit_and_bottom_mask(), labels=[1], callback_on_step_end=stop)
    assert inpaint.scheduler.num_inference_steps == 7
    inpaint(*digit_and_bottom_mask(), labels=[1], num_inference_steps=5, callback_on_step_end=stop)
    assert inpaint.scheduler.num_inference_steps == 5


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
        ("digit.png", np.full((28, 28), 255, np.uint8), r"PIL image \(or a list of them\), a numpy array or a tensor"),
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
    inpaint.scheduler = LCMScheduler.from_config(inpaint.scheduler.config)
    with pytest.raises(ValueError, match="Inpainting needs a DDPM .*got a LCMScheduler, a distilled student's"):
        inpaint(image, mask, labels=[1], **FAST)


def test_a_model_that_stores_a_fast_solver_inpaints_with_the_ddpm_of_its_schedule(inpaint):
    image, mask = digit_and_bottom_mask()
    draw = lambda: inpaint(image, mask, labels=[1], generator=torch.Generator().manual_seed(0), output_type="pt",
                           **FAST).images
    reference = draw()
    inpaint.scheduler = DPMSolverMultistepScheduler.from_config(inpaint.scheduler.config,
                                                                algorithm_type="sde-dpmsolver++")
    torch.testing.assert_close(draw(), reference, atol=0, rtol=0)
    assert isinstance(inpaint.scheduler, DPMSolverMultistepScheduler)  # the pipeline's own sampler is left as it was


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


def test_from_pipe_both_ways_shares_the_components_and_config(tiny_pipe):
    from mnist_diffusion import MNISTDDPMPipeline

    tiny_pipe.register_to_config(default_guidance_scale=2.5)
    inpaint = MNISTDDPMInpaintPipeline.from_pipe(tiny_pipe)
    assert type(inpaint) is MNISTDDPMInpaintPipeline and inpaint.config.default_guidance_scale == 2.5
    assert inpaint.unet is tiny_pipe.unet and inpaint.scheduler is tiny_pipe.scheduler
    back = MNISTDDPMPipeline.from_pipe(inpaint)
    assert type(back) is MNISTDDPMPipeline and back.unet is tiny_pipe.unet
    assert back.config.default_guidance_scale == 2.5


def test_the_generation_pipeline_loads_the_folder_of_the_inpainting_pipeline(inpaint, tmp_path):
    from mnist_diffusion import MNISTDDPMPipeline

    inpaint.save_pretrained(tmp_path)
    loaded = MNISTDDPMPipeline.from_pretrained(tmp_path)
    assert type(loaded) is MNISTDDPMPipeline


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_an_image_holding_nan_or_inf_is_refused(inpaint, bad):
    image = torch.zeros(28, 28)
    image[3, 4] = bad
    with pytest.raises(ValueError, match="`image` holds NaN or infinite values"):
        inpaint(image, np.full((28, 28), 255, np.uint8), labels=[1], **FAST)


def test_an_all_black_mask_error_explains_the_uint8_scale(inpaint):
    image, _ = digit_and_bottom_mask()
    mask = np.zeros((28, 28), np.uint8)
    mask[14:] = 1
    with pytest.raises(ValueError, match="all black.*0–255.*multiply a 0/1 uint8 mask by 255"):
        inpaint(image, mask, labels=[1], **FAST)
    inpaint(image, mask.astype(bool), labels=[1], **FAST)  # the same mask as bool is read as 0/1


def test_a_three_or_four_channel_tensor_is_refused_as_ambiguous(inpaint):
    image, mask = digit_and_bottom_mask()
    rgb = torch.from_numpy(np.asarray(image).copy()).expand(3, 28, 28)
    with pytest.raises(ValueError, match=r"`image` of shape \(3, 28, 28\) is ambiguous.*\(N, 1, 28, 28\)"):
        inpaint(rgb, mask, labels=[1, 2, 3], **FAST)
    with pytest.raises(ValueError, match=r"`mask_image` of shape \(4, 28, 28\) is ambiguous"):
        inpaint(image, np.zeros((4, 28, 28), np.uint8), labels=[1], **FAST)
    three = inpaint(rgb[:, None], mask, labels=[1, 2, 3], output_type="np", **FAST).images
    assert three.shape == (3, 28, 28, 1)
    assert len(inpaint([image] * 3, mask, labels=[1, 2, 3], **FAST).images) == 3  # three PIL images stay three


def test_a_scheduler_loaded_as_remote_code_is_accepted(inpaint):
    """A pipeline loaded with trust_remote_code carries its own copy of MNISTDDPMScheduler: another class object."""
    import importlib.util

    import mnist_diffusion.scheduling_mnist_ddpm as ours

    spec = importlib.util.spec_from_file_location("remote_copy_of_scheduling_mnist_ddpm", ours.__file__)
    remote = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(remote)
    assert remote.MNISTDDPMScheduler is not ours.MNISTDDPMScheduler
    reference = inpaint(*digit_and_bottom_mask(), labels=[3], output_type="np",
                        generator=torch.Generator().manual_seed(0), **FAST).images
    inpaint.scheduler = remote.MNISTDDPMScheduler.from_config(inpaint.scheduler.config)
    completed = inpaint(*digit_and_bottom_mask(), labels=[3], output_type="np",
                        generator=torch.Generator().manual_seed(0), **FAST).images
    np.testing.assert_array_equal(completed, reference)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_inference_steps": 0}, "`num_inference_steps` must be a positive integer, at most 1000, got 0"),
    ({"guidance_scale": float("nan")}, "`guidance_scale` must be a finite number"),
    ({"jump_n_sample": 2.0}, "`jump_n_sample` must be a positive integer, got 2.0"),
    ({"callback_on_step_end_tensor_inputs": "latents"}, "must be a list of names"),
])
def test_inpainting_checks_its_arguments_as_the_generation_pipeline_does(inpaint, kwargs, match):
    with pytest.raises(ValueError, match=match):
        inpaint(*digit_and_bottom_mask(), labels=[1], **{**FAST, **kwargs})


def test_inpainting_callback_interrupt_and_jump_sizes_take_numpy_integers(inpaint):
    denoising_steps = []

    def stop_after_three(pipe, i, t, tensors):
        denoising_steps.append(i)
        pipe._interrupt = len(denoising_steps) == 3

    inpaint(*digit_and_bottom_mask(), labels=[1], num_inference_steps=12, jump_length=np.int64(3),
            jump_n_sample=np.int64(2), callback_on_step_end=stop_after_three)
    assert len(denoising_steps) == 3
    with pytest.raises(TypeError, match="must return a dict"):
        inpaint(*digit_and_bottom_mask(), labels=[1], callback_on_step_end=lambda pipe, i, t, tensors: 1, **FAST)


def test_a_callback_reads_the_guidance_and_turns_it_off_for_the_steps_that_follow(inpaint):
    image, mask = digit_and_bottom_mask()
    batches, seen = [], []
    inpaint.unet.register_forward_hook(lambda module, args, output: batches.append(len(args[0])))

    def guidance_off_after_the_first_step(pipe, i, t, callback_kwargs):
        seen.append((pipe.guidance_scale, pipe.do_classifier_free_guidance, pipe.num_timesteps))
        pipe._guidance_scale = 1.0
        return callback_kwargs

    inpaint(image, mask, labels=[3], num_inference_steps=3, jump_length=1, jump_n_sample=1, guidance_scale=2.0,
            callback_on_step_end=guidance_off_after_the_first_step, output_type="pt")
    assert seen[0] == (2.0, True, 3) and [scale for scale, _, _ in seen[1:]] == [1.0, 1.0]
    assert batches == [2, 1, 1]  # both passes at the first step only


def test_the_steps_stored_for_a_fast_solver_do_not_become_repaints(inpaint):
    inpaint.scheduler = DPMSolverMultistepScheduler.from_config(inpaint.scheduler.config)
    inpaint.register_to_config(default_num_inference_steps=20)
    inpaint._default_steps_scheduler = "DPMSolverMultistepScheduler"  # as loading such a folder sets it

    def stop(pipe, step, t, kwargs):
        pipe._interrupt = True

    image, mask = digit_and_bottom_mask()
    inpaint(image, mask, labels=[1], jump_n_sample=1, callback_on_step_end=stop)
    assert inpaint.num_timesteps == 250  # RePaint's own number of steps, one move each without resampling
