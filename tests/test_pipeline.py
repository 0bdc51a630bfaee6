import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, UniPCMultistepScheduler
from PIL import Image

from mnist_diffusion import ClassConditionedUNet, MNISTDDPMPipeline, MNISTDDPMScheduler

from .versions import DTYPE_ARGUMENT


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


def test_resolve_defaults_gives_the_arguments_else_the_stored_defaults_else_the_full_chain(tiny_unet):
    plain = MNISTDDPMPipeline(tiny_unet, MNISTDDPMScheduler(num_train_timesteps=500))
    assert plain.resolve_defaults() == (500, 1.0, None)
    stored = MNISTDDPMPipeline(tiny_unet, MNISTDDPMScheduler(), default_guidance_scale=3,
                               default_num_inference_steps=4, default_guidance_interval=[250, 500])
    assert stored.resolve_defaults() == (4, 3.0, (250.0, 500.0))
    assert stored.resolve_defaults(np.int64(20), np.float32(1.5), (0, 1000)) == (20, 1.5, (0.0, 1000.0))
    assert type(stored.resolve_defaults(np.int64(20))[0]) is int
    with pytest.raises(ValueError, match="`num_inference_steps` must be a positive integer, at most 1000"):
        stored.resolve_defaults(num_inference_steps=1001)
    stored.register_to_config(default_guidance_scale=float("nan"))  # a stored value is checked as a given one
    with pytest.raises(ValueError, match="`guidance_scale` must be a finite number"):
        stored.resolve_defaults()


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


def test_guidance_inside_an_interval_that_holds_every_step_is_plain_guidance(tiny_pipe):
    reference = run(tiny_pipe, labels=[2, 4], output_type="np", num_inference_steps=4, guidance_scale=3.0)
    for interval in ((0, 1000), [0.0, 750.0], (np.int64(0), np.float32(750))):  # the steps are 750, 500, 250, 0
        np.testing.assert_array_equal(
            run(tiny_pipe, labels=[2, 4], output_type="np", num_inference_steps=4, guidance_scale=3.0,
                guidance_interval=interval),
            reference,
        )


def test_guidance_interval_with_no_step_in_it_is_no_guidance(tiny_pipe):
    unguided = run(tiny_pipe, labels=[2, 4], output_type="np", num_inference_steps=4, guidance_scale=1.0)
    for interval in ((1, 249), (751, 1000), (600, 600)):
        np.testing.assert_array_equal(
            run(tiny_pipe, labels=[2, 4], output_type="np", num_inference_steps=4, guidance_scale=3.0,
                guidance_interval=interval),
            unguided,
        )


def test_guidance_interval_runs_the_unconditional_pass_only_inside_it(tiny_pipe):
    batches = []
    hook = tiny_pipe.unet.register_forward_pre_hook(
        lambda module, args: batches.append((int(args[1]), args[2].tolist()))
    )
    run(tiny_pipe, labels=[2, 4], num_inference_steps=4, guidance_scale=3.0, guidance_interval=(250, 500))
    hook.remove()
    assert batches == [(750, [2, 4]), (500, [2, 4, 10, 10]), (250, [2, 4, 10, 10]), (0, [2, 4])]


def test_the_default_guidance_interval_is_config_and_survives_save_pretrained(tiny_unet, tmp_path):
    pipe = MNISTDDPMPipeline(tiny_unet, MNISTDDPMScheduler(), default_guidance_scale=3.0,
                             default_guidance_interval=(250, 500))
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path)
    loaded = MNISTDDPMPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert list(loaded.config.default_guidance_interval) == [250, 500]
    limited = run(loaded, output_type="np", num_inference_steps=4)
    np.testing.assert_array_equal(limited, run(loaded, output_type="np", num_inference_steps=4,
                                               guidance_interval=(250, 500)))
    assert np.abs(limited - run(loaded, output_type="np", num_inference_steps=4, guidance_interval=(0, 1000))).max() > 0


