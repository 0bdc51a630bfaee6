# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""`MNISTDDPMPipeline`: generate handwritten digits of the classes you ask for.

This file imports only torch, diffusers, huggingface_hub and its checks (`pipeline_mnist_ddpm_checks.py`, which imports
nothing of the package), so the two can be copied verbatim into a Hub repo and loaded with `trust_remote_code=True` by
someone who does not have `mnist_diffusion` installed.
"""

import copy
import importlib
import inspect
import os
from collections.abc import Callable, Sequence
from typing import Optional

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, ModelMixin, SchedulerMixin
from diffusers.guiders import BaseGuidance
from diffusers.pipelines.pipeline_loading_utils import _fetch_class_library_tuple
from diffusers.utils.torch_utils import randn_tensor

from .pipeline_mnist_ddpm_checks import (check_callback, check_generators, check_guidance, check_guider, check_labels,
                                         check_likelihood_proposal, check_num_inference_steps, check_output_type,
                                         check_positive_integer, null_class_label, num_class_labels,
                                         step_eta_kwargs)


def step_guidance_scale(t, guidance_scale: float, guidance_interval: tuple[float, float] | None) -> float:
    """
    The guidance scale of the step at timestep `t`: `guidance_scale` inside `guidance_interval` (t_low ≤ t ≤ t_high,
    or everywhere when it is None), and 1 outside it, where the steps run the conditional pass only (Kynkäänniemi et
    al., 2024, "Applying Guidance in a Limited Interval Improves Sample and Distribution Quality in Diffusion Models").
    """
    if guidance_interval is None or guidance_interval[0] <= float(t) <= guidance_interval[1]:
        return guidance_scale
    return 1.0


class MNISTDDPMPipeline(DiffusionPipeline):
    """
    Class-conditional DDPM for handwritten digits: start from pure noise x_T ~ N(0, I) and denoise it step by step
    with `unet` and `scheduler`, steering every step toward the requested digit with classifier-free guidance.

    Args:
        unet ([`ClassConditionedUNet`]): the noise predictor ε_θ(x_t, t, y).
        scheduler ([`SchedulerMixin`]): an [`MNISTDDPMScheduler`], or any diffusers scheduler made from its config,
            e.g. `DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)`.
        default_guidance_scale (`float`, defaults to 1.0): guidance scale of a call that gives none.
        default_num_inference_steps (`int`, *optional*): steps of a call that gives none, while the scheduler is of
            the class the pipeline was built with; the scheduler's full `num_train_timesteps` when not set.
        default_guidance_interval (`tuple[float, float]`, *optional*): guidance interval of a call that gives none;
            guidance at every step when not set.
        distilled_guidance_scale (`float`, *optional*): set on a distilled student whose weights learned the teacher's
            guidance at this scale: it samples with one pass per step, and refuses any `guidance_scale` but 1.
        likelihood_proposal (`list[float]`, *optional*): the probabilities of timesteps 0 … T−1 from which
            [`~MNISTDDPMPipeline.log_likelihood`] draws when a call gives no `proposal`.
        default_eta (`float`, *optional*): `eta` of a call that gives none, for a scheduler whose `step` takes one
            (γ of `TCDScheduler`); other schedulers ignore it.
        guider ([`~diffusers.guiders.BaseGuidance`], *optional*): how the two predictions of a step combine, swapped
            like the scheduler (`pipe.guider = AdaptiveProjectedGuidance(guidance_scale=2.0, eta=0.0)`); its
            `guidance_scale` is the default of a call, and a call's `guidance_scale` and `guidance_interval` replace
            its scale and its start and stop for that call. Without one, classifier-free guidance at
            `default_guidance_scale`, as `ClassifierFreeGuidance` computes it. Guiders that hook attention or
            transformer blocks (the layer-skip family) find none in this UNet and are refused.
        guidance_unet ([`ClassConditionedUNet`], *optional*): autoguidance (Karras et al., 2024): a weaker version of
            `unet` that the guider's second branch runs on, with the same label instead of the null label.

    The UNet's weights are kept in `channels_last` memory format; the latents and the scheduler's arithmetic are
    float32 whatever the UNet's dtype (see docs/performance.md).
    """

    model_cpu_offload_seq = "unet->guidance_unet"
    _optional_components = ["guider", "guidance_unet"]
    _callback_tensor_inputs = ["latents"]
    # Steps when neither the call nor the config names any; None: the scheduler's full chain, the DDPM of the paper.
    fallback_num_inference_steps: int | None = None

    def __init__(
        self,
        unet: ModelMixin,
        scheduler: SchedulerMixin,
        # Optional[X], not X | None: diffusers 0.36's from_pretrained looks each argument up in the annotations it
        # reads with `get_origin(...) == Union`, which misses `X | None` (KeyError); 0.37 reads both.
        default_guidance_scale: float = 1.0,
        default_num_inference_steps: Optional[int] = None,
        default_guidance_interval: Optional[tuple[float, float]] = None,
        distilled_guidance_scale: Optional[float] = None,
        likelihood_proposal: Optional[list[float]] = None,
        default_eta: Optional[float] = None,
        guider: Optional[BaseGuidance] = None,
        guidance_unet: Optional[ModelMixin] = None,
    ):
        super().__init__()
        for model in (unet, guidance_unet):
            if isinstance(model, torch.nn.Module):
                model.to(memory_format=torch.channels_last)  # in place; the values of the weights are unchanged
        self.register_modules(unet=unet, scheduler=scheduler, guider=guider, guidance_unet=guidance_unet)
        if likelihood_proposal is not None and scheduler is not None:
            likelihood_proposal = check_likelihood_proposal(likelihood_proposal, scheduler.config.num_train_timesteps)
        self.register_to_config(
            default_guidance_scale=default_guidance_scale,
            default_num_inference_steps=default_num_inference_steps,
            default_guidance_interval=default_guidance_interval,
            distilled_guidance_scale=distilled_guidance_scale,
            likelihood_proposal=likelihood_proposal,
            default_eta=default_eta,
        )
        # The scheduler class `default_num_inference_steps` was chosen for.
        self._default_steps_scheduler = type(scheduler).__name__

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        # diffusers keeps an optional component's entry at [None, None] when one is assigned to a pipeline built
        # without it (`pipe.guider = ...`), and `save_pretrained` would then drop it: record what was assigned.
        if name in self._optional_components and value is not None and hasattr(self, "_internal_dict") \
                and self.config.get(name, (None,))[0] is None:
            self.register_to_config(**{name: _fetch_class_library_tuple(value)})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "MNISTDDPMPipeline":
        """
        Load a pipeline from a folder or a Hub repo, with the arguments of `DiffusionPipeline.from_pretrained`. With
        the package installed, `mnist_diffusion.loading` checks what is loaded first (another pipeline, or a
        model_index.json naming a class of neither diffusers nor this package, is refused by name) and loads a Hub
        repo's file-named components from the installed package, never from a file in the repo; without it (remote
        code), diffusers' own loader runs.

        Raises:
            `FileNotFoundError`: `pretrained_model_name_or_path` is neither a folder nor a Hub repo id.
            `ValueError`: it holds another pipeline, or names a component of the wrong kind or of another package.
        """
        try:  # by name, which diffusers' remote-code loader does not follow: a Hub repo ships this file without it
            loading = importlib.import_module("mnist_diffusion.loading")
        except ImportError:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        return loading.load_pipeline(cls, pretrained_model_name_or_path, kwargs)

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, **kwargs) -> "MNISTDDPMPipeline":
        """
        A pipeline of this class with the components and config of `pipeline`, sharing their weights:
        `MNISTDDPMInpaintPipeline.from_pipe(pipe)` and back. As in diffusers, the new pipeline is cast to
        `torch_dtype` (float32 unless given), and with it the UNet both share.
        """
        # diffusers' `from_pipe` keeps a model only if its class is the one `__init__` is annotated with, which this
        # file cannot import in a Hub repo; so the components are passed on.
        components = {name: module for name, module in pipeline.components.items() if name not in kwargs}
        if type(kwargs.get("scheduler", pipeline.scheduler)) is not type(pipeline.scheduler):
            # The stored number of steps was chosen for the replaced scheduler (a student's 4 LCM steps, say).
            kwargs.setdefault("default_num_inference_steps", None)
        return super().from_pipe(pipeline, **components, **kwargs)

    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` (in a callback) to skip the remaining steps of the current call."""
        return self._interrupt

    # What a `callback_on_step_end` reads, as in diffusers' pipelines; it may set `pipe._guidance_scale` (and
    # `pipe._guidance_interval`) to change the guidance of the steps that follow. Set by each call, and kept after it.

    @property
    def guidance_scale(self) -> float:
        """The guidance scale w of the current (or last) call."""
        return self._guidance_scale

    @property
    def guidance_interval(self) -> tuple[float, float] | None:
        """The timesteps that the current (or last) call guides, `(t_low, t_high)`; None: every step."""
        return self._guidance_interval

    @property
    def do_classifier_free_guidance(self) -> bool:
        """
        Whether the steps (those inside the guidance interval) run the unconditional pass. Off only at w = 1: here
        w < 1 moves towards the unconditional model (0 ignores the label) rather than meaning "no guidance".
        """
        return self._guidance_scale != 1

    @property
    def num_timesteps(self) -> int:
        """The denoising steps of the current (or last) call: the length of the loop the callback runs in."""
        return self._num_timesteps

    def resolve_defaults(
        self,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
    ) -> tuple[int, float, tuple[float, float] | None]:
        """
        The number of steps, guidance scale and guidance interval (None: every step) a call given these arguments
        uses, checked as the call checks them: each one given, else the pipeline's stored default, else
        `fallback_num_inference_steps` (the scheduler's full chain when None) and guidance at every step.
        """
        origin = ""
        if num_inference_steps is None:
            stored = self.config.default_num_inference_steps
            scheduler_name = type(self.scheduler).__name__
            if stored is not None and scheduler_name == getattr(self, "_default_steps_scheduler", scheduler_name):
                num_inference_steps, origin = stored, " (the pipeline's default_num_inference_steps)"
            elif self.fallback_num_inference_steps is not None:
                num_inference_steps = self.fallback_num_inference_steps
                origin = f" ({type(self).__name__}'s default number of steps)"
            else:
                num_inference_steps = self.scheduler.config.num_train_timesteps
                origin = " (the full chain, num_train_timesteps)"
        num_inference_steps = check_num_inference_steps(num_inference_steps, self.scheduler, origin)
        if guidance_scale is None:
            guider = getattr(self, "guider", None)
            guidance_scale = getattr(guider, "guidance_scale", self.config.default_guidance_scale)
        if guidance_interval is None:
            guidance_interval = self.config.default_guidance_interval
        return (num_inference_steps, *self.check_guidance(guidance_scale, guidance_interval))

    def check_guidance(self, guidance_scale, guidance_interval) -> tuple[float, tuple[float, float] | None]:
        """The checks of a call's guidance, made again on what a callback sets: see [`check_guidance`]."""
        return check_guidance(guidance_scale, guidance_interval, self.scheduler.config.num_train_timesteps,
                              self.config.get("distilled_guidance_scale"))

    def check_inputs(
        self,
        labels,
        num_images_per_label,
        num_inference_steps,
        guidance_scale,
        guidance_interval,
        output_type,
        generator,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs,
    ) -> tuple[torch.Tensor, int, torch.Generator | list | None]:
        """
        Check a call's arguments (of this pipeline or one built on it), fill in the defaults, and start the state the
        loop and callbacks read (`_guidance_scale`, `_guidance_interval`, `_interrupt`). Returns the label of each
        image on the execution device, the number of steps, and the generator (or the list of one per image).
        """
        labels = check_labels(labels, num_class_labels(self.unet))
        num_images_per_label = check_positive_integer("num_images_per_label", num_images_per_label)
        num_inference_steps, guidance_scale, guidance_interval = self.resolve_defaults(
            num_inference_steps, guidance_scale, guidance_interval
        )
        check_output_type(output_type)
        generators = check_generators(generator, len(labels) * num_images_per_label)
        if isinstance(generator, Sequence):  # a list or tuple: one per image
            generator = generators
        check_callback(callback_on_step_end, callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)
        guider = check_guider(getattr(self, "guider", None))

        class_labels = torch.tensor(labels, device=self._execution_device).repeat_interleave(num_images_per_label)
        self._guidance_scale, self._guidance_interval = guidance_scale, guidance_interval
        self._interrupt = False
        # The call's own copy: its scale follows the call's, a stateful guider's state (APG's momentum) is its own,
        # and a guidance interval, the call's or the stored one, replaces the guider's start and stop.
        self._call_guider = None if guider is None else copy.copy(guider)
        if self._call_guider is not None and guidance_interval is not None:
            self._call_guider._start, self._call_guider._stop = 0.0, 1.0
        return class_labels, num_inference_steps, generator

    def predict_noise(
        self, latents: torch.Tensor, t, class_labels: torch.Tensor, guidance_scale: float, dtype: torch.dtype,
        step_index: int = 0, num_steps: int = 1, guider: BaseGuidance | None = None,
    ) -> torch.Tensor:
        """
        The model's prediction for `latents` at timestep `t` (ε, or v or x_0 as the scheduler's `prediction_type`
        says; guidance is linear, so guiding them is guiding the ε they imply), guided at `guidance_scale`: by
        `guider` at step `step_index` of `num_steps` when given, else classifier-free guidance
        ε_uncond + w · (ε_cond − ε_uncond). At w = 1 only the conditional pass runs. With a `guidance_unet`, the
        second branch is that UNet's prediction for the same label (autoguidance). `t` may be one timestep per image.
        `dtype` is the UNet's compute dtype (`unet.dtype`, read once per call: the property walks the modules).
        Float32 in and out.
        """
        guidance_unet = getattr(self, "guidance_unet", None)
        model_input = self.scheduler.scale_model_input(latents, t).to(dtype)
        if guidance_scale == 1:
            return self.unet(model_input, t, class_labels).sample.float()
        second_labels = class_labels if guidance_unet is not None else torch.full_like(class_labels,
                                                                                     null_class_label(self.unet))
        if guider is None:  # classifier-free guidance (or autoguidance), as ClassifierFreeGuidance computes it
            noise_cond, noise_uncond = self._branch_predictions(model_input, t, [class_labels, second_labels],
                                                                guidance_unet)
            return noise_uncond + guidance_scale * (noise_cond - noise_uncond)
        guider.set_state(step=step_index, num_inference_steps=num_steps, timestep=t)
        if hasattr(guider, "guidance_scale"):
            guider.guidance_scale = guidance_scale  # the call's scale, or what a callback set
        batches = guider.prepare_inputs({"class_labels": (class_labels, second_labels)})
        predictions = self._branch_predictions(model_input, t, [batch.class_labels for batch in batches],
                                               guidance_unet)
        for batch, prediction in zip(batches, predictions):
            batch.noise_pred = prediction
        return guider(batches).pred.float()

    def _branch_predictions(self, model_input, t, labels: list, guidance_unet) -> list[torch.Tensor]:
        # The UNet's prediction for each branch's labels: one batched call, the first branch on `unet` and, with a
        # `guidance_unet`, the others on it (different weights: a call each).
        if guidance_unet is not None:
            return [self.unet(model_input, t, labels[0]).sample.float()] + [
                guidance_unet(model_input.to(guidance_unet.dtype), t, branch).sample.float() for branch in labels[1:]]
        k = len(labels)
        model_t = t.repeat(k) if torch.is_tensor(t) and t.ndim == 1 else t
        return list(self.unet(model_input.repeat(k, 1, 1, 1), model_t, torch.cat(labels)).sample.float().chunk(k))

    def run_callback(
        self, callback_on_step_end: Callable | None, step_index: int, t, latents: torch.Tensor,
        tensor_inputs: Sequence[str],
    ) -> torch.Tensor:
        """
        End a step: call `callback_on_step_end(self, step_index, t, kwargs)` with the tensors `tensor_inputs` names,
        check any guidance it set, and return the latents it returned (or `latents`).
        """
        if callback_on_step_end is None:
            return latents
        scale, interval = self._guidance_scale, self._guidance_interval
        outputs = callback_on_step_end(self, step_index, t, {name: {"latents": latents}[name] for name in tensor_inputs})
        # By identity: a callback may set a value (a tensor, say) that `!=` cannot compare.
        if self._guidance_scale is not scale or self._guidance_interval is not interval:
            try:
                self._guidance_scale, self._guidance_interval = self.check_guidance(self._guidance_scale,
                                                                                    self._guidance_interval)
            except ValueError as error:
                raise ValueError(f"`callback_on_step_end` changed the guidance at step {step_index}: {error}") from None
        if outputs is None:
            return latents
        if not isinstance(outputs, dict):
            raise TypeError(f"`callback_on_step_end` must return a dict of tensors by name (or None), got a "
                            f"{type(outputs).__name__}.")
        return outputs.get("latents", latents)

    def postprocess(self, latents: torch.Tensor, output_type: str):
        """Samples in [-1, 1] → images in [0, 1] as a tensor (`"pt"`), an array (`"np"`) or PIL images (`"pil"`)."""
        images = (latents.float() / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return images
        images = images.cpu().permute(0, 2, 3, 1).numpy()
        return self.numpy_to_pil(images) if output_type == "pil" else images

    def finish(self, latents: torch.Tensor, output_type: str, return_dict: bool) -> ImagePipelineOutput | tuple:
        """End a call: the images, after freeing the models that CPU offloading had moved to the GPU."""
        images = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _likelihood_module(self, name: str):
        # The bound and the classifier live in the package (likelihood.py, zero_shot.py), not in this file that a Hub
        # repo ships as remote code; imported by name, which diffusers' remote-code loader does not follow.
        if self.config.get("distilled_guidance_scale") is not None:
            raise ValueError(
                "This is a distilled student: its network is a consistency function, not the DDPM's noise predictor, "
                "so it defines no variational bound; use the teacher it was distilled from."
            )
        try:
            return importlib.import_module(f"mnist_diffusion.{name}")
        except ImportError as error:
            raise ImportError(
                "`log_likelihood` and `classify` need the mnist-diffusion package (`pip install mnist-diffusion`); "
                "the remote-code copy of this pipeline only generates."
            ) from error

    def log_likelihood(self, images, labels=None, num_timesteps: int | None = None, proposal=None, generator=None,
                       batch_size: int = 500):
        """
        The variational bound of each digit in bits per dimension (Ho et al., 2020, eq. 5), conditional on `labels`
        (the unconditional model without), estimated from `num_timesteps` drawn timesteps or, with None, from every
        term. Needs the package: see `mnist_diffusion.likelihood.log_likelihood` for the arguments and the output.
        """
        return self._likelihood_module("likelihood").log_likelihood(self, images, labels, num_timesteps, proposal,
                                                                    generator, batch_size)

    def classify(self, images, num_trials: int = 50, weighting: str = "uniform", prune=None, generator=None,
                 batch_size: int = 1000):
        """
        Classify digits with the model itself (Li et al., 2023): the digit whose bound is lowest, on `num_trials`
        noisings shared by the classes. Needs the package: see `mnist_diffusion.zero_shot.classify`.
        """
        return self._likelihood_module("zero_shot").classify(self, images, num_trials, weighting, prune, generator,
                                                             batch_size)

    @torch.no_grad()
    def __call__(
        self,
        labels: int | Sequence[int] | torch.Tensor,
        num_images_per_label: int = 1,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        eta: float | None = None,
    ) -> ImagePipelineOutput | tuple:
        """
        Generate digits.

        Args:
            labels (`int`, `Sequence[int]` or `torch.Tensor`): the digits to draw, 0–9; one image per entry, in order.
            num_images_per_label (`int`, defaults to 1): images per entry of `labels`, adjacent in the output.
            num_inference_steps (`int`, *optional*): denoising steps, 1 to the scheduler's `num_train_timesteps` (an
                `LCMScheduler`'s `original_inference_steps`); defaults to `default_num_inference_steps`, else the full
                DDPM chain.
            guidance_scale (`float`, *optional*): guidance weight w, of classifier-free guidance
                ε = ε_uncond + w · (ε_cond − ε_uncond) or of the `guider`, whose own scale it replaces for this call; 1
                disables guidance (and its extra pass), 0 ignores the label. Defaults to the guider's scale, else
                `default_guidance_scale`. A distilled student takes only 1.
            guidance_interval (`tuple[float, float]`, *optional*): `(t_low, t_high)` in training timesteps: guide only
                the steps with t_low ≤ t ≤ t_high, the others with the conditional pass alone (Kynkäänniemi et al.,
                2024); it replaces a guider's start and stop for this call. Defaults to `default_guidance_interval`,
                else every step (within the guider's start and stop).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): one, or one per image.
            output_type (`str`, defaults to `"pil"`): `"pil"` (28×28 images in mode "L"), `"np"` (`(batch, 28, 28, 1)`
                in [0, 1]) or `"pt"` (`(batch, 1, 28, 28)` in [0, 1]).
            return_dict (`bool`, defaults to `True`): return an [`ImagePipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable`, *optional*): `callback_on_step_end(self, i, t, kwargs)` after each step,
                with the tensors `callback_on_step_end_tensor_inputs` names; it may return a dict that replaces them,
                set `pipe._interrupt = True` to stop, or set `pipe._guidance_scale` / `pipe._guidance_interval` for the
                steps that follow.
            callback_on_step_end_tensor_inputs (`list[str]`, defaults to `["latents"]`): tensors passed to it.
            eta (`float`, *optional*): for a scheduler whose `step` takes one, the share of each step's noise drawn
                afresh, in [0, 1]: the γ of `TCDScheduler` (0: deterministic, 1: a full re-noising, as
                `LCMScheduler`), the η of `DDIMScheduler`. Defaults to `default_eta`, else the scheduler's own.

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the generated images.

        Example:

        ```py
        >>> from mnist_diffusion import MNISTDDPMPipeline

        >>> pipe = MNISTDDPMPipeline.from_pretrained("pretrained/mnist-ddpm")
        >>> pipe(labels=[7]).images[0].save("seven.png")
        ```
        """
        class_labels, num_inference_steps, generator = self.check_inputs(
            labels, num_images_per_label, num_inference_steps, guidance_scale, guidance_interval, output_type,
            generator, callback_on_step_end, callback_on_step_end_tensor_inputs,
        )
        eta_kwargs = step_eta_kwargs(eta, self.config.get("default_eta"), self.scheduler)

        config = self.unet.config
        shape = (len(class_labels), config.in_channels, config.sample_size, config.sample_size)
        latents = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=torch.float32)
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        latents = latents * self.scheduler.init_noise_sigma
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        step_kwargs |= eta_kwargs
        dtype = self.unet.dtype

        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                # Read at every step: a callback may have changed the guidance of the steps that follow.
                step_scale = step_guidance_scale(t, self._guidance_scale, self._guidance_interval)
                noise_pred = self.predict_noise(latents, t, class_labels, step_scale, dtype, i, len(timesteps),
                                                self._call_guider)
                latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
                latents = self.run_callback(callback_on_step_end, i, t, latents, callback_on_step_end_tensor_inputs)
                progress_bar.update()

        return self.finish(latents, output_type, return_dict)
