# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""`MNISTDDPMPipeline`: generate handwritten digits of the classes you ask for.

This file imports only torch, diffusers, huggingface_hub and its checks (`pipeline_mnist_ddpm_checks.py`, which imports
nothing of the package), so the two can be copied verbatim into a Hub repo and loaded with `trust_remote_code=True` by
someone who does not have `mnist_diffusion` installed.
"""

import importlib
import inspect
import os
from collections.abc import Callable, Sequence
from typing import Optional

import diffusers
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, ModelMixin, SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError

from .pipeline_mnist_ddpm_checks import (check_callback, check_generators, check_guidance, check_labels,
                                         check_likelihood_proposal, check_num_inference_steps, check_output_type,
                                         check_positive_integer, is_repo_id, null_class_label, num_class_labels)

# A Hub repo names the pipeline's own components by file (["unet_mnist", "ClassConditionedUNet"]), with the file beside
# the weights, so that `trust_remote_code=True` users without the package can load it; the pipeline's `from_pretrained`
# loads such a component from these modules of the installed package instead.
PACKAGE_MODULES = ("unet_mnist", "scheduling_mnist_ddpm")

# The Hub options of `DiffusionPipeline.from_pretrained`, and the model-loading options a Hub-layout repo passes on.
HUB_OPTIONS = ("cache_dir", "force_download", "local_files_only", "revision", "token")
MODEL_OPTIONS = ("variant", "use_safetensors", "low_cpu_mem_usage", "proxies")


def component_class(name: str, entry) -> type:
    """
    The class that a model_index.json entry `[library, class name]` names for the component `name` (the `unet` a
    model, the `scheduler` a scheduler): a diffusers class, or one of this package's, by file (a Hub repo) or by module
    path (`save_pretrained`). Anything else is a `ValueError` naming the entry, before any code could run.
    """
    if entry is None:
        raise ValueError(f"model_index.json has no entry for the `{name}` component.")
    if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not all(isinstance(part, str) for part in entry):
        raise ValueError(f"model_index.json must name the `{name}` component as [library, class name], got {entry!r}.")
    library, class_name = entry
    module = library.rpartition(".")[2]
    found = None
    if library == "diffusers":
        found = getattr(diffusers, class_name, None)
    elif module in PACKAGE_MODULES and library in (module, f"mnist_diffusion.{module}"):
        found = getattr(importlib.import_module(f"mnist_diffusion.{module}"), class_name, None)
    kind = ModelMixin if name == "unet" else SchedulerMixin
    if not inspect.isclass(found) or not issubclass(found, kind):
        raise ValueError(f"model_index.json names the `{name}` component {list(entry)!r}, which is not a "
                         f"{kind.__name__} class of diffusers or of this package.")
    return found


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

    The UNet's weights are kept in `channels_last` memory format; the latents and the scheduler's arithmetic are
    float32 whatever the UNet's dtype (see docs/performance.md).
    """

    model_cpu_offload_seq = "unet"
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
    ):
        super().__init__()
        if isinstance(unet, torch.nn.Module):
            unet = unet.to(memory_format=torch.channels_last)  # in place; the values of the weights are unchanged
        self.register_modules(unet=unet, scheduler=scheduler)
        if likelihood_proposal is not None and scheduler is not None:
            likelihood_proposal = check_likelihood_proposal(likelihood_proposal, scheduler.config.num_train_timesteps)
        self.register_to_config(
            default_guidance_scale=default_guidance_scale,
            default_num_inference_steps=default_num_inference_steps,
            default_guidance_interval=default_guidance_interval,
            distilled_guidance_scale=distilled_guidance_scale,
            likelihood_proposal=likelihood_proposal,
        )
        # The scheduler class `default_num_inference_steps` was chosen for.
        self._default_steps_scheduler = type(scheduler).__name__

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "MNISTDDPMPipeline":
        """
        Load a pipeline from a folder or a Hub repo, with the arguments of `DiffusionPipeline.from_pretrained`. A
        folder written by `save_pretrained` is diffusers' loader's to read. A Hub repo names this package's
        components by file, for remote-code users; with the package installed they are loaded from it, never from a
        file in the repo, and only the index, the configs and the weights are downloaded.

        Raises:
            `FileNotFoundError`: `pretrained_model_name_or_path` is neither a folder nor a Hub repo id.
            `ValueError`: it holds another pipeline, or names a component that is not a model or scheduler class of
                diffusers or of this package.
        """
        name = pretrained_model_name_or_path
        if not os.path.isdir(name) and not is_repo_id(name):
            raise FileNotFoundError(f"No such folder: {name} (nor is it a Hub repo id like 'org/mnist-ddpm').")
        hub = {option: kwargs.pop(option) for option in HUB_OPTIONS if option in kwargs}
        # The index first, by the Hub's own download, which names a missing repo or revision as such.
        try:
            index = cls.load_config(name if os.path.isdir(name) else os.path.dirname(
                hf_hub_download(name, cls.config_name, **hub)))
        except LocalEntryNotFoundError as error:  # offline and not cached; the Hub's message names no repo
            raise LocalEntryNotFoundError(f"{name} is not in the cache and the Hub cannot be reached: {error}") from None
        saved = index.get("_class_name")
        saved_name = saved[1] if isinstance(saved, list) and len(saved) == 2 else saved
        family = {base.__name__ for base in cls.__mro__ if issubclass(base, MNISTDDPMPipeline)}
        family.update(subclass.__name__ for subclass in MNISTDDPMPipeline.__subclasses__())
        if saved_name not in family:
            raise ValueError(f"{name} holds a {saved_name} (the `_class_name` {saved!r} of its model_index.json), not "
                             f"one of {sorted(family)}; a diffusers pipeline loads with "
                             "`DiffusionPipeline.from_pretrained`.")
        classes = {component: component_class(component, index.get(component)) for component in ("unet", "scheduler")}
        if not any(index[component][0] in PACKAGE_MODULES for component in classes):
            return super().from_pretrained(name, **hub, **kwargs)

        # The Hub layout: each component by its class's own `from_pretrained` (the model in the dtype asked for it),
        # then the pipeline from the stored config values, with those the call gives instead.
        dtype = kwargs.pop("torch_dtype", None)
        dtype = kwargs.pop("dtype", dtype)
        dtype = dtype.get("unet", dtype.get("default")) if isinstance(dtype, dict) else dtype
        model_options = {option: kwargs.pop(option) for option in MODEL_OPTIONS if option in kwargs}
        components = {}
        for component, component_cls in classes.items():
            if component in kwargs:
                components[component] = kwargs.pop(component)
            elif issubclass(component_cls, ModelMixin):  # cast after loading: diffusers < 0.40 has no `dtype` argument
                model = component_cls.from_pretrained(name, subfolder=component, **hub, **model_options)
                components[component] = model if dtype is None else model.to(dtype)
            else:
                components[component] = component_cls.from_pretrained(name, subfolder=component, **hub)
        parameters = inspect.signature(cls.__init__).parameters
        unknown = sorted(key for key in kwargs if key not in parameters)
        if unknown:
            raise TypeError(f"`from_pretrained` of a Hub-layout repo does not take {unknown}; it takes {HUB_OPTIONS}, "
                            f"`dtype`, {MODEL_OPTIONS}, components and the pipeline's config values.")
        config = {key: value for key, value in index.items() if key in parameters and key not in components}
        pipeline = cls(**components, **{**config, **kwargs})
        pipeline.register_to_config(_name_or_path=name)
        return pipeline

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
            guidance_scale = self.config.default_guidance_scale
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

        class_labels = torch.tensor(labels, device=self._execution_device).repeat_interleave(num_images_per_label)
        self._guidance_scale, self._guidance_interval = guidance_scale, guidance_interval
        self._interrupt = False
        return class_labels, num_inference_steps, generator

    def predict_noise(
        self, latents: torch.Tensor, t, class_labels: torch.Tensor, guidance_scale: float, dtype: torch.dtype
    ) -> torch.Tensor:
        """
        The model's prediction for `latents` at timestep `t` (ε, or v or x_0 as the scheduler's `prediction_type`
        says; guidance is linear, so guiding them is guiding the ε they imply), with classifier-free guidance
        ε_uncond + w · (ε_cond − ε_uncond); at w = 1 the unconditional pass is skipped. `t` may be one timestep per
        image. `dtype` is the UNet's compute dtype (`unet.dtype`, read once per call: the property walks the modules).
        Float32 in and out.
        """
        if guidance_scale == 1:
            model_input = self.scheduler.scale_model_input(latents, t).to(dtype)
            return self.unet(model_input, t, class_labels).sample.float()
        # Both passes as one batch: [labels; null labels].
        model_labels = torch.cat([class_labels, torch.full_like(class_labels, null_class_label(self.unet))])
        model_input = self.scheduler.scale_model_input(torch.cat([latents, latents]), t).to(dtype)
        model_t = torch.cat([t, t]) if torch.is_tensor(t) and t.ndim == 1 else t
        noise_cond, noise_uncond = self.unet(model_input, model_t, model_labels).sample.float().chunk(2)
        return noise_uncond + guidance_scale * (noise_cond - noise_uncond)

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
    ) -> ImagePipelineOutput | tuple:
        """
        Generate digits.

        Args:
            labels (`int`, `Sequence[int]` or `torch.Tensor`): the digits to draw, 0–9; one image per entry, in order.
            num_images_per_label (`int`, defaults to 1): images per entry of `labels`, adjacent in the output.
            num_inference_steps (`int`, *optional*): denoising steps, 1 to the scheduler's `num_train_timesteps` (an
                `LCMScheduler`'s `original_inference_steps`); defaults to `default_num_inference_steps`, else the full
                DDPM chain.
            guidance_scale (`float`, *optional*): classifier-free guidance weight w in
                ε = ε_uncond + w · (ε_cond − ε_uncond); 1 disables guidance (and its extra pass), 0 ignores the label.
                Defaults to `default_guidance_scale`. A distilled student takes only 1.
            guidance_interval (`tuple[float, float]`, *optional*): `(t_low, t_high)` in training timesteps: guide only
                the steps with t_low ≤ t ≤ t_high, the others with the conditional pass alone (Kynkäänniemi et al.,
                2024). Defaults to `default_guidance_interval`, else every step.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): one, or one per image.
            output_type (`str`, defaults to `"pil"`): `"pil"` (28×28 images in mode "L"), `"np"` (`(batch, 28, 28, 1)`
                in [0, 1]) or `"pt"` (`(batch, 1, 28, 28)` in [0, 1]).
            return_dict (`bool`, defaults to `True`): return an [`ImagePipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable`, *optional*): `callback_on_step_end(self, i, t, kwargs)` after each step,
                with the tensors `callback_on_step_end_tensor_inputs` names; it may return a dict that replaces them,
                set `pipe._interrupt = True` to stop, or set `pipe._guidance_scale` / `pipe._guidance_interval` for the
                steps that follow.
            callback_on_step_end_tensor_inputs (`list[str]`, defaults to `["latents"]`): tensors passed to it.

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

        config = self.unet.config
        shape = (len(class_labels), config.in_channels, config.sample_size, config.sample_size)
        latents = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=torch.float32)
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        latents = latents * self.scheduler.init_noise_sigma
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        dtype = self.unet.dtype

        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                # Read at every step: a callback may have changed the guidance of the steps that follow.
                step_scale = step_guidance_scale(t, self._guidance_scale, self._guidance_interval)
                noise_pred = self.predict_noise(latents, t, class_labels, step_scale, dtype)
                latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
                latents = self.run_callback(callback_on_step_end, i, t, latents, callback_on_step_end_tensor_inputs)
                progress_bar.update()

        return self.finish(latents, output_type, return_dict)