@pytest.mark.parametrize("interval,shown", [
    ((500, 250), "(500, 250)"), ((-1, 500), "(-1, 500)"), ((0, 1001), "(0, 1001)"), ((0, float("nan")), "nan"),
    ((0, float("inf")), "inf"), ((0, 500, 900), "(0, 500, 900)"), (500, "500"), ("0,500", "'0,500'"),
    ((True, 500), "True"), ((None, 500), "None"),
])
def test_bad_guidance_interval_is_a_value_error_naming_it(tiny_pipe, interval, shown):
    with pytest.raises(ValueError, match="guidance_interval") as error:
        tiny_pipe([1], num_inference_steps=2, guidance_interval=interval)
    assert shown in str(error.value) and "0 ≤ t_low ≤ t_high ≤ num_train_timesteps=1000" in str(error.value)


@pytest.mark.parametrize("storage_dtype", [torch.bfloat16, torch.float8_e4m3fn])
def test_layerwise_casting_runs_the_unet_in_its_compute_dtype(tiny_pipe, storage_dtype):
    reference = run(tiny_pipe, labels=[1, 2], output_type="np", num_inference_steps=3, guidance_scale=2.0)
    tiny_pipe.unet.enable_layerwise_casting(storage_dtype=storage_dtype, compute_dtype=torch.float32)
    assert tiny_pipe.unet.conv_in.weight.dtype == storage_dtype
    for guidance_scale in (1.0, 2.0):
        images = run(tiny_pipe, labels=[1, 2], output_type="np", num_inference_steps=3, guidance_scale=guidance_scale)
        assert images.shape == (2, 28, 28, 1) and np.isfinite(images).all()
    if storage_dtype == torch.bfloat16:  # weights rounded to 8 bits of mantissa: close to the float32 result
        assert np.abs(images - reference).mean() < 0.01


def test_the_unet_dtype_is_read_once_per_call_not_per_step(tiny_pipe, monkeypatch):
    reads = []
    dtype_property = ClassConditionedUNet.dtype
    monkeypatch.setattr(ClassConditionedUNet, "dtype",
                        property(lambda unet: reads.append(1) or dtype_property.fget(unet)))
    run(tiny_pipe, num_inference_steps=6, guidance_scale=2.0)
    assert len(reads) == 1


SCHEDULERS = [MNISTDDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
              UniPCMultistepScheduler]


@pytest.mark.parametrize("scheduler_class", SCHEDULERS)
@pytest.mark.parametrize("steps", [0, -1, 2.5, 3.0, 1001, True, "10"])
def test_num_inference_steps_is_checked_by_the_pipeline_for_every_scheduler(tiny_pipe, scheduler_class, steps):
    tiny_pipe.scheduler = scheduler_class.from_config(tiny_pipe.scheduler.config)
    with pytest.raises(ValueError, match="`num_inference_steps` must be a positive integer, at most 1000") as error:
        tiny_pipe([1], num_inference_steps=steps)
    assert repr(steps) in str(error.value)


@pytest.mark.parametrize("scheduler_class", SCHEDULERS)
def test_every_scheduler_takes_one_step_and_sets_up_num_train_timesteps_steps(tiny_pipe, scheduler_class):
    tiny_pipe.scheduler = scheduler_class.from_config(tiny_pipe.scheduler.config)
    assert run(tiny_pipe, output_type="np", num_inference_steps=np.int64(1)).shape == (1, 28, 28, 1)
    tiny_pipe.scheduler.set_timesteps(1000)  # the upper bound the pipeline allows (not run: 1000 UNet calls)
    assert len(tiny_pipe.scheduler.timesteps) == 1000


@pytest.mark.parametrize("guidance_scale", [float("nan"), float("inf"), -float("inf"), np.float32("nan"), -0.5])
def test_non_finite_or_negative_guidance_scale_is_refused(tiny_pipe, guidance_scale):
    with pytest.raises(ValueError, match="`guidance_scale` must be a finite number ≥ 0") as error:
        tiny_pipe([1], num_inference_steps=2, guidance_scale=guidance_scale)
    assert repr(guidance_scale) in str(error.value)


