"""The pipeline's optional `guider` (a diffusers guider) and `guidance_unet` (autoguidance) components."""

import json

import pytest
import torch
from diffusers.guiders import (AdaptiveProjectedGuidance, ClassifierFreeGuidance, ClassifierFreeZeroStarGuidance,
                               PerturbedAttentionGuidance, SkipLayerGuidance, TangentialClassifierFreeGuidance)

from mnist_diffusion import ClassConditionedUNet, MNISTDDPMInpaintPipeline, MNISTDDPMPipeline, MNISTDDPMScheduler

from .conftest import TINY_UNET


def draw(pipe, **kwargs):
    kwargs.setdefault("num_inference_steps", 5)
    return pipe(labels=[3, 7], generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs).images


def fresh(tiny_unet, **config) -> MNISTDDPMPipeline:
    pipe = MNISTDDPMPipeline(unet=tiny_unet, scheduler=MNISTDDPMScheduler(), **config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_cfg_as_the_guider_gives_todays_digits_with_one_unet_call_per_step(tiny_unet):
    pipe = fresh(tiny_unet)
    reference = draw(pipe, guidance_scale=2.0)
    pipe.guider = ClassifierFreeGuidance(guidance_scale=2.0)
    rows = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: rows.append(len(args[0])))
    guided = draw(pipe)  # the guider's scale is the call's default
    hook.remove()
    assert rows == [4] * 5  # both branches of both images in one call per step
    torch.testing.assert_close(guided, reference, atol=1e-5, rtol=0)


def test_a_calls_scale_and_interval_override_the_guiders_and_a_callback_still_steers(tiny_unet):
    plain = fresh(tiny_unet)
    guided = fresh(tiny_unet, guider=ClassifierFreeGuidance(guidance_scale=3.0))
    torch.testing.assert_close(draw(guided, guidance_scale=1.5), draw(plain, guidance_scale=1.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(draw(guided, guidance_interval=(0, 500)),
                               draw(plain, guidance_scale=3.0, guidance_interval=(0, 500)), atol=1e-5, rtol=0)
    windowed = fresh(tiny_unet, guider=ClassifierFreeGuidance(guidance_scale=3.0, start=0.6))  # guides steps 3-4 of 5
    assert (draw(windowed) - draw(guided)).abs().max() > 1e-4
    torch.testing.assert_close(draw(windowed, guidance_interval=(0, 1000)), draw(guided), atol=1e-5, rtol=0)

    def unguide_after_two_steps(pipe, i, t, tensors):
        if i == 1:
            pipe._guidance_scale = 1.0
        return tensors

    torch.testing.assert_close(draw(guided, callback_on_step_end=unguide_after_two_steps),
                               draw(plain, guidance_scale=3.0, callback_on_step_end=unguide_after_two_steps),
                               atol=1e-5, rtol=0)
    assert guided.guider.guidance_scale == 3.0  # each call guides a copy


@pytest.mark.parametrize("guider", [
    AdaptiveProjectedGuidance(guidance_scale=2.0, eta=0.0),
    ClassifierFreeZeroStarGuidance(guidance_scale=2.0, zero_init_steps=0),
    TangentialClassifierFreeGuidance(guidance_scale=2.0),
], ids=lambda guider: type(guider).__name__)
def test_a_guider_that_combines_the_predictions_otherwise_changes_the_digits(tiny_unet, guider):
    cfg = draw(fresh(tiny_unet, guider=ClassifierFreeGuidance(guidance_scale=2.0)))
    other = draw(fresh(tiny_unet, guider=guider))
    assert torch.isfinite(other).all() and (other - cfg).abs().max() > 1e-3


@pytest.mark.parametrize("guider", [
    SkipLayerGuidance(guidance_scale=2.0, skip_layer_guidance_layers=[0]),
    PerturbedAttentionGuidance(guidance_scale=2.0, perturbed_guidance_layers=[0]),
], ids=lambda guider: type(guider).__name__)
def test_a_guider_that_hooks_attention_blocks_is_refused_by_name(tiny_unet, guider):
    with pytest.raises(ValueError, match=f"{type(guider).__name__} guides by hooking"):
        draw(fresh(tiny_unet, guider=guider))


def test_a_guider_round_trips_also_when_assigned_to_a_pipeline_built_without_one(tiny_unet, tmp_path):
    pipe = fresh(tiny_unet)
    pipe.guider = AdaptiveProjectedGuidance(guidance_scale=2.0, eta=0.0)
    pipe.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "model_index.json").read_text())["guider"] == [
        "diffusers", "AdaptiveProjectedGuidance"]
    loaded = MNISTDDPMPipeline.from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.guider) is AdaptiveProjectedGuidance and loaded.guider.config.eta == 0.0
    torch.testing.assert_close(draw(loaded), draw(pipe), atol=1e-5, rtol=0)
    # A folder saved without a guider (every shipped one) still loads, with none.
    fresh(tiny_unet).save_pretrained(tmp_path / "plain")
    assert MNISTDDPMPipeline.from_pretrained(tmp_path / "plain").guider is None
    assert MNISTDDPMPipeline.from_pretrained(tmp_path / "plain", guider=ClassifierFreeGuidance()).guider is not None


