# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""`MNISTDDPMPipeline`: generate handwritten digits of the classes you ask for.

This file imports only torch, diffusers, huggingface_hub and its checks (`pipeline_mnist_ddpm_checks.py`, which imports
only torch and numpy), so the two can be copied verbatim into a Hub repo and loaded with `trust_remote_code=True` by
someone who does not have `mnist_diffusion` installed.
"""

import importlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import diffusers
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, ModelMixin, SchedulerMixin
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .pipeline_mnist_ddpm_checks import (check_generators, check_guidance_interval, check_labels,
                                         check_likelihood_proposal, check_positive_integer, is_finite_number,
                                         null_class_label, num_class_labels)

# The modules next to this file that define the pipeline's own components. `save_pretrained` records a component by
# module path (["mnist_diffusion.unet_mnist", "ClassConditionedUNet"]), a Hub repo by file name (["unet_mnist", ...],
# with unet/unet_mnist.py beside the weights for `trust_remote_code` users); both name one of these modules.
COMPONENT_MODULES = ("unet_mnist", "scheduling_mnist_ddpm")

logger = logging.get_logger(__name__)


def component_class(library: str, class_name: str) -> type:
    """
    The class of a component entry `[library, class_name]` of `model_index.json`: a diffusers class (a swapped-in
    scheduler, say), or one of this pipeline's own, imported from the package this file belongs to. Nothing else is
    imported, so a repo cannot make the loader run code of its choosing.

    Raises:
        `ValueError`: the entry names anything but a model or scheduler class of diffusers or of this package.
    """
    entry = f"[{library!r}, {class_name!r}]"
    if not isinstance(library, str) or not isinstance(class_name, str):
        raise ValueError(f"model_index.json names the component {entry}; both must be strings.")
    if library == "diffusers":
        component = getattr(diffusers, class_name, None)
    else:
        module_name = library.rpartition(".")[2]
        if module_name not in COMPONENT_MODULES:
            raise ValueError(
                f"model_index.json names the component {entry}, but its code is in neither "
                f"diffusers nor this package's modules {list(COMPONENT_MODULES)}."
            )
        try:
            module = importlib.import_module(f"{__package__}.{module_name}")
        except ImportError as error:
            raise ImportError(
                f"{module_name} is not a module next to {__file__}. Without the mnist_diffusion package, load the "
                f"pipeline with `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`."
            ) from error
        component = getattr(module, class_name, None)
    if component is None:
        raise ValueError(f"model_index.json names the component {entry}, which does not exist.")
    # `getattr` also finds modules and functions (["diffusers", "logging"], ["unet_mnist", "torch"]).
    if not inspect.isclass(component) or not issubclass(component, (ModelMixin, SchedulerMixin)):
        raise ValueError(f"model_index.json names the component {entry}, which is not a model or scheduler class.")
    return component


def is_repo_id(name) -> bool:
    """Whether `name` (a string or an `os.PathLike`) could be a Hub repo id such as `"org/mnist-ddpm"`."""
    if not isinstance(name, str):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def step_guidance_scale(t, guidance_scale: float, guidance_interval: tuple[float, float] | None) -> float:
    """
    The guidance scale of the step at timestep `t`: `guidance_scale` inside `guidance_interval` (t_low ≤ t ≤ t_high,
    or everywhere when it is None), and 1 outside it, so that those steps run the conditional pass only. Guidance
    limited to the middle noise levels is the method of Kynkäänniemi et al. (2024), "Applying Guidance in a Limited
    Interval Improves Sample and Distribution Quality in Diffusion Models".
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
        default_guidance_scale (`float`, defaults to 1.0): guidance scale used when a call gives none; saved in
            `model_index.json`, so a trained model can ship the value its evaluation chose.
        default_num_inference_steps (`int`, *optional*): steps used when a call gives none; the scheduler's full
            `num_train_timesteps` (1000 for the DDPM of the paper) when not set.
        default_guidance_interval (`tuple[float, float]`, *optional*): guidance interval used when a call gives
            none; guidance at every step when not set.
        distilled_guidance_scale (`float`, *optional*): set on a distilled student whose weights learned the
            teacher's classifier-free guidance at this scale: it samples with one conditional pass per step, and a
            call refuses any `guidance_scale` but 1, which would guide a second time on top.
        likelihood_proposal (`list[float]`, *optional*): the probabilities of timesteps 0 … T−1 from which
            [`~MNISTDDPMPipeline.log_likelihood`] draws when a call gives no `proposal`, shaped to the model's own
            terms of the bound (`scripts/evaluate_likelihood.py --store_proposal` measures and stores it).

    `default_num_inference_steps` belongs to the scheduler the pipeline was built with: a pipeline whose scheduler has
    been swapped for another class (`pipe.scheduler = DDIMScheduler.from_config(...)`, or `from_pipe(pipe,
    scheduler=...)`) samples with the new scheduler's full chain, or the number of steps a call asks for.

    Speed. The pipeline keeps the UNet's weights in `channels_last` memory format (the layout oneDNN's CPU
    convolutions are fastest in; `save_pretrained` still writes contiguous tensors). The latents and the scheduler's
    arithmetic are always float32; the UNet runs in its own dtype, so `from_pretrained(...,
    torch_dtype=torch.bfloat16)` makes the network bf16 (faster at large batches on a CPU with native bf16) without
    rounding the 1000-step chain itself; `pipe.unet.enable_layerwise_casting(storage_dtype=torch.bfloat16,
    compute_dtype=torch.float32)` instead only stores the weights in bf16. `pipe.unet = torch.compile(pipe.unet)`
    works too. See `benchmarks/RESULTS.md` for the measured speed-ups and the evaluation for their effect on quality.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents"]
    # Steps when neither the call nor the config names any; None: the scheduler's full chain, the DDPM of the paper.
    fallback_num_inference_steps: int | None = None

    def __init__(
        self,
        unet: ModelMixin,
        scheduler: SchedulerMixin,
        default_guidance_scale: float = 1.0,
        default_num_inference_steps: int | None = None,
        default_guidance_interval: tuple[float, float] | None = None,
        distilled_guidance_scale: float | None = None,
        likelihood_proposal: list[float] | None = None,
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
        # The scheduler class `default_num_inference_steps` was chosen for (see the class docstring).
        self._default_steps_scheduler = type(scheduler).__name__

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "MNISTDDPMPipeline":
        """
        Load a pipeline from a folder written by `save_pretrained` or from a Hub repo, with diffusers' own loader:
        every argument of `DiffusionPipeline.from_pretrained` works as for a built-in pipeline (`dtype`, also per
        component as `{"unet": torch.bfloat16, "default": torch.float32}`, the older `torch_dtype`, `device_map`,
        `low_cpu_mem_usage`, `variant`, `use_safetensors`, components and config values to use instead of the saved
        ones, ...).

        Two things are done first, which diffusers' loader does not do for a pipeline of its own package:
        - A Hub repo id is downloaded without the Python files the repo carries for users of
          `trust_remote_code=True` (diffusers' loader refuses such a repo without that flag), and only the files
          this pipeline loads: `model_index.json`, the components' configs, and their weights in the `variant` and
          format asked for (`revision`, `cache_dir`, `token`, `local_files_only`, `force_download`, `proxies` apply).
        - `model_index.json` is checked: it must hold a pipeline of this family, each component a model or scheduler
          class of diffusers or of this package, so that a tampered file is named rather than followed. A repo names
          this package's components by file (`["unet_mnist", "ClassConditionedUNet"]`, for remote code); they are
          loaded from the installed package, never from a file in the folder.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): a Hub repo id such as `"org/mnist-ddpm"`, or a
                folder.
            kwargs: any argument of `DiffusionPipeline.from_pretrained`.

        Returns:
            [`MNISTDDPMPipeline`]: the loaded pipeline.

        Raises:
            `FileNotFoundError`: `pretrained_model_name_or_path` is neither a folder nor a Hub repo id.
            `ValueError`: the folder or repo holds another pipeline, or its model_index.json does not name each
                component as `[library, class name]` of a model or scheduler; or, from diffusers, a missing variant.
            `huggingface_hub.errors.RepositoryNotFoundError`, `~huggingface_hub.errors.RevisionNotFoundError`: the
                Hub has no such repo (or it is private and the token does not give access), or no such revision.
            `huggingface_hub.errors.RevisionResolutionError`: offline, and the revision is not in the cache.
        """
        name = pretrained_model_name_or_path
        if os.path.isdir(name):
            folder = os.fspath(name)
        elif is_repo_id(name):
            folder = cls._download_without_code(name, kwargs)
        else:
            raise FileNotFoundError(f"No such folder: {name} (nor is it a Hub repo id like 'org/mnist-ddpm').")
        index = cls.load_config(folder)
        cls._check_saved_class(index.get("_class_name"), name)
        components = cls._check_components(index)
        with tempfile.TemporaryDirectory(prefix="mnist-diffusion-") as view:
            if any(library in COMPONENT_MODULES for library, _ in components.values()):
                folder = cls._package_view(folder, index, components, view)
            pipeline = super().from_pretrained(folder, **kwargs)
        pipeline.register_to_config(_name_or_path=name)
        return pipeline

    @classmethod
    def _download_without_code(cls, repo_id: str, kwargs: dict) -> str:
        # The snapshot of `repo_id` holding what this pipeline loads and no Python file; the Hub options are taken
        # out of `kwargs` (the loader would ignore them for a folder). The revision is resolved once, so that every
        # file comes from the same commit.
        from huggingface_hub import hf_hub_download, resolve_revision, snapshot_download

        hub = {option: kwargs.pop(option) for option in ("cache_dir", "token", "local_files_only", "force_download")
               if option in kwargs}
        kwargs.pop("proxies", None)  # huggingface_hub ≥ 1 sets proxies on its HTTP client, not per call
        revision = resolve_revision(repo_id, revision=kwargs.pop("revision", None), cache_dir=hub.get("cache_dir"),
                                    local_files_only=hub.get("local_files_only", False), token=hub.get("token"))
        index_file = hf_hub_download(repo_id, cls.config_name, revision=revision, **hub)
        index = cls.load_config(os.path.dirname(index_file))
        variant = f".{kwargs['variant']}" if kwargs.get("variant") else ""
        weights = ".bin" if kwargs.get("use_safetensors") is False else ".safetensors"
        patterns = [cls.config_name]
        for component in index:
            if not component.startswith("_") and isinstance(index[component], (list, tuple)):
                # diffusion_pytorch_model.safetensors, not .fp16.safetensors beside it; or the shards of either.
                patterns += [f"{component}/*.json", f"{component}/*model{variant}{weights}",
                             f"{component}/*model{variant}-*-of-*{weights}"]
        return snapshot_download(repo_id, revision=revision, allow_patterns=patterns, ignore_patterns=["*.py"], **hub)

    @staticmethod
    def _package_view(folder: str, index: dict, components: dict, view: str) -> str:
        # `view`, made to hold `folder` as diffusers' loader reads it: each component's subfolder linked (copied where
        # links are not allowed), and a model_index.json that names this package's components by module path, from
        # which the loader imports the installed package. Named by file, the loader would run the folder's copy.
        renamed = dict(index)
        for name, (library, class_name) in components.items():
            if library in COMPONENT_MODULES:
                renamed[name] = [f"{__package__}.{library}", class_name]
            try:
                os.symlink(os.path.abspath(os.path.join(folder, name)), os.path.join(view, name))
            except OSError:
                shutil.copytree(os.path.join(folder, name), os.path.join(view, name))
        with open(os.path.join(view, "model_index.json"), "w") as file:
            json.dump(renamed, file)
        return view

    @classmethod
    def _check_saved_class(cls, saved_class, location) -> None:
        # `_class_name` is a class name, or [file name, class name] in a Hub repo. The pipelines of this family
        # share their components, so each loads the folder of any other: `cls` and its bases, and the pipelines
        # built directly on this one (the inpainting pipeline, once imported).
        saved_class_name = saved_class[1] if isinstance(saved_class, list) and len(saved_class) == 2 else saved_class
        family = {base.__name__ for base in cls.__mro__ if issubclass(base, MNISTDDPMPipeline)}
        family.update(subclass.__name__ for subclass in MNISTDDPMPipeline.__subclasses__())
        if saved_class_name in family:
            return
        if isinstance(saved_class_name, str) and inspect.isclass(getattr(diffusers, saved_class_name, None)):
            advice = "load it with `DiffusionPipeline.from_pretrained`"
        else:
            advice = f"it is neither one of {sorted(family)} nor a diffusers pipeline"
        raise ValueError(
            f"{location} holds a {saved_class_name} (the `_class_name` {saved_class!r} of its model_index.json), "
            f"not a {cls.__name__}; {advice}."
        )

    @classmethod
    def _check_components(cls, index: dict) -> dict[str, tuple[str, str]]:
        # The `[library, class name]` entry of each component `__init__` takes, checked to name a class of the kind
        # it expects ([`component_class`]); returned by component name.
        components = {}
        for name, parameter in list(inspect.signature(cls.__init__).parameters.items())[1:]:
            if parameter.default is not inspect.Parameter.empty:
                continue  # a config value, not a component
            if name not in index:
                raise ValueError(f"model_index.json has no entry for the `{name}` component.")
            entry = index[name]
            if not isinstance(entry, (list, tuple)) or len(entry) != 2:
                raise ValueError(
                    f"model_index.json must name the `{name}` component as [library, class name], got {entry!r}."
                )
            if not issubclass(component_class(*entry), parameter.annotation):
                raise ValueError(f"model_index.json names the `{name}` component {list(entry)!r}, which is not a "
                                 f"{parameter.annotation.__name__}.")
            components[name] = tuple(entry)
        return components

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, **kwargs) -> "MNISTDDPMPipeline":
        """
        A pipeline of this class with the components and config of `pipeline`, sharing their weights:
        `MNISTDDPMInpaintPipeline.from_pipe(pipe)`, and back with `MNISTDDPMPipeline.from_pipe(inpaint)`.

        diffusers' `from_pipe` keeps a model only if its class is the one `__init__` is annotated with, and the UNet's
        class cannot be named there (in a Hub repo this file cannot import it); so the components are passed on.

        As in diffusers, the new pipeline is then cast to `torch_dtype`, float32 unless given, and with it the UNet
        that both pipelines share: pass `torch_dtype=torch.bfloat16` to keep a bf16 UNet in bf16.

        Args:
            pipeline ([`DiffusionPipeline`]): the pipeline whose components to use.
            kwargs: components or config values to use instead of `pipeline`'s, and `torch_dtype`, as in
                [`~DiffusionPipeline.from_pipe`].

        Returns:
            [`MNISTDDPMPipeline`]: the new pipeline.
        """
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
        The number of steps, guidance scale and guidance interval that a call given these arguments uses, checked as
        the call checks them. Each one given is used; for each None, the pipeline's stored default
        (`default_num_inference_steps`, while the scheduler is of the class it was stored with;
        `default_guidance_scale`, `default_guidance_interval`), and where none applies,
        `fallback_num_inference_steps` steps (the scheduler's full `num_train_timesteps` when that is None) and
        guidance at every step. The most steps a scheduler takes is its own: `original_inference_steps` for one
        that samples a distilled schedule (`LCMScheduler`), `num_train_timesteps` for any other.

        Args:
            num_inference_steps (`int`, *optional*): as in [`~MNISTDDPMPipeline.__call__`].
            guidance_scale (`float`, *optional*): as in [`~MNISTDDPMPipeline.__call__`].
            guidance_interval (`tuple[float, float]`, *optional*): as in [`~MNISTDDPMPipeline.__call__`].

        Returns:
            `tuple[int, float, tuple[float, float] | None]`: the steps, the guidance scale and the guidance interval
            (None: guidance at every step).

        Raises:
            `ValueError`: a given or stored value is not one a call accepts.
        """
        # Checked here, not by the scheduler: diffusers' solvers take 0 or negative steps and return the starting
        # noise, round 2.5 to 3 steps, and fail deep inside on more steps than they were trained with.
        scheduler_name = type(self.scheduler).__name__
        num_train_timesteps = self.scheduler.config.num_train_timesteps
        # A scheduler that samples from a schedule it was distilled on (LCMScheduler's `original_inference_steps`)
        # takes at most that many steps; every other scheduler, the training schedule's. Read from the running
        # scheduler's own `set_timesteps`: a config made from a student's carries the LCM entry to any scheduler.
        if "original_inference_steps" in inspect.signature(self.scheduler.set_timesteps).parameters:
            max_steps = self.scheduler.config.original_inference_steps
            cap = f"{scheduler_name}'s original_inference_steps"
        else:
            max_steps, cap = num_train_timesteps, f"{scheduler_name}'s num_train_timesteps"
        origin = ""
        if num_inference_steps is None:
            stored = self.config.default_num_inference_steps
            if stored is not None and scheduler_name == getattr(self, "_default_steps_scheduler", scheduler_name):
                num_inference_steps, origin = stored, " (the pipeline's default_num_inference_steps)"
            elif self.fallback_num_inference_steps is not None:
                num_inference_steps = self.fallback_num_inference_steps
                origin = f" ({type(self).__name__}'s default number of steps)"
            else:
                num_inference_steps, origin = num_train_timesteps, " (the full chain, num_train_timesteps)"
        try:
            num_inference_steps = check_positive_integer("num_inference_steps", num_inference_steps, max_steps)
        except ValueError as error:
            raise ValueError(f"{str(error)[:-1]}{origin}; {max_steps} is {cap}.") from None

        if guidance_scale is None:
            guidance_scale = self.config.default_guidance_scale
        if guidance_interval is None:
            guidance_interval = self.config.default_guidance_interval
        return (num_inference_steps, *self.check_guidance(guidance_scale, guidance_interval))

    def check_guidance(self, guidance_scale, guidance_interval) -> tuple[float, tuple[float, float] | None]:
        """
        `guidance_scale` as a float and `guidance_interval` as a pair of floats (or None, every step), if this pipeline
        can guide with them: the checks of a call's arguments, made again on what a callback sets.

        Raises:
            `ValueError`: naming the value and what is expected.
        """
        distilled = self.config.get("distilled_guidance_scale")
        if not is_finite_number(guidance_scale) or guidance_scale < 0:
            raise ValueError(f"`guidance_scale` must be a finite number ≥ 0, got {guidance_scale!r}.")
        if distilled is not None and guidance_scale != 1:
            raise ValueError(
                f"`guidance_scale` must be 1 for this distilled student, got {guidance_scale!r}: classifier-free "
                f"guidance at scale {distilled:g} is in its weights (`distilled_guidance_scale`), and another scale "
                "would guide a second time on top of it, with a second network pass per step."
            )
        if guidance_interval is not None:
            guidance_interval = check_guidance_interval(guidance_interval, self.scheduler.config.num_train_timesteps)
        return float(guidance_scale), guidance_interval

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
        Validate the arguments of a call (of this pipeline or of one built on it) and fill in the defaults; start the
        call's state that the loop and callbacks read: `_guidance_scale` and `_guidance_interval` (from
        [`~MNISTDDPMPipeline.resolve_defaults`]), and `_interrupt`.

        Returns:
            `tuple`: the class label of every image to generate (each label repeated `num_images_per_label` times),
            on the execution device; the number of inference steps; the generator, or the list of them.
        """
        labels = check_labels(labels, num_class_labels(self.unet))
        num_images_per_label = check_positive_integer("num_images_per_label", num_images_per_label)
        num_inference_steps, guidance_scale, guidance_interval = self.resolve_defaults(
            num_inference_steps, guidance_scale, guidance_interval
        )

        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"`output_type` must be 'pil', 'np' or 'pt', got {output_type!r}.")

        generators = check_generators(generator, len(labels) * num_images_per_label)
        if isinstance(generator, Sequence):  # a list or tuple: one per image
            generator = generators

        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise ValueError(f"`callback_on_step_end` must be callable, got {callback_on_step_end!r}.")
        tensor_inputs = callback_on_step_end_tensor_inputs
        if isinstance(tensor_inputs, str) or not isinstance(tensor_inputs, Sequence):
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` must be a list of names from {self._callback_tensor_inputs}, "
                f"got {tensor_inputs!r}."
            )
        unknown_inputs = [name for name in tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown_inputs:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` may only name {self._callback_tensor_inputs}, "
                f"got {unknown_inputs}."
            )

        class_labels = torch.tensor(labels, device=self._execution_device).repeat_interleave(num_images_per_label)
        self._guidance_scale, self._guidance_interval = guidance_scale, guidance_interval
        self._interrupt = False
        return class_labels, num_inference_steps, generator

    def predict_noise(
        self, latents: torch.Tensor, t, class_labels: torch.Tensor, guidance_scale: float, dtype: torch.dtype
    ) -> torch.Tensor:
        """
        The model's prediction for `latents` at timestep `t` (ε, or v or x_0 as the scheduler's `prediction_type`
        says), with classifier-free guidance ε = ε_uncond + w · (ε_cond − ε_uncond); with w = 1 the unconditional
        pass is skipped. Guidance is linear, so guiding v or x_0 is the same as guiding the ε they imply.

        Args:
            latents (`torch.Tensor`): x_t, float32.
            t: the timestep, an element of `scheduler.timesteps`, or a tensor of one timestep per image (as in
                distillation, where each image of a batch has its own).
            class_labels (`torch.Tensor`): one label per image.
            guidance_scale (`float`): w.
            dtype (`torch.dtype`): the dtype the UNet computes in, `unet.dtype`: under layerwise casting that is the
                compute dtype, not the (smaller) dtype the weights are stored in. The caller reads it once per call:
                the property walks the modules, too slow for every step.

        Returns:
            `torch.Tensor`: the (guided) prediction, float32.
        """
        # The UNet may compute in bf16 or fp16; the latents and the guidance stay float32.
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
        End a denoising step: call `callback_on_step_end(self, step_index, t, kwargs)`, if there is one, with the
        tensors of the step that `tensor_inputs` names (from `_callback_tensor_inputs`).

        Returns:
            `torch.Tensor`: the latents the callback returned, or `latents` if it returned none.

        Raises:
            `TypeError`: the callback returned something other than a dict or None.
            `ValueError`: the callback set `_guidance_scale` or `_guidance_interval` to a value a call refuses.
        """
        if callback_on_step_end is None:
            return latents
        step_tensors = {"latents": latents}
        scale, interval = self._guidance_scale, self._guidance_interval
        outputs = callback_on_step_end(self, step_index, t, {name: step_tensors[name] for name in tensor_inputs})
        # By identity: a callback may set a value (a tensor, say) that `!=` cannot compare; a new one is checked as a
        # call's arguments are.
        if self._guidance_scale is not scale or self._guidance_interval is not interval:
            try:
                self._guidance_scale, self._guidance_interval = self.check_guidance(self._guidance_scale,
                                                                                    self._guidance_interval)
            except ValueError as error:
                raise ValueError(f"`callback_on_step_end` changed the guidance at step {step_index}: {error}") from None
        if outputs is None:
            return latents
        if not isinstance(outputs, dict):
            raise TypeError(
                f"`callback_on_step_end` must return a dict of tensors by name (or None), got a "
                f"{type(outputs).__name__}."
            )
        return outputs.get("latents", latents)

    def postprocess(self, latents: torch.Tensor, output_type: str):
        """Samples in [-1, 1] → images in [0, 1] as a tensor (`"pt"`), an array (`"np"`) or PIL images (`"pil"`)."""
        images = (latents.float() / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return images
        images = images.cpu().permute(0, 2, 3, 1).numpy()
        return self.numpy_to_pil(images) if output_type == "pil" else images

    def finish(self, latents: torch.Tensor, output_type: str, return_dict: bool) -> ImagePipelineOutput | tuple:
        """
        End a call: the final latents as images of `output_type` (see [`~MNISTDDPMPipeline.postprocess`]), after
        freeing the models that CPU offloading had moved to the GPU.

        Returns:
            [`ImagePipelineOutput`], or the tuple `(images,)` when `return_dict` is False.
        """
        images = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def _likelihood_module(self, name: str):
        # The bound and the classifier live in the package (mnist_diffusion/likelihood.py and zero_shot.py), not in
        # this file that a Hub repo ships as remote code: a remote-code user gets generation, and these two need the
        # package. Imported by name, which diffusers' remote-code loader does not follow.
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

    @torch.no_grad()
    def log_likelihood(
        self,
        images,
        labels: int | Sequence[int] | torch.Tensor | None = None,
        num_timesteps: int | None = None,
        proposal: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        batch_size: int = 500,
    ):
        """
        The variational bound of each digit (Ho et al., 2020, eq. 5) in bits per dimension, an upper bound on
        −log₂ p_θ(x) / 784, conditional on `labels` or, without them, under the unconditional model (the null label).
        Defined by the scheduler: its forward process, and its `variance_type` for the reverse steps' variance.

        Each value is an unbiased estimate of the bound: its mean over the draws is the bound, and one draw may fall
        below it. With `num_timesteps=None` every term is computed, each from one draw of x_t (the estimate of least
        variance, 1000 UNet calls per digit). With `num_timesteps=K`, K timesteps are drawn, stratified, from
        `proposal`, or from the pipeline's stored
        `likelihood_proposal`, shaped to the model's terms (on the shipped model, one digit's estimate at K = 16
        varies by about 0.03 bits/dim over seeds; uniform timesteps, the fallback for a model without a stored
        proposal, by about 1 bit/dim).

        To compare labels (or models) on one digit, give each call a generator of the same seed: the draws of an image
        do not depend on its label, so the difference is not blurred by independent noise.

        Args:
            images: digits: uint8 pixels (0–255) or float images in [0, 1] (rounded to the 256 levels), shaped
                (28, 28), (N, 28, 28), (N, 1, 28, 28) or (N, 28, 28, 1), a list of such, or PIL images: whatever
                `__call__` returns. A digit that is not blank but has no pixel brighter than level 16 is refused as a
                scale mistake (binarised 0/1 pixels, say).
            labels (`int`, `Sequence[int]` or `torch.Tensor`, *optional*): one digit per image, or one for all.
            num_timesteps (`int`, *optional*): None computes every term (`num_train_timesteps` UNet calls per image);
                K estimates the bound from K drawn timesteps and K // 4 draws of the decoder (K + K // 4 calls).
            proposal (`torch.Tensor`, *optional*): probabilities of the timesteps to draw; the stored
                `likelihood_proposal` when not given, or else uniform.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): the source of the timesteps and the
                noise: one for all images, or one per image.
            batch_size (`int`, defaults to 500): rows per UNet call.

        Returns:
            `VariationalBoundOutput`: `bits_per_dim` and its prior, diffusion and decoder shares per image,
            `log_likelihood` (−L in nats), and every term when all are computed.

        Example:

        ```py
        >>> from mnist_diffusion.data import load_mnist
        >>> images, labels = load_mnist("data/mnist", "test")
        >>> pipe.log_likelihood(images[:8], labels[:8], num_timesteps=16).bits_per_dim
        ```
        """
        likelihood = self._likelihood_module("likelihood")
        num_classes = num_class_labels(self.unet)
        levels = likelihood.digits_to_pixel_levels(images).to(torch.uint8)  # read once; the bound reads uint8 as is
        count = len(levels)
        if labels is None:
            labels = [null_class_label(self.unet)] * count
        else:
            labels = check_labels(labels, num_classes)
            labels = labels * count if len(labels) == 1 else labels
        if proposal is None and num_timesteps is not None:
            proposal = self.config.get("likelihood_proposal")
            if proposal is None:
                logger.warning("This pipeline stores no `likelihood_proposal`: the timesteps are drawn uniformly, and "
                               "one digit's estimate varies by about 1 bit/dim at 16 timesteps. Store one with "
                               "`scripts/evaluate_likelihood.py --store_proposal`, or pass `proposal`.")
        output = likelihood.variational_bound(self.unet, self.scheduler, levels, torch.tensor(labels), num_timesteps,
                                              proposal, generator, batch_size)
        self.maybe_free_model_hooks()
        return output

    @torch.no_grad()
    def classify(
        self,
        images,
        num_trials: int = 50,
        weighting: str = "uniform",
        prune: tuple[int, int] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        batch_size: int = 1000,
    ):
        """
        Classify digits with the model itself (Li et al., 2023, "Your Diffusion Model is Secretly a Zero-Shot
        Classifier"): the digit whose conditional ε-prediction errs least on the same `num_trials` noisings (t, ε)
        of the image, i.e. whose variational bound is lowest. `num_trials` × 10 UNet rows per image.

        Args:
            images: digits, as in [`~MNISTDDPMPipeline.log_likelihood`].
            num_trials (`int`, defaults to 50): (t, ε) pairs per image, shared by the ten classes; at most
                `num_train_timesteps`.
            weighting (`str`, defaults to `"uniform"`): `"uniform"` or `"bound"` (each timestep weighted as in the
                variational bound).
            prune (`tuple[int, int]`, *optional*): `(after, keep)`: after `after` trials, only the `keep` most
                probable classes so far get the remaining trials (Li et al.'s adaptive scheme; fewer UNet rows).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): the source of the noise: one for all
                images, or one per image.
            batch_size (`int`, defaults to 1000): rows per UNet call.

        Returns:
            `ZeroShotOutput`: `labels` (the predicted digits), `scores` (per class, lower is more probable), each
            trial's `errors`, `timesteps` and `weights`.
        """
        zero_shot = self._likelihood_module("zero_shot")
        output = zero_shot.zero_shot_classify(self.unet, self.scheduler, images, num_class_labels(self.unet),
                                              num_trials, weighting, prune, generator, batch_size)
        self.maybe_free_model_hooks()
        return output

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
            num_images_per_label (`int`, defaults to 1): images per entry of `labels` (each label's images are
                adjacent in the output).
            num_inference_steps (`int`, *optional*): denoising steps, 1 to the scheduler's `num_train_timesteps`
                (an `LCMScheduler`'s `original_inference_steps`); defaults to the pipeline's
                `default_num_inference_steps`, or else the full DDPM chain.
            guidance_scale (`float`, *optional*): classifier-free guidance weight w in
                ε = ε_uncond + w · (ε_cond − ε_uncond); 1 disables guidance (and its extra model pass), 0 ignores
                the label. Defaults to the pipeline's `default_guidance_scale`. A distilled student (with a
                `distilled_guidance_scale`) takes only 1.
            guidance_interval (`tuple[float, float]`, *optional*): `(t_low, t_high)`, training timesteps in
                [0, `num_train_timesteps`]: guide only the steps whose timestep t has t_low ≤ t ≤ t_high, and run
                the conditional pass alone (guidance scale 1) at the others (Kynkäänniemi et al., 2024). Defaults to
                the pipeline's `default_guidance_interval`; None there too guides every step.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): makes generation deterministic;
                a list gives one generator per image.
            output_type (`str`, defaults to `"pil"`): `"pil"` (28×28 `PIL.Image` in mode "L"), `"np"` (float array
                of shape `(batch, 28, 28, 1)` in [0, 1]) or `"pt"` (tensor of shape `(batch, 1, 28, 28)` in [0, 1]).
            return_dict (`bool`, defaults to `True`): return an [`ImagePipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable`, *optional*): called as `callback_on_step_end(self, i, t, kwargs)`
                after each step, with `kwargs` holding the tensors named in `callback_on_step_end_tensor_inputs`;
                it may return a dict that replaces them, set `pipe._interrupt = True` to stop early, and set
                `pipe._guidance_scale` or `pipe._guidance_interval` to change the guidance of the steps that follow
                (it reads them, and `num_timesteps`, as properties).
            callback_on_step_end_tensor_inputs (`list[str]`, defaults to `["latents"]`): tensors passed to the
                callback.

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the generated images.

        Example:

        ```py
        >>> from mnist_diffusion import MNISTDDPMPipeline

        >>> pipe = MNISTDDPMPipeline.from_pretrained("pretrained/mnist-ddpm")
        >>> image = pipe(labels=[7]).images[0]
        >>> image.save("seven.png")
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