def test_numpy_scalars_are_accepted_for_guidance_scale_and_num_images_per_label(tiny_pipe):
    reference = run(tiny_pipe, labels=[3], output_type="np", num_inference_steps=3, guidance_scale=2.0,
                    num_images_per_label=2)
    for guidance_scale in (np.float32(2.0), np.int64(2), np.float64(2.0), 2):
        for num_images_per_label in (np.int64(2), np.int32(2)):
            np.testing.assert_array_equal(
                run(tiny_pipe, labels=[3], output_type="np", num_inference_steps=3, guidance_scale=guidance_scale,
                    num_images_per_label=num_images_per_label),
                reference,
            )
    for bad in (2.0, np.float32(2.0), True):
        with pytest.raises(ValueError, match="`num_images_per_label` must be a positive integer"):
            tiny_pipe([3], num_inference_steps=2, num_images_per_label=bad)


def test_pt_output_is_an_ordinary_tensor_not_an_inference_tensor(tiny_pipe):
    images = run(tiny_pipe, output_type="pt", num_inference_steps=2)
    assert not torch.is_inference(images) and not images.requires_grad
    weight = torch.ones((), requires_grad=True)
    (images * weight).sum().backward()
    assert weight.grad == images.sum()
    images.mul_(2)


def test_labels_take_any_sequence_and_a_bad_one_is_shown_with_its_index_not_the_list(tiny_pipe):
    np.testing.assert_array_equal(run(tiny_pipe, labels=[0, 1, 2], output_type="np", num_inference_steps=2),
                                  tiny_pipe(range(3), num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                                            output_type="np").images)
    labels = [3] * 100_000
    labels[54_321] = 12
    with pytest.raises(ValueError, match="got 12 at index 54321") as error:
        tiny_pipe(labels, num_inference_steps=2)
    assert len(str(error.value)) < 200
    with pytest.raises(ValueError, match=r"got '7' \(str\) at index 1"):
        tiny_pipe([1, "7"], num_inference_steps=2)


def test_a_tuple_of_generators_is_a_list_of_generators(tiny_pipe):
    as_list = tiny_pipe([3, 4], num_inference_steps=3, output_type="np",
                        generator=[torch.Generator().manual_seed(s) for s in (5, 6)]).images
    as_tuple = tiny_pipe([3, 4], num_inference_steps=3, output_type="np",
                         generator=tuple(torch.Generator().manual_seed(s) for s in (5, 6))).images
    np.testing.assert_array_equal(as_tuple, as_list)
    with pytest.raises(ValueError, match="`generator` must be a torch.Generator or a list of them, got 5"):
        tiny_pipe([3], num_inference_steps=2, generator=5)


def test_a_callback_must_return_a_dict_or_none(tiny_pipe):
    run(tiny_pipe, num_inference_steps=2, callback_on_step_end=lambda pipe, i, t, tensors: None)
    with pytest.raises(TypeError, match="`callback_on_step_end` must return a dict .* got a list"):
        run(tiny_pipe, num_inference_steps=2, callback_on_step_end=lambda pipe, i, t, tensors: [tensors["latents"]])


def test_callback_tensor_inputs_must_be_a_list_of_names(tiny_pipe):
    with pytest.raises(ValueError, match=r"must be a list of names from \['latents'\], got 'latents'"):
        run(tiny_pipe, num_inference_steps=2, callback_on_step_end_tensor_inputs="latents")
    with pytest.raises(ValueError, match=r"may only name \['latents'\], got \['noise'\]"):
        run(tiny_pipe, num_inference_steps=2, callback_on_step_end_tensor_inputs=["latents", "noise"])
    seen = []
    run(tiny_pipe, num_inference_steps=2, callback_on_step_end_tensor_inputs=[],
        callback_on_step_end=lambda pipe, i, t, tensors: seen.append(sorted(tensors)))
    assert seen == [[], []]