def test_a_hub_layout_folder_loads_its_guider_and_guidance_unet(tiny_unet, tmp_path):
    torch.manual_seed(1)
    weak = ClassConditionedUNet(**TINY_UNET).eval()
    pipe = fresh(tiny_unet, guider=ClassifierFreeGuidance(guidance_scale=2.0), guidance_unet=weak)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    index.update(_class_name=["pipeline_mnist_ddpm", "MNISTDDPMPipeline"], unet=["unet_mnist", "ClassConditionedUNet"],
                 guidance_unet=["unet_mnist", "ClassConditionedUNet"],
                 scheduler=["scheduling_mnist_ddpm", "MNISTDDPMScheduler"])
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    loaded = MNISTDDPMPipeline.from_pretrained(tmp_path, dtype={"guidance_unet": torch.bfloat16})
    assert type(loaded.guider) is ClassifierFreeGuidance and loaded.guider.guidance_scale == 2.0
    assert loaded.guidance_unet.dtype == torch.bfloat16 and loaded.unet.dtype == torch.float32


def test_autoguidance_runs_the_second_branch_on_the_guidance_unet_with_the_same_label(tiny_unet):
    torch.manual_seed(1)
    weak = ClassConditionedUNet(**TINY_UNET).eval()
    pipe = fresh(tiny_unet, guidance_unet=weak)
    seen = {}
    hooks = [model.register_forward_pre_hook(lambda module, args, name=name: seen.setdefault(name, args[2].tolist())
                                             and None) for name, model in (("unet", pipe.unet), ("guidance_unet", weak))]
    latents, labels = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.tensor([3, 7])
    guided = pipe.predict_noise(latents, torch.tensor(500), labels, 2.0, torch.float32)
    assert seen == {"unet": [3, 7], "guidance_unet": [3, 7]}
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        main, second = (model(latents, torch.tensor(500), labels).sample for model in (tiny_unet, weak))
    torch.testing.assert_close(guided, second + 2.0 * (main - second), atol=1e-5, rtol=0)
    # The same through a guider, and in the inpainting pipeline that shares the components.
    pipe.guider = ClassifierFreeGuidance(guidance_scale=2.0)
    torch.testing.assert_close(pipe.predict_noise(latents, torch.tensor(500), labels, 2.0, torch.float32, 0, 1,
                                                  pipe.guider), guided, atol=1e-5, rtol=0)
    inpaint = MNISTDDPMInpaintPipeline.from_pipe(pipe)
    assert inpaint.guidance_unet is weak and inpaint.guider is pipe.guider


def test_a_distilled_student_refuses_a_guider_that_would_guide_again(tiny_unet):
    student = fresh(tiny_unet, distilled_guidance_scale=1.5, guider=ClassifierFreeGuidance(guidance_scale=2.0))
    with pytest.raises(ValueError, match="must be 1 for this distilled student"):
        draw(student)
    student.guider = ClassifierFreeGuidance(guidance_scale=1.0)
    assert torch.isfinite(draw(student)).all()


def test_an_evaluations_identity_names_the_guider_and_the_guidance_unet(tiny_unet):
    from mnist_diffusion.lab.fingerprint import model_sha256, pipeline_sha256

    torch.manual_seed(1)
    weak = ClassConditionedUNet(**TINY_UNET).eval()
    plain = fresh(tiny_unet)
    assert pipeline_sha256(plain) == model_sha256(tiny_unet, plain.scheduler)  # results keyed before guiders stand
    identities = {pipeline_sha256(pipe) for pipe in (
        plain, fresh(tiny_unet, guider=ClassifierFreeGuidance(guidance_scale=2.0)),
        fresh(tiny_unet, guider=ClassifierFreeGuidance(guidance_scale=3.0)), fresh(tiny_unet, guidance_unet=weak),
        fresh(tiny_unet, guidance_unet=tiny_unet))}
    assert len(identities) == 5
