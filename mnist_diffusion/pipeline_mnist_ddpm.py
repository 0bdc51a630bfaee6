# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""`MNISTDDPMPipeline`: generate handwritten digits of the classes you ask for.

This file imports only torch, numpy, diffusers and huggingface_hub, so it can be copied verbatim into a Hub repo and
loaded with `trust_remote_code=True` by someone who does not have `mnist_diffusion` installed.
"""

import importlib
import inspect
import os
from collections.abc import Callable, Sequence

import diffusers
import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

# The modules next to this file that define the pipeline's own components. `save_pretrained` records a component by
# module path (["mnist_diffusion.unet_mnist", "ClassConditionedUNet"]), a Hub repo by file name (["unet_mnist", ...],
# with unet/unet_mnist.py beside the weights for `trust_remote_code` users); both name one of these modules.
COMPONENT_MODULES = ("unet_mnist", "scheduling_mnist_ddpm")


def component_class(library: str, class_name: str) -> type:
    """
    The class of a component entry `[library, class_name]` of `model_index.json`: a diffusers class (a swapped-in
    scheduler, say), or one of this pipeline's own, imported from the package this file belongs to. Nothing else is
    imported, so a repo cannot make the loader run code of its choosing.
    """
    if library == "diffusers":
        component = getattr(diffusers, class_name, None)
    else:
        module_name = library.rpartition(".")[2]
        if module_name not in COMPONENT_MODULES:
            raise ValueError(
                f"model_index.json names the component [{library!r}, {class_name!r}], but its code is in neither "
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
        raise ValueError(f"model_index.json names the component [{library!r}, {class_name!r}], which does not exist.")
    return component


def check_labels(labels, num_classes: int) -> list[int]:
    """
    Turn `labels` (an int, a list/tuple of ints, or a 1-d integer tensor/array) into a list of ints, or raise a
    `ValueError` that names the bad value and the allowed range.
    """
    allowed = f"an int, a list of ints or a 1-d integer tensor with values in 0–{num_classes - 1}"
    if torch.is_tensor(labels) or isinstance(labels, np.ndarray):
        if labels.ndim != 1:
            raise ValueError(f"`labels` must be {allowed}; got a {labels.ndim}-d {type(labels).__name__}: {labels!r}.")
        if labels.dtype in (torch.bool, np.bool_) or not (
            (torch.is_tensor(labels) and not labels.is_floating_point() and not labels.is_complex())
            or (isinstance(labels, np.ndarray) and np.issubdtype(labels.dtype, np.integer))
        ):
            raise ValueError(f"`labels` must be {allowed}; got dtype {labels.dtype}: {labels!r}.")
        labels = labels.tolist()
    elif isinstance(labels, (int, np.integer)) and not isinstance(labels, (bool, np.bool_)):
        labels = [int(labels)]
    elif isinstance(labels, (list, tuple)):
        labels = list(labels)
    else:
        raise ValueError(f"`labels` must be {allowed}; got {labels!r}.")

    if not labels:
        raise ValueError(f"`labels` must be {allowed}; got an empty {type(labels).__name__}.")
    for label in labels:
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
            raise ValueError(f"`labels` must be {allowed}; got {label!r} ({type(label).__name__}) in {labels!r}.")
        if not 0 <= label < num_classes:
            raise ValueError(f"`labels` must be {allowed}; got {label} in {labels!r}.")
    return [int(label) for label in labels]


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

    Speed. The pipeline keeps the UNet's weights in `channels_last` memory format (the layout oneDNN's CPU
    convolutions are fastest in; `save_pretrained` still writes contiguous tensors). The latents and the scheduler's
    arithmetic are always float32; the UNet runs in its own dtype, so `from_pretrained(...,
    torch_dtype=torch.bfloat16)` makes the network bf16 (faster at large batches on a CPU with native bf16) without
    rounding the 1000-step chain itself. `pipe.unet = torch.compile(pipe.unet)` works too.
    See `benchmarks/RESULTS.md` for the measured speed-ups and the evaluation for their effect on quality.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        unet,
        scheduler,
        default_guidance_scale: float = 1.0,
        default_num_inference_steps: int | None = None,
    ):
        super().__init__()
        if isinstance(unet, torch.nn.Module):
            unet = unet.to(memory_format=torch.channels_last)  # in place; the values of the weights are unchanged
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(
            default_guidance_scale=default_guidance_scale, default_num_inference_steps=default_num_inference_steps
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
        torch_dtype: torch.dtype | None = None,
        variant: str | None = None,
        use_safetensors: bool | None = None,
        **kwargs,
    ) -> "MNISTDDPMPipeline":
        """
        Load a pipeline from a folder written by `save_pretrained` or from a Hub repo.

        Each component is loaded by its own class, as in `ClassConditionedUNet.from_pretrained(repo, subfolder="unet")`.
        `DiffusionPipeline.from_pretrained` would instead run the Python files a Hub repo carries for users without
        this package, and refuse to without `trust_remote_code=True`; here they are never downloaded nor run, so a
        repo id, a snapshot of the repo and a cache that the remote-code route has filled all load the same way.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): a Hub repo id such as `"org/mnist-ddpm"`, or a
                folder.
            revision (`str`, *optional*): branch, tag or commit of the repo, resolved once so that every file comes
                from the same commit; defaults to `main`.
            cache_dir (`str` or `os.PathLike`, *optional*): the Hub cache to use instead of `HF_HUB_CACHE`.
            token (`str` or `bool`, *optional*): Hub token for private repos; defaults to the saved login.
            local_files_only (`bool`, defaults to `False`): load from the cache only, as `HF_HUB_OFFLINE=1` does.
            force_download (`bool`, defaults to `False`): download again even if the files are cached.
            torch_dtype (`torch.dtype`, *optional*): dtype of the UNet's weights.
            variant (`str`, *optional*): load the UNet's `diffusion_pytorch_model.<variant>.safetensors`.
            use_safetensors (`bool`, *optional*): as in `ModelMixin.from_pretrained`.
            kwargs: components to use instead of the saved ones (`scheduler=...`), and values of the pipeline's
                config (`default_guidance_scale=...`) that replace the saved ones.

        Returns:
            [`MNISTDDPMPipeline`]: the loaded pipeline.

        Raises:
            `ValueError`: the folder or repo holds another pipeline.
            `huggingface_hub.errors.RepositoryNotFoundError`, `~huggingface_hub.errors.RevisionNotFoundError`: the
                Hub has no such repo (or it is private and the token does not give access), or no such revision.
            `huggingface_hub.errors.RevisionResolutionError`: offline, and the revision is not in the cache.
        """
        # Imported here: users of this file as remote code may have a huggingface_hub older than `resolve_revision`.
        from huggingface_hub import resolve_revision

        hub_kwargs = {
            "cache_dir": cache_dir,
            "token": token,
            "local_files_only": local_files_only,
            "force_download": force_download,
        }
        if not os.path.isdir(pretrained_model_name_or_path):
            hub_kwargs["revision"] = resolve_revision(
                str(pretrained_model_name_or_path),
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                token=token,
            )
        config = cls.load_config(pretrained_model_name_or_path, **hub_kwargs)
        saved_class = config.get("_class_name")  # a class name, or [file name, class name] in a Hub repo
        saved_class_name = saved_class[1] if isinstance(saved_class, list) else saved_class
        # A subclass (the inpainting pipeline) loads the folder of the pipeline it extends.
        if saved_class_name not in {base.__name__ for base in cls.__mro__ if issubclass(base, MNISTDDPMPipeline)}:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a {saved_class_name} (the `_class_name` of its "
                f"model_index.json), not a {cls.__name__}; load it with `DiffusionPipeline.from_pretrained`."
            )

        init_kwargs = {}
        for name, parameter in list(inspect.signature(cls.__init__).parameters.items())[1:]:
            if name in kwargs:
                init_kwargs[name] = kwargs.pop(name)
            elif parameter.default is inspect.Parameter.empty:  # a component, saved in its own subfolder
                component = component_class(*config[name])
                load_kwargs = {**hub_kwargs, "subfolder": name}
                if issubclass(component, torch.nn.Module):
                    load_kwargs.update(torch_dtype=torch_dtype, variant=variant, use_safetensors=use_safetensors)
                init_kwargs[name] = component.from_pretrained(pretrained_model_name_or_path, **load_kwargs)
            elif name in config:
                init_kwargs[name] = config[name]
        if kwargs:
            raise TypeError(f"{cls.__name__}.from_pretrained() got unexpected keyword arguments {sorted(kwargs)}.")

        pipeline = cls(**init_kwargs)
        pipeline.register_to_config(_name_or_path=pretrained_model_name_or_path)
        return pipeline

    def check_inputs(self, labels, num_images_per_label, guidance_scale, output_type, generator,
                     callback_on_step_end_tensor_inputs) -> tuple[torch.Tensor, float]:
        """
        Validate the arguments of a call.

        Returns:
            The class label of every image to generate (each label repeated `num_images_per_label` times), on the
            execution device, and the guidance scale to use.
        """
        labels = check_labels(labels, self.unet.config.num_classes)
        if isinstance(num_images_per_label, bool) or not isinstance(num_images_per_label, int) or num_images_per_label < 1:
            raise ValueError(f"`num_images_per_label` must be a positive integer, got {num_images_per_label!r}.")
        if guidance_scale is None:
            guidance_scale = self.config.default_guidance_scale
        if not isinstance(guidance_scale, (int, float)) or isinstance(guidance_scale, bool) or guidance_scale < 0:
            raise ValueError(f"`guidance_scale` must be a number ≥ 0, got {guidance_scale!r}.")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"`output_type` must be 'pil', 'np' or 'pt', got {output_type!r}.")
        unknown_inputs = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown_inputs:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` may only name {self._callback_tensor_inputs}, "
                f"got {sorted(unknown_inputs)}."
            )
        batch_size = len(labels) * num_images_per_label
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for {batch_size} images; pass one, or one per image.")
        class_labels = torch.tensor(labels, device=self._execution_device).repeat_interleave(num_images_per_label)
        return class_labels, guidance_scale

    def model_labels(self, class_labels: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """The labels of one model call: `[labels; null labels]` when guiding, so both passes run as one batch."""
        if guidance_scale == 1:
            return class_labels
        return torch.cat([class_labels, torch.full_like(class_labels, self.unet.null_class_label)])

    def predict_noise(self, latents: torch.Tensor, t, model_labels: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """
        The model's noise prediction for `latents` at timestep `t`, with classifier-free guidance
        ε = ε_uncond + w · (ε_cond − ε_uncond); with w = 1 the unconditional pass is skipped.

        Args:
            model_labels (`torch.Tensor`): from [`~MNISTDDPMPipeline.model_labels`].
        """
        # The UNet may be bf16 or fp16; the latents and the guidance stay float32. (The input layer's dtype: the
        # `unet.dtype` property walks all parameters, ≈ 0.26 ms, too slow for every step.)
        dtype = self.unet.conv_in.weight.dtype
        if guidance_scale == 1:
            model_input = self.scheduler.scale_model_input(latents, t).to(dtype)
            return self.unet(model_input, t, model_labels).sample.float()
        model_input = self.scheduler.scale_model_input(torch.cat([latents, latents]), t).to(dtype)
        noise_cond, noise_uncond = self.unet(model_input, t, model_labels).sample.float().chunk(2)
        return noise_uncond + guidance_scale * (noise_cond - noise_uncond)

    def postprocess(self, latents: torch.Tensor, output_type: str):
        """Samples in [-1, 1] → images in [0, 1] as a tensor (`"pt"`), an array (`"np"`) or PIL images (`"pil"`)."""
        images = (latents.float() / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return images
        images = images.cpu().permute(0, 2, 3, 1).numpy()
        return self.numpy_to_pil(images) if output_type == "pil" else images

    @torch.inference_mode()
    def __call__(
        self,
        labels: int | Sequence[int] | torch.Tensor,
        num_images_per_label: int = 1,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ) -> ImagePipelineOutput | tuple:
        """
        Generate digits.

        Args:
            labels (`int`, `list[int]` or `torch.Tensor`): the digits to draw, 0–9; one image per entry, in order.
            num_images_per_label (`int`, defaults to 1): images per entry of `labels` (each label's images are
                adjacent in the output).
            num_inference_steps (`int`, *optional*): denoising steps; defaults to the pipeline's
                `default_num_inference_steps`, or else the full `num_train_timesteps` DDPM chain.
            guidance_scale (`float`, *optional*): classifier-free guidance weight w in
                ε = ε_uncond + w · (ε_cond − ε_uncond); 1 disables guidance (and its extra model pass), 0 ignores
                the label. Defaults to the pipeline's `default_guidance_scale`.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): makes generation deterministic;
                a list gives one generator per image.
            output_type (`str`, defaults to `"pil"`): `"pil"` (28×28 `PIL.Image` in mode "L"), `"np"` (float array
                of shape `(batch, 28, 28, 1)` in [0, 1]) or `"pt"` (tensor of shape `(batch, 1, 28, 28)` in [0, 1]).
            return_dict (`bool`, defaults to `True`): return an [`ImagePipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable`, *optional*): called as `callback_on_step_end(self, i, t, kwargs)`
                after each step, with `kwargs` holding the tensors named in `callback_on_step_end_tensor_inputs`;
                it may return a dict that replaces them.
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
        class_labels, guidance_scale = self.check_inputs(
            labels, num_images_per_label, guidance_scale, output_type, generator, callback_on_step_end_tensor_inputs
        )
        if num_inference_steps is None:
            num_inference_steps = self.config.default_num_inference_steps or self.scheduler.config.num_train_timesteps

        config = self.unet.config
        shape = (len(class_labels), config.in_channels, config.sample_size, config.sample_size)
        latents = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=torch.float32)
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        latents = latents * self.scheduler.init_noise_sigma
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        model_labels = self.model_labels(class_labels, guidance_scale)

        timesteps = self.scheduler.timesteps
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                noise_pred = self.predict_noise(latents, t, model_labels, guidance_scale)
                latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample

                if callback_on_step_end is not None:
                    step_tensors = {"latents": latents}
                    callback_kwargs = {name: step_tensors[name] for name in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                    latents = callback_outputs.get("latents", latents)
                progress_bar.update()

        images = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