def test_a_callback_can_interrupt_the_loop(tiny_pipe):
    calls = []
    hook = tiny_pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(int(args[1])))

    def stop_after_two_steps(pipe, i, t, tensors):
        pipe._interrupt = i == 1
        return tensors

    images = run(tiny_pipe, output_type="np", num_inference_steps=5, callback_on_step_end=stop_after_two_steps)
    assert calls == [800, 600] and images.shape == (1, 28, 28, 1)
    calls.clear()
    run(tiny_pipe, num_inference_steps=5)  # the next call starts afresh
    hook.remove()
    assert len(calls) == 5


@pytest.mark.parametrize("path", ["./no-such-folder", "/tmp/no/such/folder", "no/such/folder"])
def test_a_missing_folder_is_a_file_not_found_error(path):
    with pytest.raises(FileNotFoundError, match=f"No such folder: {path}"):
        MNISTDDPMPipeline.from_pretrained(path)


def test_a_missing_path_object_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such folder"):
        MNISTDDPMPipeline.from_pretrained(tmp_path / "model")


@pytest.mark.parametrize("entry,shown", [
    (["unet_mnist", "torch"], "['unet_mnist', 'torch'], which is not a ModelMixin class"),
    (["diffusers", "logging"], "['diffusers', 'logging'], which is not a ModelMixin class"),
    (["diffusers", "DDPMScheduler"], "`unet` component ['diffusers', 'DDPMScheduler'], which is not a ModelMixin"),
    ([None, None], "as [library, class name], got [None, None]"),
    ("ClassConditionedUNet", "as [library, class name], got 'ClassConditionedUNet'"),
    (["unet_mnist"], "as [library, class name], got ['unet_mnist']"),
    (None, "no entry for the `unet` component"),
])
def test_a_tampered_model_index_is_a_value_error_naming_the_entry(tiny_pipe, tmp_path, entry, shown):
    import json

    tiny_pipe.save_pretrained(tmp_path)
    model_index = json.loads((tmp_path / "model_index.json").read_text())
    if entry is None:
        del model_index["unet"]
    else:
        model_index["unet"] = entry
    (tmp_path / "model_index.json").write_text(json.dumps(model_index))
    with pytest.raises(ValueError) as error:
        MNISTDDPMPipeline.from_pretrained(tmp_path)
    assert shown in str(error.value)


def tiny_student(tiny_unet, **config) -> MNISTDDPMPipeline:
    """A stand-in for a consistency-distilled student: LCMScheduler on 50 skipping steps, guidance 1.5 in its weights."""
    from diffusers import LCMScheduler

    scheduler = LCMScheduler(beta_start=1e-4, beta_end=0.02, original_inference_steps=50)
    pipe = MNISTDDPMPipeline(unet=tiny_unet, scheduler=scheduler, default_num_inference_steps=4,
                             distilled_guidance_scale=1.5, **config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_a_distilled_student_refuses_to_guide_again_and_keeps_saying_so_after_a_round_trip(tiny_unet, tmp_path):
    student = tiny_student(tiny_unet)
    for guidance_scale in (3.0, 0.0, 1.5):
        with pytest.raises(ValueError, match=rf"must be 1 for this distilled student, got {guidance_scale}: "
                                             r"classifier-free guidance at scale 1.5 is in its weights"):
            run(student, guidance_scale=guidance_scale)
    assert len(run(student)) == 1 and len(run(student, guidance_scale=1)) == 1
    student.save_pretrained(tmp_path / "student")
    loaded = MNISTDDPMPipeline.from_pretrained(tmp_path / "student")
    assert loaded.config.distilled_guidance_scale == 1.5
    with pytest.raises(ValueError, match="distilled student"):
        loaded.resolve_defaults(guidance_scale=2)


def test_the_step_cap_is_the_running_schedulers_own(tiny_unet):
    student = tiny_student(tiny_unet)
    with pytest.raises(ValueError, match="at most 50, got 51; 50 is LCMScheduler's original_inference_steps"):
        student.resolve_defaults(51)
    # A scheduler built from the student's config carries `original_inference_steps` in it, but is not capped by it.
    for scheduler_class in (DPMSolverMultistepScheduler, DDIMScheduler, MNISTDDPMScheduler):
        student.scheduler = scheduler_class.from_config(student.scheduler.config)
        assert student.resolve_defaults(100)[0] == 100
        with pytest.raises(ValueError, match=f"at most 1000, got 1001; 1000 is {scheduler_class.__name__}'s"):
            student.resolve_defaults(1001)


def test_a_default_number_of_steps_is_named_where_it_came_from(tiny_pipe):
    from diffusers import LCMScheduler

    tiny_pipe.scheduler = LCMScheduler.from_config(tiny_pipe.scheduler.config)  # a DDPM has no stored steps
    with pytest.raises(ValueError, match=r"at most 50, got 1000 \(the full chain, num_train_timesteps\); 50 is "
                                         r"LCMScheduler's original_inference_steps"):
        tiny_pipe.resolve_defaults()
    assert tiny_pipe.resolve_defaults(4)[0] == 4


def test_stored_default_steps_belong_to_the_scheduler_they_were_stored_with(tiny_unet):
    from mnist_diffusion.pipeline_mnist_inpaint import MNISTDDPMInpaintPipeline

    student = tiny_student(tiny_unet)
    assert student.resolve_defaults()[0] == 4
    inpaint = MNISTDDPMInpaintPipeline.from_pipe(student, scheduler=MNISTDDPMScheduler.from_config(student.scheduler.config))
    assert inpaint.resolve_defaults()[0] == MNISTDDPMInpaintPipeline.fallback_num_inference_steps  # not 4 RePaint steps
    assert MNISTDDPMInpaintPipeline.from_pipe(student).resolve_defaults()[0] == 4  # the same scheduler keeps them
    student.scheduler = MNISTDDPMScheduler.from_config(student.scheduler.config)
    assert student.resolve_defaults()[0] == 1000


def test_a_callback_reads_the_guidance_and_changes_it_for_the_steps_that_follow(tiny_pipe):
    seen = []

    def stronger_each_step(pipe, i, t, callback_kwargs):
        seen.append((pipe.guidance_scale, pipe.do_classifier_free_guidance, pipe.num_timesteps))
        pipe._guidance_scale += 1.0
        return callback_kwargs

    run(tiny_pipe, num_inference_steps=4, guidance_scale=2.0, callback_on_step_end=stronger_each_step)
    assert seen == [(2.0, True, 4), (3.0, True, 4), (4.0, True, 4), (5.0, True, 4)]
    assert tiny_pipe.guidance_scale == 2.0 + tiny_pipe.num_timesteps  # kept after the call, as diffusers' tests read it

    batches = []
    tiny_pipe.unet.register_forward_hook(lambda module, args, output: batches.append(len(args[0])))

    def guidance_off_after_the_first_step(pipe, i, t, callback_kwargs):
        pipe._guidance_scale = 1.0
        return callback_kwargs

    run(tiny_pipe, labels=(3, 7), num_inference_steps=3, guidance_scale=2.0,
        callback_on_step_end=guidance_off_after_the_first_step)
    assert batches == [4, 2, 2] and not tiny_pipe.do_classifier_free_guidance
    # The interval too: the steps that follow are guided only inside the new one.
    batches.clear()

    def guide_only_the_last_step(pipe, i, t, callback_kwargs):
        pipe._guidance_interval = (0.0, 0.0)
        return callback_kwargs

    run(tiny_pipe, labels=(3, 7), num_inference_steps=3, guidance_scale=2.0,
        callback_on_step_end=guide_only_the_last_step)
    assert batches == [4, 2, 4] and tiny_pipe.guidance_interval == (0.0, 0.0)


def assert_offloading_gives_the_same_images(tiny_unet, offload: str) -> None:
    """Images of a pipeline with `tiny_unet`'s weights, equal with and without `pipe.<offload>(device="cpu")`."""
    kwargs = dict(labels=(1, 2), guidance_scale=2.0, num_inference_steps=3, output_type="pt")
    reference = run(fresh_copy(tiny_unet), **kwargs)
    offloaded = fresh_copy(tiny_unet)
    getattr(offloaded, offload)(device="cpu")
    torch.testing.assert_close(run(offloaded, **kwargs), reference, atol=0, rtol=0)


def test_model_cpu_offload_gives_the_same_images(tiny_unet):
    assert_offloading_gives_the_same_images(tiny_unet, "enable_model_cpu_offload")


def test_sequential_cpu_offload_works_wherever_it_works_for_diffusers_own_ddpm_pipeline(tiny_unet):
    # On a CPU-only machine accelerate's sequential offloading fails for diffusers' own DDPMPipeline too (it rebuilds
    # an offloaded weight as a plain tensor, accelerate 1.16 with torch 2.13): ours must work wherever that one does.
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    peer = DDPMPipeline(UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                    layers_per_block=1, norm_num_groups=4,
                                    down_block_types=("DownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "UpBlock2D")).eval(), DDPMScheduler())
    peer.set_progress_bar_config(disable=True)
    peer.enable_sequential_cpu_offload(device="cpu")
    try:
        peer(num_inference_steps=2, output_type="np")
    except (TypeError, NotImplementedError) as error:  # NotImplementedError: a meta tensor copied (accelerate 1.10)
        pytest.xfail(f"diffusers' own DDPMPipeline cannot offload sequentially here either: {error}")
    assert_offloading_gives_the_same_images(tiny_unet, "enable_sequential_cpu_offload")


def fresh_copy(tiny_unet) -> MNISTDDPMPipeline:
    """A fresh DDPM pipeline with `tiny_unet`'s weights (offloading hooks change the modules they are put on)."""
    pipe = MNISTDDPMPipeline(unet=ClassConditionedUNet.from_config(tiny_unet.config).eval(),
                             scheduler=MNISTDDPMScheduler())
    pipe.unet.load_state_dict(tiny_unet.state_dict())
    pipe.set_progress_bar_config(disable=True)
    return pipe


# Loading: diffusers' own loader, with every argument of `DiffusionPipeline.from_pretrained` ------------------------


@pytest.fixture
def saved(tiny_pipe, tmp_path):
    tiny_pipe.register_to_config(default_guidance_scale=1.4)
    tiny_pipe.save_pretrained(tmp_path / "pipe")
    return tmp_path / "pipe"


@pytest.mark.parametrize("dtype_kwargs, expected", [
    ({}, torch.float32),
    ({DTYPE_ARGUMENT: torch.bfloat16}, torch.bfloat16),
    ({"torch_dtype": torch.bfloat16}, torch.bfloat16),
    ({DTYPE_ARGUMENT: {"unet": torch.bfloat16, "default": torch.float32}}, torch.bfloat16),
    ({DTYPE_ARGUMENT: {"default": torch.bfloat16}}, torch.bfloat16),
    ({"device_map": "cpu"}, torch.float32),
    ({"low_cpu_mem_usage": False}, torch.float32),
    ({"low_cpu_mem_usage": True}, torch.float32),
])
def test_from_pretrained_takes_diffusers_loading_arguments(saved, tiny_pipe, dtype_kwargs, expected):
    pipe = MNISTDDPMPipeline.from_pretrained(saved, **dtype_kwargs)
    assert pipe.unet.dtype == expected and pipe.config.default_guidance_scale == 1.4
    assert pipe.config._name_or_path == saved
    for name, weight in tiny_pipe.unet.state_dict().items():
        torch.testing.assert_close(pipe.unet.state_dict()[name].float(), weight.to(expected).float(), msg=name)


def test_variants_and_pickle_weights_round_trip_and_a_missing_variant_is_diffusers_error(saved, tiny_pipe, tmp_path):
    reference = run(MNISTDDPMPipeline.from_pretrained(saved), output_type="pt")
    tiny_pipe.save_pretrained(tmp_path / "variant", variant="fp16")
    assert (tmp_path / "variant" / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    images = run(MNISTDDPMPipeline.from_pretrained(tmp_path / "variant", variant="fp16"), output_type="pt")
    torch.testing.assert_close(images, reference, atol=0, rtol=0)
    with pytest.raises(ValueError, match="You are trying to load the model files of the `variant=bf16`"):
        MNISTDDPMPipeline.from_pretrained(tmp_path / "variant", variant="bf16")
    tiny_pipe.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    assert (tmp_path / "pickled" / "unet" / "diffusion_pytorch_model.bin").is_file()
    pickled = MNISTDDPMPipeline.from_pretrained(tmp_path / "pickled", use_safetensors=False)
    torch.testing.assert_close(run(pickled, output_type="pt"), reference, atol=0, rtol=0)


def test_components_and_config_values_passed_to_from_pretrained_replace_the_saved_ones(saved):
    pipe = MNISTDDPMPipeline.from_pretrained(saved, scheduler=DDIMScheduler(), default_guidance_scale=2.5)
    assert isinstance(pipe.scheduler, DDIMScheduler) and pipe.config.default_guidance_scale == 2.5


def test_a_folder_in_the_hub_layout_loads_the_installed_code_never_the_folders_copy(saved):
    # A Hub repo names our components by file, with the file beside the weights for trust_remote_code users; the
    # package route must not import those files (here they would fail loudly).
    import json

    index = json.loads((saved / "model_index.json").read_text())
    index.update(_class_name=["pipeline_mnist_ddpm", "MNISTDDPMPipeline"], unet=["unet_mnist", "ClassConditionedUNet"],
                 scheduler=["scheduling_mnist_ddpm", "MNISTDDPMScheduler"])
    (saved / "model_index.json").write_text(json.dumps(index))
    for name, file in (("unet", "unet_mnist.py"), ("scheduler", "scheduling_mnist_ddpm.py"), (".", "pipeline_mnist_ddpm.py"),
                       (".", "pipeline_mnist_ddpm_checks.py")):
        (saved / name / file).write_text("raise RuntimeError('the folder's own code ran')\n")
    pipe = MNISTDDPMPipeline.from_pretrained(saved, dtype=torch.bfloat16)
    assert type(pipe.unet) is ClassConditionedUNet and pipe.unet.dtype == torch.bfloat16
    assert isinstance(pipe.scheduler, MNISTDDPMScheduler) and pipe.config.default_guidance_scale == 1.4


def test_a_batch_gives_the_images_of_one_call_per_image_with_the_same_generators(tiny_pipe):
    # diffusers' batch consistency: one generator per image makes each image independent of its batch.
    def generators(*seeds):
        return [torch.Generator().manual_seed(seed) for seed in seeds]

    kwargs = dict(num_inference_steps=4, guidance_scale=2.0, output_type="pt")
    batched = tiny_pipe(labels=[3, 7], num_images_per_label=2, generator=generators(0, 1, 2, 3), **kwargs).images
    alone = torch.cat([tiny_pipe(labels=[label], generator=generators(seed), **kwargs).images
                       for label, seed in ((3, 0), (3, 1), (7, 2), (7, 3))])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_a_compiled_unet_runs_the_whole_loop_as_one_graph_without_recompiling(tiny_pipe):
    torch.compiler.reset()
    reference = run(tiny_pipe, num_inference_steps=4, guidance_scale=2.0, output_type="pt")
    tiny_pipe.unet = torch.compile(tiny_pipe.unet, fullgraph=True, backend="eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = run(tiny_pipe, num_inference_steps=4, guidance_scale=2.0, output_type="pt")
        run(tiny_pipe, num_inference_steps=4, guidance_scale=2.0, output_type="pt", seed=1)  # a second call too
    torch.testing.assert_close(compiled, reference, atol=1e-5, rtol=1e-5)
